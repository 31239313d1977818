"""
The gateway's tunnel link machines: every input in every state, and the
gateway's drain driven by events on a Clock (nothing polls).
"""

from __future__ import annotations

from typing import Any

from automat import NoTransition
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.core import Gateway, GatewayConfig, GatewayLink
from suite.specter.gateway.lifecycle import LinkInputs, newDrainMachine, newLinkMachine
from suite.specter.gateway.routes import MemoryRouteStore
from suite.specter.tunnel.frames import CONTROL, FrameDecoder, decodeControl, encodeControl


class _LinkActions:
    def __init__(self) -> None:
        self.events: list[str] = []

    def startRegistration(self, message: dict[str, Any]) -> None:
        self.events.append(f"startRegistration {message['hostname']}")

    def completeRegistration(self, hostname: str, kind: str, requestId: Any) -> None:
        self.events.append(f"completeRegistration {hostname} {kind} {requestId}")

    def askToMove(self) -> None:
        self.events.append("askToMove")

    def clientDraining(self, requestId: Any) -> None:
        self.events.append(f"clientDraining {requestId}")

    def releaseRoutes(self) -> None:
        self.events.append("releaseRoutes")


_LINK_PATHS: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    "Active": [],
    "ClientDraining": [("clientDrainRequested", (7,))],
    "GatewayDraining": [("gatewayDraining", ())],
    "Closed": [("connectionLost", ())],
}

_LINK_INPUTS: list[tuple[str, tuple[Any, ...]]] = [
    ("registerRequested", ({"t": "register", "hostname": "a.example.test"},)),
    ("registrationPublished", ("a.example.test", "http", 1)),
    ("clientDrainRequested", (2,)),
    ("gatewayDraining", ()),
    ("joinedDrainingGateway", ()),
    ("acceptsStreams", ()),
    ("connectionLost", ()),
]

#: (state, input) -> (outputs, result, then: the state it leads to, found by
#: what acceptsStreams answers and what a later registration does).
_REGISTER = "startRegistration a.example.test"
_PUBLISHED = "completeRegistration a.example.test http 1"
_LINK_TABLE: dict[tuple[str, str], list[str] | None] = {
    ("Active", "registerRequested"): [_REGISTER],
    ("Active", "registrationPublished"): [_PUBLISHED],
    ("Active", "clientDrainRequested"): ["clientDraining 2"],
    ("Active", "gatewayDraining"): ["askToMove"],
    ("Active", "joinedDrainingGateway"): [],
    ("Active", "acceptsStreams"): [],
    ("Active", "connectionLost"): ["releaseRoutes"],
    ("ClientDraining", "registerRequested"): [_REGISTER],
    ("ClientDraining", "registrationPublished"): [_PUBLISHED],
    ("ClientDraining", "clientDrainRequested"): ["clientDraining 2"],
    ("ClientDraining", "gatewayDraining"): ["askToMove"],
    ("ClientDraining", "joinedDrainingGateway"): None,
    ("ClientDraining", "acceptsStreams"): [],
    ("ClientDraining", "connectionLost"): ["releaseRoutes"],
    ("GatewayDraining", "registerRequested"): ["askToMove"],
    ("GatewayDraining", "registrationPublished"): [_PUBLISHED],
    ("GatewayDraining", "clientDrainRequested"): ["clientDraining 2"],
    ("GatewayDraining", "gatewayDraining"): [],
    ("GatewayDraining", "joinedDrainingGateway"): None,
    ("GatewayDraining", "acceptsStreams"): [],
    ("GatewayDraining", "connectionLost"): ["releaseRoutes"],
    ("Closed", "registerRequested"): [],
    ("Closed", "registrationPublished"): [],
    ("Closed", "clientDrainRequested"): [],
    ("Closed", "gatewayDraining"): [],
    ("Closed", "joinedDrainingGateway"): None,
    ("Closed", "acceptsStreams"): [],
    ("Closed", "connectionLost"): [],
}

