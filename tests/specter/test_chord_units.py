"""
Unit tests of the ring's pieces: the membership machine, the frame
protocol, the RPC factory and the helper site, with in-memory transports.
"""

from __future__ import annotations

import random
import struct
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from suite.kv.memory import MemoryStore
from suite.kv.records import StoreWriteFailed, ringId
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef, between, inRange, vnodeId
from suite.specter.chord.machine import MembershipCore, Phase, TransferAnswer, buildMembership
from suite.specter.chord.node import ChordConfig, ChordNode
from suite.specter.chord.rounds import RoundsCore, buildRounds
from suite.specter.chord.wire import ChordServerFactory, FrameProtocol, WireTransport, pack
from suite.specter.interfaces import IChordTransport, IRing
from suite.specter.rpc import RPCFactory
from suite.web.interfaces import IHealth
from tests.support.chordsim import SimNetwork, SimTransport


class Recorder:
    """
    Records the machine's outputs in order.
    """

    def __init__(self) -> None:
        self.events: list[str] = []

    def beginJoin(self) -> None:
        self.events.append("beginJoin")

    def becameActive(self) -> None:
        self.events.append("becameActive")

    def beginLeave(self) -> Deferred[None]:
        self.events.append("beginLeave")
        return succeed(None)

    def abandonJoin(self) -> None:
        self.events.append("abandonJoin")

    def becameLeft(self) -> None:
        self.events.append("becameLeft")

    def whenLeft(self) -> Deferred[None]:
        self.events.append("whenLeft")
        return succeed(None)


