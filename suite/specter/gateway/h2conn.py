"""
The lifecycle of one HTTP/2 visitor connection
(L{suite.specter.gateway.h2.H2Visitor}): open, announcing its shutdown and
then going away once the gateway drains, closed.

Inputs (L{ConnectionInputs}): C{opened}, C{idleTimerFired},
C{idleExpired}, C{drainStarted}, C{pingAcked}, C{graceElapsed},
C{drained}, C{deadlineReached}, C{hungUp}, C{connectionLost}.

Outputs (on the L{ConnectionSide}): start and re-arm the idle check,
announce the shutdown (GOAWAY C{NO_ERROR} naming stream 2^31-1, and a
PING), send the final GOAWAY (C{NO_ERROR}, naming the last stream taken,
or closing C{h2}'s connection on the idle timeout), hang up (unregister
the producer, lose the connection), release what the connection holds
once it is gone.

States::

    Connecting --opened--> Open --drainStarted--> Announced --pingAcked / graceElapsed--> GoingAway --drained--> Closed
                            |                        |                                      |                    ^
                            |                        +--- deadlineReached / hungUp / idleExpired --------------->+
                            +--------------------------- deadlineReached / hungUp / idleExpired ---------------->+

and C{connectionLost} leads to C{Closed} from anywhere.  This is the
graceful shutdown of RFC 9113 section 6.8: the first GOAWAY tells the
visitor to open no more streams without naming the last one taken, since
streams it opened meanwhile may still be on their way; the PING's
acknowledgement proves they have arrived (the visitor sends it after
them), so the final GOAWAY, sent on it or after L{GRACE} seconds at most
(or at the drain's deadline, whichever comes first), names the last
stream really taken.  Streams opened before it are served.

C{Open}, C{Announced} and C{GoingAway} hold the idle check's timer
(started by C{opened}, re-armed by C{idleTimerFired} while the connection
is busy, cancelled by every transition to C{Closed}); C{Announced} also
holds the bound on the wait for the PING's acknowledgement (its timer
feeds C{graceElapsed}; cancelled as C{Announced} is left), and names
stream 2^31-1 as its last; C{GoingAway} holds the last stream id its
final GOAWAY named (streams opened later are refused; the connection
closes when no stream is left, or at the drain's deadline).  The idle
check's two outcomes are a loop feeding a private input
(C{idleTimerFired} -> C{idleExpired}).

The connection reads its state on every frame and every flush, so the
machine lends it (L{ConnectionSide.phase}) the current state as a
L{Phase}: L{CONNECTING}, the C{Open}, C{Announced} or C{GoingAway}
state's own data, or L{CLOSED}.  The
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
    "GRACE",
    "MAX_STREAM_ID",
    "ConnectionInputs",
    "ConnectionMachine",
    "ConnectionSide",
    "Phase",
    "newConnection",
]


#: The stream id the first GOAWAY of a graceful shutdown names (2^31-1).
MAX_STREAM_ID = 0x7FFFFFFF
#: Seconds the final GOAWAY waits at most for the PING's acknowledgement.
GRACE = 1.0


class Phase:
    """
    The connection's state as its hot path reads it, and the state data of
    C{Open}, C{Announced} and C{GoingAway}.

    @ivar name: C{"Open"}, C{"Announced"}, C{"GoingAway"} or C{"Closed"}.
    @ivar lastStreamId: in C{Announced} and C{GoingAway}, the last stream
        id the latest GOAWAY named (L{MAX_STREAM_ID} in C{Announced});
        otherwise None.
    @ivar idleCall: in C{Open}, C{Announced} and C{GoingAway}, the idle
        check's timer (None before C{opened}); cancelled as the connection
        closes.
    @ivar graceCall: in C{Announced}, the timer bounding the wait for the
        PING's acknowledgement; cancelled as C{Announced} is left.
    """

    __slots__ = ("name", "lastStreamId", "idleCall", "graceCall")

    def __init__(
        self,
        name: str,
        lastStreamId: int | None = None,
        idleCall: IDelayedCall | None = None,
        graceCall: IDelayedCall | None = None,
    ) -> None:
        self.name = name
        self.lastStreamId = lastStreamId
        self.idleCall = idleCall
        self.graceCall = graceCall

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

    def pingAcked(self) -> None:
        """
        The visitor acknowledged the PING sent with the first GOAWAY: every
        stream it opened before is here.
        """

    def graceElapsed(self) -> None:
        """
        L{GRACE} seconds passed without the PING's acknowledgement.
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

    def announceGoAway(self) -> None:
        """
        Send GOAWAY (C{NO_ERROR}, L{MAX_STREAM_ID}) and a PING, and what
        else is ready.
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
        Call C{call} in C{delay} seconds (the idle check's and the
        grace's timers).
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

    def announcedData(inputs: ConnectionInputs, side: ConnectionSide) -> Phase:
        # the idle timer carries over from Open
        grace = side.callLater(GRACE, inputs.graceElapsed)
        phase = Phase("Announced", MAX_STREAM_ID, side.phase.idleCall, grace)
        side.phase = phase
        return phase

    def goingAwayData(inputs: ConnectionInputs, side: ConnectionSide) -> Phase:
        # the idle timer carries over from Announced
        phase = Phase("GoingAway", side.highestStreamId(), side.phase.idleCall)
        side.phase = phase
        return phase

    connecting = b.state("Connecting")
    opened = b.state("Open", _openData)
    announced = b.state("Announced", announcedData)
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
    for name in (
        "idleTimerFired",
        "idleExpired",
        "drainStarted",
        "pingAcked",
        "graceElapsed",
        "drained",
        "deadlineReached",
        "hungUp",
    ):
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

    def stopGrace(phase: Phase) -> None:
        graceCall = phase.graceCall
        phase.graceCall = None
        if graceCall is not None and graceCall.active():
            graceCall.cancel()

    def leave(side: ConnectionSide, phase: Phase) -> None:
        """
        Leaving Open, Announced or GoingAway for Closed: cancel the timers.
        """
        side.phase = CLOSED
        stopGrace(phase)
        idleCall = phase.idleCall
        phase.idleCall = None
        if idleCall is not None and idleCall.active():
            idleCall.cancel()

    @opened.upon(ConnectionInputs.drainStarted).to(announced)
    def announce(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        side.announceGoAway()

    def sendGoAway(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        stopGrace(phase)
        lastStreamId = side.phase.lastStreamId
        assert lastStreamId is not None
        side.sendGoAway(lastStreamId)

    announced.upon(ConnectionInputs.pingAcked).to(goingAway)(sendGoAway)
    announced.upon(ConnectionInputs.graceElapsed).to(goingAway)(sendGoAway)

    def goAwayAndHangUp(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        side.sendGoAway(side.highestStreamId())
        leave(side, phase)
        side.hangUp()

    opened.upon(ConnectionInputs.deadlineReached).to(closed)(goAwayAndHangUp)
    # the drain's deadline came before the PING's acknowledgement
    announced.upon(ConnectionInputs.deadlineReached).to(closed)(goAwayAndHangUp)

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

    for live in (opened, announced, goingAway):
        live.upon(ConnectionInputs.opened).loop().returns(None)
        live.upon(ConnectionInputs.idleTimerFired).loop()(checkIdle)
        live.upon(ConnectionInputs.idleExpired).to(closed)(expire)
        live.upon(ConnectionInputs.hungUp).to(closed)(hangUp)
        live.upon(ConnectionInputs.connectionLost).to(closed)(release)
    opened.upon(ConnectionInputs.drained).loop().returns(None)
    # no PING is outstanding outside Announced, and the grace's timer is
    # Announced's own (cancelled as it is left): both are ignored elsewhere
    for s in (opened, goingAway, closed):
        s.upon(ConnectionInputs.pingAcked).loop().returns(None)
        s.upon(ConnectionInputs.graceElapsed).loop().returns(None)

    announced.upon(ConnectionInputs.drainStarted).loop().returns(None)
    # streams opened before the final GOAWAY may still arrive: wait for it
    announced.upon(ConnectionInputs.drained).loop().returns(None)

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
