"""
The tunnel link lifecycle machine (one per gateway link of a client).

Inputs (L{TunnelLifecycle}): C{start}, C{connected}, C{registered},
C{published}, C{moveRequested}, C{drained}, C{connectionLost},
C{reconnectDue}, C{shutdown}, C{stop}.
Outputs (L{ILinkActions} on the core): C{connect}, C{register},
C{announce}, C{scheduleReconnect}, C{resetBackoff}, C{waitForStreams},
C{finishStreams}, C{abortStreams}, C{disconnect}, C{cancelReconnect}.
States: Connecting -> Registered -> Published -> Draining -> Closed; a lost
link goes back to Connecting with exponential backoff and jitter.  On
C{shutdown} (SIGTERM) a live link goes to Stopping: no new streams, the
open ones finish (C{drained}) or are reset when the grace period ends
(C{stop}); either way it ends Closed, never redialled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from suite.backoff import Backoff

__all__ = ["TunnelLifecycle", "ILinkActions", "LifecycleCore", "Backoff", "buildLifecycle"]


class TunnelLifecycle(Protocol):
    def start(self) -> None:
        """
        Begin: dial the gateway.
        """

    def connected(self) -> None:
        """
        The TLS link is up.
        """

    def registered(self, hostname: str) -> None:
        """
        The gateway accepted the tunnel under C{hostname}.
        """

    def published(self) -> None:
        """
        The route is in the KV.
        """

    def moveRequested(self) -> None:
        """
        The gateway is leaving: finish streams and use other links.
        """

    def drained(self) -> None:
        """
        No stream is left on a draining link.
        """

    def connectionLost(self) -> None:
        """
        The link closed or could not be made.
        """

    def reconnectDue(self) -> None:
        """
        The backoff timer fired.
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
    def connect(self) -> None: ...

    def register(self) -> None: ...

    def announce(self, hostname: str) -> None: ...

    def waitForStreams(self) -> None: ...

    def finishStreams(self) -> None: ...

    def abortStreams(self) -> None: ...

    def disconnect(self) -> None: ...


@dataclass
class LifecycleCore:
    """
    The machine's collaborators: what carries out the outputs, the clock
    and the backoff policy.
    """

    actions: ILinkActions
    clock: IReactorTime
    backoff: Backoff = field(default_factory=Backoff)
    timer: IDelayedCall | None = None
    machine: Any = None

    def scheduleReconnect(self) -> None:
        self.cancelReconnect()
        self.timer = self.clock.callLater(self.backoff.next(), self._due)

    def _due(self) -> None:
        self.timer = None
        self.machine.reconnectDue()

    def cancelReconnect(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


def _build() -> Any:
    b = TypeMachineBuilder(TunnelLifecycle, LifecycleCore)
    idle = b.state("Idle")
    connecting = b.state("Connecting")
    registered = b.state("Registered")
    published = b.state("Published")
    draining = b.state("Draining")
    stopping = b.state("Stopping")
    closed = b.state("Closed")

    @idle.upon(TunnelLifecycle.start).to(connecting)
    def _start(m: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.connect()

    @connecting.upon(TunnelLifecycle.connected).loop()
    def _connected(m: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.register()

    @connecting.upon(TunnelLifecycle.registered).to(registered)
    def _registered(m: TunnelLifecycle, core: LifecycleCore, hostname: str) -> None:
        core.backoff.reset()
        core.actions.announce(hostname)

    @connecting.upon(TunnelLifecycle.connectionLost).loop()
    def _retry(m: TunnelLifecycle, core: LifecycleCore) -> None:
        core.scheduleReconnect()

    @connecting.upon(TunnelLifecycle.reconnectDue).loop()
    def _redial(m: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.connect()

    registered.upon(TunnelLifecycle.published).to(published).returns(None)

    for live in (registered, published):

        @live.upon(TunnelLifecycle.connectionLost).to(connecting)
        def _lost(m: TunnelLifecycle, core: LifecycleCore) -> None:
            core.scheduleReconnect()

        @live.upon(TunnelLifecycle.moveRequested).to(draining)
        def _move(m: TunnelLifecycle, core: LifecycleCore) -> None:
            core.actions.waitForStreams()

    @connecting.upon(TunnelLifecycle.moveRequested).loop()
    def _moveEarly(m: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.disconnect()

    @draining.upon(TunnelLifecycle.drained).loop()
    def _drained(m: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.disconnect()

    @draining.upon(TunnelLifecycle.connectionLost).to(connecting)
    def _drainedLost(m: TunnelLifecycle, core: LifecycleCore) -> None:
        core.scheduleReconnect()

    for s in (idle, connecting, registered, published, draining):

        @s.upon(TunnelLifecycle.stop).to(closed)
        def _stop(m: TunnelLifecycle, core: LifecycleCore) -> None:
            core.cancelReconnect()
            core.actions.disconnect()

    for s in (idle, connecting):

        @s.upon(TunnelLifecycle.shutdown).to(closed)
        def _shutdownUnlinked(m: TunnelLifecycle, core: LifecycleCore) -> None:
            core.cancelReconnect()
            core.actions.disconnect()

    for s in (registered, published, draining):

        @s.upon(TunnelLifecycle.shutdown).to(stopping)
        def _shutdown(m: TunnelLifecycle, core: LifecycleCore) -> None:
            core.actions.finishStreams()

    @stopping.upon(TunnelLifecycle.drained).to(closed)
    def _stoppedClean(m: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.disconnect()

    @stopping.upon(TunnelLifecycle.stop).to(closed)
    def _stoppedLate(m: TunnelLifecycle, core: LifecycleCore) -> None:
        core.actions.abortStreams()
        core.actions.disconnect()

    stopping.upon(TunnelLifecycle.connectionLost).to(closed).returns(None)

    # late or repeated notices are harmless everywhere
    for s, ignored in (
        (
            idle,
            (
                "connected",
                "registered",
                "published",
                "moveRequested",
                "drained",
                "connectionLost",
                "reconnectDue",
            ),
        ),
        (connecting, ("published", "drained", "start")),
        (registered, ("start", "connected", "registered", "drained", "reconnectDue")),
        (published, ("start", "connected", "registered", "published", "drained", "reconnectDue")),
        (draining, ("start", "connected", "registered", "published", "moveRequested", "reconnectDue")),
        (
            stopping,
            ("start", "connected", "registered", "published", "moveRequested", "reconnectDue", "shutdown"),
        ),
        (
            closed,
            (
                "start",
                "connected",
                "registered",
                "published",
                "moveRequested",
                "drained",
                "connectionLost",
                "reconnectDue",
                "shutdown",
                "stop",
            ),
        ),
    ):
        for name in ignored:
            s.upon(getattr(TunnelLifecycle, name)).loop().returns(None)
    return b.build()


buildLifecycle = _build()


def newLifecycle(
    actions: ILinkActions, clock: IReactorTime, backoff: Backoff | None = None
) -> TunnelLifecycle:
    """
    A lifecycle machine driving C{actions}.
    """
    core = LifecycleCore(actions, clock, backoff or Backoff())
    machine: TunnelLifecycle = buildLifecycle(core)
    core.machine = machine
    return machine