class MembershipMachineTests(SynchronousTestCase):
    """
    Inactive -> Joining -> Active <-> Transferring -> Leaving -> Left.
    """

    def test_lifecycle(self) -> None:
        """
        The full path emits join, active, leave and left in order; transfers
        are accepted only while Active.
        """
        r = Recorder()
        m = buildMembership(MembershipCore(r))
        self.assertIs(m.transferStarted(), TransferAnswer.NOT_SERVING)
        m.start()
        self.assertIs(m.transferStarted(), TransferAnswer.NOT_SERVING)
        self.assertEqual(m.kvRefused(), E.BUSY)
        m.joined()
        self.assertIs(m.transferStarted(), TransferAnswer.STARTED)
        self.assertIs(m.transferStarted(), TransferAnswer.BUSY)  # Transferring
        m.transferDone()
        self.assertIs(m.transferStarted(), TransferAnswer.STARTED)
        m.transferDone()
        m.leave()
        m.leave()
        self.assertIs(m.transferStarted(), TransferAnswer.LEAVING)
        self.assertEqual(m.kvRefused(), E.NOT_OWNER)
        m.left()
        m.leave()
        self.assertIs(m.transferStarted(), TransferAnswer.LEAVING)
        self.assertEqual(r.events, ["beginJoin", "becameActive", "beginLeave", "whenLeft", "becameLeft"])

    def test_leaveWhileJoining(self) -> None:
        """
        Leaving before the join finished abandons it and goes straight to Left.
        """
        r = Recorder()
        m = buildMembership(MembershipCore(r))
        m.start()
        self.successResultOf(m.leave())
        m.joined()
        self.assertEqual(r.events, ["beginJoin", "abandonJoin", "becameLeft"])
        # it never served: KV calls are "busy" and transfers refused, as before it joined
        self.assertEqual(m.kvRefused(), E.BUSY)
        self.assertIs(m.transferStarted(), TransferAnswer.NOT_SERVING)

    def test_everyStateAnswersEveryInput(self) -> None:
        """
        Each of the seven states, reached by its shortest path, answers each
        input without error; the outputs of the answer are recorded and
        checked against the expected transition table.
        """
        paths: dict[str, list[str]] = {
            "Inactive": [],
            "Joining": ["start"],
            "Active": ["start", "joined"],
            "Transferring": ["start", "joined", "transferStarted"],
            "Leaving": ["start", "joined", "leave"],
            "Left": ["start", "joined", "leave", "left"],
            "Withdrawn": ["leave"],
        }
        inputs = ["start", "joined", "transferStarted", "transferDone", "leave", "left", "kvRefused"]
        # the outputs each (state, input) pair should emit
        expected: dict[tuple[str, str], list[str]] = {
            ("Inactive", "start"): ["beginJoin"],
            ("Inactive", "leave"): ["becameLeft"],
            ("Joining", "joined"): ["becameActive"],
            ("Joining", "leave"): ["abandonJoin", "becameLeft"],
            ("Active", "leave"): ["beginLeave"],
            ("Transferring", "leave"): ["beginLeave"],
            ("Leaving", "leave"): ["whenLeft"],
            ("Leaving", "left"): ["becameLeft"],
        }
        # the state each (state, input) pair leads to, where it changes
        moves: dict[tuple[str, str], str] = {
            ("Inactive", "start"): "Joining",
            ("Inactive", "leave"): "Withdrawn",
            ("Joining", "joined"): "Active",
            ("Joining", "leave"): "Withdrawn",
            ("Active", "transferStarted"): "Transferring",
            ("Active", "leave"): "Leaving",
            ("Transferring", "transferDone"): "Active",
            ("Transferring", "leave"): "Leaving",
            ("Leaving", "left"): "Left",
        }
        # what the questions answer in each state
        transfer = {
            "Inactive": TransferAnswer.NOT_SERVING,
            "Joining": TransferAnswer.NOT_SERVING,
            "Active": TransferAnswer.STARTED,
            "Transferring": TransferAnswer.BUSY,
            "Leaving": TransferAnswer.LEAVING,
            "Left": TransferAnswer.LEAVING,
            "Withdrawn": TransferAnswer.NOT_SERVING,
        }
        refused = {s: E.NOT_OWNER if s in ("Leaving", "Left") else E.BUSY for s in paths}
        for state, path in paths.items():
            for name in inputs:
                r = Recorder()
                core = MembershipCore(r)
                m = buildMembership(core)
                for step in path:
                    getattr(m, step)()
                self.assertEqual(core.phase.value, state.lower())
                before = len(r.events)
                try:
                    answer = getattr(m, name)()
                except Exception as e:
                    self.fail(f"{state} does not answer {name}: {e!r}")
                self.assertEqual(r.events[before:], expected.get((state, name), []), (state, name))
                self.assertEqual(core.phase.value, moves.get((state, name), state).lower(), (state, name))
                if name == "transferStarted":
                    self.assertIs(answer, transfer[state], state)
                elif name == "kvRefused":
                    self.assertEqual(answer, refused[state], state)
                elif name != "leave":
                    self.assertIsNone(answer, (state, name))

    def test_servingAndGoneFollowThePhase(self) -> None:
        """
        KV calls are served in Active and Transferring only; Left and
        Withdrawn are gone; the phase is recorded before the entering
        transition's outputs run, so an output sees the state it leads to.
        """
        self.assertEqual({p for p in Phase if p.serving}, {Phase.ACTIVE, Phase.TRANSFERRING})
        self.assertEqual({p for p in Phase if p.gone}, {Phase.LEFT, Phase.WITHDRAWN})
        seen: list[Phase] = []

        class Watching(Recorder):
            def becameActive(self) -> None:
                seen.append(core.phase)

            def beginLeave(self) -> Deferred[None]:
                seen.append(core.phase)
                return succeed(None)

            def becameLeft(self) -> None:
                seen.append(core.phase)

        core = MembershipCore(Watching())
        m = buildMembership(core)
        m.start()
        m.joined()
        m.leave()
        m.left()
        self.assertEqual(seen, [Phase.ACTIVE, Phase.LEAVING, Phase.LEFT])


