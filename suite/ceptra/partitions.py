"""
The partitions a CEPtra node hosts: one Raft group per partition, all over
one shared multi-Raft transport (L{suite.raft.multi}) on C{CEPTRA_RAFT_BIND}.

Raft node ids are SPIFFE IDs.  The routing feed names, for each node, its
Raft address and SPIFFE ID, and for each partition its replicas; this node
finds itself by C{CEPTRA_NODE_SPIFFE}.  A peer is accepted only with a
certificate from the trust bundle carrying the SPIFFE ID the routing table
gives for that address (outbound: checked in the TLS handshake and again by
the link; inbound: the SPIFFE ID must be a known node, and each message's
sender must be that ID).

Placements are taken from the feed in increasing epoch order only
(L{suite.ceptra.placement.PlacementLedger}).  Reconciliation (every
C{interval} seconds, and whenever the feed changes):

  - a partition listed for this node gets a Raft group: its records in
    the node's shared WAL in C{WAL_DIR} (one fsync per batch across
    groups, L{suite.raft.wal.SharedWAL}; a single-group WAL found in
    C{WAL_DIR/<partition>} is taken over), the storage's incarnation in
    C{WAL_DIR/<partition>} (L{suite.raft.incarnation}), snapshots under
    C{SNAPSHOT_DIR/<partition>},
    the partition's engine (L{suite.ceptra.machine.PartitionMachine}) as
    state machine, and the placement's replicas as bootstrap voters;
  - the leader of a hosted partition moves the group's configuration toward
    the applied placement one single-server change at a time, each
    recording the placement's epoch in the configuration: missing replicas
    are added (as learners, promoted once caught up), extra members
    removed; a leader that is itself to leave hands leadership to a
    remaining voter.  A leader whose applied epoch is older than the
    configuration's changes nothing, so no epoch transition is applied
    twice or undone, across restarts and leader changes;
  - a partition no longer listed keeps running, taking part in its group
    (voting, replicating, answering the leader), until a configuration
    without this node is committed (the leader tells a removed replica so),
    then stops; the grace period (C{retireGrace} seconds) stops only a
    replica whose own latest configuration already excludes it (it missed
    the leader's word) or whose log is empty, or every replica of a
    partition dropped from the routing table (the replica's lifecycle
    machine, L{suite.ceptra.lifecycle});
  - a replica found on disk at start-up (its incarnation file in
    C{WAL_DIR/<partition>}) of a partition still routed but placed
    elsewhere is started too, and retires as above: a node restarted in the
    middle of a move still takes part until its group has removed it;
  - a replica stopped because a configuration without this node committed
    is retired: with C{dataDir}, its data is moved to
    C{DATA_DIR/retired/} (L{suite.ceptra.retire}; copies older than
    C{retiredKeep} seconds are deleted), and it is never started again
    (its marker; a retirement cut short is finished at start-up).  Until
    its copy is deleted it is reported as retired (C{retiredCopies}: status
    pages, C{ceptra_partition_retired}), never as a replica not started.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import clientFromString, wrapClientTLS
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.ceptra.interfaces import IRaftStatus
from suite.ceptra.lifecycle import DESCRIBED_STATES, LifecycleCore, PartitionLifecycle
from suite.ceptra.machine import PartitionMachine
from suite.ceptra.placement import PlacementLedger
from suite.ceptra.retire import (
    RETIRED_DIR,
    marker,
    markRetired,
    moveRetired,
    parseName,
    pendingRetirements,
    purge,
    retiredCopies,
)
from suite.ceptra.routing import Routing
from suite.netutil import isIPAddress
from suite.raft.incarnation import FILENAME as INCARNATION_FILE
from suite.raft.incarnation import Claim, fileClaim
from suite.raft.memberchange import ChangeInputs, newMembershipChange
from suite.raft.messages import Configuration
from suite.raft.multi import DialPolicy, GroupTransport, MultiRaftTransport
from suite.raft.node import RaftNode
from suite.raft.settings import NotLeader, RaftSettings
from suite.raft.snapshotter import Runner, SnapshotInputs, newSnapshotter
from suite.raft.wal import SharedWAL

__all__ = ["NotHosted", "Partition", "PartitionManager"]

log = Logger(namespace="ceptra.partitions")

#: The node's own (synchronous) snapshot threshold, as a multiple of the
#: snapshotter's: reached only if encodings in the thread fall behind.
SNAPSHOT_BACKSTOP = 4


@dataclass
class RetiredCopy:
    """
    The data of a replica retired on this node, kept under
    C{DATA_DIR/retired/} until it is deleted (for status pages).
    """

    #: the placement epoch of the configuration that removed the replica
    epoch: int
    #: when it retired (unix time, from the copy's name)
    at: int
    #: where its data goes (or went)
    path: str
    #: whether its data is moved there yet
    moved: bool


class NotHosted(Exception):
    """
    This node has no replica of the partition.
    """


@dataclass(eq=False)
class Partition:
    """
    One hosted partition: its Raft node, storage and engine; its lifecycle
    (Starting, Running, Retiring, Failed, Stopped) is an automat machine
    (L{suite.ceptra.lifecycle}), and so is the membership change its
    leader has in flight (L{suite.raft.memberchange}).
    """

    pid: str
    node: RaftNode
    storage: Any
    machine: PartitionMachine
    transport: GroupTransport
    manager: PartitionManager
    closing: Deferred[Any] | None = None
    #: the snapshots encoded off the reactor thread (L{suite.raft.snapshotter})
    snapshots: SnapshotInputs | None = None

    def __post_init__(self) -> None:
        self.lifecycle = PartitionLifecycle(LifecycleCore(self))
        #: the membership change in flight, one at a time
        self.change: ChangeInputs = newMembershipChange(self._changeEnded, self._changeStarted)

    def _changeStarted(self, what: str) -> None:
        log.info("partition {pid}: membership change: {what}", pid=self.pid, what=what)

    def _changeEnded(self, what: str, failure: Failure | None) -> None:
        if failure is not None:
            log.info(
                "partition {pid}: {what} did not complete: {why}",
                pid=self.pid,
                what=what,
                why=failure.getErrorMessage(),
            )

    # ReplicaActions (the lifecycle's outputs)

    def abandon(self) -> None:
        self.node.stop()

    def retire(self, epoch: int) -> None:
        self.shutdown()
        self.manager.reclaim(self, epoch)

    def shutdown(self) -> None:
        self.node.stop()
        self.manager.multi.dropGroup(self.pid)
        if self.manager.partitions.get(self.pid) is self:
            del self.manager.partitions[self.pid]
        self.closing = self.storage.close()
        self.closing.addErrback(
            lambda f: log.warn("closing the WAL of {pid}: {why}", pid=self.pid, why=f.getErrorMessage())
        )

    # views

    def serving(self) -> bool:
        return bool(self.lifecycle.serving())

    def committedIndex(self) -> int:
        """
        How far the group has committed, as this replica knows it.
        """
        return max(self.node.commitIndex, self.transport.leaderCommit)

    def matchIndex(self) -> int:
        """
        How far this replica's log is known to match the leader's.
        """
        return self.node.commitIndex


def spiffeIdentity(transport: Any) -> list[str]:
    from suite.pki.peer import peerIdentity
    from suite.pki.verify import VerificationError

    try:
        return list(peerIdentity(transport).spiffeIds)
    except VerificationError:  # no certificate, or unparsable names
        return []


@implementer(IRaftStatus)
class PartitionManager(Service):
    """
    Start, stop and reconfigure this node's partitions from the routing feed.

    @param routing: returns the current L{Routing} (from the placement feed).
    @param bundle: the node identity for mTLS (C{None}: plain TCP, tests only).
    @param connect: override the dialler (tests): C{connect(address, factory,
        timeout) -> Deferred}.
    @param storageFactory: override the storage (tests): C{(walDir,
        snapshotDir) -> IRaftStorage}.
    @param rng: seeds the election timers of the partitions' nodes (tests).
    @param ledger: the applied placements (default: in memory only).
    @param incarnations: override the storage incarnations (tests):
        C{incarnations(walDir) -> Claim}.
    @param snapshotRunner: runs a snapshot's encoding off the reactor
        thread (default: the reactor's thread pool; a reactor without
        threads, as in tests, encodes at once).
    @param holdsReplica: override (tests) whether this node's storage holds
        a replica of a partition (default: its incarnation file exists, and
        no retirement marker).
    @param dataDir: where retired replicas' data goes (C{retired/});
        C{None}: a retired replica's data is left in place (simulations).
    @param retiredKeep: how long a retired replica's data is kept, in
        seconds.
    @param fileRunner: runs blocking file work (default: the reactor's
        thread pool; a reactor without threads runs it at once).
    """

    def __init__(
        self,
        spiffe: str,
        reactor: Any,
        routing: Callable[[], Routing],
        walDir: str,
        snapshotDir: str,
        *,
        bundle: Any = None,
        dial: DialPolicy | None = None,
        settings: RaftSettings | None = None,
        onResults: Callable[[str, int, list[dict[str, Any]]], None] | None = None,
        interval: float = 0.2,
        retireGrace: float = 30.0,
        maxLag: int = 1000,
        connect: Callable[[str, Factory, float], Any] | None = None,
        storageFactory: Callable[[str, str], Any] | None = None,
        registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
        ledger: PlacementLedger | None = None,
        incarnations: Callable[[str], Claim] | None = None,
        snapshotRunner: Runner | None = None,
        holdsReplica: Callable[[str], bool] | None = None,
        dataDir: str | None = None,
        retiredKeep: float = 86400.0,
        fileRunner: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self.spiffe = spiffe
        self.rng = rng or random.Random()
        self.reactor = reactor
        self.routingSource = routing
        self.walDir, self.snapshotDir = walDir, snapshotDir
        self.bundle = bundle
        self.settings = settings or RaftSettings()
        self.onResults = onResults
        # Asked before each applied entry: does anyone read its results?
        self.wantResults: Callable[[], bool] | None = None
        self.interval = interval
        self.retireGrace = retireGrace
        self.maxLag = maxLag
        self.wal: SharedWAL | None = None
        self.storageFactory = storageFactory or self._groupStorage
        self.incarnations = incarnations or (lambda w: fileClaim(w, reactor))
        self.snapshotRunner = snapshotRunner or self._encodeInThread
        self.holdsReplica = holdsReplica or self._holdsReplica
        self.dataDir = dataDir
        self.retiredKeep = retiredKeep
        self.fileRunner = fileRunner or self._inThread
        #: partition -> its retirement in progress (data being moved)
        self.reclaiming: dict[str, Deferred[None]] = {}
        #: partitions whose retired replica could not be moved in this run
        #: (never started: its move is tried again at the next start)
        self._retireFailed: set[str] = set()
        self._lastPurge: float | None = None
        #: partition -> its latest retired copy kept here, until deleted
        self.retiredCopies: dict[str, RetiredCopy] = {}
        #: partitions started, or looked for on disk, in this run
        self._looked: set[str] = set()
        self.ledger = ledger or PlacementLedger()
        self._feedRouting: Routing | None = None
        self._peersFrom: Any = None
        #: (partition, epoch) pairs already logged as behind the group
        self._behind: set[tuple[str, int]] = set()
        self.multi = MultiRaftTransport(
            spiffe,
            reactor,
            connect or self._connect,
            {},
            identify=self._identify,
            secure=bundle is not None,
            dial=dial,
        )
        self.partitions: dict[str, Partition] = {}
        self.routing = Routing()
        self._loop: LoopingCall | None = None
        if registry is not None:
            registry.register(_PartitionCollector(self))

    def _encodeInThread(self, encode: Callable[[], bytes]) -> Deferred[bytes]:
        if IReactorThreads.providedBy(self.reactor):
            return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), encode)
        return succeed(encode())

    def _inThread(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if IReactorThreads.providedBy(self.reactor):
            return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)
        try:
            return succeed(fn(*args))
        except Exception:
            return fail()

    def _holdsReplica(self, pid: str) -> bool:
        # A few stats per partition, once per run.
        return os.path.exists(os.path.join(self.walDir, pid, INCARNATION_FILE)) and (
            marker(self.walDir, pid) is None
        )

    # -- retired replicas -------------------------------------------------

    def reclaim(self, part: Partition, epoch: int) -> None:
        """
        C{part} left its group for good (a configuration of placement
        C{epoch} without this node committed) and is shut down: move its
        data to C{DATA_DIR/retired/}, once its storage is closed.
        """
        if self.dataDir is None or part.pid in self.reclaiming:
            return
        pid = part.pid
        now = self.reactor.seconds()
        self._noteRetired(f"{pid}-{epoch}-{int(now)}", moved=False)

        async def reclaiming() -> None:
            if part.closing is not None:
                await part.closing
            name = await self.fileRunner(markRetired, self.walDir, pid, epoch, now)
            self._noteRetired(name, moved=False)
            await self._finish(pid, name)

        self._track(pid, Deferred.fromCoroutine(reclaiming()))

    def _track(self, pid: str, d: Deferred[None]) -> None:
        self.reclaiming[pid] = d

        def failed(f: Failure) -> None:
            self._retireFailed.add(pid)
            log.warn(
                "partition {pid}: moving the retired replica's data failed: {why}; "
                "it is not started again, and moved at the next start",
                pid=pid,
                why=f.getErrorMessage(),
            )

        def done(_: object) -> None:
            if self.reclaiming.get(pid) is d:
                del self.reclaiming[pid]

        d.addErrback(failed).addBoth(done)

    async def _finish(self, pid: str, name: str) -> None:
        """
        Forget C{pid}'s records in the shared WAL, then move its
        directories (both steps idempotent: a retirement cut short is
        finished the same way).
        """
        assert self.dataDir is not None
        if self.storageFactory == self._groupStorage:
            if self.wal is None:
                self.wal = SharedWAL(self.walDir, self.reactor)
            await self.wal.load()
            await self.wal.drop(pid)
        where = await self.fileRunner(moveRetired, self.dataDir, self.walDir, self.snapshotDir, pid, name)
        self._noteRetired(name, moved=True)
        log.info("partition {pid} replica retired; data moved to {where}", pid=pid, where=where)

    def _noteRetired(self, name: str, moved: bool) -> None:
        """
        Remember the retired copy C{name} for status pages, unless a later
        copy of its partition is known.
        """
        parsed = parseName(name)
        if parsed is None or self.dataDir is None:
            return
        pid, epoch, at = parsed
        known = self.retiredCopies.get(pid)
        if known is None or known.at <= at:
            self.retiredCopies[pid] = RetiredCopy(
                epoch, at, os.path.join(self.dataDir, RETIRED_DIR, name), moved
            )

    def _resumeRetirements(self) -> None:
        """
        At start-up, before any replica starts: finish the retirements a
        crash cut short (one directory listing, and a stat per partition).
        """
        if self.dataDir is None:
            return
        try:
            for name, _ in retiredCopies(self.dataDir):
                self._noteRetired(name, moved=True)
        except OSError as e:
            log.warn("listing retired replicas in {dir}: {why}", dir=self.dataDir, why=e)
        try:
            pending = pendingRetirements(self.walDir)
        except OSError as e:
            log.warn("looking for retired replicas in {dir}: {why}", dir=self.walDir, why=e)
            return
        for pid, name in pending:
            self._noteRetired(name, moved=False)
            self._resume(pid, name)

    def _resume(self, pid: str, name: str) -> None:
        log.info("partition {pid}: finishing the retirement of its replica", pid=pid)
        self._track(pid, Deferred.fromCoroutine(self._finish(pid, name)))

    def _retired(self, pid: str) -> bool:
        """
        Whether C{pid}'s replica here is retired (its data not moved yet):
        then it is not started; its move is resumed, once per run.
        """
        if self.dataDir is None or pid in self.reclaiming:
            return pid in self.reclaiming
        if pid in self._retireFailed:
            return True
        found = marker(self.walDir, pid)
        if found is None:
            return False
        self._resume(pid, str(found["name"]))
        return True

    def _purgeRetired(self) -> None:
        """
        Delete retired copies older than C{retiredKeep} (at start-up, then
        at most once a minute).
        """
        now = self.reactor.seconds()
        if self.dataDir is None or (self._lastPurge is not None and now - self._lastPurge < 60.0):
            return
        self._lastPurge = now

        def purged(paths: list[str]) -> None:
            gone = set(paths)
            for pid, copy in list(self.retiredCopies.items()):
                if copy.path in gone:
                    del self.retiredCopies[pid]
            for path in paths:
                log.info(
                    "deleted retired replica data {path} (older than {keep} s)",
                    path=path,
                    keep=self.retiredKeep,
                )

        self.fileRunner(purge, self.dataDir, self.retiredKeep, now).addCallbacks(
            purged, lambda f: log.warn("deleting old retired replica data: {why}", why=f.getErrorMessage())
        )

    def _groupStorage(self, walDir: str, snapshotDir: str) -> Any:
        if self.wal is None:
            self.wal = SharedWAL(self.walDir, self.reactor)
        return self.wal.group(os.path.basename(walDir), snapshotDir, importFrom=walDir)

    # -- transport --------------------------------------------------------

    def _identify(self, transport: Any) -> str | None:
        known = self.multi.knownNodes()
        ids = spiffeIdentity(transport)
        for spiffe in ids:
            if spiffe in known:
                return spiffe
        return ids[0] if ids else None

    def _connect(self, address: str, factory: Factory, timeout: float) -> Deferred[Any]:
        host, port = address.rsplit(":", 1)
        host = host.strip("[]")
        endpoint: Any = clientFromString(
            self.reactor, f"tcp:host={host}:port={port}:timeout={max(1, round(timeout))}"
        )
        if self.bundle is not None:
            from suite.pki.tls import clientContextFactory

            expected = self.routing.nodeByRaftAddress(address)
            if expected is None or not expected.spiffe:
                return fail(ConnectionError(f"no node with a SPIFFE ID listed at {address}"))
            if isIPAddress(host):
                creator = clientContextFactory(self.bundle, ipAddress=host, spiffeId=expected.spiffe)
            else:
                creator = clientContextFactory(self.bundle, hostname=host, spiffeId=expected.spiffe)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint.connect(factory)  # type: ignore[no-any-return]

    def serverFactory(self) -> Factory:
        """
        The factory of the Raft listener (shared by every partition).
        """
        return self.multi.serverFactory()

    # -- service ----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._resumeRetirements()
        self._loop = LoopingCall(self.reconcile)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: log.failure("partition reconciliation failed", f)
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        parts = list(self.partitions.values())
        for part in parts:
            part.lifecycle.stop()
        self.partitions.clear()
        self.multi.close()

        async def closing() -> None:
            for part in parts:
                if part.closing is not None:
                    await part.closing
            for reclaim in list(self.reclaiming.values()):
                await reclaim
            if self.wal is not None:
                await self.wal.close()

        return Deferred.fromCoroutine(closing())

    # -- reconciliation ---------------------------------------------------

    def voters(self, routing: Routing, pid: str) -> dict[str, str]:
        """
        SPIFFE ID -> Raft address of the placement's replicas of C{pid}.
        """
        out = {}
        for name in routing.partitions.get(pid, ()):
            info = routing.nodes.get(name)
            if info is not None and info.spiffe:
                out[info.spiffe] = info.raft
        return out

    def currentRouting(self) -> Routing:
        """
        The routing table with the applied placements (the feed's latest
        document, taken through the ledger when it changes).
        """
        feed = self.routingSource()
        if feed is not self._feedRouting:
            self._feedRouting = feed
            self.routing = self.ledger.update(feed)
        return self.routing

    def reconcile(self) -> None:
        if not self.running:
            return
        routing = self.currentRouting()
        if routing.nodes != self._peersFrom:
            self._peersFrom = routing.nodes
            self.multi.setPeers({i.spiffe: i.raft for i in routing.nodes.values() if i.spiffe and i.raft})
        me = routing.nodeBySpiffe(self.spiffe)
        hosted = set(routing.hosted(me)) if me is not None else set()
        self._purgeRetired()
        for pid in sorted(hosted - set(self.partitions) - set(self.reclaiming)):
            # (placed here again while its retired replica's data is being
            # moved: started afresh once that is done)
            self._start(pid, routing)
        for pid in sorted(
            set(routing.partitions) - hosted - set(self.partitions) - self._looked - set(self.reclaiming)
        ):
            # A replica left on disk by an earlier run, of a partition
            # placed elsewhere now: its group may still count on it (the
            # node stopped during a move), so it takes part again until a
            # configuration without it is committed.
            self._looked.add(pid)
            if self.holdsReplica(pid):
                self._start(pid, routing, placed=False)
        now = self.reactor.seconds()
        for pid, part in sorted(self.partitions.items()):
            if pid in hosted:
                part.lifecycle.placed()
            elif pid not in routing.partitions:
                part.lifecycle.dropped(now, self.retireGrace)
            else:
                self._unplaced(part, now)
            if part.serving() and part.node.leader is not None and pid in routing.partitions:
                self._driveMembership(part, self.voters(routing, pid), routing.epochs.get(pid, 0))

    def _unplaced(self, part: Partition, now: float) -> None:
        """
        Tell C{part}'s lifecycle, placed elsewhere now, where this node
        stands in its group: a member of the latest configuration it holds
        (it keeps taking part), excluded by it (it may stop once that
        configuration is known committed), or removed by a committed one.
        """
        node = part.node
        if node.loading:
            part.lifecycle.unplaced(now)
            return
        latest = self.spiffe in node.configs.latest().members()
        current = node.configs.at(node.commitIndex)
        if not latest and self.spiffe not in current.members():
            part.lifecycle.removed(current.epoch)
        elif not latest or node.log.lastIndex() == 0:
            # An empty log: this replica never held anything of the group's
            # (its configuration is only the placement's bootstrap).
            part.lifecycle.excluded(now, self.retireGrace)
        else:
            part.lifecycle.unplaced(now)

    def _start(self, pid: str, routing: Routing, placed: bool = True) -> None:
        voters = self.voters(routing, pid)
        if placed and self.spiffe not in voters:
            return
        if self._retired(pid):
            # (placed here again: started afresh once the data is moved)
            return
        self._looked.add(pid)
        walDir = os.path.join(self.walDir, pid)
        storage = self.storageFactory(walDir, os.path.join(self.snapshotDir, pid))
        machine = PartitionMachine(pid, onResults=self._results, wantResults=self._wantResults)
        # Until the node has loaded its WAL, its role machine (Loading)
        # drops what the group's transport delivers; the senders resend.
        transport = self.multi.group(pid)
        bootstrap = Configuration(
            frozenset(voters), frozenset(), tuple(sorted(voters.items())), routing.epochs.get(pid, 0)
        )
        rng = random.Random(self.rng.random())
        # Replicas snapshot at different moments (the threshold +-25% each),
        # so that their encoding threads do not all compete at once.  The
        # engine is captured on the reactor thread and encoded in a thread
        # (the snapshotter); the node's own, synchronous, snapshot is the
        # backstop should encodings fall behind.
        threshold = max(1, round(self.settings.snapshotThreshold * rng.uniform(0.75, 1.25)))
        settings = replace(self.settings, snapshotThreshold=threshold * SNAPSHOT_BACKSTOP)
        node = RaftNode(
            self.spiffe,
            self.reactor,
            storage,
            transport,
            machine,
            bootstrap,
            settings,
            rng,
            self.incarnations(walDir),
        )
        part = Partition(pid, node, storage, machine, transport, self)
        part.snapshots = newSnapshotter(node, threshold, self.snapshotRunner)
        self.partitions[pid] = part
        if placed:
            log.info("starting partition {pid} (replicas {voters})", pid=pid, voters=sorted(voters))
        else:
            log.info(
                "starting the replica of partition {pid} this node still holds (placed on {voters} "
                "now): it takes part until its group's configuration without it is committed",
                pid=pid,
                voters=sorted(voters),
            )
        Deferred.fromCoroutine(node.start()).addCallbacks(
            lambda _: part.lifecycle.loaded(), lambda f: part.lifecycle.loadFailed(f.getErrorMessage())
        )

    def _wantResults(self) -> bool:
        return self.onResults is not None and (self.wantResults is None or self.wantResults())

    def _results(self, pid: str, index: int, results: list[dict[str, Any]]) -> None:
        if self.onResults is not None:
            self.onResults(pid, index, results)

    def _driveMembership(self, part: Partition, want: dict[str, str], epoch: int) -> None:
        node = part.node
        if part.change.busy() or not want or node.configs.latestIndex() > node.commitIndex:
            return
        config = node.configs.latest()
        if config.epoch > epoch:
            if (part.pid, epoch) not in self._behind:
                self._behind.add((part.pid, epoch))
                log.warn(
                    "partition {pid}: the group's configuration is at placement epoch {group}, this node's "
                    "placement at {epoch}: no membership change until this node's placement catches up",
                    pid=part.pid,
                    group=config.epoch,
                    epoch=epoch,
                )
            return
        change = self._nextChange(node, config, want, epoch)
        if change is not None:
            part.change.begin(*change)

    def _nextChange(
        self, node: RaftNode, config: Configuration, want: dict[str, str], epoch: int
    ) -> tuple[str, Callable[[], Deferred[Any]]] | None:
        """
        The next single-server step from C{config} toward the replicas
        C{want} at placement C{epoch}: its description and how to start it;
        C{None} when there is none.
        """
        missing = sorted(set(want) - config.voters)
        if missing:
            peer = missing[0]
            return f"add {peer} (epoch {epoch})", partial(
                node.changeMembership, "addVoter", peer, want[peer], epoch
            )
        extra = sorted((config.voters | config.learners) - set(want))
        if extra and extra[0] == self.spiffe:
            targets = sorted((set(want) & config.voters) - {self.spiffe})
            if not targets:
                return None
            return f"hand leadership to {targets[0]} before leaving", partial(
                node.transferLeadership, targets[0]
            )
        if extra:
            peer = extra[0]
            return f"remove {peer} (epoch {epoch})", partial(node.changeMembership, "remove", peer, "", epoch)
        if config.epoch < epoch:
            return f"record placement epoch {epoch}", partial(node.changeMembership, "epoch", "", "", epoch)
        return None

    # -- requests ---------------------------------------------------------

    def get(self, pid: str) -> Partition:
        part = self.partitions.get(pid)
        if part is None or not part.serving():
            raise NotHosted(pid)
        return part

    def propose(self, pid: str, entry: bytes) -> Deferred[Any]:
        """
        Replicate C{entry} in C{pid}'s group; fires once committed and
        applied, or fails with L{NotLeader} / L{NotHosted}.
        """
        try:
            part = self.get(pid)
        except NotHosted as e:
            return fail(e)
        return part.node.propose(entry)

    def leaderOf(self, pid: str) -> str | None:
        """
        The SPIFFE ID of C{pid}'s leader as this node knows it.
        """
        part = self.partitions.get(pid)
        return part.node.leaderId if part is not None else None

    # -- status -----------------------------------------------------------

    def hostedIds(self) -> list[str]:
        me = self.routing.nodeBySpiffe(self.spiffe)
        return self.routing.hosted(me) if me is not None else []

    def retiredStatus(self, pid: str) -> dict[str, Any]:
        """
        The status of C{pid}'s retired copy kept here (C{retiredCopies}).
        """
        copy = self.retiredCopies[pid]
        return {
            "partition": pid,
            "state": "retired",
            "epoch": copy.epoch,
            "retiredAt": copy.at,
            "keptUntil": copy.at + round(self.retiredKeep),
            "data": copy.path,
            "moved": copy.moved,
        }

    def retiredStatuses(self) -> dict[str, dict[str, Any]]:
        """
        The retired copies kept here, by partition, until deleted.
        """
        return {pid: self.retiredStatus(pid) for pid in sorted(self.retiredCopies)}

    def replicaStates(self) -> dict[str, str]:
        """
        The lifecycle state of each replica here, by partition: as its
        lifecycle machine describes it; a retired copy kept here whose
        partition has no replica here, as its retired status does.
        """
        states = {pid: str(part.lifecycle.describe()["state"]) for pid, part in self.partitions.items()}
        hosted = set(self.hostedIds())
        for pid in self.retiredCopies:
            if pid not in states and pid not in hosted:
                states[pid] = str(self.retiredStatus(pid)["state"])
        return states

    def partitionStatus(self, pid: str, withHash: bool = False) -> dict[str, Any]:
        part = self.partitions.get(pid)
        if part is None:
            if pid in self.retiredCopies and pid not in self.hostedIds():
                # Left its group for good: not a replica that failed to start.
                return self.retiredStatus(pid)
            return {"partition": pid, "state": "not started"}
        state = dict(part.lifecycle.describe())
        if not part.serving():
            return {"partition": pid, **state}
        node = part.node
        config = node.configs.latest()
        return {
            "partition": pid,
            **state,
            "role": node.roleName,
            "term": node.term,
            "leader": node.leaderId,
            "committedIndex": part.committedIndex(),
            "matchIndex": part.matchIndex(),
            "appliedIndex": node.lastApplied,
            "voters": sorted(config.voters),
            "learners": sorted(config.learners),
            "placementEpoch": self.ledger.epoch(pid),
            "configEpoch": config.epoch,
            "incarnation": node.incarnationNumber,
            "voteIntact": node.votesIntact(),
            "lastMembershipChange": part.change.last() or None,
            "cep": part.machine.status(),
            **({"stateHash": part.machine.stateHash()} if withHash else {}),
        }

    def leaderKnown(self) -> bool:
        return not self.notReadyReasons()

    def notReadyReasons(self) -> tuple[str, ...]:
        reasons = []
        if self.routing.nodeBySpiffe(self.spiffe) is None:
            reasons.append(f"this node ({self.spiffe}) is not in the routing table")
        for pid in self.hostedIds():
            part = self.partitions.get(pid)
            state = part.lifecycle.describe() if part is not None else {"state": "starting"}
            if state["state"] == "failed":
                reasons.append(f"partition {pid}: failed to start: {state['error']}")
            elif part is None or not part.serving():
                reasons.append(f"partition {pid}: raft group {state['state']}")
            elif part.node.leaderId is None:
                reasons.append(f"partition {pid}: no raft leader known (term {part.node.term})")
            else:
                lag = part.committedIndex() - part.matchIndex()
                applyLag = part.node.commitIndex - part.node.lastApplied
                if lag > self.maxLag:
                    reasons.append(
                        f"partition {pid}: match index {part.matchIndex()} is {lag} behind committed "
                        f"{part.committedIndex()} (bound {self.maxLag})"
                    )
                elif applyLag > self.maxLag:
                    reasons.append(f"partition {pid}: applying {applyLag} entries behind commit")
        return tuple(reasons)


class _PartitionCollector:
    def __init__(self, manager: PartitionManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        labels = ["partition"]
        committed = GaugeMetricFamily(
            "ceptra_partition_committed_index",
            "Highest log index the partition's group committed.",
            labels=labels,
        )
        match = GaugeMetricFamily(
            "ceptra_partition_match_index",
            "Highest log index of this replica known to match the leader's log.",
            labels=labels,
        )
        applied = GaugeMetricFamily(
            "ceptra_partition_applied_index", "Highest log index applied to the engine.", labels=labels
        )
        leader = GaugeMetricFamily(
            "ceptra_partition_leader", "1 when this node leads the partition's group.", labels=labels
        )
        term = GaugeMetricFamily(
            "ceptra_partition_term", "Current Raft term of the partition.", labels=labels
        )
        events = CounterMetricFamily(
            "ceptra_partition_events", "Events applied to the partition's engine.", labels=labels
        )
        dups = CounterMetricFamily(
            "ceptra_partition_duplicate_events", "Events dropped as duplicates by event_id.", labels=labels
        )
        rules = GaugeMetricFamily(
            "ceptra_partition_rules_version", "Rules documents applied to the partition.", labels=labels
        )
        placementEpoch = GaugeMetricFamily(
            "ceptra_partition_placement_epoch",
            "Placement epoch this node applied for the partition (from the routing feed).",
            labels=labels,
        )
        configEpoch = GaugeMetricFamily(
            "ceptra_partition_config_epoch",
            "Placement epoch recorded in the partition's Raft configuration.",
            labels=labels,
        )
        intact = GaugeMetricFamily(
            "ceptra_partition_vote_intact",
            "1 when the group has recorded this replica's storage incarnation (its vote counts).",
            labels=labels,
        )
        ignored = CounterMetricFamily(
            "ceptra_placement_ignored_updates",
            "Routing feed placements ignored: an older epoch (stale) or another placement "
            "under the applied epoch (conflict).",
            labels=["partition", "reason"],
        )
        retired = GaugeMetricFamily(
            "ceptra_partition_retired",
            "1 while the data of this node's retired replica of the partition is kept under the data "
            "directory's retired/ (until deleted).",
            labels=labels,
        )
        for pid in sorted(self.manager.retiredCopies):
            retired.add_metric([pid], 1)
        lifecycle = GaugeMetricFamily(
            "ceptra_partition_state",
            "1 for the lifecycle state this node's replica of the partition is in, 0 for the others "
            "(a retired replica whose data is kept is in state retired).",
            labels=["partition", "state"],
        )
        for pid, current in sorted(self.manager.replicaStates().items()):
            for state in DESCRIBED_STATES + (() if current in DESCRIBED_STATES else (current,)):
                lifecycle.add_metric([pid, state], 1 if state == current else 0)
        ledger = self.manager.ledger
        for pid in sorted(ledger.applied):
            placementEpoch.add_metric([pid], ledger.epoch(pid))
        for (pid, reason), n in sorted(ledger.ignored.items()):
            ignored.add_metric([pid, reason], n)
        for pid, part in sorted(self.manager.partitions.items()):
            if not part.serving():
                continue
            committed.add_metric([pid], part.committedIndex())
            match.add_metric([pid], part.matchIndex())
            applied.add_metric([pid], part.node.lastApplied)
            leader.add_metric([pid], 1 if part.node.leader is not None else 0)
            term.add_metric([pid], part.node.term)
            events.add_metric([pid], part.machine.events)
            dups.add_metric([pid], part.machine.duplicates)
            rules.add_metric([pid], part.machine.rulesVersion)
            configEpoch.add_metric([pid], part.node.configs.latest().epoch)
            intact.add_metric([pid], 1 if part.node.votesIntact() else 0)
        multi = self.manager.multi
        links = GaugeMetricFamily(
            "ceptra_raft_links", "Open Raft links to peer nodes (shared by all partitions)."
        )
        links.add_metric([], len(multi.links))
        frames = CounterMetricFamily("ceptra_raft_frames_sent", "Raft frames sent over the shared links.")
        frames.add_metric([], multi.framesSent)
        rejected = CounterMetricFamily(
            "ceptra_raft_rejected_links", "Raft links refused: unknown or mismatched peer identity."
        )
        rejected.add_metric([], multi.rejectedLinks)
        yield from (committed, match, applied, leader, term, events, dups, rules, links, frames, rejected)
        yield from (placementEpoch, configEpoch, intact, ignored, retired, lifecycle)


__all__ += ["NotLeader"]
