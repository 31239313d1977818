"""
The lifecycle of one HTTP/3 visitor connection
(L{suite.specter.gateway.h3._H3Protocol}): open once the QUIC handshake
that negotiated HTTP/3 is complete,
going away once the gateway drains, closed.

Inputs (L{H3ConnectionInputs}): C{opened}, C{drainStarted},
C{streamsDone}, C{deadlineReached}, C{connectionLost}.

Outputs (on the L{H3ConnectionSide}): send GOAWAY (RFC 9114 section 5.2)
on the control stream, naming the first request stream not taken, and
lend the connection going away's data path (requests on later streams are
rejected, and whether a request is left is checked as the connection
sends); close the QUIC connection (C{H3_NO_ERROR}); release (the gateway
stops waiting for the connection).

States::

    Connecting --opened--> Open --drainStarted--> GoingAway --streamsDone / deadlineReached--> Closed
                            |                                                                  ^
                            +----------------------- deadlineReached -------------------------+

and C{connectionLost} (QUIC's C{ConnectionTerminated}) leads to C{Closed}
from anywhere.  C{GoingAway} holds the GOAWAY's stream id and the request
streams refused since (L{GoingAway}); the connection reads them through
the data path the machine lends it while it is C{GoingAway} and takes
back on leaving, so an open connection's requests cost no input and no
check.

Unlike HTTP/2's machine (L{suite.specter.gateway.h2conn}: C{Announced}
and its one-second C{GRACE}), there is one GOAWAY and no bound of its own
on the wait for its acknowledgement.  HTTP/2's bound ends the time between
its two GOAWAYs, while the first (naming 2^31-1) leaves the set of streams
taken open; RFC 9114 section 5.2's GOAWAY names the first stream not
processed, fixed as C{GoingAway} is entered, so nothing is left open.  The
close waits for the GOAWAY's acknowledgement so that the visitor learns
which requests were not processed (and may retry them) before the
C{CONNECTION_CLOSE}; QUIC acknowledges within a round trip plus the ACK
delay and retransmits what is lost, and a visitor that never
acknowledges is closed by C{deadlineReached} (the drain's deadline) or by
QUIC's idle timeout (C{connectionLost}).  A shorter bound would only
close before the visitor could know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder

from suite.fsm import indexed

__all__ = [
    "GoingAway",
    "H3ConnectionInputs",
    "H3ConnectionMachine",
    "H3ConnectionSide",
    "newH3Connection",
]


@dataclass
class GoingAway:
    """
    C{GoingAway}'s data.

    @ivar streamId: the stream id the GOAWAY named: requests on client
        streams from it on are rejected, those below it are served.
    @ivar refused: the request streams rejected so far (each is reset
        once).
    """

    streamId: int
    refused: set[int] = field(default_factory=set)


class H3ConnectionInputs(Protocol):
    def opened(self) -> None:
        """
        The handshake that negotiated HTTP/3 is complete.
        """

    def drainStarted(self) -> None:
        """
        The gateway drains: tell the visitor to send no more requests here.
        """

    def streamsDone(self) -> None:
        """
        No request below the GOAWAY's stream id is left (every one was
        answered and acknowledged, or reset), and the GOAWAY itself was
        acknowledged.
        """

    def deadlineReached(self) -> None:
        """
        The drain's deadline: close now, whatever is in flight.
        """

    def connectionLost(self) -> None:
        """
        The QUIC connection is over.
        """


class H3ConnectionSide:
    """
    What the machine drives: the connection (subclasses implement the
    outputs).
    """

    def nextRequestStreamId(self) -> int:
        """
        The first client request stream id the visitor has not opened.
        """
        raise NotImplementedError()

    def lendGoingAway(self, goingAway: GoingAway) -> None:
        """
        Take going away's data path, reading C{goingAway}: reject requests
        on streams from C{goingAway.streamId} on, and check whether a
        request below it is left each time the connection sends.
        """
        raise NotImplementedError()

    def sendGoAway(self) -> None:
        """
        Send GOAWAY on the control stream, naming the stream id of the
        L{GoingAway} lent last.
        """
        raise NotImplementedError()

    def closeConnection(self) -> None:
        """
        Give the data path back and close the QUIC connection
        (C{H3_NO_ERROR}).
        """
        raise NotImplementedError()

    def release(self) -> None:
        """
        Give the data path back; the gateway no longer waits for the
        connection.
        """
        raise NotImplementedError()


def _build() -> TypeMachine[H3ConnectionInputs, H3ConnectionSide]:
    b = TypeMachineBuilder(H3ConnectionInputs, H3ConnectionSide)

    def goingAwayData(inputs: H3ConnectionInputs, side: H3ConnectionSide) -> GoingAway:
        data = GoingAway(side.nextRequestStreamId())
        side.lendGoingAway(data)
        return data

    connecting = b.state("Connecting")
    opened = b.state("Open")
    goingAway = b.state("GoingAway", goingAwayData)
    closed = b.state("Closed")

    connecting.upon(H3ConnectionInputs.opened).to(opened).returns(None)
    # never told to drain before HTTP/3 is up (the gateway does not know
    # it yet); nothing to release when it never opened
    for name in ("drainStarted", "streamsDone", "deadlineReached"):
        connecting.upon(getattr(H3ConnectionInputs, name)).loop().returns(None)
    connecting.upon(H3ConnectionInputs.connectionLost).to(closed).returns(None)

    @opened.upon(H3ConnectionInputs.drainStarted).to(goingAway)
    def sendGoAway(inputs: H3ConnectionInputs, side: H3ConnectionSide) -> None:
        side.sendGoAway()

    def close(inputs: H3ConnectionInputs, side: H3ConnectionSide) -> None:
        side.closeConnection()
        side.release()

    def release(inputs: H3ConnectionInputs, side: H3ConnectionSide) -> None:
        side.release()

    opened.upon(H3ConnectionInputs.opened).loop().returns(None)
    # only checked while going away
    opened.upon(H3ConnectionInputs.streamsDone).loop().returns(None)
    opened.upon(H3ConnectionInputs.deadlineReached).to(closed)(close)
    opened.upon(H3ConnectionInputs.connectionLost).to(closed)(release)

    goingAway.upon(H3ConnectionInputs.opened).loop().returns(None)
    goingAway.upon(H3ConnectionInputs.drainStarted).loop().returns(None)

    def closeGoingAway(inputs: H3ConnectionInputs, side: H3ConnectionSide, data: GoingAway) -> None:
        side.closeConnection()
        side.release()

    def releaseGoingAway(inputs: H3ConnectionInputs, side: H3ConnectionSide, data: GoingAway) -> None:
        side.release()

    goingAway.upon(H3ConnectionInputs.streamsDone).to(closed)(closeGoingAway)
    goingAway.upon(H3ConnectionInputs.deadlineReached).to(closed)(closeGoingAway)
    goingAway.upon(H3ConnectionInputs.connectionLost).to(closed)(releaseGoingAway)

    for name in ("opened", "drainStarted", "streamsDone", "deadlineReached", "connectionLost"):
        closed.upon(getattr(H3ConnectionInputs, name)).loop().returns(None)
    return b.build()


H3ConnectionMachine = indexed(_build())


def newH3Connection(side: H3ConnectionSide) -> H3ConnectionInputs:
    """
    The machine of C{side}'s connection, C{Connecting} (C{opened} opens it).
    """
    return H3ConnectionMachine(side)