#: What each state answers to acceptsStreams.
_ACCEPTS = {"Active": True, "ClientDraining": False, "GatewayDraining": False, "Closed": False}

#: The state each (state, input) leads to (None: unchanged).
_LINK_NEXT: dict[tuple[str, str], str] = {
    ("Active", "clientDrainRequested"): "ClientDraining",
    ("Active", "gatewayDraining"): "GatewayDraining",
    ("Active", "joinedDrainingGateway"): "GatewayDraining",
    ("ClientDraining", "gatewayDraining"): "GatewayDraining",
}


def _fingerprint(machine: LinkInputs, actions: _LinkActions) -> tuple[bool, list[str]]:
    """
    Identify a link machine's state from outside: its acceptsStreams
    answer, then what a registration and a lost connection make it do.
    """
    accepts = machine.acceptsStreams()
    del actions.events[:]
    machine.registerRequested({"t": "register", "hostname": "a.example.test"})
    machine.connectionLost()
    return accepts, list(actions.events)


class LinkMachineTests(SynchronousTestCase):
    """
    Every input in every state of the gateway's link machine.
    """

    def machineIn(self, state: str) -> tuple[LinkInputs, _LinkActions]:
        actions = _LinkActions()
        machine = newLinkMachine(actions)
        for name, args in _LINK_PATHS[state]:
            getattr(machine, name)(*args)
        del actions.events[:]
        return machine, actions

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state has the outputs the table gives, or is
        deliberately impossible (C{joinedDrainingGateway} is only fed as a
        link opens).
        """
        self.assertEqual(set(_LINK_TABLE), {(s, i) for s in _LINK_PATHS for i, _ in _LINK_INPUTS})
        for state in _LINK_PATHS:
            for name, args in _LINK_INPUTS:
                machine, actions = self.machineIn(state)
                expected = _LINK_TABLE[state, name]
                if expected is None:
                    self.assertRaises(NoTransition, getattr(machine, name), *args)
                    continue
                result = getattr(machine, name)(*args)
                self.assertEqual(actions.events, expected, (state, name))
                if name == "acceptsStreams":
                    self.assertIs(result, _ACCEPTS[state], state)
                else:
                    self.assertIsNone(result)

    def test_everyTransitionLeadsWhereItShould(self) -> None:
        """
        After each input the machine behaves as the state it should be in.
        """
        fingerprints = {}
        for state in _LINK_PATHS:
            machine, actions = self.machineIn(state)
            fingerprints[state] = _fingerprint(machine, actions)
        self.assertEqual(len(set(map(str, fingerprints.values()))), len(fingerprints))
        for state in _LINK_PATHS:
            for name, args in _LINK_INPUTS:
                if _LINK_TABLE[state, name] is None:
                    continue
                machine, actions = self.machineIn(state)
                getattr(machine, name)(*args)
                if name == "connectionLost":
                    after = "Closed"
                else:
                    after = _LINK_NEXT.get((state, name), state)
                self.assertEqual(_fingerprint(machine, actions), fingerprints[after], (state, name))


class _DrainActions:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.machine: Any = None
        self.links = 0

    def askVisitorsToLeave(self) -> None:
        self.events.append("askVisitorsToLeave")

    def askLinksToMove(self) -> None:
        self.events.append("askLinksToMove")
        if not self.links:
            self.machine.linksGone()

    def abortLinks(self) -> None:
        self.events.append("abortLinks")

    def closeVisitors(self) -> None:
        self.events.append("closeVisitors")


_BEGIN = ["askVisitorsToLeave", "askLinksToMove"]
_FINISH = ["abortLinks", "closeVisitors"]


class _JoiningLink:
    """
    A link (or HTTP/2 visitor connection) opened meanwhile.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def joinedDrainingGateway(self) -> None:
        self.events.append("joined")

    def goAway(self) -> None:
        self.events.append("goAway")

    def close(self) -> None:
        self.events.append("close")


