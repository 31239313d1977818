"""
The keeper machine (L{newLeaseKeeper}) and L{LeaseKeeper}, one node's side
of the leases: grants, renewals, handover and shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from suite.constellation.leases import hold
from suite.constellation.leases.hold import HoldCore, HoldInputs
from suite.constellation.leases.table import (
    LEASES,
    Lease,
    LeaseSettings,
    LeaseStateMachine,
    candidateOrder,
    encodeLeaseCommand,
)

log = Logger(namespace="constellation.leases")


# -- the keeper machine -----------------------------------------------------
#
# Inputs (L{KeeperInputs}): start and stop (L{LeaseKeeper.start} and
# L{LeaseKeeper.stop}), plus private ones: tick (the round timer fired),
# answered (a grant or renewal this node proposed came back), handOver (a
# round found a node of better priority alive long enough), handedOver (the
# releases and the leadership transfer of a handover finished) and
# stopFinished (those of shutdown finished).  Every state answers every
# input; the ones a state cannot receive change nothing there.
# States: Idle (constructed, no rounds yet); Running (data: L{KeeperRounds}: the
# round timer, armed by start and cancelled by stop, the leadership seen by
# the rounds, when each better node was first seen, and the leases with a
# proposal in flight); HandingOver (the same data: the round timer keeps its
# beat but rounds do nothing, and answers only clear the in-flight mark);
# Stopping (shutdown's releases and transfer in flight); Stopped.
# Outputs (through L{KeeperCore}): Raft proposals and leadership transfer,
# the hold machines' inputs, and C{notify}.


@dataclass
class KeeperRounds:
    """
    The data of a running keeper: the round timer, the term and the time
    (own monotonic clock) this node was first seen leading in it, when each
    node of better priority was first seen alive, and the leases with a
    grant or renewal in flight.
    """

    timer: Any = None
    leaderSince: float | None = None
    leaderTerm: int = -1
    betterSince: dict[str, float] = field(default_factory=dict)
    inflight: set[str] = field(default_factory=set)

    def arm(self, inputs: KeeperInputs, core: KeeperCore) -> None:
        # Four rounds per renewal interval: a free lease is taken, and a new
        # leader notices its election, within a quarter of it.
        self.timer = core.clock.callLater(core.settings.renewInterval / 4, inputs.tick)

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class KeeperInputs(Protocol):
    def start(self, rounds: KeeperRounds) -> None:
        """
        Begin the rounds (C{rounds} fresh).
        """

    def tick(self) -> None:
        """
        The round timer fired: grant, renew or hand over (on the leader).
        """

    def answered(self, name: str, token: int | None, until: float) -> None:
        """
        A grant or renewal of C{name} this node proposed came back: it
        committed for this node with fencing C{token}, acting until
        C{until}; or (C{token} None) it failed or changed nothing.
        """

    def handOver(self, target: str, rounds: KeeperRounds) -> None:
        """
        Node C{target} has better priority and has been alive long enough:
        stop acting, release the leases, transfer leadership to it.
        """

    def handedOver(self, rounds: KeeperRounds) -> None:
        """
        The releases and the leadership transfer of a handover finished
        (whatever their outcome).
        """

    def stop(self) -> Deferred[Any]:
        """
        Shut down: stop acting, release, hand leadership to the best other
        candidate; fires when that is done.
        """

    def stopFinished(self) -> None:
        """
        The releases and the leadership transfer of shutdown finished.
        """


@dataclass
class KeeperCore:
    """
    The keeper's collaborators, and C{observed}: when (own monotonic clock)
    a grant or renewal of each lease was last applied here.
    """

    raft: Any
    machine: LeaseStateMachine
    clock: Any
    now: Callable[[], float]
    settings: LeaseSettings
    candidates: Callable[[], Iterable[str]]
    holds: dict[str, HoldInputs]
    notify: Callable[[], None]
    observed: dict[str, float] = field(default_factory=dict)

    @property
    def me(self) -> str:
        return str(self.raft.id)

    def isLeader(self) -> bool:
        return getattr(self.raft, "leader", None) is not None

    def holdsAny(self) -> bool:
        return any(hold.token() is not None for hold in self.holds.values())


def _round(inputs: KeeperInputs, core: KeeperCore, rounds: KeeperRounds) -> None:
    """
    One round on a running keeper: grant, renew or hand over (on the
    leader).
    """
    now = core.now()
    if not core.isLeader():
        rounds.leaderSince = None
        return
    term = getattr(core.raft, "term", 0)
    if rounds.leaderSince is None or term != rounds.leaderTerm:
        rounds.leaderSince, rounds.leaderTerm = now, term
    target = _betterCandidate(core, rounds, now)
    if target is not None and core.holdsAny():
        log.info("node {target} has better priority: handing the leases over", target=target)
        inputs.handOver(target, rounds)
        return
    for name in LEASES:
        if name in rounds.inflight:
            continue
        lease = core.machine.get(name)
        if lease.holder == core.me:
            until = core.holds[name].until()
            due = until is None or until - now <= core.settings.holderValidity() - core.settings.renewInterval
            if due:
                _propose(inputs, core, rounds, "renew", name, lease.token)
        elif lease.holder is None:
            _propose(inputs, core, rounds, "grant", name, lease.token)
        else:
            since = max(rounds.leaderSince, core.observed.get(name, rounds.leaderSince))
            if now - since >= core.settings.takeoverWait():
                _propose(inputs, core, rounds, "grant", name, lease.token)


def _betterCandidate(core: KeeperCore, rounds: KeeperRounds, now: float) -> str | None:
    mine = candidateOrder(core.me)
    better = sorted((c for c in core.candidates() if candidateOrder(c) < mine), key=candidateOrder)
    for name in list(rounds.betterSince):
        if name not in better:
            del rounds.betterSince[name]
    for name in better:
        rounds.betterSince.setdefault(name, now)
    for name in better:
        if now - rounds.betterSince[name] >= core.settings.handoverAfter:
            return name
    return None


def _propose(
    inputs: KeeperInputs, core: KeeperCore, rounds: KeeperRounds, op: str, name: str, token: int
) -> None:
    sent = core.now()
    rounds.inflight.add(name)
    d = core.raft.propose(encodeLeaseCommand(op, name, core.me, token, core.settings.duration))

    def done(result: Any) -> None:
        ok, newToken, holder, _ = result
        confirmed = newToken if ok and holder == core.me else None
        inputs.answered(name, confirmed, sent + core.settings.holderValidity())

    def failed(failure: Any) -> None:
        log.debug("lease {op} of {name} failed: {why}", op=op, name=name, why=failure.getErrorMessage())
        inputs.answered(name, None, 0.0)

    d.addCallbacks(done, failed)


def _releaseAndTransfer(core: KeeperCore, target: str | None) -> Deferred[Any]:
    """
    Stop acting, propose the release of every lease held, then transfer
    Raft leadership to C{target} (None: any node).
    """
    releases = []
    for name in sorted(core.holds):
        token = core.holds[name].released()
        if token is not None:
            releases.append(core.raft.propose(encodeLeaseCommand("release", name, core.me, token)))
    core.notify()

    def transfer(_: object) -> Deferred[Any]:
        d: Deferred[Any] = core.raft.transferLeadership(target)
        d.addErrback(lambda f: log.info("leadership handover: {why}", why=f.getErrorMessage()))
        return d

    d: Deferred[Any] = DeferredList(releases, consumeErrors=True)
    d.addCallback(transfer)
    return d


def _shutDown(inputs: KeeperInputs, core: KeeperCore) -> Deferred[Any]:
    others = sorted(core.candidates(), key=candidateOrder)
    if not core.holdsAny() or not core.isLeader():
        for hold in core.holds.values():
            hold.moved("this node is stopping")
        d: Deferred[Any] = succeed(None)
    else:
        d = _releaseAndTransfer(core, others[0] if others else None)
    d.addBoth(lambda _: inputs.stopFinished())
    return d


def _buildKeeper() -> TypeMachine[KeeperInputs, KeeperCore]:
    b = TypeMachineBuilder(KeeperInputs, KeeperCore)
    idle = b.state("Idle")

    def running_(inputs: KeeperInputs, core: KeeperCore, rounds: KeeperRounds) -> KeeperRounds:
        # Entered at start (fresh data) and after a handover: leadership and
        # better nodes are judged afresh.
        rounds.leaderSince = None
        rounds.betterSince.clear()
        return rounds

    def handingOver_(
        inputs: KeeperInputs, core: KeeperCore, target: str, rounds: KeeperRounds
    ) -> KeeperRounds:
        return rounds

    # Inputs a state never receives, or that no longer matter there, change
    # nothing (the .loop().returns(None) lines).
    running = b.state("Running", running_)
    handingOver = b.state("HandingOver", handingOver_)
    stopping = b.state("Stopping")
    stopped = b.state("Stopped")

    # start
    @idle.upon(KeeperInputs.start).to(running)
    def started(inputs: KeeperInputs, core: KeeperCore, rounds: KeeperRounds) -> None:
        rounds.arm(inputs, core)

    running.upon(KeeperInputs.start).loop().returns(None)
    handingOver.upon(KeeperInputs.start).loop().returns(None)
    stopping.upon(KeeperInputs.start).loop().returns(None)
    stopped.upon(KeeperInputs.start).loop().returns(None)

    # tick
    @running.upon(KeeperInputs.tick).loop()
    def round_(inputs: KeeperInputs, core: KeeperCore, rounds: KeeperRounds) -> None:
        rounds.cancel()
        try:
            _round(inputs, core, rounds)
        finally:
            rounds.arm(inputs, core)

    @handingOver.upon(KeeperInputs.tick).loop()
    def keepBeat(inputs: KeeperInputs, core: KeeperCore, rounds: KeeperRounds) -> None:
        rounds.cancel()
        rounds.arm(inputs, core)

    idle.upon(KeeperInputs.tick).loop().returns(None)
    stopping.upon(KeeperInputs.tick).loop().returns(None)
    stopped.upon(KeeperInputs.tick).loop().returns(None)

    # answered
    @running.upon(KeeperInputs.answered).loop()
    def answered(
        inputs: KeeperInputs,
        core: KeeperCore,
        rounds: KeeperRounds,
        name: str,
        token: int | None,
        until: float,
    ) -> None:
        rounds.inflight.discard(name)
        if token is not None:
            core.holds[name].confirmed(token, until)

    @handingOver.upon(KeeperInputs.answered).loop()
    def answeredLate(
        inputs: KeeperInputs,
        core: KeeperCore,
        rounds: KeeperRounds,
        name: str,
        token: int | None,
        until: float,
    ) -> None:
        # Not acting while handing over: a grant or renewal that committed
        # now is not used.
        rounds.inflight.discard(name)

    idle.upon(KeeperInputs.answered).loop().returns(None)
    stopping.upon(KeeperInputs.answered).loop().returns(None)
    stopped.upon(KeeperInputs.answered).loop().returns(None)

    # handOver
    @running.upon(KeeperInputs.handOver).to(handingOver)
    def handOver(
        inputs: KeeperInputs, core: KeeperCore, data: KeeperRounds, target: str, rounds: KeeperRounds
    ) -> None:
        d = _releaseAndTransfer(core, target)
        d.addBoth(lambda _: inputs.handedOver(rounds))

    idle.upon(KeeperInputs.handOver).loop().returns(None)
    handingOver.upon(KeeperInputs.handOver).loop().returns(None)
    stopping.upon(KeeperInputs.handOver).loop().returns(None)
    stopped.upon(KeeperInputs.handOver).loop().returns(None)

    # handedOver
    handingOver.upon(KeeperInputs.handedOver).to(running).returns(None)
    idle.upon(KeeperInputs.handedOver).loop().returns(None)
    running.upon(KeeperInputs.handedOver).loop().returns(None)
    stopping.upon(KeeperInputs.handedOver).loop().returns(None)
    # Stopped: a handover that shutdown overtook finished.
    stopped.upon(KeeperInputs.handedOver).loop().returns(None)

    # stop
    @idle.upon(KeeperInputs.stop).to(stopping)
    def stopIdle(inputs: KeeperInputs, core: KeeperCore) -> Deferred[Any]:
        return _shutDown(inputs, core)

    @running.upon(KeeperInputs.stop).to(stopping)
    def stopRunning(inputs: KeeperInputs, core: KeeperCore, rounds: KeeperRounds) -> Deferred[Any]:
        rounds.cancel()
        return _shutDown(inputs, core)

    @handingOver.upon(KeeperInputs.stop).to(stopping)
    def stopHandingOver(inputs: KeeperInputs, core: KeeperCore, rounds: KeeperRounds) -> Deferred[Any]:
        rounds.cancel()
        return _shutDown(inputs, core)

    @stopping.upon(KeeperInputs.stop).loop()
    def stopAgain(inputs: KeeperInputs, core: KeeperCore) -> Deferred[Any]:
        return succeed(None)

    @stopped.upon(KeeperInputs.stop).loop()
    def stopStopped(inputs: KeeperInputs, core: KeeperCore) -> Deferred[Any]:
        return succeed(None)

    # stopFinished
    stopping.upon(KeeperInputs.stopFinished).to(stopped).returns(None)
    idle.upon(KeeperInputs.stopFinished).loop().returns(None)
    running.upon(KeeperInputs.stopFinished).loop().returns(None)
    handingOver.upon(KeeperInputs.stopFinished).loop().returns(None)
    stopped.upon(KeeperInputs.stopFinished).loop().returns(None)

    return b.build()


newLeaseKeeper = _buildKeeper()


class LeaseKeeper:
    """
    One node's side of the leases: on the Raft leader it grants and renews
    them for this node; everywhere it answers L{acting}.  Its protocol state
    is the L{newLeaseKeeper} machine; each lease's hold on this node is a
    L{hold.newLeaseHold} machine (reached through its module, so that
    C{make diagrams} draws it once, from L{suite.constellation.leases.hold}).

    @param raft: a L{suite.raft.node.RaftNode} (C{propose},
        C{transferLeadership}, C{status}, C{id}).
    @param now: a monotonic clock (C{time.monotonic}).
    @param candidates: the names of nodes currently alive and voting, for
        the handover to a node of better priority.
    """

    def __init__(
        self,
        raft: Any,
        machine: LeaseStateMachine,
        clock: Any,
        now: Callable[[], float],
        settings: LeaseSettings | None = None,
        candidates: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        self.raft, self.machine, self.clock, self.now = raft, machine, clock, now
        self.settings = settings or LeaseSettings()
        self.me: str = raft.id
        self.changed: list[Callable[[], None]] = []
        self.holds: dict[str, HoldInputs] = {
            name: hold.newLeaseHold(HoldCore(name, clock, lambda: self.now(), self._notifyAfterHold))
            for name in LEASES
        }
        self.core = KeeperCore(
            raft, machine, clock, lambda: self.now(), self.settings, candidates, self.holds, self._notify
        )
        self.state: KeeperInputs = newLeaseKeeper(self.core)
        machine.listeners.append(self._applied)

    # -- public ------------------------------------------------------------

    def acting(self, name: str) -> int | None:
        """
        The fencing token under which this node may act for lease C{name}
        right now, or None.  (Handing over and stopping release or drop
        every hold first, and the keeper takes no new one then.)
        """
        hold = self.holds.get(name)
        if hold is None:
            return None
        token, until = hold.token(), hold.until()
        if token is None or until is None or self.now() >= until:
            return None
        return token

    def status(self) -> dict[str, Any]:
        now = self.now()
        out: dict[str, Any] = {}
        for name in LEASES:
            lease = self.machine.get(name)
            until = self.holds[name].until()
            out[name] = {
                "holder": lease.holder,
                "token": lease.token,
                "durationSeconds": lease.duration,
                "actingHere": self.acting(name) is not None,
                "expiresInSeconds": round(until - now, 3) if until is not None else None,
            }
        return out

    def start(self) -> None:
        self.state.start(KeeperRounds())

    def stop(self) -> Deferred[Any]:
        """
        Stop acting at once, release what this node holds and hand Raft
        leadership to the best other candidate by priority.
        """
        return self.state.stop()

    # -- internals ---------------------------------------------------------

    def _applied(self, name: str, lease: Lease, op: str, ok: bool) -> None:
        if ok:
            self.core.observed[name] = self.now()
        hold = self.holds.get(name)
        token = hold.token() if hold is not None else None
        if hold is not None and token is not None and (lease.holder != self.me or lease.token != token):
            hold.moved("the lease moved")
        self._notify()

    def _notify(self) -> None:
        for callback in list(self.changed):
            callback()

    def _notifyAfterHold(self) -> None:
        # A hold machine notifies from inside its transition, and the
        # callbacks ask L{acting}, which gives that machine an input (token,
        # until) it cannot answer mid-transition: they run in the next
        # reactor turn instead.
        self.clock.callLater(0, self._notify)
