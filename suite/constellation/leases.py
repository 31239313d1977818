"""
Leases on Raft: C{lb_leader} and C{dns_writer}.

The replicated part is L{LeaseStateMachine}: per lease a holder (or none)
and a fencing token.  Three commands change it, each a compare-and-set so
that a stale proposal changes nothing:

  - C{grant(name, holder, expectToken)}: succeeds only if the token is
    still C{expectToken} (the proposer judged that lease expired or free);
    the token becomes C{max token ever + 1}, so tokens strictly increase.
  - C{renew(name, holder, token)}: succeeds only if C{holder} holds C{token}.
  - C{release(name, holder, token)}: the same check; the lease becomes free.

Only the Raft leader proposes, and it proposes leases for itself only: the
holder of a lease is always a node that was leader when it proposed.
L{LeaseKeeper} does the time keeping, on monotonic clocks and with
durations only (clocks of different nodes are never compared):

  - The holder is I{acting} until C{sent + duration * (1 - drift)}, C{sent}
    being its own clock reading taken I{before} it proposed the grant or
    renewal that succeeded.  It checks this before every action
    (L{LeaseKeeper.acting}).
  - A leader grants a lease that another node holds only after
    C{duration * (1 + drift) + margin} has passed on its own clock since the
    later of its own election and the last grant or renewal it applied.

A renewal committed in an older term was proposed before the new leader's
election (a quorum moved to the new term in between), and one committed
later is applied later; either way the wait starts after C{sent}, so the
old holder stops acting before the lease can be granted elsewhere, as long
as clock rates differ by less than C{drift}.  A holder that cannot renew
(crashed leader, lost quorum, partition) simply runs out.  On shutdown, or
when a node of better priority is alive, the holder stops acting, releases
both leases and hands Raft leadership over; the next leader grants a free
lease at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from zope.interface import implementer

from suite.constellation.priority import nodePriority
from suite.raft.interfaces import IRaftStateMachine

__all__ = [
    "LB_LEADER",
    "DNS_WRITER",
    "LEASES",
    "Lease",
    "LeaseSettings",
    "LeaseStateMachine",
    "LeaseKeeper",
    "HoldInputs",
    "HoldCore",
    "newLeaseHold",
    "KeeperInputs",
    "KeeperCore",
    "KeeperRounds",
    "newLeaseKeeper",
    "encodeLeaseCommand",
    "candidateOrder",
]

log = Logger(namespace="constellation.leases")

LB_LEADER = "lb_leader"
DNS_WRITER = "dns_writer"
LEASES = (LB_LEADER, DNS_WRITER)
_LABEL = {LB_LEADER: "LB leader", DNS_WRITER: "DNS writer"}
_MAX_NAME = 64


@dataclass(frozen=True)
class Lease:
    """
    The replicated state of one lease.
    """

    holder: str | None
    token: int
    duration: float


@dataclass
class LeaseSettings:
    """
    Seconds: a grant or renewal lasts C{duration}; the holder renews every
    C{renewInterval}; C{drift} bounds the relative rate error of two
    nodes' monotonic clocks; C{margin} is added to the wait before a lease
    held by another node is granted; a node of better priority must be seen
    alive for C{handoverAfter} before the holder hands over to it.
    """

    duration: float = 5.0
    renewInterval: float = 1.0
    drift: float = 0.02
    margin: float = 0.2
    handoverAfter: float = 3.0

    def holderValidity(self) -> float:
        return self.duration * (1.0 - self.drift)

    def takeoverWait(self) -> float:
        return self.duration * (1.0 + self.drift) + self.margin


def encodeLeaseCommand(op: str, name: str, holder: str, token: int, duration: float = 0.0) -> bytes:
    """
    One lease command for L{LeaseStateMachine.apply}.
    """
    return msgpack.packb([op, name, holder, token, duration])


@implementer(IRaftStateMachine)
class LeaseStateMachine:
    """
    The replicated leases.  Deterministic: no clocks; L{listeners} are told
    C{(name, lease, op, ok)} after every applied command.
    """

    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}
        self.listeners: list[Callable[[str, Lease, str, bool], None]] = []

    def get(self, name: str) -> Lease:
        return self.leases.get(name) or Lease(None, 0, 0.0)

    def apply(self, index: int, command: bytes) -> list[bool | int | str | None]:
        """
        Apply one lease command; the proposer gets back C{[applied, token,
        holder, reason]} (C{reason} empty when applied).
        """
        try:
            op, name, holder, token, duration = msgpack.unpackb(command, raw=False)
            if not (
                isinstance(op, str)
                and isinstance(name, str)
                and isinstance(holder, str)
                and isinstance(token, int)
                and isinstance(duration, (int, float))
                and 0 < len(name) <= _MAX_NAME
                and len(holder) <= _MAX_NAME
            ):
                raise TypeError("field types")
        except Exception:  # deterministic apply: a bad command is an answer
            return [False, 0, None, "malformed lease command"]
        current = self.get(name)
        ok = False
        if op == "grant" and current.token == token and holder:
            current = Lease(holder, token + 1, float(duration))
            ok = True
        elif op in ("renew", "release") and current.holder == holder and current.token == token:
            current = Lease(holder if op == "renew" else None, token, current.duration)
            ok = True
        if ok:
            self.leases[name] = current
        for listener in list(self.listeners):
            listener(name, current, op, ok)
        return [ok, current.token, current.holder, "" if ok else "lease changed"]

    def snapshot(self) -> bytes:
        return msgpack.packb({k: [v.holder, v.token, v.duration] for k, v in sorted(self.leases.items())})

    def restore(self, data: bytes) -> None:
        raw = msgpack.unpackb(data, raw=False)
        self.leases = {str(k): Lease(v[0], int(v[1]), float(v[2])) for k, v in raw.items()}


def candidateOrder(name: str) -> tuple[int, str]:
    """
    Sort key of lease candidates: priority (lower wins), then name.
    """
    return (nodePriority(name), name)


# -- the per-lease hold machine -------------------------------------------
#
# Inputs (L{HoldInputs}): confirmed (a grant or renewal for this node
# committed), expired (private: the expiry timer fired), moved (the lease
# changed hands or token), released (this node gives the lease up), plus
# the questions token and until, answered in every state.
# Outputs (through L{HoldCore}): log lines and C{notify} (the keeper's
# change callbacks).
# States: Free; Holding (data: L{_Held}, the fencing token, the end of
# acting and the expiry timer, armed on entry and re-armed by a renewal,
# cancelled by the transition that leaves).


class HoldInputs(Protocol):
    def confirmed(self, token: int, until: float) -> None:
        """
        A grant or renewal proposed by this node committed: it may act under
        C{token} until C{until} (its own monotonic clock).
        """

    def expired(self) -> None:
        """
        The expiry timer fired: the lease was not renewed in time.
        """

    def moved(self, why: str) -> None:
        """
        The replicated lease no longer names this node with its token, or
        this node stops holding it for C{why}.
        """

    def released(self) -> int | None:
        """
        This node hands the lease over: stop acting; the token to release,
        or None if nothing is held.
        """

    def token(self) -> int | None:
        """
        The fencing token held (acting or not), or None.
        """

    def until(self) -> float | None:
        """
        When acting ends on this node's clock, or None.
        """


@dataclass
class HoldCore:
    name: str
    clock: Any
    now: Callable[[], float]
    notify: Callable[[], None]


@dataclass
class _Held:
    token: int
    until: float
    timer: Any = None

    def arm(self, inputs: HoldInputs, core: HoldCore) -> None:
        self.cancel()

        def fire() -> None:
            # The reactor's clock and the monotonic one may differ a little:
            # a timer that fires early waits for the rest.
            self.timer = None
            if core.now() >= self.until:
                inputs.expired()
            else:
                self.arm(inputs, core)

        self.timer = core.clock.callLater(max(0.0, self.until - core.now()), fire)

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


def _buildHold() -> TypeMachine[HoldInputs, HoldCore]:
    b = TypeMachineBuilder(HoldInputs, HoldCore)
    free = b.state("Free")

    def holding_(inputs: HoldInputs, core: HoldCore, token: int, until: float) -> _Held:
        held = _Held(token, until)
        held.arm(inputs, core)
        return held

    holding = b.state("Holding", holding_)

    @free.upon(HoldInputs.confirmed).to(holding)
    def acquired(inputs: HoldInputs, core: HoldCore, token: int, until: float) -> None:
        log.info("acquired {label} lease (fencing token {fence})", label=_LABEL[core.name], fence=token)
        core.notify()

    @holding.upon(HoldInputs.confirmed).loop()
    def renewed(inputs: HoldInputs, core: HoldCore, held: _Held, token: int, until: float) -> None:
        held.token, held.until = token, until
        held.arm(inputs, core)

    @free.upon(HoldInputs.expired).loop()
    def stale(inputs: HoldInputs, core: HoldCore) -> None:
        pass

    @holding.upon(HoldInputs.expired).to(free)
    def ranOut(inputs: HoldInputs, core: HoldCore, held: _Held) -> None:
        lose(core, held, "not renewed in time")

    @free.upon(HoldInputs.moved).loop()
    def notHeld(inputs: HoldInputs, core: HoldCore, why: str) -> None:
        pass

    @holding.upon(HoldInputs.moved).to(free)
    def lost(inputs: HoldInputs, core: HoldCore, held: _Held, why: str) -> None:
        lose(core, held, why)

    def lose(core: HoldCore, held: _Held, why: str) -> None:
        held.cancel()
        log.warn(
            "lost {label} lease (fencing token {fence}): {why}",
            label=_LABEL[core.name],
            fence=held.token,
            why=why,
        )
        core.notify()

    @free.upon(HoldInputs.released).loop()
    def nothingToRelease(inputs: HoldInputs, core: HoldCore) -> int | None:
        return None

    @holding.upon(HoldInputs.released).to(free)
    def release(inputs: HoldInputs, core: HoldCore, held: _Held) -> int | None:
        held.cancel()
        log.info("releasing {label} lease (fencing token {fence})", label=_LABEL[core.name], fence=held.token)
        return held.token

    @free.upon(HoldInputs.token).loop()
    def noToken(inputs: HoldInputs, core: HoldCore) -> int | None:
        return None

    @holding.upon(HoldInputs.token).loop()
    def heldToken(inputs: HoldInputs, core: HoldCore, held: _Held) -> int | None:
        return held.token

    @free.upon(HoldInputs.until).loop()
    def noUntil(inputs: HoldInputs, core: HoldCore) -> float | None:
        return None

    @holding.upon(HoldInputs.until).loop()
    def heldUntil(inputs: HoldInputs, core: HoldCore, held: _Held) -> float | None:
        return held.until

    return b.build()


newLeaseHold = _buildHold()


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
    L{newLeaseHold} machine.

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
            name: newLeaseHold(HoldCore(name, clock, lambda: self.now(), self._notifyAfterHold))
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