class DrainMachineTests(SynchronousTestCase):
    """
    Every input in every state of the gateway's drain machine.
    """

    def machineIn(self, state: str) -> tuple[Any, _DrainActions, Clock, list[Deferred[None]]]:
        clock, actions = Clock(), _DrainActions()
        actions.links = 1
        machine = newDrainMachine(actions, clock, 5.0)
        actions.machine = machine
        waiting: list[Deferred[None]] = []
        if state in ("Draining", "Drained"):
            waiting.append(Deferred())
            machine.drainRequested(waiting[0])
        if state == "Drained":
            machine.linksGone()
        del actions.events[:]
        return machine, actions, clock, waiting

    def test_serving(self) -> None:
        """
        Serving: a drain asks every link to move and arms the deadline;
        links coming and going, and the last one leaving, change nothing.
        """
        machine, actions, clock, _ = self.machineIn("Serving")
        self.assertFalse(machine.isDraining())
        machine.linkOpened(_JoiningLink(actions.events))
        machine.visitorOpened(_JoiningLink(actions.events))
        machine.linksGone()
        self.assertEqual((actions.events, clock.getDelayedCalls()), ([], []))
        self.assertRaises(NoTransition, machine.deadlinePassed)
        done: Deferred[None] = Deferred()
        machine.drainRequested(done)
        self.assertEqual(actions.events, _BEGIN)
        self.assertNoResult(done)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.assertTrue(machine.isDraining())

    def test_servingWithoutLinks(self) -> None:
        """
        A drain with no link at all ends at once, without a timer left.
        """
        clock, actions = Clock(), _DrainActions()
        machine = newDrainMachine(actions, clock, 5.0)
        actions.machine = machine
        done: Deferred[None] = Deferred()
        machine.drainRequested(done)
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(actions.events, _BEGIN + _FINISH)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_draining(self) -> None:
        """
        Draining: more waiters join, links opened now join the drain; the
        last link's loss ends it (timer cancelled), firing every waiter.
        """
        machine, actions, clock, waiting = self.machineIn("Draining")
        self.assertTrue(machine.isDraining())
        second: Deferred[None] = Deferred()
        machine.drainRequested(second)
        machine.linkOpened(_JoiningLink(actions.events))
        machine.visitorOpened(_JoiningLink(actions.events))
        self.assertEqual(actions.events, ["joined", "goAway"])
        self.assertNoResult(waiting[0])
        machine.linksGone()
        self.assertEqual(actions.events, ["joined", "goAway", *_FINISH])
        self.successResultOf(waiting[0])
        self.successResultOf(second)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_drainingDeadline(self) -> None:
        """
        Draining: links that stay past the deadline are aborted and the
        waiters fire.
        """
        machine, actions, clock, waiting = self.machineIn("Draining")
        clock.advance(4.9)
        self.assertNoResult(waiting[0])
        clock.advance(0.1)
        self.assertEqual(actions.events, _FINISH)
        self.successResultOf(waiting[0])
        machine.linksGone()
        self.assertEqual(actions.events, _FINISH)

    def test_drained(self) -> None:
        """
        Drained: another drain fires at once (aborting stragglers), links
        opened now join the drain, a deadline is impossible.
        """
        machine, actions, clock, _ = self.machineIn("Drained")
        self.assertTrue(machine.isDraining())
        again: Deferred[None] = Deferred()
        machine.drainRequested(again)
        self.successResultOf(again)
        machine.linkOpened(_JoiningLink(actions.events))
        machine.visitorOpened(_JoiningLink(actions.events))
        machine.linksGone()
        self.assertEqual(actions.events, [*_FINISH, "joined", "goAway"])
        self.assertRaises(NoTransition, machine.deadlinePassed)
        self.assertEqual(clock.getDelayedCalls(), [])


