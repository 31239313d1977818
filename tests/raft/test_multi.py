"""
Multi-Raft transport: frame format, link authentication, and seeded
simulations of several groups sharing one link per node pair under link
cuts, partitions and crashes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.raft.interfaces import IRaftStateMachine, IRaftTransport
from suite.raft.kv import KeyValueStateMachine
from suite.raft.messages import AppendEntries, Configuration, Entry, Heartbeat, encodeMessage
from suite.raft.multi import (
    DialCore,
    DialInputs,
    DialMachine,
    DialPolicy,
    FrameError,
    MultiRaftTransport,
    PeerLink,
    decodeFrame,
    encodeFrame,
)
from suite.raft.node import RaftNode
from suite.raft.settings import RaftSettings
from suite.raft.storage import MemoryStorage, Recovered
from tests.raft.test_loading import HeldStorage
from tests.support.raftsim import Recorder, checkReplicasAgree, proposeRecorded


class Pipe:
    """
    One direction of an in-memory connection with delivery delays.
    """

    disconnecting = False

    def __init__(self, net: Network, name: str) -> None:
        self.net, self.name = net, name
        self.peer: Pipe | None = None
        self.protocol: Any = None
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed or self.peer is None:
            return
        peer = self.peer
        self.net.clock.callLater(self.net.delay(), peer.receive, data)

    def receive(self, data: bytes) -> None:
        if not self.closed:
            self.protocol.dataReceived(data)

    def loseConnection(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.disconnecting = True
        self.protocol.connectionLost(None)
        if self.peer is not None:
            self.net.clock.callLater(self.net.delay(), self.peer.loseConnection)

    def getPeer(self) -> str:
        return f"pipe:{self.peer.name if self.peer else '?'}"

    def getHost(self) -> str:
        return f"pipe:{self.name}"


class Network:
    """
    Nodes' listeners by address; partitions refuse dials and cut links.
    """

    def __init__(self, clock: Clock, rng: random.Random) -> None:
        self.clock, self.rng = clock, rng
        self.listeners: dict[str, tuple[str, MultiRaftTransport]] = {}
        self.blocked: set[frozenset[str]] = set()
        self.pipes: list[tuple[str, str, Pipe]] = []

    def delay(self) -> float:
        return self.rng.uniform(0.0005, 0.005)

    def connector(self, src: str) -> Any:
        def connect(address: str, factory: Any, timeout: float) -> Deferred[Any]:
            target = self.listeners.get(address)
            if target is None or frozenset((src, target[0])) in self.blocked:
                return fail(ConnectionRefusedError(address))
            dst, multi = target
            client, server = Pipe(self, src), Pipe(self, dst)
            client.peer, server.peer = server, client
            client.protocol = factory.buildProtocol(None)
            server.protocol = multi.serverFactory().buildProtocol(None)
            self.pipes.append((src, dst, client))
            self.pipes.append((dst, src, server))
            server.protocol.makeConnection(server)
            client.protocol.makeConnection(client)
            return succeed(client.protocol)

        return connect

    def cut(self, a: str, b: str) -> None:
        for x, y, pipe in self.pipes:
            if {x, y} == {a, b}:
                pipe.loseConnection()

    def partition(self, a: str, b: str) -> None:
        self.blocked.add(frozenset((a, b)))
        self.cut(a, b)

    def heal(self) -> None:
        self.blocked.clear()

    def openLinks(self) -> dict[frozenset[str], int]:
        counts: dict[frozenset[str], int] = {}
        for x, y, pipe in self.pipes:
            if not pipe.closed and x < y:
                counts[frozenset((x, y))] = counts.get(frozenset((x, y)), 0) + 1
        return counts


class Member:
    """
    One node: a shared transport and one Raft node per group.
    """

    def __init__(self, sim: MultiSim, name: str) -> None:
        self.sim, self.name = sim, name
        self.storages = {g: MemoryStorage() for g in sim.groups}
        self.machines: dict[str, Recorder] = {}
        self.nodes: dict[str, RaftNode] = {}
        self.multi: MultiRaftTransport | None = None
        self.up = False

    def start(self) -> None:
        sim = self.sim
        peers = {n: f"addr-{n}" for n in sim.names if n != self.name}
        self.multi = MultiRaftTransport(
            self.name, sim.clock, sim.net.connector(self.name), peers, secure=False, dial=sim.dial
        )
        sim.net.listeners[f"addr-{self.name}"] = (self.name, self.multi)
        config = Configuration(frozenset(sim.names))
        for g in sim.groups:
            machine = self.machines[g] = Recorder()
            node = RaftNode(
                self.name,
                sim.clock,
                self.storages[g],
                self.multi.group(g),
                machine,
                config,
                sim.settings,
                random.Random(sim.rng.random()),
            )
            self.nodes[g] = node
            Deferred.fromCoroutine(node.start())
        self.up = True

    def crash(self) -> None:
        if not self.up:
            return
        self.up = False
        for node in self.nodes.values():
            node.stop()
        assert self.multi is not None
        self.multi.close()
        del self.sim.net.listeners[f"addr-{self.name}"]
        for x, y, pipe in self.sim.net.pipes:
            if self.name in (x, y):
                pipe.loseConnection()


class MultiSim:
    """
    C{size} nodes, each hosting every one of C{groups}.
    """

    def __init__(self, seed: int, size: int = 3, groups: int = 4) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.net = Network(self.clock, self.rng)
        self.dial = DialPolicy(timeout=0.5, attempts=3, backoff=0.02)
        self.settings = RaftSettings(snapshotThreshold=25)
        self.names = [f"n{i}" for i in range(size)]
        self.groups = [f"p{i}" for i in range(groups)]
        self.members = {n: Member(self, n) for n in self.names}
        self.acked: dict[str, list[bytes]] = {g: [] for g in self.groups}
        self.counter = 0

    def start(self) -> None:
        for m in self.members.values():
            m.start()

    def run(self, seconds: float, step: float = 0.001) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            self.check()

    def leader(self, group: str) -> RaftNode | None:
        for m in self.members.values():
            if m.up and m.nodes[group].leader is not None:
                return m.nodes[group]
        return None

    def propose(self) -> None:
        for g in self.groups:
            leader = self.leader(g)
            if leader is None:
                continue
            self.counter += 1
            proposeRecorded(leader, f"{g}:{self.counter}".encode(), self.acked[g])

    def check(self) -> None:
        """
        Replicas of a group never disagree on what they applied.
        """
        for g in self.groups:
            checkReplicasAgree(
                self.seed, g, [m.machines[g].applied for m in self.members.values() if g in m.machines]
            )


class FrameTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        self.assertEqual(decodeFrame(encodeFrame("p7", b"body")), ("p7", b"body"))
        self.assertEqual(decodeFrame(encodeFrame("", b"")), ("", b""))

    def test_bad(self) -> None:
        self.assertRaises(FrameError, decodeFrame, b"")
        self.assertRaises(FrameError, decodeFrame, b"\x05ab")
        self.assertRaises(FrameError, decodeFrame, b"\x02\xff\xfe")
        self.assertRaises(FrameError, encodeFrame, "x" * 256, b"")

    def test_backoff(self) -> None:
        policy = DialPolicy(timeout=1.0, attempts=3, backoff=0.1)
        self.assertEqual([policy.delay(n) for n in range(6)], [0.0, 0.1, 0.2, 0.4, 0.4, 0.4])

    def test_backoffObject(self) -> None:
        """
        The policy's L{Backoff} gives the same delays as C{delay}.
        """
        for attempts in (0, 1, 3):
            policy = DialPolicy(timeout=1.0, attempts=attempts, backoff=0.1)
            backoff = policy.newBackoff()
            self.assertEqual([backoff.next() for _ in range(5)], [policy.delay(n) for n in range(1, 6)])

    def test_interface(self) -> None:
        multi = MultiRaftTransport("a", Clock(), lambda *a: fail(Exception()), {}, secure=False)
        verifyObject(IRaftTransport, multi.group("p0"))
        self.assertRaises(FrameError, multi.group, "")


class LinkTests(SynchronousTestCase):
    """
    Authentication and rejection on one link.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = Network(self.clock, random.Random(1))
        self.a = MultiRaftTransport("a", self.clock, self.net.connector("a"), {"b": "addr-b"}, secure=False)
        self.b = MultiRaftTransport("b", self.clock, self.net.connector("b"), {"a": "addr-a"}, secure=False)
        self.net.listeners = {"addr-a": ("a", self.a), "addr-b": ("b", self.b)}
        self.got: list[Any] = []
        self.b.group("p0").setReceiver(self.got.append)

    def test_oneLinkBothWays(self) -> None:
        """
        The link a dials carries b's replies too: no second connection.
        """
        self.a.send("p0", Heartbeat("a", "b", 1, 0))
        self.clock.advance(0.1)
        self.a.send("p0", Heartbeat("a", "b", 1, 0))
        self.clock.advance(0.1)
        self.assertEqual(len(self.got), 1)
        gotA: list[Any] = []
        self.a.group("p0").setReceiver(gotA.append)
        self.b.send("p0", Heartbeat("b", "a", 1, 0))
        self.clock.advance(0.1)
        self.assertEqual(len(gotA), 1)
        self.assertEqual(self.net.openLinks(), {frozenset("ab"): 1})
        self.assertEqual(self.b.dials, 0)

    def test_spoofedSource(self) -> None:
        self.a.send("p0", Heartbeat("a", "b", 1, 0))
        self.clock.advance(0.1)
        link = self.a.links["b"]
        link.sendFrame(encodeFrame("p0", encodeMessage(Heartbeat("c", "b", 1, 0))))
        self.clock.advance(0.1)
        self.assertEqual(self.b.rejected, 1)
        self.assertEqual(self.got, [])

    def test_loadingNodeDropsAndCounts(self) -> None:
        """
        Messages of a group whose node is still loading its storage are
        delivered to the node, whose Loading role drops and counts them:
        nothing is written, appended, applied or answered (the sender
        resends); the leader's announced commit is noted all the same.
        Once loaded, the node handles what arrives.
        """
        storage = HeldStorage(Recovered(0, None, None, []))
        machine = KeyValueStateMachine()
        node = RaftNode(
            "b",
            self.clock,
            storage,
            self.b.group("p1"),
            machine,
            Configuration(frozenset({"a", "b"})),
            rng=random.Random(1),
        )
        started = Deferred.fromCoroutine(node.start())
        self.addCleanup(node.stop)
        for _ in range(2):  # the first dials the link (and is lost), the second arrives
            self.a.send("p0", Heartbeat("a", "b", 1, 0))
            self.clock.advance(0.1)
        self.assertEqual((len(self.got), self.b.framesReceived), (1, 1))
        entry = Entry(1, 1)
        for _ in range(2):
            self.a.send("p1", AppendEntries("a", "b", 1, 0, 0, (entry,), 1))
            self.a.send("p1", Heartbeat("a", "b", 1, 1))
            self.clock.advance(0.01)
        self.assertEqual(self.b.framesReceived, 5)
        self.assertEqual(node.droppedWhileLoading, 4)
        self.assertEqual(storage.writes, [])
        self.assertEqual((node.log.lastIndex(), node.commitIndex, node.lastApplied), (0, 0, 0))
        self.assertEqual((node.term, node.leaderId, node.roleName), (0, None, "loading"))
        self.assertEqual(self.a.framesReceived, 0)  # nothing answered
        self.assertEqual(self.b.group("p1").leaderCommit, 1)
        storage.release()
        self.successResultOf(started)
        self.a.send("p1", AppendEntries("a", "b", 1, 0, 0, (entry,), 1))
        for _ in range(10):
            self.clock.advance(0.01)
        self.assertEqual(node.droppedWhileLoading, 4)
        self.assertEqual((node.term, node.leaderId, node.log.lastIndex()), (1, "a", 1))
        self.assertEqual(self.a.framesReceived, 1)  # acknowledged

    def test_unknownGroupAndGarbage(self) -> None:
        self.a.send("p9", Heartbeat("a", "b", 1, 0))
        self.clock.advance(0.1)
        self.a.send("p9", Heartbeat("a", "b", 1, 0))
        self.clock.advance(0.1)
        self.assertEqual(self.b.unknownGroup, 1)
        self.a.links["b"].sendFrame(encodeFrame("p0", b"\xc1garbage"))
        self.clock.advance(0.1)
        self.assertEqual(self.b.rejected, 1)
        self.a.links["b"].sendFrame(b"\x09x")
        self.clock.advance(0.1)
        self.clock.advance(0.1)
        self.assertNotIn("b", self.a.links)

    def test_backoffAfterRefusal(self) -> None:
        """
        Refused dials back off exponentially and warn once at the limit.
        """
        del self.net.listeners["addr-b"]
        self.a.send("p0", Heartbeat("a", "b", 1, 0))
        self.assertEqual(self.a.dials, 1)
        self.a.send("p0", Heartbeat("a", "b", 1, 0))
        self.assertEqual(self.a.dials, 1)
        self.clock.advance(0.11)
        self.a.send("p0", Heartbeat("a", "b", 1, 0))
        self.assertEqual(self.a.dials, 2)
        self.clock.advance(0.11)
        self.a.send("p0", Heartbeat("a", "b", 1, 0))
        self.assertEqual(self.a.dials, 2)

    def test_secureIdentityMismatch(self) -> None:
        """
        With TLS, an outbound link whose peer identifies as another node is
        closed; an inbound link naming an unknown node is refused.
        """
        secure = MultiRaftTransport(
            "a", self.clock, self.net.connector("a"), {"b": "x", "c": "y"}, identify=lambda t: "c"
        )
        link = PeerLink(secure, "b")
        pipe = Pipe(self.net, "a")
        pipe.protocol = link
        link.makeConnection(pipe)
        link.handshakeCompleted()
        self.assertTrue(pipe.closed)
        self.assertEqual(secure.rejectedLinks, 1)
        stranger = MultiRaftTransport("a", self.clock, self.net.connector("a"), {}, identify=lambda t: "z")
        inbound = PeerLink(stranger, None)
        pipe2 = Pipe(self.net, "a")
        pipe2.protocol = inbound
        inbound.makeConnection(pipe2)
        inbound.handshakeCompleted()
        self.assertTrue(pipe2.closed)