class RoundsMachineTests(SynchronousTestCase):
    """
    Idle -> Waiting -> Running -> Waiting ...; any -> Stopped.
    """

    def build(self) -> tuple[Any, Clock, list[Deferred[None]]]:
        clock = Clock()
        rounds: list[Deferred[None]] = []

        def runRound() -> Deferred[None]:
            d: Deferred[None] = Deferred()
            rounds.append(d)
            return d

        return buildRounds(RoundsCore(clock, lambda: 5.0, runRound)), clock, rounds

    def test_oneRoundAtATime(self) -> None:
        """
        A round starts when the timer fires; the next is timed only after it
        ended; stopping cancels the timer and no round follows.
        """
        r, clock, rounds = self.build()
        r.start()
        clock.advance(4.9)
        self.assertEqual(rounds, [])
        clock.advance(0.1)
        self.assertEqual(len(rounds), 1)
        clock.advance(60)
        self.assertEqual(len(rounds), 1)  # still running: no second round
        rounds[0].callback(None)
        clock.advance(5)
        self.assertEqual(len(rounds), 2)
        rounds[1].errback(RuntimeError("a failed round"))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        r.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        self.assertEqual(len(rounds), 2)
        self.flushLoggedErrors(RuntimeError)

    def test_everyStateAnswersEveryInput(self) -> None:
        """
        Each state, reached by its shortest path, answers each input; the
        rounds started and the timers pending afterwards match the table.
        """
        paths: dict[str, list[str]] = {
            "Idle": [],
            "Waiting": ["start"],
            "Running": ["start", "due"],
            "Stopped": ["stop"],
        }
        # (rounds started by the input, timers pending after it)
        expected: dict[tuple[str, str], tuple[int, int]] = {
            ("Idle", "start"): (0, 1),
            ("Idle", "due"): (0, 0),
            ("Idle", "finished"): (0, 0),
            ("Idle", "stop"): (0, 0),
            ("Waiting", "start"): (0, 1),
            ("Waiting", "due"): (1, 0),
            ("Waiting", "finished"): (0, 1),
            ("Waiting", "stop"): (0, 0),
            ("Running", "start"): (0, 0),
            ("Running", "due"): (0, 0),
            ("Running", "finished"): (0, 1),
            ("Running", "stop"): (0, 0),
            ("Stopped", "start"): (0, 0),
            ("Stopped", "due"): (0, 0),
            ("Stopped", "finished"): (0, 0),
            ("Stopped", "stop"): (0, 0),
        }
        for (state, name), (started, timers) in expected.items():
            r, clock, rounds = self.build()
            for step in paths[state]:
                getattr(r, step)()
            before = len(rounds)
            try:
                getattr(r, name)()
            except Exception as e:
                self.fail(f"{state} does not answer {name}: {e!r}")
            self.assertEqual(len(rounds) - before, started, (state, name))
            self.assertEqual(len(clock.getDelayedCalls()), timers, (state, name))


class IdTests(SynchronousTestCase):
    """
    Ring arithmetic.
    """

    def test_intervals(self) -> None:
        """
        Half-open and open intervals wrap past zero.
        """
        self.assertTrue(inRange(5, 1, 5))
        self.assertFalse(inRange(1, 1, 5))
        self.assertTrue(inRange(0, 10, 2))
        self.assertTrue(inRange(7, 3, 3))
        self.assertTrue(between(0, 10, 2))
        self.assertFalse(between(2, 10, 2))
        self.assertFalse(between(3, 3, 3))

    def test_vnodeIds(self) -> None:
        """
        A vnode's id depends on the advertise address and its index only.
        """
        self.assertEqual(vnodeId("10.0.0.1:443", 0), vnodeId("10.0.0.1:443", 0))
        self.assertNotEqual(vnodeId("10.0.0.1:443", 0), vnodeId("10.0.0.1:443", 1))
        self.assertNotEqual(vnodeId("10.0.0.1:443", 0), vnodeId("10.0.0.2:443", 0))


def _node(clock: Clock, net: SimNetwork, name: str = "n1:1") -> ChordNode:
    node = ChordNode(
        name,
        SimTransport(net, name),
        clock,
        ChordConfig(virtual=2),
        lambda i: MemoryStore(clock),
        rng=random.Random(1),
    )
    net.nodes[name] = node
    return node


class ProvidesTests(SynchronousTestCase):
    """
    Implementations provide their interfaces.
    """

    def test_interfaces(self) -> None:
        """
        Transports provide IChordTransport, the node IRing, its health IHealth.
        """
        from suite.specter.web import RingHealth

        clock = Clock()
        net = SimNetwork(clock, random.Random(1))
        node = _node(clock, net)
        self.assertTrue(verifyObject(IChordTransport, SimTransport(net, "x")))
        self.assertTrue(verifyObject(IChordTransport, WireTransport(MemoryReactorClock(), None)))
        self.assertTrue(verifyObject(IRing, node))
        self.assertTrue(verifyObject(IHealth, RingHealth(node)))

    def test_healthNamesWhyNotInRing(self) -> None:
        """
        While the node cannot reach its ring, /readyz's report says why.
        """
        from suite.specter.web import RingHealth

        clock = Clock()
        net = SimNetwork(clock, random.Random(1))
        node = _node(clock, net)
        node.joinTrouble("cannot reach any known ring peer (a:1: refused)")
        report = RingHealth(node).check()
        self.assertFalse(report.ready)
        self.assertIn("not in the ring: cannot reach any known ring peer", report.reasons[0])


