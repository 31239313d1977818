"""
The partition manager: starts, stops and reconfigures this node's
partitions from the routing feed (the package's docstring tells how,
L{suite.ceptra.partitions}).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from suite.ceptra.interfaces import IRaftStatus
from suite.ceptra.machine import PartitionMachine
from suite.ceptra.partitions.disk import ReplicaDisk
from suite.ceptra.partitions.disk import heldReplicas as listHeldReplicas
from suite.ceptra.partitions.lifecycle import ExclusionQuery
from suite.ceptra.partitions.membership import MembershipDriver
from suite.ceptra.partitions.peers import PeerDialer, identifyPeer
from suite.ceptra.partitions.replica import NotHosted, Partition
from suite.ceptra.partitions.reports import PartitionReports
from suite.ceptra.partitions.retire import marker
from suite.ceptra.partitions.status import PartitionCollector
from suite.ceptra.placement import PlacementLedger
from suite.ceptra.routing import NodeInfo, Routing
from suite.daemon import ConfigError
from suite.raft.commitproof import answerCommitQuery
from suite.raft.groupid import FileGroupStore
from suite.raft.incarnation import FILENAME as INCARNATION_FILE
from suite.raft.incarnation import Claim, fileClaim
from suite.raft.interfaces import IRaftGroupStore
from suite.raft.messages import CommitAnswer, CommitQuery, Configuration
from suite.raft.multi import DialPolicy, MultiRaftTransport
from suite.raft.node import RaftNode
from suite.raft.settings import RaftSettings
from suite.raft.snapshotter import Runner, newSnapshotter
from suite.raft.wal import SharedWAL
from suite.web.listen import parseHostPort

__all__ = ["SNAPSHOT_BACKSTOP", "PartitionManager"]

log = Logger(namespace="ceptra.partitions")

#: The node's own (synchronous) snapshot threshold, as a multiple of the
#: snapshotter's: reached only if encodings in the thread fall behind.
SNAPSHOT_BACKSTOP = 4


@implementer(IRaftStatus)
class PartitionManager(PartitionReports, Service):
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
    @param groupStores: override where each replica keeps its Raft group
        id (tests): C{groupStores(walDir) -> IRaftGroupStore}; by default
        the file C{group} in C{walDir}.
    @param snapshotRunner: runs a snapshot's encoding off the reactor
        thread (default: the reactor's thread pool; a reactor without
        threads, as in tests, encodes at once).
    @param holdsReplica: override (tests) whether this node's storage holds
        a replica of a partition (default: its incarnation file exists, and
        no retirement marker).
    @param heldReplicas: override (tests) the partitions whose replica this
        node's storage holds (default: L{heldReplicas} of C{walDir}).
    @param dataDir: where retired replicas' data goes (C{retired/});
        C{None}: a retired replica's data is left in place (simulations).
    @param retiredKeep: how long a retired replica's data is kept, in
        seconds.
    @param fileRunner: runs blocking file work (default: the reactor's
        thread pool; a reactor without threads runs it at once).
    @param advertise: C{(CEPTRA_ADVERTISE_HOST, Raft bind port)}: a routing
        table giving this node another Raft address is warned about once.
    @param askInterval: seconds between the first two rounds of a stopped
        replica's questions to its group's members (whether the
        configuration excluding it is committed); doubled each round up to
        C{askMaxInterval}.
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
        groupStores: Callable[[str], IRaftGroupStore] | None = None,
        snapshotRunner: Runner | None = None,
        holdsReplica: Callable[[str], bool] | None = None,
        heldReplicas: Callable[[], list[str]] | None = None,
        dataDir: str | None = None,
        retiredKeep: float = 86400.0,
        fileRunner: Callable[..., Deferred[Any]] | None = None,
        advertise: tuple[str, int] | None = None,
        askInterval: float = 30.0,
        askMaxInterval: float = 300.0,
    ) -> None:
        self.askInterval, self.askMaxInterval = askInterval, askMaxInterval
        #: partition -> its replica stopped here that asks its group's
        #: members whether the configuration excluding it is committed
        #: (its lifecycle is Confirming)
        self.confirming: dict[str, Partition] = {}
        self.spiffe = spiffe
        #: (CEPTRA_ADVERTISE_HOST, Raft bind port), checked against the
        #: routing table's address of this node
        self.advertise = advertise
        self._advertiseChecked: str | None = None
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
        #: walDir -> where the replica's Raft group id is kept (its file
        #: beside the incarnation file)
        self.groupStores = groupStores or (lambda w: FileGroupStore(w, self._inThread))
        self.snapshotRunner = snapshotRunner or self._encodeInThread
        self.holdsReplica = holdsReplica or self._holdsReplica
        self.heldReplicas = heldReplicas or partial(listHeldReplicas, walDir)
        #: retired copies and stopped replicas (L{suite.ceptra.partitions.disk})
        self.disk = ReplicaDisk(
            reactor,
            walDir,
            snapshotDir,
            dataDir,
            retiredKeep,
            fileRunner or self._inThread,
            self._forgetGroup,
        )
        #: whether the replicas held on disk were looked at once this node
        #: was in the routing table (orphaned ones are reported)
        self._scanned = False
        #: partitions started, or looked for on disk, in this run
        self._looked: set[str] = set()
        self.ledger = ledger or PlacementLedger()
        self._feedRouting: Routing | None = None
        self._peersFrom: Any = None
        #: the membership changes of the groups this node leads
        self.membership = MembershipDriver(spiffe)
        #: partition -> replicas last logged as lacking a SPIFFE ID or Raft address
        self._unresolvedLogged: dict[str, tuple[str, ...]] = {}
        self.multi = MultiRaftTransport(
            spiffe,
            reactor,
            connect or PeerDialer(reactor, bundle, lambda: self.routing).connect,
            {},
            identify=self._identify,
            secure=bundle is not None,
            dial=dial,
        )
        self.multi.onQuery = self._commitQuery
        self.partitions: dict[str, Partition] = {}
        self.routing = Routing()
        self._loop: LoopingCall | None = None
        if registry is not None:
            registry.register(PartitionCollector(self))

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

    # -- replicas no longer running here ----------------------------------

    @property
    def reclaiming(self) -> dict[str, Deferred[None]]:
        """
        Partition -> its retirement in progress (data being moved).
        """
        return self.disk.reclaiming

    def reclaim(self, part: Partition, epoch: int) -> None:
        """
        C{part} left its group for good (a configuration of placement
        C{epoch} without this node committed) and is shut down: move its
        data to C{DATA_DIR/retired/}, once its storage is closed.
        """
        self.disk.reclaim(part.pid, part.closing, epoch)

    def replicaStopped(self, part: Partition) -> None:
        """
        C{part} stopped without its removal known committed (the grace
        period, or the node shutting down): while the node runs, its data
        stays in place and it is reported (stopped, or orphaned).
        """
        if not self.running:
            return
        if self.disk.noteStopped(part.pid, self.reactor.seconds(), part.pid in self.routing.partitions):
            # Started again, as at start-up, should its partition be routed again.
            self._looked.discard(part.pid)

    async def _forgetGroup(self, pid: str) -> None:
        if self.storageFactory == self._groupStorage:
            if self.wal is None:
                self.wal = SharedWAL(self.walDir, self.reactor)
            await self.wal.load()
            await self.wal.drop(pid)

    def _lookForOrphans(self, routing: Routing) -> None:
        """
        Once this node is in the routing table: report the replicas held on
        disk of partitions not in it (once per run), and follow the stopped
        replicas' partitions in and out of it.
        """
        now = self.reactor.seconds()
        if not self._scanned:
            self._scanned = True
            try:
                held = self.heldReplicas()
            except OSError as e:
                log.warn("looking for replicas in {dir}: {why}", dir=self.walDir, why=e)
                held = []
            for pid in held:
                if (
                    pid not in routing.partitions
                    and pid not in self.partitions
                    and pid not in self.reclaiming
                ):
                    self.disk.noteStopped(pid, now, False, found=True)
        for pid in self.disk.routingChanged(routing.partitions):
            self._looked.discard(pid)

    def _groupStorage(self, walDir: str, snapshotDir: str) -> Any:
        if self.wal is None:
            self.wal = SharedWAL(self.walDir, self.reactor)
        return self.wal.group(os.path.basename(walDir), snapshotDir, importFrom=walDir)

    # -- commit queries (L{suite.raft.commitproof}) -----------------------

    def askCommitted(self, part: Partition, query: ExclusionQuery) -> tuple[int, int]:
        """
        C{part}, stopped, asks its partition's current members whether
        C{query}'s entry is committed (their answers go to its lifecycle);
        return how many were asked, and how many had no link (the question
        only dialled them).
        """
        self.confirming[part.pid] = part
        members = sorted(m for m in self.voters(self.routing, part.pid) if m != self.spiffe)
        unlinked = 0
        for member in members:
            if member not in self.multi.links:
                unlinked += 1
            self.multi.send(
                part.pid,
                CommitQuery(self.spiffe, member, 0, query.index, query.term, group=query.group),
            )
        return len(members), unlinked

    def _commitQuery(self, pid: str, message: CommitQuery | CommitAnswer) -> None:
        """
        A commit query of another node's stopped replica (answered from
        this node's replica of C{pid}, read-only), or an answer to one of
        this node's.
        """
        if isinstance(message, CommitAnswer):
            asking = self.confirming.get(pid)
            if asking is not None:
                asking.lifecycle.answered(message)
            return
        part = self.partitions.get(pid)
        if part is None:
            return
        answer = answerCommitQuery(part.node, message)
        if answer is not None:
            self.multi.send(pid, answer)

    # -- transport --------------------------------------------------------

    def _identify(self, transport: Any) -> str | None:
        return identifyPeer(self.multi.knownNodes(), transport)

    def serverFactory(self) -> Factory:
        """
        The factory of the Raft listener (shared by every partition).
        """
        return self.multi.serverFactory()

    # -- service ----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.disk.resume()
        self._loop = LoopingCall(self.reconcile)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: log.failure("partition reconciliation failed", f)
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for asking in list(self.confirming.values()):
            asking.lifecycle.stop()
        parts = list(self.partitions.values())
        for part in parts:
            part.lifecycle.stop()
        self.partitions.clear()
        # (found again at the next start)
        self.disk.stopped.clear()
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

    def _checkAdvertised(self, me: NodeInfo) -> None:
        """
        Warn once per table address when the routing table's Raft address
        for this node is not C{CEPTRA_ADVERTISE_HOST} and the Raft bind
        port: peers dial the table's address.
        """
        if self.advertise is None or me.raft == self._advertiseChecked:
            return
        self._advertiseChecked = me.raft
        host, port = self.advertise
        try:
            tableHost, tablePort = parseHostPort(me.raft, "raft")
        except ConfigError:
            tableHost, tablePort = me.raft, -1
        if tableHost.lower().rstrip(".") != host.lower().rstrip(".") or (port and tablePort != port):
            log.warn(
                "the routing table gives this node ({name}) the Raft address {table}, but it advertises "
                "{host} and listens on port {port} (CEPTRA_ADVERTISE_HOST, CEPTRA_RAFT_BIND): peers dial "
                "{table}; make it reach this node or correct the control plane's state file",
                name=me.name,
                table=me.raft or "(none)",
                host=host,
                port=port,
            )

    def unresolved(self, routing: Routing, pid: str) -> list[str]:
        """
        The replicas of C{pid}'s placement to which the routing table gives
        no SPIFFE ID or no Raft address: no group member can be made of
        them, so the group is neither started nor changed toward that
        placement (it would run without them, with fewer copies than
        placed).
        """
        out = []
        for name in routing.partitions.get(pid, ()):
            info = routing.nodes.get(name)
            if info is None or not info.spiffe or not info.raft:
                out.append(name)
        return out

    def _placementUsable(self, routing: Routing, pid: str, what: str) -> bool:
        missing = self.unresolved(routing, pid)
        if not missing:
            self._unresolvedLogged.pop(pid, None)
            return True
        if self._unresolvedLogged.get(pid) != tuple(missing):
            self._unresolvedLogged[pid] = tuple(missing)
            log.warn(
                "partition {pid}: the routing table gives replicas {missing} no SPIFFE ID or Raft "
                "address: {what} until it does",
                pid=pid,
                missing=missing,
                what=what,
            )
        return False

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
        self.disk.purgeOld()
        now = self.reactor.seconds()
        for pid, asking in sorted(self.confirming.items()):
            # A stopped replica asks while its partition is placed elsewhere.
            if pid in hosted:
                asking.lifecycle.placed()
            elif pid not in routing.partitions:
                asking.lifecycle.dropped(now, self.retireGrace)
        if me is not None:
            self._lookForOrphans(routing)
            self._checkAdvertised(routing.nodes[me])
        for pid in sorted(hosted - set(self.partitions) - set(self.reclaiming)):
            # (placed here again while its retired replica's data is being
            # moved: started afresh once that is done)
            if self._placementUsable(routing, pid, "its group is not started here"):
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
        for pid, part in sorted(self.partitions.items()):
            if pid in hosted:
                part.lifecycle.placed()
            elif pid not in routing.partitions:
                part.lifecycle.dropped(now, self.retireGrace)
            else:
                self._unplaced(part, now)
            if (
                part.serving()
                and part.node.leader is not None
                and pid in routing.partitions
                and self._placementUsable(routing, pid, "no membership change")
            ):
                self.membership.drive(part, self.voters(routing, pid), routing.epochs.get(pid, 0))

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
        if self.disk.retired(pid):
            # (placed here again: started afresh once the data is moved)
            return
        self._looked.add(pid)
        self.disk.stopped.pop(pid, None)
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
            self.groupStores(walDir),
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
