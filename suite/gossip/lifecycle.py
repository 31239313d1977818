"""
The local gossip node's lifecycle: started, running, leaving (its leave
broadcast, then a wait for it to spread), stopped.

  inputs:  start(seeds) - listen, start the protocol timers, join;
           leave(waiter) - announce a graceful leave, keep gossiping it for
             C{leavePropagateDelay}, then stop; C{waiter} fires once stopped;
           stop(waiter) - stop at once (no leave message); C{waiter} fires
             once the transport has stopped;
           listenFailed() - the transport could not listen (start raised);
           announceDue() - (private) time to gossip the leave message;
           propagated() - (private) the leave has had time to spread.
  outputs: begin (listen, timers, join), sendLeaveIntent, announceLeft,
           endService (timers, roster, queues, transport), fireWaiters.
  states:  Idle (initial) -> Running -> Leaving -> Left; Running -> Stopped;
           Left and Stopped start again.

Leaving's data is its two timers (the announcement, delayed only when a
Serf leave intent goes first, and the end of propagation) and the waiters
of every C{leave} asked for meanwhile; a C{stop} while leaving cancels the
timers and fires them too.  The node learns its phase (L{Phase}) only from
the machine: each transition names it in the core before any side effect.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.gossip.fields import Address

__all__ = ["LifecycleCore", "LifecycleInputs", "LifecycleMachine", "LocalNode", "Phase"]

log = Logger(namespace="suite.gossip.lifecycle")


class Phase(enum.Enum):
    """
    Where the local node is in its life, as the lifecycle machine names it.
    """

    IDLE = "idle"
    RUNNING = "running"
    LEAVING = "leaving"
    LEFT = "left"
    STOPPED = "stopped"


#: Phases in which the node takes part in the protocol.
UP = frozenset({Phase.RUNNING, Phase.LEAVING})
#: Phases in which the node has announced its leave.
DEPARTING = frozenset({Phase.LEAVING, Phase.LEFT})


class LocalNode(Protocol):
    """
    What the lifecycle drives: the gossip node's own protocol machinery.
    """

    def listen(self) -> None:
        """
        Start the transport listening (may raise).
        """

    def begin(self, seeds: Sequence[Address]) -> Deferred[int]:
        """
        Start the protocol timers and join through C{seeds}.
        """

    def sendLeaveIntent(self) -> None:
        """
        Send the Serf leave intent, when configured to.
        """

    def announceLeft(self) -> None:
        """
        Gossip this node's leave message.
        """

    def endService(self) -> Deferred[None]:
        """
        Stop the timers and the transport; forget the cluster.
        """


class LifecycleInputs(Protocol):
    """
    Inputs of the local node's lifecycle machine.
    """

    def start(self, seeds: Sequence[Address]) -> Deferred[int]:
        """
        Start; fire with the number of seeds that answered.
        """

    def leave(self, waiter: Deferred[None]) -> None:
        """
        Leave gracefully; C{waiter} fires once stopped.
        """

    def stop(self, waiter: Deferred[None]) -> None:
        """
        Stop without a leave message; C{waiter} fires once stopped.
        """

    def listenFailed(self) -> None:
        """
        The transport could not listen: the start did not happen.
        """

    def announceDue(self) -> None:
        """
        (Private) gossip the leave message now.
        """

    def propagated(self) -> None:
        """
        (Private) the leave message has had its time to spread.
        """


@dataclass
class LifecycleCore:
    """
    The node the lifecycle drives, its clock and leave timings.

    @ivar intentDelay: seconds between the Serf leave intent and the leave
        message (0 when no intent is sent).
    @ivar propagateDelay: seconds the leave message is gossiped before the
        node stops.
    @ivar phase: the current phase, named by the machine only.
    """

    node: LocalNode
    name: str
    clock: IReactorTime
    intentDelay: float
    propagateDelay: float
    phase: Phase = Phase.IDLE


@dataclass
class LeavingData:
    """
    Leaving's timers and who waits for the node to stop.
    """

    announce: IDelayedCall | None
    end: IDelayedCall
    waiters: list[Deferred[None]] = field(default_factory=list)

    def cancel(self) -> None:
        for call in (self.announce, self.end):
            if call is not None and call.active():
                call.cancel()


def _fire(result: object, waiters: list[Deferred[None]]) -> None:
    for waiter in waiters:
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(None)


def _build() -> TypeMachine[LifecycleInputs, LifecycleCore]:
    b = TypeMachineBuilder(LifecycleInputs, LifecycleCore)
    idle = b.state("Idle")
    running = b.state("Running")

    def leaveTimers(inputs: LifecycleInputs, core: LifecycleCore, waiter: Deferred[None]) -> LeavingData:
        announce = None
        if core.intentDelay:
            announce = core.clock.callLater(core.intentDelay, inputs.announceDue)
        else:
            # Delivered as soon as this transition completes.
            inputs.announceDue()
        end = core.clock.callLater(core.intentDelay + core.propagateDelay, inputs.propagated)
        return LeavingData(announce, end, [waiter])

    leaving = b.state("Leaving", leaveTimers)
    left = b.state("Left")
    stopped = b.state("Stopped")

    def begin(inputs: LifecycleInputs, core: LifecycleCore, seeds: Sequence[Address]) -> Deferred[int]:
        core.node.listen()
        core.phase = Phase.RUNNING
        return core.node.begin(seeds)

    def alreadyStarted(
        inputs: LifecycleInputs, core: LifecycleCore, seeds: Sequence[Address]
    ) -> Deferred[int]:
        return succeed(0)

    def doneAlready(inputs: LifecycleInputs, core: LifecycleCore, waiter: Deferred[None]) -> None:
        waiter.callback(None)

    def nothing(inputs: LifecycleInputs, core: LifecycleCore) -> None:
        pass

    # Idle, Left and Stopped: not taking part; a start (re)starts.
    for st in (idle, left, stopped):
        st.upon(LifecycleInputs.start).to(running)(begin)
        st.upon(LifecycleInputs.leave).loop()(doneAlready)
        st.upon(LifecycleInputs.stop).loop()(doneAlready)
        st.upon(LifecycleInputs.listenFailed).loop()(nothing)  # impossible: start failed elsewhere
        st.upon(LifecycleInputs.announceDue).loop()(nothing)  # no timer: impossible
        st.upon(LifecycleInputs.propagated).loop()(nothing)  # no timer: impossible

    # Running
    running.upon(LifecycleInputs.start).loop()(alreadyStarted)
    running.upon(LifecycleInputs.announceDue).loop()(nothing)  # no timer: impossible
    running.upon(LifecycleInputs.propagated).loop()(nothing)  # no timer: impossible

    @running.upon(LifecycleInputs.listenFailed).to(stopped)
    def notStarted(inputs: LifecycleInputs, core: LifecycleCore) -> None:
        core.phase = Phase.STOPPED

    @running.upon(LifecycleInputs.leave).to(leaving)
    def sendLeaveIntent(inputs: LifecycleInputs, core: LifecycleCore, waiter: Deferred[None]) -> None:
        core.phase = Phase.LEAVING
        log.info("gossip node {name} leaving", name=core.name)
        core.node.sendLeaveIntent()

    @running.upon(LifecycleInputs.stop).to(stopped)
    def endService(inputs: LifecycleInputs, core: LifecycleCore, waiter: Deferred[None]) -> None:
        core.phase = Phase.STOPPED
        core.node.endService().chainDeferred(waiter)

    # Leaving
    @leaving.upon(LifecycleInputs.start).loop()
    def stillLeaving(
        inputs: LifecycleInputs, core: LifecycleCore, data: LeavingData, seeds: Sequence[Address]
    ) -> Deferred[int]:
        return succeed(0)

    @leaving.upon(LifecycleInputs.leave).loop()
    def alsoWait(
        inputs: LifecycleInputs, core: LifecycleCore, data: LeavingData, waiter: Deferred[None]
    ) -> None:
        data.waiters.append(waiter)

    @leaving.upon(LifecycleInputs.announceDue).loop()
    def announceLeft(inputs: LifecycleInputs, core: LifecycleCore, data: LeavingData) -> None:
        core.node.announceLeft()

    @leaving.upon(LifecycleInputs.propagated).to(left)
    def fireWaiters(inputs: LifecycleInputs, core: LifecycleCore, data: LeavingData) -> None:
        core.phase = Phase.LEFT
        data.cancel()
        waiters, data.waiters = data.waiters, []
        core.node.endService().addBoth(_fire, waiters)

    @leaving.upon(LifecycleInputs.stop).to(left)
    def stopLeaving(
        inputs: LifecycleInputs, core: LifecycleCore, data: LeavingData, waiter: Deferred[None]
    ) -> None:
        core.phase = Phase.LEFT
        data.cancel()
        waiters, data.waiters = [*data.waiters, waiter], []
        core.node.endService().addBoth(_fire, waiters)

    leaving.upon(LifecycleInputs.listenFailed).loop().returns(None)  # impossible: it listened

    return b.build()


#: Build one per node: C{LifecycleMachine(LifecycleCore(node, ...))}.
LifecycleMachine = _build()
