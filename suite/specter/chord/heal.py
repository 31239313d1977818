"""
Healing a split ring: the probe machine of a process, and the look at one
former peer it takes.

A partition that outlasts failure detection leaves two rings, each serving
on its own.  Every C{healInterval} (jittered) the process asks one process
it was once in a ring with, and no longer sees, which ring it serves in
(L{lookAt}).  Each ring is named by its lowest vnode id (the owner of id 0).
When two probes in a row see the same other ring (a probe that learns
nothing in between keeps the first sighting) and its name is the lower,
this process rejoins it and tells its peers to follow (the C{heal} call), so
the ring with the higher name moves as a whole; the lower name of the ring
taking processes in only falls and the other's only rises, so every process
agrees which side moves.

Inputs (L{HealProbe}): C{start}, C{stop}, C{due} (a state's probe timer
fired), the probe's answers C{nothingFound}, C{suspect}, C{confirmed},
C{settled} (the quiet time after a rejoin ended), C{healRequested} (the
C{heal} call of a peer that moved).
States: Idle -> Waiting(timer) -> Probing(probe) -> Waiting, or
Suspecting(timer, ring) -> Probing -> ... -> Healing(timer) -> Waiting; any
state -> Stopped, for good.  Every state answers every input
(tests/specter/test_chord_heal.py drives each input in each state): an
answer outside Probing, a C{due} outside Waiting and Suspecting, or a
C{settled} outside Healing is a late notice and changes nothing.  The timers
and the probe in flight are state data, cancelled by the transitions that
leave their state.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef, ref

if TYPE_CHECKING:
    from suite.specter.chord.node import ChordNode

__all__ = ["HealCore", "HealProbe", "Inconclusive", "Sighting", "buildHealProbe", "lookAt", "probeOnce"]

log = Logger()


class Inconclusive(Exception):
    """
    A probe learnt nothing: the peer did not answer or does not serve, or
    this process does not serve everywhere yet.
    """


@dataclass(frozen=True)
class Sighting:
    """
    Another ring seen through C{peer}: its name C{theirs}, ours C{ours}.
    """

    peer: str
    theirs: VnodeRef
    ours: VnodeRef


class HealProbe(Protocol):
    def start(self) -> None:
        """
        The process is in (or getting into) the ring: time the first probe.
        """

    def stop(self) -> None:
        """
        The process stops: no more probes, for good.
        """

    def due(self, suspected: VnodeRef | None) -> None:
        """
        The probe timer fired; C{suspected} is the other ring the last probe
        saw (None from Waiting).
        """

    def nothingFound(self) -> None:
        """
        The probe found no other ring to move into (or learnt nothing, with
        no ring suspected before it).
        """

    def suspect(self, ring: VnodeRef) -> None:
        """
        The probe saw another ring named C{ring} for the first time (or a
        different one than before), or learnt nothing while C{ring} stays
        suspected: look again soon.
        """

    def confirmed(self, peer: str) -> None:
        """
        The probe saw the suspected ring again and its name is the lower:
        rejoin it through C{peer}.
        """

    def settled(self) -> None:
        """
        The quiet time after a rejoin ended.
        """

    def healRequested(self, peer: str) -> bool:
        """
        A peer of this ring moved to the ring C{peer} serves in: follow it
        (unless this process moved lately); returns whether it rejoined.
        """


@dataclass
class HealCore:
    """
    Collaborators: the clock, the interval between probes, the random
    source for the jitter, the probe (one look at a former peer outside the
    view), and the rejoin into another ring.
    """

    clock: IReactorTime
    interval: float
    rng: random.Random
    probe: Callable[[], Deferred[Sighting | None]]
    rejoin: Callable[[str], None]

    def jittered(self) -> float:
        return self.interval * (0.75 + 0.5 * self.rng.random())


@dataclass
class Waiting:
    timer: IDelayedCall


@dataclass
class Suspecting:
    timer: IDelayedCall
    ring: VnodeRef


@dataclass
class Probing:
    probe: Deferred[None]


@dataclass
class Healing:
    timer: IDelayedCall


def _waiting(h: HealProbe, core: HealCore) -> Waiting:
    return Waiting(core.clock.callLater(core.jittered(), h.due, None))


def _suspecting(h: HealProbe, core: HealCore, ring: VnodeRef) -> Suspecting:
    # churn in one ring can look like another ring for a moment: ask again
    return Suspecting(core.clock.callLater(core.interval / 2, h.due, ring), ring)


def _healing(h: HealProbe, core: HealCore, peer: str) -> Healing:
    return Healing(core.clock.callLater(core.interval, h.settled))


def _probing(h: HealProbe, core: HealCore, suspected: VnodeRef | None) -> Probing:
    """
    Start the probe; its outcome comes back as an input (after this
    transition, if it is known at once).  Leaving Probing otherwise cancels
    it, so no answer arrives late.
    """

    def answered(found: Sighting | None) -> None:
        if found is None:
            h.nothingFound()
        elif found.theirs != suspected:
            h.suspect(found.theirs)
        else:
            log.info(
                "found another ring through {peer} (its lowest vnode {theirs}, ours {ours})",
                peer=found.peer,
                theirs=found.theirs.short(),
                ours=found.ours.short(),
            )
            if found.theirs.id > found.ours.id:
                h.nothingFound()  # that ring moves into this one
            else:
                h.confirmed(found.peer)

    def failed(f: Failure) -> None:
        if f.check(CancelledError):
            return
        if not f.check(Inconclusive):
            log.failure("probing a former peer for another ring failed", f)
        if suspected is None:
            h.nothingFound()
        else:
            h.suspect(suspected)

    d = core.probe().addCallbacks(answered, failed)
    d.addErrback(lambda f: log.failure("handling a ring probe's answer failed", f))
    return Probing(d)


def _build() -> TypeMachine[HealProbe, HealCore]:
    b = TypeMachineBuilder(HealProbe, HealCore)
    idle = b.state("Idle")
    waiting = b.state("Waiting", _waiting)
    suspecting = b.state("Suspecting", _suspecting)
    probing = b.state("Probing", _probing)
    healing = b.state("Healing", _healing)
    stopped = b.state("Stopped")

    idle.upon(HealProbe.start).to(waiting).returns(None)

    # (a timer's input arriving early: the timer is not needed any more)
    @waiting.upon(HealProbe.due).to(probing)
    def _probeWaiting(h: HealProbe, core: HealCore, data: Waiting, suspected: VnodeRef | None) -> None:
        if data.timer.active():
            data.timer.cancel()

    @suspecting.upon(HealProbe.due).to(probing)
    def _probeSuspecting(h: HealProbe, core: HealCore, data: Suspecting, suspected: VnodeRef | None) -> None:
        if data.timer.active():
            data.timer.cancel()

    probing.upon(HealProbe.nothingFound).to(waiting).returns(None)
    probing.upon(HealProbe.suspect).to(suspecting).returns(None)

    @probing.upon(HealProbe.confirmed).to(healing)
    def _merge(h: HealProbe, core: HealCore, data: Probing, peer: str) -> None:
        core.rejoin(peer)

    @healing.upon(HealProbe.settled).to(waiting)
    def _settled(h: HealProbe, core: HealCore, data: Healing) -> None:
        if data.timer.active():
            data.timer.cancel()

    # a peer moved: follow it, leaving any timer or probe behind
    @waiting.upon(HealProbe.healRequested).to(healing)
    def _followWaiting(h: HealProbe, core: HealCore, data: Waiting, peer: str) -> bool:
        data.timer.cancel()
        core.rejoin(peer)
        return True

    @suspecting.upon(HealProbe.healRequested).to(healing)
    def _followSuspecting(h: HealProbe, core: HealCore, data: Suspecting, peer: str) -> bool:
        data.timer.cancel()
        core.rejoin(peer)
        return True

    @probing.upon(HealProbe.healRequested).to(healing)
    def _followProbing(h: HealProbe, core: HealCore, data: Probing, peer: str) -> bool:
        data.probe.cancel()
        core.rejoin(peer)
        return True

    # moved lately, not started, or stopped: stay
    for s in (healing, idle, stopped):
        s.upon(HealProbe.healRequested).loop().returns(False)

    @waiting.upon(HealProbe.stop).to(stopped)
    def _stopWaiting(h: HealProbe, core: HealCore, data: Waiting) -> None:
        data.timer.cancel()

    @suspecting.upon(HealProbe.stop).to(stopped)
    def _stopSuspecting(h: HealProbe, core: HealCore, data: Suspecting) -> None:
        data.timer.cancel()

    @healing.upon(HealProbe.stop).to(stopped)
    def _stopHealing(h: HealProbe, core: HealCore, data: Healing) -> None:
        data.timer.cancel()

    @probing.upon(HealProbe.stop).to(stopped)
    def _stopProbing(h: HealProbe, core: HealCore, data: Probing) -> None:
        data.probe.cancel()

    for s0 in (idle, stopped):
        s0.upon(HealProbe.stop).to(stopped).returns(None)

    # late or repeated notices change nothing
    def _ignore(h: HealProbe, core: HealCore, data: object, *args: object) -> None:
        pass

    late: list[tuple[Any, Any]] = [
        (waiting, HealProbe.start),
        (waiting, HealProbe.nothingFound),
        (waiting, HealProbe.suspect),
        (waiting, HealProbe.confirmed),
        (waiting, HealProbe.settled),
        (suspecting, HealProbe.start),
        (suspecting, HealProbe.nothingFound),
        (suspecting, HealProbe.suspect),
        (suspecting, HealProbe.confirmed),
        (suspecting, HealProbe.settled),
        (probing, HealProbe.start),
        (probing, HealProbe.due),
        (probing, HealProbe.settled),
        (healing, HealProbe.start),
        (healing, HealProbe.due),
        (healing, HealProbe.nothingFound),
        (healing, HealProbe.suspect),
        (healing, HealProbe.confirmed),
    ]
    for state, method in late:
        state.upon(method).loop()(_ignore)
    for s1 in (idle, stopped):
        for method in (
            HealProbe.due,
            HealProbe.nothingFound,
            HealProbe.suspect,
            HealProbe.confirmed,
            HealProbe.settled,
        ):
            s1.upon(method).loop().returns(None)
    stopped.upon(HealProbe.start).loop().returns(None)
    return b.build()


buildHealProbe = _build()
"""
Factory: C{buildHealProbe(core)} returns a L{HealProbe} in state Idle.
"""


async def lookAt(node: ChordNode, peer: str) -> Sighting | None:
    """
    Ask C{peer} which ring it serves in: a L{Sighting} when it is another
    ring than this process's, None when it is the same; L{Inconclusive}
    when that cannot be told now.
    """
    try:
        info = await node.transport.call(peer, None, "status", [], node.config.rpcTimeout)
    except RemoteError as e:
        raise Inconclusive(f"{peer}: {e.message or e.code}") from None
    if not isinstance(info, dict):
        raise Inconclusive(f"{peer}: malformed status answer")
    refs = [r for r in (ref(x) for x in info.get("serving") or []) if r is not None]
    if not refs:
        raise Inconclusive(f"{peer} does not serve")
    if not all(v.serving for v in node.vnodes):
        raise Inconclusive("this process does not serve everywhere")
    entry = node.rng.choice(refs)
    mine = node.vnodes[0].ref
    try:
        state = await node.call(entry, "state")
        near = {r.addr for r in (ref(x) for x in [state[0], *state[1]]) if r is not None}
        if near & (node.currentPeers() | {node.addr}):
            return None
        theirs, _ = await node.findSuccessor(0, start=entry)
        ours, _ = await node.findSuccessor(0)
        landing, _ = await node.findSuccessor(mine.id, start=entry)
    except (RemoteError, TypeError, IndexError) as e:
        raise Inconclusive(f"{peer}: {e}") from None
    if theirs == ours or landing == mine or theirs.addr == node.addr:
        return None
    return Sighting(peer, theirs, ours)


def probeOnce(node: ChordNode) -> Deferred[Sighting | None]:
    """
    One probe: L{lookAt} a formerly known process outside the current ring
    view, chosen at random.
    """
    if not all(v.serving for v in node.vnodes):
        return fail(Inconclusive("this process does not serve everywhere"))
    outside = sorted(node.formerPeers - node.currentPeers() - {node.addr})
    if not outside:
        return fail(Inconclusive("no former peer outside the ring view"))
    return Deferred.fromCoroutine(lookAt(node, node.rng.choice(outside)))