class FakeOwner:
    """
    Records what a link machine asks of its transport.
    """

    def __init__(self, secure: bool = True) -> None:
        self.nodeId = "me"
        self.secure = secure
        self.calls: list[tuple[Any, ...]] = []
        self.rejected = 0
        self.rejectedLinks = 0
        self.maxFrameBytes = 1 << 20

    def knownNodes(self) -> set[str]:
        return {"me", "b", "c"}

    def linkUp(self, peer: str, link: Any) -> None:
        self.calls.append(("up", peer))

    def linkDown(self, peer: str, link: Any) -> None:
        self.calls.append(("down", peer))

    def dialFailed(self, peer: str, why: str) -> None:
        self.calls.append(("dialFailed", peer))

    def deliver(self, group: str, peer: str, body: bytes) -> None:
        self.calls.append(("deliver", group, peer, body))


class LinkMachineTests(SynchronousTestCase):
    """
    Every input of the link machine in every state (Pending, Open, Closed).
    """

    def link(
        self, expected: str | None = "b", secure: bool = True, state: str = "Pending"
    ) -> tuple[Any, Any, Any]:
        owner = FakeOwner(secure)
        link = PeerLink(owner, expected)  # type: ignore[arg-type]
        pipe = Pipe(Network(Clock(), random.Random(0)), "me")
        pipe.protocol = link
        link.transport = pipe  # type: ignore[assignment]
        if state in ("Open", "Closed"):
            link.machine.identified("b")
        if state == "Closed":
            link.machine.lost()
        owner.calls.clear()
        return owner, link, pipe

    def test_pending(self) -> None:
        owner, link, pipe = self.link()
        link.machine.identified("b")
        self.assertEqual(owner.calls, [("up", "b")])
        for name, why in (
            (None, "no known peer"),
            ("zed", "no known peer"),
            ("me", "no known peer"),
            ("c", "expected b"),
        ):
            owner, link, pipe = self.link()
            link.machine.identified(name)
            self.assertTrue(pipe.closed, why)
            self.assertEqual((owner.calls, owner.rejectedLinks), ([("dialFailed", "b")], 1))
        owner, link, pipe = self.link()
        link.machine.accepted("b")
        self.assertEqual(owner.calls, [("up", "b")])
        owner, link, pipe = self.link(expected=None)
        link.machine.refused("no")
        self.assertTrue(pipe.closed)
        self.assertEqual(owner.calls, [])
        owner, link, pipe = self.link()
        link.machine.hello("b")
        self.assertEqual(owner.calls, [])  # TLS links are identified by certificate
        owner, link, pipe = self.link(expected=None, secure=False)
        link.machine.hello("c")
        self.assertEqual(owner.calls, [("up", "c")])
        owner, link, pipe = self.link()
        link.machine.frame("p0", b"x")
        self.assertEqual((owner.calls, owner.rejected), ([], 1))
        owner, link, pipe = self.link()
        link.machine.lost()
        self.assertEqual(owner.calls, [("dialFailed", "b")])
        owner, link, pipe = self.link(expected=None)
        link.machine.lost()
        self.assertEqual(owner.calls, [])

    def test_open(self) -> None:
        for name in ("identified", "accepted"):
            owner, link, pipe = self.link(state="Open")
            getattr(link.machine, name)("c")
            self.assertEqual(owner.calls, [])
            self.assertFalse(pipe.closed)
        owner, link, pipe = self.link(state="Open")
        link.machine.hello("b")
        link.machine.frame("p0", b"x")
        self.assertEqual(owner.calls, [("deliver", "p0", "b", b"x")])
        link.machine.hello("c")
        self.assertEqual(owner.calls[-1], ("down", "b"))
        self.assertTrue(pipe.closed)
        owner, link, pipe = self.link(state="Open")
        link.machine.refused("why")
        self.assertEqual(owner.calls, [("down", "b")])
        owner, link, pipe = self.link(state="Open")
        link.machine.lost()
        self.assertEqual(owner.calls, [("down", "b")])

    def test_closed(self) -> None:
        owner, link, pipe = self.link(state="Closed")
        link.machine.identified("b")
        link.machine.accepted("b")
        link.machine.refused("x")
        link.machine.hello("b")
        link.machine.frame("p0", b"x")
        link.machine.lost()
        self.assertEqual((owner.calls, owner.rejected, owner.rejectedLinks), ([], 0, 0))