def _controls(data: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    FrameDecoder(lambda k, s, p: out.append(decodeControl(p)) if k == CONTROL else None).feed(data)
    return out


class GatewayDrainTests(SynchronousTestCase):
    """
    L{Gateway.drain} with links over StringTransports on a Clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443", drainSeconds=5.0),
            MemoryRouteStore(self.clock),
            self.clock,
        )

    def link(self) -> tuple[GatewayLink, StringTransport]:
        link, wire = GatewayLink(self.gateway, "alice"), StringTransport()
        link.makeConnection(wire)
        return link, wire

    def register(self, link: GatewayLink, hostname: str) -> None:
        link.dataReceived(encodeControl({"t": "register", "id": 1, "hostname": hostname}))

    def test_drainEndsWithTheLastLink(self) -> None:
        """
        The drain asks each client to move and fires the moment the last
        link is lost, long before the deadline; nothing polls meanwhile.
        """
        a, wireA = self.link()
        b, wireB = self.link()
        self.register(a, "app.example.test")
        self.assertTrue(a.acceptsStreams())
        done = self.gateway.drain()
        self.assertTrue(self.gateway.draining)
        self.assertFalse(a.acceptsStreams())
        self.assertIn({"t": "move", "reason": "gateway shutting down"}, _controls(wireA.value()))
        self.assertIn({"t": "move", "reason": "gateway shutting down"}, _controls(wireB.value()))
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # the deadline and a's lease renewal
        a.connectionLost()
        self.assertNoResult(done)
        self.clock.advance(1)
        b.connectionLost()
        self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.gateway.registry.pick("app.example.test"), None)

    def test_deadlineAbortsWhatStays(self) -> None:
        """
        Links still open at the deadline are aborted.
        """
        a, wire = self.link()
        done = self.gateway.drain()
        self.clock.advance(5)
        self.successResultOf(done)
        self.assertTrue(wire.disconnecting)

    def test_linkOpenedDuringTheDrain(self) -> None:
        """
        A link opened while the gateway drains takes no visitors and its
        registration is answered with "move"; it counts until it is gone.
        """
        a, _ = self.link()
        done = self.gateway.drain()
        b, wireB = self.link()
        self.assertEqual(wireB.value(), b"")
        self.assertFalse(b.acceptsStreams())
        self.register(b, "app.example.test")
        self.assertEqual(_controls(wireB.value()), [{"t": "move", "reason": "gateway shutting down"}])
        a.connectionLost()
        self.assertNoResult(done)
        b.connectionLost()
        self.successResultOf(done)

    def test_clientDrain(self) -> None:
        """
        A client that drains its link gets no new visitors on it, its idle
        pooled streams are dropped, and it is told so.
        """
        dropped: list[GatewayLink] = []
        self.gateway.onLinkDraining.append(dropped.append)
        a, wire = self.link()
        self.register(a, "app.example.test")
        self.assertIs(self.gateway.registry.pick("app.example.test"), a)
        wire.clear()
        a.dataReceived(encodeControl({"t": "drain", "id": 2}))
        self.assertEqual(dropped, [a])
        self.assertEqual(_controls(wire.value()), [{"t": "draining", "id": 2}])
        self.assertFalse(a.acceptsStreams())
        self.assertIsNone(self.gateway.registry.pick("app.example.test"))

    def test_registrationAfterTheLinkClosed(self) -> None:
        """
        A route published after its link closed is not taken up.
        """
        published: Deferred[None] = Deferred()
        routes: Any = self.gateway.routes
        original = routes.publish
        routes.publish = lambda *args: published
        a, wire = self.link()
        self.register(a, "app.example.test")
        a.connectionLost()
        routes.publish = original
        published.callback(None)
        self.assertEqual(a.hostnames, {})
        self.assertIsNone(self.gateway.registry.pick("app.example.test"))
        self.assertEqual(_controls(wire.value()), [])
