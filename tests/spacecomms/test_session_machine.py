"""
The peer session machine alone (L{suite.spacecomms.session}): every input in
every state, over a recording protocol and sink, with its timers on a
L{task.Clock}.  The inputs a state does not answer are the ones it cannot
receive, and the table says why for each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from automat import NoTransition
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.envelope import Envelope
from suite.spacecomms.interfaces import IMessageSink
from suite.spacecomms.session import PeerProtocol, SessionCore, SessionInputs, SessionMachine


def stateOf(inputs: SessionInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class Recorder:
    """
    The protocol and the sink of one session: records the outputs as
    events; the sink admits the peer C{B} only.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.peerId = ""

    # protocol side
    def sendHello(self, peer: str) -> None:
        self.events.append(f"hello {peer}")

    def sendError(self, code: str, reason: str, messageId: str | None = None) -> None:
        self.events.append(f"error {code}")

    def sendHeartbeat(self) -> None:
        self.events.append("heartbeat")

    def disconnect(self) -> None:
        self.events.append("disconnect")

    def peerAddress(self) -> str:
        return "?"

    def checkCertificate(self, peerId: str) -> tuple[str, str] | None:
        return None

    # sink side
    def checkHello(self, hello: Envelope, expectedPeer: str | None) -> tuple[str, str] | None:
        return None if hello.payload["node_id"] == "B" else ("UNAUTHORIZED", "not B")

    def sessionEstablished(self, link: object) -> None:
        self.events.append(f"established {self.peerId}")

    def sessionLost(self, link: object, reason: str) -> None:
        self.events.append(f"lost {reason}")

    def envelopeReceived(self, link: object, envelope: Envelope) -> None:
        self.events.append(f"deliver {envelope.message_type}")


def hello(node: str) -> Envelope:
    return Envelope("HELLO", node, {"node_id": node})


#: One call of each input; C{helloRefused} is C{helloReceived} with a HELLO
#: the sink refuses.
CALLS: dict[str, Callable[[SessionInputs], object]] = {
    "connected": lambda m: m.connected(),
    "helloReceived": lambda m: m.helloReceived(hello("B")),
    "helloRefused": lambda m: m.helloReceived(hello("X")),
    "helloAccepted": lambda m: m.helloAccepted("B"),
    "helloRejected": lambda m: m.helloRejected("UNAUTHORIZED", "no"),
    "messageReceived": lambda m: m.messageReceived(Envelope("CDM_ANNOUNCE", "B", {})),
    "heartbeatDue": lambda m: m.heartbeatDue(),
    "timedOut": lambda m: m.timedOut(),
    "closeRequested": lambda m: m.closeRequested("bye"),
    "connectionLost": lambda m: m.connectionLost("gone"),
}

#: How to reach each state from a new dialing session.
PATHS: dict[str, tuple[str, ...]] = {
    "Connecting": (),
    "Hello": ("connected",),
    "Established": ("connected", "helloReceived"),
    "Closing": ("connected", "closeRequested"),
    "Closed": ("connectionLost",),
}

#: (state, input) pairs the machine does not answer, and why they cannot
#: happen: C{connected} comes once, from connectionMade, before any byte;
#: no timer runs before Hello; C{helloAccepted}/C{helloRejected} are fed
#: only by the Hello state's own HELLO check.
IMPOSSIBLE = (
    {
        ("Connecting", name)
        for name in (
            "helloReceived",
            "helloRefused",
            "helloAccepted",
            "helloRejected",
            "messageReceived",
            "heartbeatDue",
            "timedOut",
        )
    }
    | {(state, "connected") for state in PATHS if state != "Connecting"}
    | {("Established", "helloAccepted"), ("Established", "helloRejected")}
)

