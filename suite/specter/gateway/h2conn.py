"""
The lifecycle of one HTTP/2 visitor connection
(L{suite.specter.gateway.h2.H2Visitor}): open, going away once the gateway
drains, closed.

Inputs (L{ConnectionInputs}): C{drainStarted}, C{drained},
C{deadlineReached}, C{hungUp}, C{connectionLost}.

Outputs (on the L{ConnectionSide}): send GOAWAY (C{NO_ERROR}, naming the
last stream taken), hang up (unregister the producer, lose the
connection), release what the connection holds once it is gone.

States::

    Open --drainStarted--> GoingAway --drained / deadlineReached / hungUp--> Closed
      |                                                                        ^
      +------------------ deadlineReached / hungUp ----------------------------+

and C{connectionLost} leads to C{Closed} from anywhere.  C{GoingAway}
holds the last stream id its GOAWAY named (streams opened later are
refused; the connection closes when no stream is left, or at the drain's
deadline).

The connection reads its state on every frame and every flush, so the
machine lends it (L{ConnectionSide.phase}) the current state as a
L{Phase}: L{OPEN}, the C{GoingAway} state's own data, or L{CLOSED}.  The
machine sets it as it enters each state; nothing else does, and a request
costs no machine input.

Not part of this machine: whether the visitor's TCP connection is full
(C{writePaused}).  That is flow control reported by the transport's
producer API (C{pauseProducing}/C{resumeProducing}), orthogonal to the
lifecycle (a connection may be paused whether open or going away) and
with no protocol obligation of its own; the streams read it as they send.
"""

from __future__ import annotations

from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder

from suite.fsm import indexed

__all__ = [
    "CLOSED",
    "OPEN",
    "ConnectionInputs",
    "ConnectionMachine",
    "ConnectionSide",
    "Phase",
    "newConnection",
]


class Phase:
    """
    The connection's state as its hot path reads it.

    @ivar name: C{"Open"}, C{"GoingAway"} or C{"Closed"}.
    @ivar lastStreamId: in C{GoingAway}, the last stream id its GOAWAY
        named; otherwise None.
    """

    __slots__ = ("name", "lastStreamId")

    def __init__(self, name: str, lastStreamId: int | None = None) -> None:
        self.name = name
        self.lastStreamId = lastStreamId

    def __repr__(self) -> str:
        return f"<Phase {self.name} {self.lastStreamId}>"


OPEN = Phase("Open")
CLOSED = Phase("Closed")


class ConnectionInputs(Protocol):
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


def _build() -> TypeMachine[ConnectionInputs, ConnectionSide]:
    b = TypeMachineBuilder(ConnectionInputs, ConnectionSide)
    opened = b.state("Open")
    closed = b.state("Closed")

    def goingAwayData(inputs: ConnectionInputs, side: ConnectionSide) -> Phase:
        phase = Phase("GoingAway", side.highestStreamId())
        side.phase = phase
        return phase

    goingAway = b.state("GoingAway", goingAwayData)

    @opened.upon(ConnectionInputs.drainStarted).to(goingAway)
    def sendGoAway(inputs: ConnectionInputs, side: ConnectionSide) -> None:
        phase = side.phase
        assert phase.lastStreamId is not None
        side.sendGoAway(phase.lastStreamId)

    def hangUp(inputs: ConnectionInputs, side: ConnectionSide) -> None:
        side.phase = CLOSED
        side.hangUp()

    def hangUpGoingAway(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        hangUp(inputs, side)

    @opened.upon(ConnectionInputs.deadlineReached).to(closed)
    def goAwayAndHangUp(inputs: ConnectionInputs, side: ConnectionSide) -> None:
        side.sendGoAway(side.highestStreamId())
        hangUp(inputs, side)

    opened.upon(ConnectionInputs.hungUp).to(closed)(hangUp)
    opened.upon(ConnectionInputs.drained).loop().returns(None)

    goingAway.upon(ConnectionInputs.drainStarted).loop().returns(None)
    goingAway.upon(ConnectionInputs.drained).to(closed)(hangUpGoingAway)
    goingAway.upon(ConnectionInputs.deadlineReached).to(closed)(hangUpGoingAway)
    goingAway.upon(ConnectionInputs.hungUp).to(closed)(hangUpGoingAway)

    closed.upon(ConnectionInputs.drainStarted).loop().returns(None)
    closed.upon(ConnectionInputs.drained).loop().returns(None)
    closed.upon(ConnectionInputs.deadlineReached).loop().returns(None)
    closed.upon(ConnectionInputs.hungUp).loop().returns(None)

    def release(inputs: ConnectionInputs, side: ConnectionSide) -> None:
        side.phase = CLOSED
        side.release()

    def releaseGoingAway(inputs: ConnectionInputs, side: ConnectionSide, phase: Phase) -> None:
        release(inputs, side)

    opened.upon(ConnectionInputs.connectionLost).to(closed)(release)
    goingAway.upon(ConnectionInputs.connectionLost).to(closed)(releaseGoingAway)
    closed.upon(ConnectionInputs.connectionLost).loop()(release)
    return b.build()


ConnectionMachine = indexed(_build())


def newConnection(side: ConnectionSide) -> ConnectionInputs:
    """
    The machine of C{side}'s connection, C{Open}.
    """
    side.phase = OPEN
    return ConnectionMachine(side)
