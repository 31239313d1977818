"""
The tunnel link lifecycle machine: one per gateway link of a client.

Inputs (L{TunnelLifecycle}): C{start}, C{connected}, C{dialFailed},
C{registered}, C{errorReceived}, C{moveRequested},
C{streamOpened}, C{drained}, C{connectionLost}, C{reconnectDue},
C{closeTimedOut}, C{shutdown}, C{stop}.

Outputs (L{ILinkActions}, carried out by the link's handle): C{connect},
C{register}, C{announce}, C{reportRefusal}, C{noteMove}, C{reportLoss},
C{acceptStream}, C{refuseStream}, C{whenIdle}, C{finishStreams},
C{abortStreams}, C{disconnect}, C{abortConnection}, C{reportClosed}; the
backoff policy (L{suite.backoff.Backoff}) is reset on registration.

States: C{Idle} -> C{Dialing} (data: the connection attempt) ->
C{Registering} (the link is up, the gateway has not answered) ->
C{Registered} (the gateway's later C{published} notice changes nothing
here, so it is not an input).  An error answer first makes it
C{Refused} (the gateway answered, so a later loss is no TLS refusal).  A
lost link or failed attempt waits in C{BackingOff} (data: the reconnect
timer; exponential backoff with jitter) and dials again.  A gateway's
C{move} makes a live link C{Moving} (data: the wait for its last stream)
then C{Leaving} (closing; redialled later: the gateway may come back).  On
C{shutdown} (SIGTERM) a registered link goes to C{Stopping} (data: the
wait for its last stream): no new streams, the open ones finish
(C{drained}) or are reset on C{stop} (the grace period ended); then
C{Closing} (data: a timer that aborts a connection slow to close) and
C{Closed}, never redialled.  Every per-state resource is created on
entering its state and cancelled by the transition that leaves it: nothing
polls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from suite.backoff import Backoff
from suite.specter.tunnel.mux import Stream

__all__ = [
    "TunnelLifecycle",
    "ILinkActions",
    "LifecycleCore",
    "Backoff",
    "buildLifecycle",
    "newLifecycle",
    "CLOSE_TIMEOUT",
]

#: Seconds a closing link may take before its connection is aborted.
CLOSE_TIMEOUT = 2.0


class TunnelLifecycle(Protocol):
    def start(self) -> None:
        """
        Begin: dial the gateway.
        """

    def connected(self) -> None:
        """
        The link's connection is up (its TLS handshake under way).
        """

    def dialFailed(self, reason: Failure) -> None:
        """
        The connection attempt failed.
        """

    def registered(self, hostname: str) -> None:
        """
        The gateway accepted the tunnel under C{hostname}.
        """

    def errorReceived(self, reason: str) -> None:
        """
        The gateway answered with an error (it refused the registration).
        """

    def moveRequested(self) -> None:
        """
        The gateway is leaving: finish the streams and use other links.
        """

    def streamOpened(self, stream: Stream, meta: dict[str, Any]) -> None:
        """
        The gateway opened a stream (a visitor).
        """

    def drained(self) -> None:
        """
        The last stream of a link that finishes its streams ended.
        """

    def connectionLost(self, reason: Failure) -> None:
        """
        The link's connection closed.
        """

    def reconnectDue(self) -> None:
        """
        The backoff timer fired.
        """

    def closeTimedOut(self) -> None:
        """
        A closing link did not close in L{CLOSE_TIMEOUT} seconds.
        """

    def shutdown(self) -> None:
        """
        The client is exiting: take no new streams, finish the open ones.
        """

    def stop(self) -> None:
        """
        Close now (the client is exiting; streams still open are reset).
        """


class ILinkActions(Protocol):
    def connect(self) -> Deferred[Any]:
        """
        Dial the gateway; the attempt's Deferred fails if it cannot.
        """

    def register(self) -> None:
        """
        Ask the gateway for the hostname.
        """

    def announce(self, hostname: str) -> None:
        """
        The tunnel is up under C{hostname}.
        """

    def reportRefusal(self, reason: str) -> None:
        """
        The gateway refused the tunnel.
        """

    def noteMove(self) -> None:
        """
        The gateway asked us to move: the link finishes its streams.
        """

    def reportLoss(self, reason: Failure) -> None:
        """
        A link the gateway never answered on was lost (a TLS refusal?).
        """

    def acceptStream(self, stream: Stream, meta: dict[str, Any]) -> None:
        """
        Connect a visitor's stream to the target.
        """

    def refuseStream(self, stream: Stream) -> None:
        """
        Refuse a visitor's stream (the client is shutting down).
        """

    def whenIdle(self) -> Deferred[None]:
        """
        Fires when the link carries no stream (at once if it carries none);
        cancellable.
        """

    def finishStreams(self) -> None:
        """
        Tell the gateway to send no new visitors down the link.
        """

    def abortStreams(self) -> None:
        """
        Reset the streams still open.
        """

    def disconnect(self) -> None:
        """
        Close the link.
        """

    def abortConnection(self) -> None:
        """
        Abort the link's connection.
        """

    def reportClosed(self) -> None:
        """
        The link is closed for good.
        """


@dataclass
class LifecycleCore:
    """
    The machine's collaborators: what carries out the outputs, the clock
    and the backoff policy.
    """

    actions: ILinkActions
    clock: IReactorTime
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class DialData:
    """
    C{Dialing}: the connection attempt.
    """

    attempt: Deferred[Any]


@dataclass
class BackoffData:
    """
    C{BackingOff}: the reconnect timer.
    """

    timer: IDelayedCall

    def cancel(self) -> None:
        if self.timer.active():
            self.timer.cancel()


@dataclass
class IdleData:
    """
    C{Moving} and C{Stopping}: the wait for the link's last stream.
    """

    idle: Deferred[None]

    def cancel(self) -> None:
        self.idle.cancel()


@dataclass
class ClosingData:
    """
    C{Closing}: the timer that aborts a connection slow to close.
    """

    timer: IDelayedCall

    def cancel(self) -> None:
        if self.timer.active():
            self.timer.cancel()


def _ignoreCancel(f: Failure) -> None:
    f.trap(CancelledError)


def _build() -> TypeMachine[TunnelLifecycle, LifecycleCore]:
    T = TunnelLifecycle
    b = TypeMachineBuilder(TunnelLifecycle, LifecycleCore)
    idle = b.state("Idle")

    def dial(inputs: TunnelLifecycle, core: LifecycleCore) -> DialData:
        attempt = core.actions.connect()
        attempt.addErrback(inputs.dialFailed)
        return DialData(attempt)

    dialing = b.state("Dialing", dial)
    registering = b.state("Registering")
    refused = b.state("Refused")
    registered = b.state("Registered")

    def waitForIdle(inputs: TunnelLifecycle, core: LifecycleCore) -> IdleData:
        idle = core.actions.whenIdle()
        idle.addCallbacks(lambda _: inputs.drained(), _ignoreCancel)
        return IdleData(idle)

    moving = b.state("Moving", waitForIdle)
    leaving = b.state("Leaving")

    def backOff(inputs: TunnelLifecycle, core: LifecycleCore, reason: Failure) -> BackoffData:
        return BackoffData(core.clock.callLater(core.backoff.next(), inputs.reconnectDue))

    backingOff = b.state("BackingOff", backOff)
    stopping = b.state("Stopping", waitForIdle)

    def closeSoon(inputs: TunnelLifecycle, core: LifecycleCore) -> ClosingData:
        return ClosingData(core.clock.callLater(CLOSE_TIMEOUT, inputs.closeTimedOut))

    closing = b.state("Closing", closeSoon)
    closed = b.state("Closed")

    # -- unlinked: Idle, Dialing, BackingOff -------------------------------------------
    idle.upon(T.start).to(dialing).returns(None)

    @idle.upon(T.stop).to(closed)
    def _stopIdle(inputs: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.reportClosed()

    idle.upon(T.shutdown).to(closed)(_stopIdle)

    @dialing.upon(T.connected).to(registering)
    def _connected(inputs: TunnelLifecycle, core: LifecycleCore, data: DialData) -> None:
        core.actions.register()

    @dialing.upon(T.dialFailed).to(backingOff)
    def _dialFailed(inputs: TunnelLifecycle, core: LifecycleCore, data: DialData, reason: Failure) -> None:
        pass

    @dialing.upon(T.stop).to(closed)
    def _stopDialing(inputs: TunnelLifecycle, core: LifecycleCore, data: DialData) -> None:
        data.attempt.cancel()
        core.actions.reportClosed()

    dialing.upon(T.shutdown).to(closed)(_stopDialing)

    @backingOff.upon(T.reconnectDue).to(dialing)
    def _redial(inputs: TunnelLifecycle, core: LifecycleCore, data: BackoffData) -> None:
        data.cancel()

    @backingOff.upon(T.stop).to(closed)
    def _stopBackingOff(inputs: TunnelLifecycle, core: LifecycleCore, data: BackoffData) -> None:
        data.cancel()
        core.actions.reportClosed()

    backingOff.upon(T.shutdown).to(closed)(_stopBackingOff)

    # -- linked: Registering, Refused, Registered, Moving, Leaving ----------------------
    def _registered(inputs: TunnelLifecycle, core: LifecycleCore, hostname: str) -> None:
        core.backoff.reset()
        core.actions.announce(hostname)

    def _refused(inputs: TunnelLifecycle, core: LifecycleCore, reason: str) -> None:
        core.actions.reportRefusal(reason)

    def _accept(inputs: TunnelLifecycle, core: LifecycleCore, stream: Stream, meta: dict[str, Any]) -> None:
        core.actions.acceptStream(stream, meta)

    def _disconnect(inputs: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.disconnect()

    def _finish(inputs: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.finishStreams()

    def _lost(inputs: TunnelLifecycle, core: LifecycleCore, reason: Failure) -> None:
        pass

    @registering.upon(T.connectionLost).to(backingOff)
    def _lostUnanswered(inputs: TunnelLifecycle, core: LifecycleCore, reason: Failure) -> None:
        core.actions.reportLoss(reason)

    registering.upon(T.registered).to(registered)(_registered)
    registering.upon(T.errorReceived).to(refused)(_refused)
    refused.upon(T.registered).to(registered)(_registered)
    refused.upon(T.errorReceived).loop()(_refused)
    refused.upon(T.connectionLost).to(backingOff)(_lost)
    for s in (registering, refused):
        s.upon(T.shutdown).to(closing)(_disconnect)

    registered.upon(T.registered).loop().returns(None)
    registered.upon(T.errorReceived).loop()(_refused)
    registered.upon(T.connectionLost).to(backingOff)(_lost)
    registered.upon(T.shutdown).to(stopping)(_finish)

    def _move(inputs: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.noteMove()

    for s in (registering, refused, registered):
        s.upon(T.moveRequested).to(moving)(_move)
        s.upon(T.stop).to(closing)(_disconnect)

    for s in (registering, refused, registered, leaving):
        s.upon(T.streamOpened).loop()(_accept)

    @moving.upon(T.drained).to(leaving)
    def _moved(inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData) -> None:
        data.cancel()
        core.actions.disconnect()

    @moving.upon(T.streamOpened).loop()
    def _acceptMoving(
        inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData, stream: Stream, meta: dict[str, Any]
    ) -> None:
        core.actions.acceptStream(stream, meta)

    @moving.upon(T.errorReceived).loop()
    def _refusedMoving(inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData, reason: str) -> None:
        core.actions.reportRefusal(reason)

    @moving.upon(T.connectionLost).to(backingOff)
    def _lostMoving(inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData, reason: Failure) -> None:
        data.cancel()

    @moving.upon(T.shutdown).to(stopping)
    def _shutdownMoving(inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData) -> None:
        data.cancel()
        core.actions.finishStreams()

    @moving.upon(T.stop).to(closing)
    def _stopMoving(inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData) -> None:
        data.cancel()
        core.actions.disconnect()

    for name in ("registered", "moveRequested"):
        moving.upon(getattr(T, name), nodata=True).loop().returns(None)

    leaving.upon(T.errorReceived).loop()(_refused)
    leaving.upon(T.connectionLost).to(backingOff)(_lost)
    leaving.upon(T.shutdown).to(closing).returns(None)
    leaving.upon(T.stop).to(closing).returns(None)
    for name in ("registered", "moveRequested"):
        leaving.upon(getattr(T, name)).loop().returns(None)

    # -- shutting down: Stopping, Closing, Closed --------------------------------------
    @stopping.upon(T.drained).to(closing)
    def _stoppedClean(inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData) -> None:
        data.cancel()
        core.actions.disconnect()

    @stopping.upon(T.stop).to(closing)
    def _stoppedLate(inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData) -> None:
        data.cancel()
        core.actions.abortStreams()
        core.actions.disconnect()

    @stopping.upon(T.connectionLost).to(closed)
    def _lostStopping(inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData, reason: Failure) -> None:
        data.cancel()
        core.actions.reportClosed()

    @stopping.upon(T.streamOpened).loop()
    def _refuseStopping(
        inputs: TunnelLifecycle, core: LifecycleCore, data: IdleData, stream: Stream, meta: dict[str, Any]
    ) -> None:
        core.actions.refuseStream(stream)

    for name in ("registered", "errorReceived", "moveRequested", "shutdown"):
        stopping.upon(getattr(T, name), nodata=True).loop().returns(None)

    @closing.upon(T.connectionLost).to(closed)
    def _closed(inputs: TunnelLifecycle, core: LifecycleCore, data: ClosingData, reason: Failure) -> None:
        data.cancel()
        core.actions.reportClosed()

    @closing.upon(T.closeTimedOut).loop()
    def _slowClose(inputs: TunnelLifecycle, core: LifecycleCore, data: ClosingData) -> None:
        core.actions.abortConnection()

    @closing.upon(T.streamOpened).loop()
    def _refuseClosing(
        inputs: TunnelLifecycle, core: LifecycleCore, data: ClosingData, stream: Stream, meta: dict[str, Any]
    ) -> None:
        core.actions.refuseStream(stream)

    for name in ("registered", "errorReceived", "moveRequested", "shutdown", "stop"):
        closing.upon(getattr(T, name), nodata=True).loop().returns(None)

    # Closed: late notices are harmless (a cancelled attempt's failure)
    for name in ("dialFailed", "shutdown", "stop"):
        closed.upon(getattr(T, name)).loop().returns(None)

    # Deliberately impossible (a NoTransition would be a bug):
    #  - connected outside Dialing: only an attempt makes a connection;
    #  - dialFailed in any state but Dialing and Closed: a stopped attempt
    #    is cancelled as Dialing is left for Closed;
    #  - reconnectDue, drained, closeTimedOut outside BackingOff, Moving or
    #    Stopping, and Closing: their timers and waits are those states'
    #    data, cancelled by every transition that leaves them;
    #  - link events (registered ... connectionLost) in Idle,
    #    Dialing, BackingOff and Closed: there is no link then;
    #  - start anywhere but Idle: a handle is started once.
    return b.build()


buildLifecycle = _build()


def newLifecycle(
    actions: ILinkActions, clock: IReactorTime, backoff: Backoff | None = None
) -> TunnelLifecycle:
    """
    A lifecycle machine, C{Idle}, driving C{actions}.
    """
    return buildLifecycle(LifecycleCore(actions, clock, backoff or Backoff()))