#: (state, input) -> (state after, events, pending timers).  In Hello the
#: HELLO timeout is due at 3; in Established the heartbeat at 1 and the
#: silence timeout at 3.  A C{timedOut} fed in Hello leaves its own timer
#: (in service it is the timer that fired).
ESTABLISHED = [1.0, 3.0]
TABLE: dict[tuple[str, str], tuple[str, list[str], list[float]]] = {
    ("Connecting", "connected"): ("Hello", ["hello B"], [3.0]),
    ("Connecting", "closeRequested"): ("Closed", [], []),
    ("Connecting", "connectionLost"): ("Closed", [], []),
    ("Hello", "helloReceived"): ("Established", ["established B"], ESTABLISHED),
    ("Hello", "helloRefused"): ("Closing", ["error UNAUTHORIZED", "disconnect"], []),
    ("Hello", "helloAccepted"): ("Established", ["established B"], ESTABLISHED),
    ("Hello", "helloRejected"): ("Closing", ["error UNAUTHORIZED", "disconnect"], []),
    ("Hello", "messageReceived"): ("Closing", ["error UNAUTHORIZED", "disconnect"], []),
    ("Hello", "heartbeatDue"): ("Hello", [], [3.0]),
    ("Hello", "timedOut"): ("Closing", ["disconnect"], [3.0]),
    ("Hello", "closeRequested"): ("Closing", ["disconnect"], []),
    ("Hello", "connectionLost"): ("Closed", [], []),
    ("Established", "helloReceived"): ("Established", ["error INVALID_MESSAGE"], ESTABLISHED),
    ("Established", "helloRefused"): ("Established", ["error INVALID_MESSAGE"], ESTABLISHED),
    ("Established", "messageReceived"): ("Established", ["deliver CDM_ANNOUNCE"], ESTABLISHED),
    ("Established", "heartbeatDue"): ("Established", ["heartbeat"], ESTABLISHED),
    ("Established", "timedOut"): ("Closing", ["lost timeout", "disconnect"], []),
    ("Established", "closeRequested"): ("Closing", ["lost bye", "disconnect"], []),
    ("Established", "connectionLost"): ("Closed", ["lost gone"], []),
}
for _final in ("Closing", "Closed"):
    for _name in CALLS:
        if (_final, _name) not in IMPOSSIBLE:
            _after = "Closed" if _name == "connectionLost" else _final
            TABLE[_final, _name] = (_after, [], [])


class SessionMachineTests(SynchronousTestCase):
    """
    Every input in every state of the session machine.
    """

    def new(self) -> tuple[SessionInputs, Recorder, Clock]:
        clock = Clock()
        recorder = Recorder()
        core = SessionCore(cast(PeerProtocol, recorder), cast(IMessageSink, recorder), clock, "B", 1.0, 3.0)
        return SessionMachine(core), recorder, clock

    def reach(self, state: str) -> tuple[SessionInputs, Recorder, Clock]:
        machine, recorder, clock = self.new()
        for step in PATHS[state]:
            CALLS[step](machine)
        self.assertEqual(stateOf(machine), state)
        del recorder.events[:]
        return machine, recorder, clock

    def test_alphabet(self) -> None:
        """
        The calls are the machine's whole input alphabet, and the table
        with the impossible pairs covers every input in every state.
        """
        names = {n for n in vars(SessionInputs) if not n.startswith("_")}
        self.assertEqual(set(CALLS) - {"helloRefused"}, names)
        self.assertEqual(set(TABLE) | IMPOSSIBLE, {(s, n) for s in PATHS for n in CALLS})
        self.assertEqual(set(TABLE) & IMPOSSIBLE, set())

    def test_everyInputInEveryState(self) -> None:
        """
        Each answered input: the state after, the outputs, the timers left.
        """
        for (state, name), (after, events, timers) in sorted(TABLE.items()):
            machine, recorder, clock = self.reach(state)
            recorder.peerId = "B"
            self.assertIsNone(CALLS[name](machine), f"{state} + {name}")
            self.assertEqual(
                (stateOf(machine), recorder.events, sorted(c.getTime() for c in clock.getDelayedCalls())),
                (after, events, timers),
                f"{state} + {name}",
            )

    def test_impossibleInputsRefused(self) -> None:
        """
        The inputs a state cannot receive are not answered there: automat
        refuses them and the state stays.
        """
        for state, name in sorted(IMPOSSIBLE):
            machine, recorder, clock = self.reach(state)
            self.assertRaises(NoTransition, CALLS[name], machine)
            self.assertEqual((stateOf(machine), recorder.events), (state, []), f"{state} + {name}")

    def test_timersFeedTheMachine(self) -> None:
        """
        The timers are the machine's: Hello times out on its own, and an
        established session heartbeats each second until it hears nothing
        for the timeout.
        """
        machine, recorder, clock = self.reach("Hello")
        clock.advance(3)
        self.assertEqual((stateOf(machine), recorder.events), ("Closing", ["disconnect"]))
        machine, recorder, clock = self.reach("Established")
        clock.pump([1, 1, 0.5])
        machine.messageReceived(Envelope("HEARTBEAT", "B", {}))
        clock.pump([0.5, 1, 1])
        self.assertEqual(
            (stateOf(machine), recorder.events),
            (
                "Established",
                ["heartbeat", "heartbeat", "deliver HEARTBEAT", "heartbeat", "heartbeat", "heartbeat"],
            ),
        )
        clock.advance(0.5)
        self.assertEqual(stateOf(machine), "Closing")
        self.assertEqual(recorder.events[-2:], ["lost timeout", "disconnect"])
        self.assertEqual(clock.getDelayedCalls(), [])