class WhenServingTests(SynchronousTestCase):
    """
    L{ChordNode.whenServing}: the event that every vnode serves.
    """

    def test_firesWhenTheLastVnodeServes(self) -> None:
        """
        Fires once every vnode of the process serves (not before), at once
        afterwards; a cancelled wait is forgotten.
        """
        clock = Clock()
        net = SimNetwork(clock, random.Random(1))
        node = _node(clock, net)
        waiting, cancelled = node.whenServing(), node.whenServing()
        cancelled.cancel()
        self.failureResultOf(cancelled)
        node.start(None, bootstrap=True)
        for _ in range(100):
            if waiting.called:
                break
            self.assertFalse(all(v.serving for v in node.vnodes))
            clock.advance(0.1)
        self.assertTrue(all(v.serving for v in node.vnodes))
        self.successResultOf(waiting)
        self.successResultOf(node.whenServing())
        node.stop()


class FrameProtocolTests(SynchronousTestCase):
    """
    Length-prefixed msgpack frames between two protocols in memory.
    """

    def connect(self, dispatch: Any) -> tuple[FrameProtocol, iosim.IOPump]:
        server = ChordServerFactory(dispatch)
        clientProto = FrameProtocol()
        serverProto = server.buildProtocol(None)
        _, _, pump = iosim.connectedServerAndClient(lambda: serverProto, lambda: clientProto)
        return clientProto, pump

    def test_pipelinedCalls(self) -> None:
        """
        Several calls in flight are answered and matched by id; errors
        arrive as RemoteError with their code and hint.
        """
        calls: list[Any] = []

        def dispatch(vid: Any, method: str, args: list[Any]) -> Deferred[Any]:
            calls.append((vid, method, args))
            if method == "boom":
                d: Deferred[Any] = Deferred()
                d.errback(RemoteError(E.NOT_OWNER, "elsewhere", VnodeRef(5, "h:1", 2)))
                return d
            return succeed(args[0] * 2)

        client, pump = self.connect(dispatch)
        a = client.request(7, "double", [21])
        b = client.request(None, "boom", [])
        c = client.request(8, "double", [b"x"])
        pump.flush()
        self.assertEqual(self.successResultOf(a), 42)
        self.assertEqual(self.successResultOf(c), b"xx")
        err = self.failureResultOf(b, RemoteError).value
        self.assertEqual((err.code, err.hint), (E.NOT_OWNER, VnodeRef(5, "h:1", 2)))
        self.assertEqual(calls[0], (7, "double", [21]))

    def test_malformedFrameCloses(self) -> None:
        """
        A frame that is not msgpack, or not a call, closes that connection.
        """
        for frame in (b"\xc1\xc1", pack(["nope"]), pack([0, 1, None])):
            proto = FrameProtocol(lambda *a: succeed(None))
            t = StringTransport()
            proto.makeConnection(t)
            proto.dataReceived(struct.pack(">I", len(frame)) + frame)
            self.assertTrue(t.disconnecting, frame)

    def test_oversizedFrameCloses(self) -> None:
        """
        A length above the frame limit closes the connection before reading it.
        """
        proto = FrameProtocol(lambda *a: succeed(None))
        t = StringTransport()
        proto.makeConnection(t)
        proto.dataReceived(struct.pack(">I", proto.MAX_LENGTH + 1))
        self.assertTrue(t.disconnecting)

    def test_lostConnectionFailsPending(self) -> None:
        """
        Calls pending when the connection drops fail with 'gone'.
        """
        proto = FrameProtocol()
        proto.makeConnection(StringTransport())
        d = proto.request(1, "ping", [])
        proto.connectionLost()
        self.assertEqual(self.failureResultOf(d, RemoteError).value.code, E.GONE)


