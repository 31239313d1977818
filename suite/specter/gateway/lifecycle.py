"""
The gateway's two tunnel-link machines.

L{LinkMachine}, one per tunnel link a client holds here (or one-shot
command connection from C{specter client ls|release|acme|validate}):

  - Inputs (L{LinkInputs}): C{registerRequested}, C{registrationPublished},
    C{clientDrainRequested}, C{gatewayDraining}, C{joinedDrainingGateway},
    C{acceptsStreams}, C{connectionLost}.
  - Outputs (L{ILinkActions}, carried out by the link): C{startRegistration},
    C{completeRegistration}, C{askToMove}, C{clientDraining},
    C{releaseRoutes}.
  - States: C{Active} (visitors may be sent down the link),
    C{ClientDraining} (the client is shutting down: no new visitors, its
    idle pooled streams are closed), C{GatewayDraining} (this gateway is
    shutting down: the client was asked to move, registrations are
    refused), C{Closed}.

L{DrainMachine}, one per gateway, its shutdown (SIGTERM):

  - Inputs (L{DrainInputs}): C{drainRequested}, C{linkOpened},
    C{visitorOpened}, C{linksGone}, C{deadlinePassed}, C{isDraining}.
  - Outputs (L{IDrainActions}, carried out by the gateway):
    C{askVisitorsToLeave} (HTTP/2 and HTTP/3 visitors get GOAWAY: they
    open no more streams here, those in flight finish), C{askLinksToMove},
    C{abortLinks} and C{closeVisitors}; the waiters' Deferreds fire on
    leaving C{Draining}.
  - States: C{Serving} -> C{Draining} (data: the waiters and the deadline
    timer, cancelled once nothing is left) -> C{Drained}.

Nothing polls: the gateway feeds C{linksGone} when its last tunnel link
and its last HTTP/2 and HTTP/3 visitor connection are gone (a visitor
connection closes itself once its streams are done), and the deadline is a timer
owned by the C{Draining} state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from suite.fsm import indexed

__all__ = [
    "LinkInputs",
    "ILinkActions",
    "LinkCore",
    "LinkMachine",
    "DrainInputs",
    "IDrainActions",
    "DrainingVisitor",
    "DrainCore",
    "DrainData",
    "DrainMachine",
    "MOVE",
]

#: What a client is told when this gateway shuts down.
MOVE: dict[str, Any] = {"t": "move", "reason": "gateway shutting down"}


class LinkInputs(Protocol):
    def registerRequested(self, message: dict[str, Any]) -> None:
        """
        The client asked for a hostname (a C{register} control message).
        """

    def registrationPublished(self, hostname: str, kind: str, requestId: Any) -> None:
        """
        The route of a registration is in the ring KV.
        """

    def clientDrainRequested(self, requestId: Any) -> None:
        """
        The client is shutting down (a C{drain} control message).
        """

    def gatewayDraining(self) -> None:
        """
        This gateway began shutting down while the link was up.
        """

    def joinedDrainingGateway(self) -> None:
        """
        The link was opened while this gateway shuts down.
        """

    def acceptsStreams(self) -> bool:
        """
        Whether visitors may be sent down the link (the answer).
        """

    def connectionLost(self) -> None:
        """
        The link closed.
        """


class ILinkActions(Protocol):
    def startRegistration(self, message: dict[str, Any]) -> None:
        """
        Check a registration and publish its route (then feed
        C{registrationPublished}); errors are answered to the client.
        """

    def completeRegistration(self, hostname: str, kind: str, requestId: Any) -> None:
        """
        Route visitors of C{hostname} here and tell the client.
        """

    def askToMove(self) -> None:
        """
        Tell the client to use its other links.
        """

    def clientDraining(self, requestId: Any) -> None:
        """
        Close the link's idle pooled streams and acknowledge the drain.
        """

    def releaseRoutes(self) -> None:
        """
        Stop renewing, forget the link's hostnames, withdraw their routes.
        """


@dataclass
class LinkCore:
    """
    What the link machine acts on.
    """

    actions: ILinkActions


def _buildLink() -> TypeMachine[LinkInputs, LinkCore]:
    b = TypeMachineBuilder(LinkInputs, LinkCore)
    active = b.state("Active")
    clientDraining = b.state("ClientDraining")
    gatewayDraining = b.state("GatewayDraining")
    closed = b.state("Closed")

    def register(inputs: LinkInputs, core: LinkCore, message: dict[str, Any]) -> None:
        core.actions.startRegistration(message)

    def refuseRegistration(inputs: LinkInputs, core: LinkCore, message: dict[str, Any]) -> None:
        core.actions.askToMove()

    def complete(inputs: LinkInputs, core: LinkCore, hostname: str, kind: str, requestId: Any) -> None:
        core.actions.completeRegistration(hostname, kind, requestId)

    def drainClient(inputs: LinkInputs, core: LinkCore, requestId: Any) -> None:
        core.actions.clientDraining(requestId)

    def move(inputs: LinkInputs, core: LinkCore) -> None:
        core.actions.askToMove()

    def release(inputs: LinkInputs, core: LinkCore) -> None:
        core.actions.releaseRoutes()

    for live in (active, clientDraining, gatewayDraining):
        # a route published before the link closed is taken up, whatever
        # else happened meanwhile
        live.upon(LinkInputs.registrationPublished).loop()(complete)
        live.upon(LinkInputs.connectionLost).to(closed)(release)
    for s in (active, clientDraining):
        s.upon(LinkInputs.registerRequested).loop()(register)
        s.upon(LinkInputs.gatewayDraining).to(gatewayDraining)(move)
    active.upon(LinkInputs.clientDrainRequested).to(clientDraining)(drainClient)
    active.upon(LinkInputs.joinedDrainingGateway).to(gatewayDraining).returns(None)
    active.upon(LinkInputs.acceptsStreams).loop().returns(True)

    clientDraining.upon(LinkInputs.clientDrainRequested).loop()(drainClient)
    clientDraining.upon(LinkInputs.acceptsStreams).loop().returns(False)

    gatewayDraining.upon(LinkInputs.registerRequested).loop()(refuseRegistration)
    gatewayDraining.upon(LinkInputs.clientDrainRequested).loop()(drainClient)
    gatewayDraining.upon(LinkInputs.gatewayDraining).loop().returns(None)
    gatewayDraining.upon(LinkInputs.acceptsStreams).loop().returns(False)

    # a closed link hears nothing more that matters; a registration whose
    # route was published after the link closed is not taken up
    closed.upon(LinkInputs.registerRequested).loop().returns(None)
    closed.upon(LinkInputs.registrationPublished).loop().returns(None)
    closed.upon(LinkInputs.clientDrainRequested).loop().returns(None)
    closed.upon(LinkInputs.gatewayDraining).loop().returns(None)
    closed.upon(LinkInputs.acceptsStreams).loop().returns(False)
    closed.upon(LinkInputs.connectionLost).loop().returns(None)
    # joinedDrainingGateway is fed once, as the link opens (in Active):
    # deliberately impossible elsewhere
    return b.build()


#: Indexed: C{acceptsStreams} is asked for every visitor routed to a link.
LinkMachine = indexed(_buildLink())


def newLinkMachine(actions: ILinkActions) -> LinkInputs:
    """
    A link machine, C{Active}, acting on C{actions}.
    """
    return LinkMachine(LinkCore(actions))


class DrainingVisitor(Protocol):
    """
    A visitor connection that can leave gracefully (an HTTP/2 or HTTP/3
    connection).
    """

    def goAway(self) -> None:
        """
        Take no new requests; close once those in flight are done.
        """

    def close(self) -> None:
        """
        Close now.
        """


class DrainInputs(Protocol):
    def drainRequested(self, done: Deferred[None]) -> None:
        """
        Shut down: C{done} fires once every link is gone or the deadline
        passed.
        """

    def linkOpened(self, link: LinkInputs) -> None:
        """
        A tunnel link (its machine) was opened.
        """

    def visitorOpened(self, visitor: DrainingVisitor) -> None:
        """
        A visitor connection that can leave gracefully was opened.
        """

    def linksGone(self) -> None:
        """
        No tunnel link and no HTTP/2 or HTTP/3 visitor connection is left.
        """

    def deadlinePassed(self) -> None:
        """
        The drain took C{drainSeconds}.
        """

    def isDraining(self) -> bool:
        """
        Whether the gateway is shutting down (the answer).
        """


class IDrainActions(Protocol):
    def askVisitorsToLeave(self) -> None:
        """
        Tell every HTTP/2 and HTTP/3 visitor to open no more streams here.
        """

    def askLinksToMove(self) -> None:
        """
        Tell every link's client to move; feed C{linksGone} when none is left.
        """

    def abortLinks(self) -> None:
        """
        Abort the tunnel links and overlay links still open.
        """

    def closeVisitors(self) -> None:
        """
        Close the HTTP/2 and HTTP/3 visitor connections still open.
        """


@dataclass
class DrainCore:
    """
    What the drain machine acts on.
    """

    actions: IDrainActions
    clock: IReactorTime
    drainSeconds: float


@dataclass
class DrainData:
    """
    A drain in progress: who waits for its end, and its deadline.
    """

    timer: IDelayedCall
    waiters: list[Deferred[None]] = field(default_factory=list)


def _buildDrain() -> TypeMachine[DrainInputs, DrainCore]:
    b = TypeMachineBuilder(DrainInputs, DrainCore)
    serving = b.state("Serving")

    def draining(inputs: DrainInputs, core: DrainCore, done: Deferred[None]) -> DrainData:
        return DrainData(core.clock.callLater(core.drainSeconds, inputs.deadlinePassed), [done])

    drainingState = b.state("Draining", draining)
    drained = b.state("Drained")

    @serving.upon(DrainInputs.drainRequested).to(drainingState)
    def begin(inputs: DrainInputs, core: DrainCore, done: Deferred[None]) -> None:
        core.actions.askVisitorsToLeave()
        core.actions.askLinksToMove()

    serving.upon(DrainInputs.linkOpened).loop().returns(None)
    serving.upon(DrainInputs.visitorOpened).loop().returns(None)
    serving.upon(DrainInputs.linksGone).loop().returns(None)
    serving.upon(DrainInputs.isDraining).loop().returns(False)

    @drainingState.upon(DrainInputs.drainRequested).loop()
    def alsoWait(inputs: DrainInputs, core: DrainCore, data: DrainData, done: Deferred[None]) -> None:
        data.waiters.append(done)

    def finish(core: DrainCore, data: DrainData) -> None:
        if data.timer.active():
            data.timer.cancel()
        core.actions.abortLinks()
        core.actions.closeVisitors()
        waiters, data.waiters = data.waiters, []
        for d in waiters:
            d.callback(None)

    @drainingState.upon(DrainInputs.linksGone).to(drained)
    def allGone(inputs: DrainInputs, core: DrainCore, data: DrainData) -> None:
        finish(core, data)

    @drainingState.upon(DrainInputs.deadlinePassed).to(drained)
    def overdue(inputs: DrainInputs, core: DrainCore, data: DrainData) -> None:
        finish(core, data)

    @drainingState.upon(DrainInputs.linkOpened).loop()
    def joinDraining(inputs: DrainInputs, core: DrainCore, data: DrainData, link: LinkInputs) -> None:
        link.joinedDrainingGateway()

    @drainingState.upon(DrainInputs.visitorOpened).loop()
    def leaveDraining(
        inputs: DrainInputs, core: DrainCore, data: DrainData, visitor: DrainingVisitor
    ) -> None:
        visitor.goAway()

    drainingState.upon(DrainInputs.isDraining).loop().returns(True)

    @drained.upon(DrainInputs.drainRequested).loop()
    def alreadyDrained(inputs: DrainInputs, core: DrainCore, done: Deferred[None]) -> None:
        core.actions.abortLinks()
        core.actions.closeVisitors()
        done.callback(None)

    @drained.upon(DrainInputs.linkOpened).loop()
    def joinDrained(inputs: DrainInputs, core: DrainCore, link: LinkInputs) -> None:
        link.joinedDrainingGateway()

    @drained.upon(DrainInputs.visitorOpened).loop()
    def leaveDrained(inputs: DrainInputs, core: DrainCore, visitor: DrainingVisitor) -> None:
        visitor.goAway()

    drained.upon(DrainInputs.linksGone).loop().returns(None)
    drained.upon(DrainInputs.isDraining).loop().returns(True)
    # deadlinePassed comes from the Draining state's own timer, cancelled
    # when it is left: deliberately impossible in Serving and Drained
    return b.build()


DrainMachine = indexed(_buildDrain())


def newDrainMachine(actions: IDrainActions, clock: IReactorTime, drainSeconds: float) -> DrainInputs:
    """
    A drain machine, C{Serving}, acting on C{actions}.
    """
    return DrainMachine(DrainCore(actions, clock, drainSeconds))
