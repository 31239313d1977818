"""
A deterministic Raft cluster simulator.

N L{RaftNode}s share one L{task.Clock} and one seeded L{random.Random};
messages travel over an in-memory network that can drop, delay, duplicate,
reorder, corrupt and partition (symmetric or one-way); disks have a latency
and a crash loses every write not yet synced (or, with torn writes, keeps
a prefix of them).  Each node sees time through its own L{NodeClock}: a
rate (clock drift) over the shared clock, and process pauses during which
nothing of the node runs (timers, messages, disk completions and client
requests wait until it resumes, as under SIGSTOP or a long GC pause).  After every step the simulator
checks election safety, log matching, leader completeness and state-machine
safety, that no disk ever records two votes in one term, and that no node
acts (writes, sends, takes a term, vote or leader) before its storage has
loaded (which may take a while: C{Faults.loadDelay}); clients record a
history for the linearizability checker.

Replay a failing scenario with C{RAFT_SEED=<seed> pytest tests/raft/test_simulation.py}.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import Clock
from zope.interface import implementer

from suite.raft.groupid import MemoryGroupStore, formatGroup
from suite.raft.incarnation import MemoryIncarnations
from suite.raft.interfaces import IRaftStateMachine, IRaftStorage, IRaftTransport
from suite.raft.kv import KeyValueStateMachine, encodeCommand
from suite.raft.messages import Configuration, Entry, Message, SnapshotMeta, decodeMessage, encodeMessage
from suite.raft.node import RaftNode, RaftSettings
from suite.raft.settings import NotLeader
from suite.raft.storage import Recovered, applyAppend, applyCompaction
from tests.support.lincheck import UNKNOWN, Operation


class InvariantViolation(AssertionError):
    pass


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    minDelay: float = 0.001
    maxDelay: float = 0.005
    diskDelay: tuple[float, float] = (0.0005, 0.003)
    wire: bool = False
    corrupt: float = 0.0  # chance a message's bytes are damaged in flight (then rejected)
    torn: bool = False  # a crash keeps a random prefix of the unsynced writes
    loadDelay: tuple[float, float] = (0.0, 0.0)  # how long reading the disk back at start-up takes


class HeldCall:
    """
    A delayed call on a L{NodeClock}: due in the node's time, run only
    while the node's process is not paused.
    """

    def __init__(self, clock: NodeClock, delay: float, f: Callable[..., Any], a: Any, kw: Any) -> None:
        self.clock, self.f, self.a, self.kw = clock, f, a, kw
        self.cancelled = self.called = False
        #: Bumped by L{reset}: a due time held while the node was paused
        #: runs nothing once the call has been moved.
        self.generation = 0
        self.inner = clock.base.callLater(max(0.0, delay) / clock.rate, self._due, 0)

    def _due(self, generation: int) -> None:
        self.clock.run(lambda: self._run(generation))

    def _run(self, generation: int) -> None:
        if not (self.cancelled or self.called) and generation == self.generation:
            self.called = True
            self.f(*self.a, **self.kw)

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        if self.cancelled:
            raise AlreadyCancelled()
        if self.called:
            raise AlreadyCalled()
        self.cancelled = True
        if self.inner.active():
            self.inner.cancel()

    def reset(self, delay: float) -> None:
        """
        Make the call due C{delay} (node time) from now.
        """
        if not self.active():
            raise AlreadyCalled() if self.called else AlreadyCancelled()
        if self.inner.active():
            self.inner.cancel()
        self.generation += 1
        self.inner = self.clock.base.callLater(max(0.0, delay) / self.clock.rate, self._due, self.generation)

    def getTime(self) -> float:
        return self.clock.offset + self.inner.getTime() * self.clock.rate


class NodeClock:
    """
    One node process's clock: C{rate} x the shared clock plus an offset
    (drift and skew), and a pause switch.  While paused, everything for the
    node (timers, arriving messages, disk completions, client requests) is
    held and then run in arrival order on resume.  A crash kills it.
    """

    def __init__(self, base: Clock, rate: float = 1.0, offset: float = 0.0) -> None:
        self.base, self.rate, self.offset = base, rate, offset
        self.paused = False
        self.dead = False
        self.held: list[Callable[[], None]] = []

    def seconds(self) -> float:
        return self.offset + self.base.seconds() * self.rate

    def callLater(self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> HeldCall:
        return HeldCall(self, delay, f, a, kw)

    def getDelayedCalls(self) -> list[Any]:
        return []

    def run(self, thunk: Callable[[], None]) -> None:
        """
        Run C{thunk} in this process now, or on resume if paused.
        """
        if self.dead:
            return
        if self.paused:
            self.held.append(thunk)
        else:
            thunk()

    def pause(self, seconds: float) -> None:
        if self.paused or self.dead:
            return
        self.paused = True
        self.base.callLater(seconds, self.resume)

    def resume(self) -> None:
        self.paused = False
        while self.held and not self.paused and not self.dead:
            self.held.pop(0)()

    def kill(self) -> None:
        self.dead = True
        self.held = []


class SimNetwork:
    def __init__(self, clock: Clock, rng: random.Random, faults: Faults) -> None:
        self.clock, self.rng, self.faults = clock, rng, faults
        self.endpoints: dict[str, SimTransport] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.sent = 0
        self.corrupted = 0
        # A scripted scenario's hook: return the message to deliver (possibly
        # changed) or None to drop it.
        self.mangle: Callable[[Message], Message | None] | None = None

    def deliver(self, m: Message) -> None:
        self.sent += 1
        f = self.faults
        if (m.src, m.dst) in self.blocked or self.rng.random() < f.drop:
            return
        if self.mangle is not None:
            mangled = self.mangle(m)
            if mangled is None:
                return
            m = mangled
        if f.corrupt and self.rng.random() < f.corrupt:
            # Damaged bytes: the decoder rejects them or the channel's
            # integrity check (TLS) does; either way the message is lost.
            self.corrupted += 1
            data = bytearray(encodeMessage(m))
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
            try:
                decodeMessage(bytes(data))
            except Exception:
                pass
            return
        if f.wire:
            m = decodeMessage(encodeMessage(m))
        copies = 2 if self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            self.clock.callLater(self.rng.uniform(f.minDelay, f.maxDelay), self._arrive, m)

    def _arrive(self, m: Message) -> None:
        if (m.src, m.dst) in self.blocked:
            return
        t = self.endpoints.get(m.dst)
        if t is not None and t.up and t.receiver is not None:
            receiver = t.receiver
            t.process.run(lambda: receiver(m) if t.up else None)

    def partition(self, *groups: set[str]) -> None:
        self.blocked = set()
        for g in groups:
            for h in groups:
                if g is not h:
                    self.blocked |= {(a, b) for a in g for b in h}

    def oneWay(self, src: str, dst: str) -> None:
        self.blocked.add((src, dst))

    def heal(self) -> None:
        self.blocked = set()


@implementer(IRaftTransport)
class SimTransport:
    def __init__(self, network: SimNetwork, nodeId: str, process: NodeClock | None = None) -> None:
        self.network, self.nodeId = network, nodeId
        self.process = process if process is not None else NodeClock(network.clock)
        self.up = True
        self.receiver: Callable[[Message], None] | None = None
        #: Whether the node may send yet (its storage has loaded); what it
        #: sent before is kept in C{early}.
        self.ready: Callable[[], bool] = lambda: True
        self.early: list[str] = []
        network.endpoints[nodeId] = self

    def send(self, message: Message) -> None:
        if not self.ready():
            self.early.append(type(message).__name__)
            return
        if self.up:
            self.network.deliver(message)

    def setReceiver(self, receiver: Callable[[Message], None]) -> None:
        self.receiver = receiver

    def updatePeers(self, addresses: Mapping[str, str]) -> None:
        pass


class Disk:
    """
    The durable state of one node; survives crashes.
    """

    def __init__(self) -> None:
        self.state = Recovered()
        self.rate = 1.0  # the machine's clock rate (drift), kept across restarts
        self.offset = 0.0
        #: term -> the vote this disk recorded in it; a second, different
        #: vote in the same term goes to C{doubleVotes}.
        self.votes: dict[int, str] = {}
        self.doubleVotes: list[str] = []
        #: The node's recorded Raft group id (lost with the disk).
        self.groups = MemoryGroupStore()

    def recordHardState(self, term: int, votedFor: str | None) -> None:
        self.state.term, self.state.votedFor = term, votedFor
        if votedFor is not None:
            first = self.votes.setdefault(term, votedFor)
            if first != votedFor:
                self.doubleVotes.append(f"voted for {first} and then {votedFor} in term {term}")


@implementer(IRaftStorage)
class SimStorage:
    """
    Ordered writes that become durable (all queued ones at once: group
    commit) after a disk delay; a crash drops the queue.  Reading the disk
    back (L{load}) takes C{faults.loadDelay}; a write or sync asked for
    before then is not performed but kept in C{early} (the checker fails
    the scenario).
    """

    def __init__(self, disk: Disk, clock: NodeClock | Clock, rng: random.Random, faults: Faults) -> None:
        self.disk, self.clock, self.rng, self.faults = disk, clock, rng, faults
        self.queue: list[tuple[Callable[[], None], Deferred[None]]] = []
        self.flushCall: HeldCall | IDelayedCall | None = None
        self.latestSnapshot = disk.state.snapshot
        self.slow = 1.0
        self.dead = False
        self.loaded = False
        self.early: list[str] = []

    def _base(self) -> int:
        s = self.disk.state.snapshot
        return s[0].index if s else 0

    def _enqueue(self, op: Callable[[], None], what: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if not self.loaded:
            self.early.append(what)
            return d
        if self.dead:
            return d
        self.queue.append((op, d))
        if self.flushCall is None:
            lo, hi = self.faults.diskDelay
            self.flushCall = self.clock.callLater(self.rng.uniform(lo, hi) * self.slow, self._flush)
        return d

    def _flush(self) -> None:
        self.flushCall = None
        queue, self.queue = self.queue, []
        for op, _ in queue:
            op()
        for _, d in queue:
            d.callback(None)

    def crash(self) -> None:
        self.dead = True
        if self.flushCall is not None and self.flushCall.active():
            self.flushCall.cancel()
        self.flushCall = None
        if self.faults.torn and self.queue:
            # Writes reach the platter in order; the crash cut them off.
            for op, _ in self.queue[: self.rng.randint(0, len(self.queue))]:
                op()
        self.queue = []

    def _read(self) -> Recovered:
        self.loaded = True
        s = self.disk.state
        return Recovered(s.term, s.votedFor, s.snapshot, list(s.entries))

    def load(self) -> Deferred[Recovered]:
        lo, hi = self.faults.loadDelay
        if not hi:
            return succeed(self._read())
        d: Deferred[Recovered] = Deferred()
        self.clock.callLater(self.rng.uniform(lo, hi), lambda: d.callback(self._read()))
        return d

    def saveHardState(self, term: int, votedFor: str | None) -> Deferred[None]:
        def op() -> None:
            self.disk.recordHardState(term, votedFor)

        return self._enqueue(op, f"hard state {term}/{votedFor}")

    def appendEntries(self, truncateAfter: int | None, entries: Sequence[Entry]) -> Deferred[None]:
        entries = list(entries)
        return self._enqueue(
            lambda: applyAppend(self.disk.state.entries, truncateAfter, entries, self._base()),
            f"append after {truncateAfter} of {len(entries)}",
        )

    def saveSnapshot(self, meta: SnapshotMeta, data: bytes) -> Deferred[None]:
        self.latestSnapshot = (meta, data)

        def op() -> None:
            s = self.disk.state
            s.entries = applyCompaction(s.entries, self._base(), meta)
            s.snapshot = (meta, data)

        return self._enqueue(op, f"snapshot at {meta.index}")

    def readSnapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        return self.latestSnapshot

    def sync(self) -> Deferred[None]:
        if not self.loaded:
            return self._enqueue(lambda: None, "sync")
        if not self.queue:
            return succeed(None)
        return self._enqueue(lambda: None, "sync")

    def close(self) -> Deferred[None]:
        return succeed(None)


class CheckedKV(KeyValueStateMachine):
    """
    The reference KV, reporting every application to the checker.
    """

    def __init__(self, sim: Simulation, nodeId: str) -> None:
        super().__init__()
        self.sim, self.nodeId = sim, nodeId
        self.lastIndex = 0

    def apply(self, index: int, command: bytes) -> object:
        self.sim.checkApply(self.nodeId, index, command, self.lastIndex)
        self.lastIndex = index
        return super().apply(index, command)

    def restore(self, data: bytes) -> None:
        super().restore(data)
        self.lastIndex = self.appliedIndex


@implementer(IRaftStateMachine)
class Recorder:
    """
    A state machine remembering every applied command in order (snapshots
    included), for the multi-group simulations.
    """

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def apply(self, index: int, command: bytes) -> object:
        self.applied.append(command)
        return len(self.applied)

    def snapshot(self) -> bytes:
        return b"\n".join(self.applied)

    def restore(self, data: bytes) -> None:
        self.applied = data.split(b"\n") if data else []


def proposeRecorded(leader: RaftNode, command: bytes, acked: list[bytes]) -> None:
    """
    Propose C{command} to C{leader}; append it to C{acked} once it is
    committed (a proposal that fails, e.g. with L{NotLeader}, is not acked).
    """

    def ok(result: object) -> None:
        acked.append(command)

    leader.propose(command).addCallbacks(ok, lambda f: f.trap(NotLeader, Exception) and None)


def checkReplicasAgree(seed: int, group: str, logs: Sequence[list[bytes]]) -> None:
    """
    Raise if two replicas of C{group} applied different commands: each
    replica's applied list must be a prefix of the longest.
    """
    if not logs:
        return
    longest = max(logs, key=len)
    for applied in logs:
        if applied != longest[: len(applied)]:
            raise AssertionError(f"seed {seed}: replicas of {group} diverge")


@dataclass
class SimNode:
    id: str
    disk: Disk
    storage: SimStorage | None = None
    transport: SimTransport | None = None
    node: RaftNode | None = None
    kv: CheckedKV | None = None
    clock: NodeClock | None = None
    checkedIndex: int = 0
    checkedTerm: int = 0


@dataclass
class Simulation:
    """
    One seeded scenario.
    """

    seed: int
    size: int = 3
    faults: Faults = field(default_factory=Faults)
    settings: RaftSettings = field(default_factory=RaftSettings)
    family: str = "nemesis"
    #: Give every node a storage incarnation (needed to lose disks, L{wipe}).
    incarnations: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.incarnationStore = MemoryIncarnations(self.rng) if self.incarnations else None
        #: Nodes whose disk was lost and whose new incarnation is not recorded yet.
        self.unrecorded: set[str] = set()
        self.clock = Clock()
        self.network = SimNetwork(self.clock, self.rng, self.faults)
        ids = [f"n{i}" for i in range(1, self.size + 1)]
        self.bootstrap = Configuration(frozenset(ids))
        self.nodes: dict[str, SimNode] = {}
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, Entry] = {}
        self.appliedCommands: dict[int, bytes] = {}
        self.seen: dict[tuple[int, int], tuple[Entry, int | None]] = {}
        self.history: list[Operation] = []
        self.knownLeaderTerms: set[tuple[str, int]] = set()
        self.clients: list[SimClient] = []
        #: The group id the nodes bound (one group: at most one id).
        self.groupId = 0
        for i in ids:
            self.nodes[i] = SimNode(i, Disk())
            self.boot(i)

    # -- lifecycle --------------------------------------------------------

    def boot(self, nodeId: str, bootstrap: Configuration | None = None) -> None:
        s = self.nodes[nodeId]
        s.clock = NodeClock(self.clock, s.disk.rate, s.disk.offset)
        s.storage = SimStorage(s.disk, s.clock, self.rng, self.faults)
        s.transport = SimTransport(self.network, nodeId, s.clock)
        storage = s.storage
        s.transport.ready = lambda: storage.loaded
        s.kv = CheckedKV(self, nodeId)
        s.node = RaftNode(
            nodeId,
            cast(IReactorTime, s.clock),  # the part of a reactor RaftNode uses
            s.storage,
            s.transport,
            s.kv,
            bootstrap if bootstrap is not None else self.bootstrap,
            self.settings,
            random.Random(self.rng.random()),
            self.incarnationStore.claim(nodeId) if self.incarnationStore is not None else None,
            s.disk.groups,
        )
        s.checkedIndex = s.checkedTerm = 0
        d = Deferred.fromCoroutine(s.node.start())
        d.addErrback(lambda f: self.fail(f"node {nodeId} failed to start: {f.getTraceback()}"))

    def addNode(self, nodeId: str) -> None:
        self.nodes[nodeId] = SimNode(nodeId, Disk())
        self.boot(nodeId, Configuration(frozenset()))

    def crash(self, nodeId: str) -> None:
        s = self.nodes[nodeId]
        if s.node is None:
            return
        assert s.storage is not None and s.transport is not None and s.clock is not None
        s.transport.up = False
        s.storage.crash()
        s.clock.kill()
        s.node.stop()
        s.node = None

    def wipe(self, nodeId: str) -> None:
        """
        Crash C{nodeId} and lose its disk: it restarts (on L{restart}) with
        empty storage under the same id.
        """
        assert self.incarnationStore is not None, "losing a disk needs incarnations=True"
        self.crash(nodeId)
        old = self.nodes[nodeId].disk
        disk = Disk()
        disk.rate, disk.offset = old.rate, old.offset
        self.nodes[nodeId].disk = disk
        self.incarnationStore.forget(nodeId)
        self.unrecorded.add(nodeId)

    def pause(self, nodeId: str, seconds: float) -> None:
        """
        Freeze C{nodeId}'s process for C{seconds} (its clock keeps running).
        """
        s = self.nodes[nodeId]
        if s.node is not None and s.clock is not None:
            s.clock.pause(seconds)

    def drift(self, nodeId: str, rate: float) -> None:
        """
        Make C{nodeId}'s clock run at C{rate} x real time from now on.
        """
        s = self.nodes[nodeId]
        now = self.clock.seconds()
        local = s.disk.offset + now * s.disk.rate
        s.disk.rate, s.disk.offset = rate, local - now * rate
        if s.clock is not None:
            s.clock.rate, s.clock.offset = s.disk.rate, s.disk.offset

    def restart(self, nodeId: str) -> None:
        if self.nodes[nodeId].node is None:
            self.boot(nodeId)

    def live(self) -> list[RaftNode]:
        return [s.node for s in self.nodes.values() if s.node is not None]

    def leader(self) -> RaftNode | None:
        best = None
        for n in self.live():
            if n.leader is not None and (best is None or n.term > best.term):
                best = n
        return best

    # -- checks -----------------------------------------------------------

    def fail(self, what: str) -> None:
        raise InvariantViolation(
            f"seed {self.seed}: {what} at t={self.clock.seconds():.3f}\n"
            f"replay: RAFT_FAMILY={self.family} RAFT_SEED={self.seed}"
            " .venv/bin/python -m pytest tests/raft/test_simulation.py"
        )

    def checkApply(self, nodeId: str, index: int, command: bytes, last: int) -> None:
        if index <= last:
            self.fail(f"{nodeId} applied index {index} after {last}")
        known = self.appliedCommands.setdefault(index, command)
        if known != command:
            self.fail(f"{nodeId} applied a different command at {index}")

    def check(self) -> None:
        for s in self.nodes.values():
            n = s.node
            if n is None:
                continue
            self.checkLoading(s, n)
            if n.groupId:
                if not self.groupId:
                    self.groupId = n.groupId
                elif n.groupId != self.groupId:
                    self.fail(
                        f"{s.id} bound group {formatGroup(n.groupId)}, others {formatGroup(self.groupId)}"
                    )
            if s.id in self.unrecorded and n.incarnation is not None and n.votesIntact():
                self.unrecorded.discard(s.id)
            if n.leader is not None:
                other = self.leaders.setdefault(n.term, n.id)
                if other != n.id:
                    self.fail(f"two leaders in term {n.term}: {other} and {n.id}")
                if (n.id, n.term) not in self.knownLeaderTerms:
                    self.knownLeaderTerms.add((n.id, n.term))
                    self.checkCompleteness(n)
            self.checkLog(s, n)

    def checkLoading(self, s: SimNode, n: RaftNode) -> None:
        """
        Nothing from the network reaches a node before its log is loaded:
        no write, no message, no term, vote or leader; and no disk holds
        two votes in a term.
        """
        if s.disk.doubleVotes:
            self.fail(f"{s.id} {s.disk.doubleVotes[0]}")
        assert s.storage is not None and s.transport is not None
        if s.storage.early or s.transport.early:
            self.fail(
                f"{s.id} acted before its log was loaded: wrote {s.storage.early[:3]}, "
                f"sent {s.transport.early[:3]}"
            )
        if not s.storage.loaded and (n.term or n.votedFor or n.leaderId or n.log.lastIndex()):
            self.fail(f"{s.id} took term {n.term}, vote {n.votedFor}, leader {n.leaderId} before loading")

    def checkLog(self, s: SimNode, n: RaftNode) -> None:
        lg = n.log
        if lg.term(s.checkedIndex) != s.checkedTerm or s.checkedIndex < lg.snapshotIndex:
            s.checkedIndex = lg.snapshotIndex
            s.checkedTerm = lg.snapshotTerm
        i = s.checkedIndex + 1
        last = lg.lastIndex()
        while i <= last:
            e = lg.entry(i)
            prev = lg.term(i - 1)
            known = self.seen.setdefault((e.index, e.term), (e, prev))
            if known != (e, prev):
                self.fail(f"log matching violated at {e.index} term {e.term} on {n.id}")
            i += 1
        s.checkedIndex, s.checkedTerm = last, lg.lastTerm()
        for j in range(max(lg.snapshotIndex + 1, 1), n.commitIndex + 1):
            if j in self.committed:
                continue
            e = lg.entry(j)
            self.committed[j] = e
        if n.commitIndex > lg.snapshotIndex:
            j = n.commitIndex
            if self.committed.get(j) != lg.entry(j):
                self.fail(f"{n.id} committed a different entry at {j}")

    def checkCompleteness(self, n: RaftNode) -> None:
        for index, e in self.committed.items():
            if index <= n.log.snapshotIndex:
                continue
            if index > n.log.lastIndex() or n.log.entry(index) != e:
                self.fail(f"leader {n.id} of term {n.term} lacks committed entry {index}")

    # -- running ----------------------------------------------------------

    def run(self, seconds: float, step: float = 0.002) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(step)
            self.check()

    def runUntil(self, predicate: Callable[[], bool], seconds: float, step: float = 0.002) -> bool:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            if predicate():
                return True
            self.clock.advance(step)
            self.check()
        return predicate()


class SimClient:
    """
    A KV client with a session: retries each command with the same
    sequence number until it succeeds or gives up; records the history.
    Operations are drawn from C{ops}; C{cas} expects the last value this
    client saw for the key.  A C{pinned} client always asks the same node
    (a reader stuck on one replica).
    """

    OPS = ("put", "append", "get", "get", "cas", "delete")

    def __init__(
        self,
        sim: Simulation,
        name: str,
        keys: list[str],
        timeout: float = 0.5,
        ops: Sequence[str] = OPS,
        pinned: str | None = None,
        maxBackoff: float = 0.2,
    ) -> None:
        self.sim, self.name, self.keys, self.timeout = sim, name, keys, timeout
        self.ops, self.pinned, self.maxBackoff = tuple(ops), pinned, maxBackoff
        self.seq = 0
        self.target = pinned or sim.rng.choice(sorted(sim.nodes))
        self.counter = 0
        self.running = True
        self.done = 0
        self.seen: dict[str, Any] = {}

    def start(self) -> None:
        self.sim.clock.callLater(self.sim.rng.uniform(0, 0.05), self.next)

    def next(self) -> None:
        if not self.running:
            return
        rng = self.sim.rng
        key = rng.choice(self.keys)
        kind = rng.choice(self.ops)
        self.counter += 1
        value: Any = f"{self.name}.{self.counter};" if kind in ("put", "append") else None
        if kind == "cas":
            value = [self.seen.get(key), f"{self.name}.{self.counter};"]
        op = Operation(self.name, key, kind, value, self.sim.clock.seconds())
        self.sim.history.append(op)
        self.seq += 1
        self.attempt(op, self.seq, 0)

    def attempt(self, op: Operation, seq: int, tries: int) -> None:
        sim = self.sim
        if not self.running:
            if op.op == "get":
                sim.history.remove(op)
            return
        if self.pinned is not None:
            self.target = self.pinned
        holder = sim.nodes.get(self.target)
        node = holder.node if holder else None
        finished = [False]

        def retry(hint: str | None) -> None:
            if finished[0]:
                return
            finished[0] = True
            if timer.active():
                timer.cancel()
            self.target = hint if hint in sim.nodes else sim.rng.choice(sorted(sim.nodes))
            sim.clock.callLater(
                min(self.maxBackoff, 0.01 * 2 ** min(tries, 5)), self.attempt, op, seq, tries + 1
            )

        def ok(result: Any) -> None:
            if finished[0]:
                return
            finished[0] = True
            if timer.active():
                timer.cancel()
            op.ret = sim.clock.seconds()
            op.result = result
            self.done += 1
            if op.op in ("get", "append"):
                self.seen[op.key] = result
            elif op.op == "put":
                self.seen[op.key] = op.value
            elif op.op == "delete":
                self.seen[op.key] = None
            elif op.op == "cas" and result is True:
                self.seen[op.key] = op.value[1]
            sim.clock.callLater(sim.rng.uniform(0, 0.02), self.next)

        def bad(f: Any) -> None:
            retry(getattr(f.value, "leader", None))

        timer = sim.clock.callLater(self.timeout, retry, None)
        if node is None or holder is None or holder.clock is None:
            retry(None)
            return
        kv = holder.kv

        def read(_: int) -> Any:
            if holder.kv is not kv or kv is None:
                raise RuntimeError("node restarted")
            return kv.get(op.key)

        def request() -> None:
            # Runs inside the node's process (later, if it is paused).
            if op.op == "get":
                d = node.readIndex().addCallback(read)
            else:
                d = node.propose(encodeCommand(op.op, op.key, op.value), client=self.name, seq=seq)
            d.addCallbacks(ok, bad)

        holder.clock.run(request)


__all__ = [
    "Simulation",
    "SimClient",
    "Faults",
    "InvariantViolation",
    "NodeClock",
    "UNKNOWN",
    "Recorder",
    "proposeRecorded",
    "checkReplicasAgree",
]
