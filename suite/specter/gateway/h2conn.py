"""
The lifecycle of one HTTP/2 visitor connection
(L{suite.specter.gateway.h2.H2Visitor}): open, going away once the gateway
drains, closed.

Inputs (L{ConnectionInputs}): C{opened}, C{idleTimerFired},
C{idleExpired}, C{drainStarted}, C{drained}, C{deadlineReached},
C{hungUp}, C{connectionLost}.

Outputs (on the L{ConnectionSide}): start and re-arm the idle check, send
GOAWAY (C{NO_ERROR}, naming the last stream taken, or closing C{h2}'s
connection on the idle timeout), hang up (unregister the producer, lose
the connection), release what the connection holds once it is gone.

States::

    Connecting --opened--> Open --drainStarted--> GoingAway --drained / deadlineReached / hungUp / idleExpired--> Closed
                            |                                                                                     ^
                            +------------------ deadlineReached / hungUp / idleExpired ---------------------------+

and C{connectionLost} leads to C{Closed} from anywhere.  C{Open} and
C{GoingAway} hold the idle check's timer (started by C{opened}, re-armed
by C{idleTimerFired} while the connection is busy, cancelled by every
transition to C{Closed}); C{GoingAway} also holds the last stream id its
GOAWAY named (streams opened later are refused; the connection closes when
no stream is left, or at the drain's deadline).  The idle check's two
outcomes are a loop feeding a private input (C{idleTimerFired} ->
C{idleExpired}).

The connection reads its state on every frame and every flush, so the
machine lends it (L{ConnectionSide.phase}) the current state as a
L{Phase}: L{CONNECTING}, the C{Open} or C{GoingAway} state's own data,
or L{CLOSED}.  The
machine sets it as it enters each state; nothing else does, and a request
costs no machine input.

Not part of this machine: whether the visitor's TCP connection is full
(C{writePaused}).  That is flow control reported by the transport's
producer API (C{pauseProducing}/C{resumeProducing}), orthogonal to the
lifecycle (a connection may be paused whether open or going away) and
with no protocol obligation of its own; the streams read it as they send.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall

from suite.fsm import indexed

__all__ = [
    "CLOSED",
    "ConnectionInputs",
    "ConnectionMachine",
    "ConnectionSide",
    "Phase",
    "newConnection",
]


class Phase:
    """
    The connection's state as its hot path reads it, and the state data of
    C{Open} and C{GoingAway}.

    @ivar name: C{"Open"}, C{"GoingAway"} or C{"Closed"}.
    @ivar lastStreamId: in C{GoingAway}, the last stream id its GOAWAY
        named; otherwise None.
    @ivar idleCall: in C{Open} and C{GoingAway}, the idle check's timer
        (None before C{opened}); cancelled as the connection closes.
    """

    __slots__ = ("name", "lastStreamId", "idleCall")

    def __init__(
        self, name: str, lastStreamId: int | None = None, idleCall: IDelayedCall | None = None
    ) -> None:
        self.name = name
        self.lastStreamId = lastStreamId
        self.idleCall = idleCall

    def __repr__(self) -> str:
        return f"<Phase {self.name} {self.lastStreamId}>"


#: The lent state of every connection whose transport is not up yet.
CONNECTING = Phase("Connecting")
#: The lent state of every closed connection.
CLOSED = Phase("Closed")


class ConnectionInputs(Protocol):
    def opened(self) -> None:
        """
        The transport is up: start the idle check.
        """

    def idleTimerFired(self) -> None:
        """
        The idle check's timer fired.
        """

    def idleExpired(self) -> None:
        """
        Nothing happened on the connection for the idle timeout (fed by
        C{idleTimerFired}'s check).
        """

    def drainStarted(self) -> None:
        """
        The gateway drains: tell the visitor to open no more streams here.
        """

    def drained(self) -> None:
        """
        No stream is left (the connection is only closed if going away).
        """

    def deadlineReached(self) -> None:
        """
        The drain's deadline: close now, whatever is in flight.
        """

    def hungUp(self) -> None:
        """
        The connection ends here (idle, the visitor broke the protocol or
        said GOAWAY, too many resets).
        """

    def connectionLost(self) -> None:
        """
        The transport is gone.
        """


class ConnectionSide:
    """
    What the machine drives: the connection (subclasses implement the
    outputs).
    """

    #: The current state, lent by the machine (read on the hot path).
    phase: Phase

    def highestStreamId(self) -> int:
        """
        The highest stream id the visitor opened.
        """
        raise NotImplementedError()

    def sendGoAway(self, lastStreamId: int) -> None:
        """
        Send GOAWAY (C{NO_ERROR}, C{lastStreamId}) and what else is ready.
        """
        raise NotImplementedError()

    def idleWait(self) -> float | None:
        """
        How long to wait before checking again whether the connection is
        idle; None if it is idle now.
        """
        raise NotImplementedError()

    def callLater(self, delay: float, call: Callable[[], None]) -> IDelayedCall:
        """
        Call C{call} in C{delay} seconds.
        """
        raise NotImplementedError()

    def terminate(self) -> None:
        """
        Send GOAWAY (C{NO_ERROR}) closing C{h2}'s connection, and what else
        is ready.
        """
        raise NotImplementedError()

    def hangUp(self) -> None:
        """
        Stop producing and lose the transport.
        """
        raise NotImplementedError()

    def release(self) -> None:
        """
        The transport is gone: drop the streams, timers and queues.
        """
        raise NotImplementedError()


def _openData(inputs: ConnectionInputs, side: ConnectionSide) -> Phase:
    """
    Open's data, lent to the connection.
    """
    phase = side.phase = Phase("Open")
    return phase


def _build() -> TypeMachine[ConnectionInputs, ConnectionSide]:
    b = TypeMachineBuilder(ConnectionInputs, ConnectionSide)

    def goingAwayData(inputs: ConnectionInputs, side: ConnectionSide) -> Phase:
        # the idle timer carries over from Open
        phase = Phase("GoingAway", side.highestStreamId(), side.phase.idleCall)
        side.phase = phase
        return phase

    connecting = b.state("Connecting")
    opened = b.state("Open", _openData)
    goingAway = b.state("GoingAway", goingAwayData)
    closed = b.state("Closed")

    @connecting.upon(ConnectionInputs.opened).to(opened)
    def startIdle(inputs: ConnectionInputs, side: ConnectionSide) -> None:
        wait = side.idleWait()
        side.phase.idleCall = side.callLater(wait if wait is not None else 0.0, inputs.idleTimerFired)

    @connecting.upon(ConnectionInputs.connectionLost).to(closed)
    def releaseConnecting(inputs: ConnectionInputs, side: ConnectionSide) -> None:
        side.phase = CLOSED
        side.release()

    # nothing else reaches a connection before its transport is up
    for name in ("idleTimerFired", "idleExpired", "drainStarted", "drained", "deadlineReached", "hungUp"):
        connecting.upon(getattr(ConnectionInputs, name)).loop().returns(None)

    def checkIdle(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        earlier = phase.idleCall
        if earlier is not None and earlier.active():
            # fed other than by the timer itself: one timer only
            earlier.cancel()
        wait = side.idleWait()
        if wait is None:
            phase.idleCall = None
            inputs.idleExpired()
        else:
            phase.idleCall = side.callLater(wait, inputs.idleTimerFired)

    def leave(side: ConnectionSide, phase: Phase) -> None:
        """
        Leaving Open or GoingAway for Closed: cancel the idle timer.
        """
        side.phase = CLOSED
        idleCall = phase.idleCall
        phase.idleCall = None
        if idleCall is not None and idleCall.active():
            idleCall.cancel()

    @opened.upon(ConnectionInputs.drainStarted).to(goingAway)
    def sendGoAway(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        lastStreamId = side.phase.lastStreamId
        assert lastStreamId is not None
        side.sendGoAway(lastStreamId)

    @opened.upon(ConnectionInputs.deadlineReached).to(closed)
    def goAwayAndHangUp(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        side.sendGoAway(side.highestStreamId())
        leave(side, phase)
        side.hangUp()

    def hangUp(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        leave(side, phase)
        side.hangUp()

    def expire(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        side.terminate()
        leave(side, phase)
        side.hangUp()

    def release(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        leave(side, phase)
        side.release()

    for live in (opened, goingAway):
        live.upon(ConnectionInputs.opened).loop().returns(None)
        live.upon(ConnectionInputs.idleTimerFired).loop()(checkIdle)
        live.upon(ConnectionInputs.idleExpired).to(closed)(expire)
        live.upon(ConnectionInputs.hungUp).to(closed)(hangUp)
        live.upon(ConnectionInputs.connectionLost).to(closed)(release)
    opened.upon(ConnectionInputs.drained).loop().returns(None)

    goingAway.upon(ConnectionInputs.drainStarted).loop().returns(None)
    goingAway.upon(ConnectionInputs.drained).to(closed)(hangUp)
    goingAway.upon(ConnectionInputs.deadlineReached).to(closed)(hangUp)

    closed.upon(ConnectionInputs.opened).loop().returns(None)
    closed.upon(ConnectionInputs.idleTimerFired).loop().returns(None)
    closed.upon(ConnectionInputs.idleExpired).loop().returns(None)
    closed.upon(ConnectionInputs.drainStarted).loop().returns(None)
    closed.upon(ConnectionInputs.drained).loop().returns(None)
    closed.upon(ConnectionInputs.deadlineReached).loop().returns(None)
    closed.upon(ConnectionInputs.hungUp).loop().returns(None)

    @closed.upon(ConnectionInputs.connectionLost).loop()
    def releaseClosed(inputs: ConnectionInputs, side: ConnectionSide) -> None:
        side.release()

    return b.build()


ConnectionMachine = indexed(_build())


def newConnection(side: ConnectionSide) -> ConnectionInputs:
    """
    The machine of C{side}'s connection, C{Connecting} (C{opened} opens
    it and starts its idle check).
    """
    side.phase = CONNECTING
    return ConnectionMachine(side)