def stateOf(inputs: object) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


#: One call of each input of the dial machine (its whole alphabet); the
#: backoffs handed over count no failure yet.
DIAL_CALLS: dict[str, Callable[[DialInputs, DialPolicy], None]] = {
    "needed": lambda m, p: m.needed(),
    "dial": lambda m, p: m.dial(p.newBackoff()),
    "failed": lambda m, p: m.failed("refused"),
    "backOff": lambda m, p: m.backOff(p.newBackoff(), "refused"),
    "elapsed": lambda m, p: m.elapsed(p.newBackoff()),
    "reached": lambda m, p: m.reached(),
    "stop": lambda m, p: m.stop(),
}

#: How to reach each state (with one failure behind BackingOff and Unreached).
DIAL_PATHS: dict[str, tuple[str, ...]] = {
    "Idle": (),
    "Dialing": ("needed",),
    "BackingOff": ("needed", "failed"),
    "Unreached": ("needed", "failed", "wait"),
    "Stopped": ("stop",),
}

#: (state, input) -> (state after, events, timers pending after).  Events:
#: C{connect}, C{cancel} (of the attempt in flight), C{warn unreachable},
#: C{info reachable}.  Every pair not listed changes nothing.
DIAL_ANSWERS: dict[tuple[str, str], tuple[str, list[str], list[float]]] = {
    ("Idle", "needed"): ("Dialing", ["connect"], []),
    ("Idle", "dial"): ("Dialing", ["connect"], []),
    ("Idle", "stop"): ("Stopped", [], []),
    ("Dialing", "failed"): ("BackingOff", ["warn unreachable"], [0.1]),
    ("Dialing", "backOff"): ("BackingOff", ["warn unreachable"], [0.1]),
    ("Dialing", "reached"): ("Idle", ["cancel"], []),
    ("Dialing", "stop"): ("Stopped", ["cancel"], []),
    ("BackingOff", "elapsed"): ("Unreached", [], []),
    ("BackingOff", "reached"): ("Idle", ["info reachable"], []),
    ("BackingOff", "stop"): ("Stopped", [], []),
    ("Unreached", "needed"): ("Dialing", ["connect"], []),
    ("Unreached", "dial"): ("Dialing", ["connect"], []),
    ("Unreached", "reached"): ("Idle", ["info reachable"], []),
    ("Unreached", "stop"): ("Stopped", [], []),
}