class RPCTests(SynchronousTestCase):
    """
    The RPC factory validates calls before they reach the ring.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = SimNetwork(self.clock, random.Random(2))
        self.node = _node(self.clock, self.net)
        self.node.start(None)
        self.clock.advance(1)
        self.rpc = RPCFactory(self.node, token=b"t" * 32)
        self.addCleanup(self.node.stop)

    def call(self, method: str, *args: Any) -> Deferred[Any]:
        d = self.rpc.dispatch(None, method, list(args))
        self.clock.advance(0.1)
        return d

    def test_roundTrip(self) -> None:
        """
        put, get, append, list, lookup and stats go through.
        """
        self.successResultOf(self.call("kv", "put", b"k", [b"v"]))
        self.assertEqual(self.successResultOf(self.call("kv", "get", b"k", [])), b"v")
        self.successResultOf(self.call("kv", "append", "p", ["a"]))
        self.assertEqual(self.successResultOf(self.call("kv", "list", b"p", [])), [b"a"])
        lease = self.successResultOf(self.call("kv", "acquire", b"L", [b"me", 10]))
        # the fencing token is the grant's stamp: wall-clock milliseconds << 16
        self.assertEqual(lease[2] >> 16, int(self.clock.seconds() * 1000) - 100)
        self.assertEqual(
            self.failureResultOf(self.call("kv", "acquire", b"L", [b"you", 10]), RemoteError).value.code,
            E.LEASE_HELD,
        )
        self.assertIn("owner", self.successResultOf(self.call("lookup", b"k")))
        self.successResultOf(self.call("kv", "delete", b"k", []))
        found = self.successResultOf(self.call("lookup", b"k"))
        self.assertEqual(list(found["versions"]), ["value"])
        self.assertTrue(found["versions"]["value"]["deleted"])
        self.assertEqual(found["versions"]["value"]["time"][:4], "1970")
        self.assertEqual(len(self.successResultOf(self.call("stats"))["vnodes"]), 2)

    def test_badRequests(self) -> None:
        """
        Unknown methods and operations, wrong arity, wrong types and
        oversized keys or values are refused with bad-request.
        """
        for args in (
            ("nosuch",),
            ("kv", "frob", b"k", []),
            ("kv", "put", b"k", []),
            ("kv", "put", b"k", "notalist"),
            ("kv", "put", 5, [b"v"]),
            ("kv", "put", b"k" * 5000, [b"v"]),
            ("kv", "put", b"k", [b"v" * (9 * 1024 * 1024)]),
            ("kv", "renew", b"k", [b"x", 1]),
            ("lookup",),
        ):
            f = self.failureResultOf(self.call(*args), RemoteError)
            self.assertEqual(f.value.code, E.BAD_REQUEST, args)
        self.assertEqual(self.rpc.errors, 9)

    def test_storeWriteFailed(self) -> None:
        """
        A change the owner's store could not write fails with store-failed
        and the store's reason, not as an internal error.
        """
        reason = "cannot write /d/0/kv.aof: No space left on device; not acknowledged"
        for vnode in self.node.vnodes:
            vnode.store.put = lambda key, value: fail(StoreWriteFailed(reason))
        f = self.failureResultOf(self.call("kv", "put", b"k", [b"v"]), RemoteError)
        self.assertEqual((f.value.code, f.value.message), (E.STORE_FAILED, reason))
        self.assertFalse(f.value.retryable)


class HelperSiteTests(SynchronousTestCase):
    """
    The loopback helper: /_internal exists only with credentials.
    """

    def test_noCredentialsNoInternal(self) -> None:
        """
        Without credentials /_internal is not mounted at all (404).
        """
        from suite.specter.web import makeHelperResource
        from suite.web.admin import AdminRoot
        from suite.web.errors import JSONNoResource

        root = makeHelperResource(object(), AdminRoot(), None, None)
        child = root.getChildWithDefault(b"_internal", DummyRequest([b"_internal"]))
        self.assertIsInstance(child, JSONNoResource)

    def test_internalDirectoriesAnswerJSON(self) -> None:
        """
        With credentials, /_internal and /_internal/chord list what they hold
        and an unknown page under them is a JSON 404, not Twisted's HTML page.
        """
        import json

        from twisted.web.resource import getChildForRequest

        from suite.specter.web import makeHelperResource
        from suite.web.admin import AdminRoot

        root = makeHelperResource(object(), AdminRoot(), "ops", "pw")
        guard = root.getChildWithDefault(b"_internal", DummyRequest([b"_internal"]))
        internal = guard._wrapped  # behind the Basic guard
        for path, code, body in (
            (b"chord", 200, {"endpoints": ["/graph", "/stats"]}),
            (b"kv", 200, {"endpoints": ["/stats"]}),
        ):
            request = DummyRequest([path])
            page = getChildForRequest(internal, request)
            self.assertEqual(
                (request.responseCode or 200, json.loads(page.render(request))), (code, body), path
            )
        request = DummyRequest([b"chord", b"nope"])
        page = getChildForRequest(internal, request)
        answer = json.loads(page.render(request))
        self.assertEqual((request.responseCode, answer["error"]), (404, "no admin resource /nope"))


class BatchTests(SynchronousTestCase):
    """
    KV calls to another process travel in batches.
    """

    def test_multi(self) -> None:
        """
        A multi call answers each batched call, errors included, in order.
        """
        clock = Clock()
        net = SimNetwork(clock, random.Random(3))
        node = _node(clock, net)
        node.start(None)
        clock.advance(1)
        self.addCleanup(node.stop)
        vid = node.vnodes[0].ref.id
        d = node.dispatch(
            None, "multi", [[[vid, "ping", []], [vid, "nosuch", []], "junk", [12345, "ping", []]]]
        )
        results = self.successResultOf(d)
        self.assertEqual([ok for ok, _ in results], [True, False, False, False])
        self.assertEqual(results[1][1][0], E.BAD_REQUEST)
        self.assertEqual(results[3][1][0], E.GONE)

    def test_callsBatched(self) -> None:
        """
        Many KV calls from one process to another share a few messages and
        all complete.
        """
        clock = Clock()
        net = SimNetwork(clock, random.Random(4))
        a = _node(clock, net, "a:1")
        a.start(None)
        clock.advance(1)
        b = _node(clock, net, "b:1")
        b.start("a:1")
        for _ in range(500):
            clock.advance(0.01)
        self.addCleanup(a.stop)
        self.addCleanup(b.stop)
        before = net.messages
        ds = [a.kv("put", b"key-%d" % i, [b"v"]) for i in range(200)]
        for _ in range(200):
            clock.advance(0.01)
        for d in ds:
            self.successResultOf(d)
        remote = sum(1 for i in range(200) if not any(v.owns(ringId(b"key-%d" % i)) for v in a.vnodes))
        self.assertGreater(remote, 20)
        self.assertLess(net.messages - before, remote)


class RingStateFileTests(SynchronousTestCase):
    """
    C{DATA/ring.json}: absent for a fresh directory, saved atomically,
    refused when corrupt.
    """

    def test_roundTrip(self) -> None:
        import os

        from twisted.internet.defer import succeed
        from zope.interface.verify import verifyObject

        from suite.daemon import ConfigError
        from suite.specter.chord.ringstate import RingStateFile
        from suite.specter.interfaces import IRingState

        base = self.mktemp()
        os.makedirs(base)
        state = RingStateFile(base, lambda f: succeed(f()))
        verifyObject(IRingState, state)
        self.assertIsNone(state.load())
        done: list[object] = []
        state.save({"format": 1, "peers": ["10.0.0.2:443"], "vnodes": []}).addCallback(done.append)
        self.assertEqual(done, [None])
        self.assertEqual(state.load()["peers"], ["10.0.0.2:443"])  # type: ignore[index]
        self.assertEqual(os.stat(state.path).st_mode & 0o777, 0o600)
        self.assertFalse(os.path.exists(state.path + ".tmp"))
        for bad in (b"{not json", b'{"peers": 3}', b"[]"):
            with open(state.path, "wb") as f:
                f.write(bad)
            e = self.assertRaises(ConfigError, state.load)
            self.assertIn("ring.json", str(e))
            self.assertIn("--bootstrap", str(e))


class CallerIdentityTests(SynchronousTestCase):
    """
    Calls that name their caller are checked against its certificate.
    """

    def test_callerMismatch(self) -> None:
        import os

        from suite.pki.ca import initBundle
        from suite.pki.load import loadBundle
        from suite.specter.chord.wire import callerMismatch

        base = self.mktemp()
        initBundle(os.path.join(base, "c"), ["127.0.0.1", "node1.example.com"])
        cert = loadBundle(os.path.join(base, "c")).nodeCert
        ok = [[1, "127.0.0.1:7440", 0]]
        self.assertIsNone(callerMismatch(cert, 5, "join", ok))
        self.assertIsNone(callerMismatch(cert, 5, "notify", [[1, "node1.example.com:443", 0]]))
        self.assertIsNone(callerMismatch(cert, 5, "state", [[1, "10.9.9.9:1", 0]]))
        self.assertIsNone(callerMismatch(None, 5, "join", [[1, "10.9.9.9:1", 0]]))
        for method in ("join", "notify", "handoff", "leaving", "newSuccessor"):
            problem = callerMismatch(cert, 5, method, [[1, "10.9.9.9:7440", 0]])
            assert problem is not None
            self.assertIn(method, problem)
            self.assertIn("10.9.9.9", problem)
        self.assertIsNotNone(callerMismatch(cert, 5, "join", [[1, 7, 0]]))


class RetriedJoinTests(SynchronousTestCase):
    """
    A join retried while the export for its first attempt is still running.
    """

    def test_retryDuringExport(self) -> None:
        """
        The successor is Transferring (its store exports off-thread); the
        joiner's retry is answered with the same range instead of failing
        on the membership machine, and the vnode is Active afterwards.
        """
        clock = Clock()
        net = SimNetwork(clock, random.Random(1))
        node = _node(clock, net)
        v = node.vnodes[0]
        node.founding = True
        v.start(None)  # the first vnode founds the ring: Active at once
        self.assertTrue(v.serving)
        exports: list[Deferred[Any]] = []

        def slowExport(low: int, high: int) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            exports.append(d)
            return d

        v.store.exportRange = slowExport
        joiner = VnodeRef((v.ref.id - 1000) % (1 << 64), "j:1", 0)
        first = Deferred.fromCoroutine(v.handoff.remote_join(list(joiner)))
        self.assertIs(v.membership.transferStarted(), TransferAnswer.BUSY)  # Transferring
        second = Deferred.fromCoroutine(v.handoff.remote_join(list(joiner)))
        answers: list[Any] = []
        first.addBoth(answers.append)
        second.addBoth(answers.append)
        self.assertEqual(len(exports), 2)
        for d in exports:
            d.callback([("v", b"k", b"1", 7, 9)])
        self.assertEqual(len(answers), 2)
        for a in answers:
            self.assertEqual(a[0], [("v", b"k", b"1", 7, 9)])
            self.assertEqual(a[1], list(v.ref))
        self.assertIs(v.membership.transferStarted(), TransferAnswer.STARTED)  # Active again
        v.membership.transferDone()
        self.assertEqual(v.pred, joiner)


class WireRecordTests(SynchronousTestCase):
    """
    Records on the node-to-node wire carry their versions, flat.
    """

    def test_roundTrip(self) -> None:
        """
        Records travel flat, C{[kind, key, payload, hlc, origin]}; records()
        reads them back, reads records of peers without versions with none
        (a C{None} hlc), and refuses malformed ones.
        """
        from suite.specter.chord.base import records
        from suite.specter.chord.wire import pack, unpack

        recs = [("v", b"k", b"1", 7, 2**64 - 1), ("s", b"p", None, 8, 0)]
        sent = unpack(pack(recs))
        self.assertEqual(sent, [["v", b"k", b"1", 7, 2**64 - 1], ["s", b"p", None, 8, 0]])
        self.assertEqual(records(sent), recs)
        self.assertEqual(records([["v", b"k", b"old"]]), [("v", b"k", b"old", None, 0)])
        for bad in (["v", b"k", b"1", -1, 0], ["v", b"k", b"1", "7", 0], ["x", b"k", b"1", 7, 0]):
            e = self.assertRaises(RemoteError, records, [bad])
            self.assertEqual(e.code, E.BAD_REQUEST)