class DialMachineTests(SynchronousTestCase):
    """
    Every input of the dial machine in every state (Idle, Dialing,
    BackingOff, Unreached, Stopped).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[str] = []

    def connect(self, address: str, factory: Any, timeout: float) -> Deferred[Any]:
        self.events.append("connect")
        return Deferred(lambda d: self.events.append("cancel"))

    def machine(self, attempts: int = 1) -> tuple[DialInputs, MultiRaftTransport]:
        policy = DialPolicy(timeout=1.0, attempts=attempts, backoff=0.1)
        multi = MultiRaftTransport("a", self.clock, self.connect, {"b": "addr-b"}, secure=False, dial=policy)
        return DialMachine(DialCore(multi, "b")), multi

    def timers(self) -> list[float]:
        return [round(c.getTime() - self.clock.seconds(), 6) for c in self.clock.getDelayedCalls()]

    def record(self, action: Callable[..., None], *args: Any) -> None:
        with capturedLogs() as logged:
            action(*args)
        for event in logged:
            text = event.get("log_format", "")
            if "Raft peer" in text:
                what = "unreachable" if "unreachable" in text else "reachable"
                self.events.append(f"{event['log_level'].name} {what}")

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state: the state after, what it did, the timers
        left; unlisted pairs change nothing.
        """
        for state, path in DIAL_PATHS.items():
            for name, call in DIAL_CALLS.items():
                machine, multi = self.machine()
                for step in path:
                    if step == "wait":
                        self.clock.advance(0.1)
                    else:
                        self.record(DIAL_CALLS[step], machine, multi.dial)
                self.assertEqual(stateOf(machine), state)
                before = self.timers()
                del self.events[:]
                self.record(call, machine, multi.dial)
                after, events, timers = DIAL_ANSWERS.get((state, name), (state, [], before))
                self.assertEqual(
                    (stateOf(machine), self.events, self.timers()),
                    (after, events, timers),
                    f"{state} + {name}",
                )
                machine.stop()
                self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failuresCarried(self) -> None:
        """
        The failure count goes from state to state: delays double up to the
        ceiling, the warning comes once at C{attempts}, and a link ends it.
        """
        machine, multi = self.machine(attempts=3)
        delays = []
        for _ in range(4):
            self.record(machine.needed)
            self.record(machine.failed, "refused")
            delays += self.timers()
            self.clock.advance(delays[-1])
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.4])
        self.assertEqual(self.events, ["connect"] * 3 + ["warn unreachable", "connect"])
        self.record(machine.reached)
        self.assertEqual(self.events[-1], "info reachable")
        self.record(machine.needed)
        self.record(machine.failed, "refused")
        self.assertEqual(self.timers(), [0.1])
        self.assertEqual(multi.dials, 5)

    def test_transportDrivesDialers(self) -> None:
        """
        The transport feeds its dialers: a send dials, a link up (either
        way) resets, closing stops them and leaves no timer.
        """
        machine, multi = self.machine()
        multi.send("p0", Heartbeat("a", "b", 1, 0))
        multi.send("p0", Heartbeat("a", "z", 1, 0))  # no address: never dialled
        self.assertEqual(sorted(multi.dialers), ["b"])
        self.assertEqual(stateOf(multi.dialers["b"]), "Dialing")
        multi.dialFailed("b", "refused")
        multi.dialFailed("c", "refused")
        self.assertEqual(stateOf(multi.dialers["b"]), "BackingOff")
        multi.linkUp("b", PeerLink(multi, None))
        self.assertEqual(stateOf(multi.dialers["b"]), "Idle")
        multi.send("p0", Heartbeat("a", "b", 1, 0))
        multi.dialFailed("b", "refused")
        multi.close()
        self.assertEqual(stateOf(multi.dialers["b"]), "Stopped")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SimulationTests(SynchronousTestCase):
    """
    Several groups on shared links converge and never diverge under faults.
    """

    def scenario(self, seed: int) -> MultiSim:
        sim = MultiSim(seed)
        plan = random.Random(seed * 31 + 7)
        sim.start()
        for _ in range(6):
            for _ in range(10):
                sim.propose()
                sim.run(0.03)
            what = plan.choice(["cut", "partition", "crash", "heal", "nothing"])
            a, b = plan.sample(sim.names, 2)
            if what == "cut":
                sim.net.cut(a, b)
            elif what == "partition":
                sim.net.partition(a, b)
            elif what == "crash":
                sim.members[a].crash()
            sim.run(0.2)
            for m in sim.members.values():
                if not m.up and plan.random() < 0.5:
                    m.start()
        sim.net.heal()
        for m in sim.members.values():
            if not m.up:
                m.start()
        sim.run(1.5)
        for _ in range(5):
            sim.propose()
            sim.run(0.05)
        sim.run(1.5)
        for g in sim.groups:
            logs = [m.machines[g].applied for m in sim.members.values()]
            self.assertEqual(logs[0], logs[1], f"seed {seed} group {g}")
            self.assertEqual(logs[0], logs[2], f"seed {seed} group {g}")
            missing = set(sim.acked[g]) - set(logs[0])
            self.assertEqual(missing, set(), f"seed {seed}: acknowledged commands lost in {g}")
            self.assertEqual(len(logs[0]), len(set(logs[0])), f"seed {seed}: duplicates in {g}")
            self.assertTrue(sim.acked[g], f"seed {seed}: nothing committed in {g}")
        for pair, count in sim.net.openLinks().items():
            self.assertLessEqual(count, 2, f"seed {seed}: {count} links for {sorted(pair)}")
        return sim

    def test_seeds(self) -> None:
        for seed in range(8):
            self.scenario(seed)

    def test_recorder(self) -> None:
        """
        The simulations' state machine provides L{IRaftStateMachine}; its
        snapshot restores the commands applied, in order.
        """
        machine = Recorder()
        self.assertTrue(verifyObject(IRaftStateMachine, machine))
        self.assertEqual([machine.apply(i, c) for i, c in enumerate([b"a", b"b"], 1)], [1, 2])
        copy = Recorder()
        copy.restore(machine.snapshot())
        self.assertEqual(copy.applied, [b"a", b"b"])
        copy.restore(Recorder().snapshot())
        self.assertEqual(copy.applied, [])
        self.assertRaises(AssertionError, checkReplicasAgree, 1, "p0", [[b"a", b"b"], [b"a", b"c"]])
        checkReplicasAgree(1, "p0", [[b"a", b"b"], [b"a"], []])

    def test_oneLinkPerPairWhenQuiet(self) -> None:
        """
        Without faults, the 4 groups of 3 nodes share exactly one link per
        pair of nodes.
        """
        sim = MultiSim(99)
        sim.start()
        sim.run(1.0)
        for _ in range(5):
            sim.propose()
            sim.run(0.05)
        links = sim.net.openLinks()
        self.assertEqual(len(links), 3)
        self.assertTrue(all(n <= 2 for n in links.values()))
        for g in sim.groups:
            self.assertIsNotNone(sim.leader(g))
