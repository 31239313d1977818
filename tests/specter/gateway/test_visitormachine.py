"""
The visitor machine: every input in every state against recording fakes,
and the replay limit with real visitors over StringTransports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from automat import NoTransition
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.core import Gateway, GatewayConfig
from suite.specter.gateway.forwarded import HostChanged, RequestError
from suite.specter.gateway.routes import MemoryRouteStore
from suite.specter.gateway.visitor import HTTPVisitor
from suite.specter.gateway.visitormachine import (
    REPLAY_LIMIT,
    Request,
    VisitorInputs,
    newVisitorMachine,
)
from suite.specter.tunnel.frames import DATA, OPEN, RESET, FrameDecoder, encodeFrame
from suite.specter.tunnel.mux import Link

_HOST = "a.example.test"
_REQ = Request(_HOST)


class _Transport:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def write(self, data: bytes) -> None:
        self.events.append(f"write {data.decode()}")

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def abortConnection(self) -> None:
        self.events.append("abort")

    def loseConnection(self) -> None:
        self.events.append("close")

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        self.events.append("unregister")


class _Stream:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.bytesIn = 0
        self.sourcePaused = False
        self.onReset: Any = None
        self.localTransport: Any = None

    def attach(self, local: Any) -> None:
        self.events.append("attach")

    def send(self, data: bytes) -> None:
        self.events.append(f"send {data.decode()}")

    def reset(self, reason: str) -> None:
        self.events.append(f"reset {reason}")

    def localLost(self) -> None:
        self.events.append("localLost")


class _Link:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def openStream(self, meta: dict[str, Any]) -> _Stream:
        self.events.append(f"open {meta['host']}")
        return _Stream(self.events)


class _Gateway:
    """
    What the machine uses of a gateway: no local link, lookups that wait.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.clock = Clock()
        self.config = GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443")
        self.registry = self
        self.cache = self
        self.apexSite = None
        self.lookups: list[Deferred[Any]] = []

        class metrics:
            streamsOpened = 0
            errors: dict[int, int] = {}

        self.metrics = metrics

    def pick(self, hostname: str) -> None:
        return None

    def resolve(self, hostname: str) -> Deferred[Any]:
        self.events.append(f"resolve {hostname}")
        self.lookups.append(Deferred())
        return self.lookups[-1]

    def invalidate(self, hostname: str) -> None:
        self.events.append(f"invalidate {hostname}")

    def altSvcFor(self, host: str) -> None:
        return None


class _Side:
    """
    A recording L{suite.specter.gateway.visitormachine.VisitorSide}.
    """

    kind = "http"
    retries = True
    forward: Any = None

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.transport = _Transport(events)

    def peer(self) -> str:
        return "192.0.2.1:1234"

    def headReceived(self, head: bytes, inputs: VisitorInputs) -> None:
        self.events.append("head")

    def rewrite(self, data: bytes) -> bytes:
        return data

    def beforeSplice(self) -> None:
        self.events.append("beforeSplice")

    def fail(self, code: int, detail: str) -> None:
        self.events.append(f"fail {code} {detail}")


class _Machine:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.gateway = _Gateway(self.events)
        self.side = _Side(self.events)
        self.machine = newVisitorMachine(self.side, self.gateway)  # type: ignore[arg-type]

    def feed(self, name: str, args: tuple[Any, ...]) -> Any:
        if name == "resolved":
            args = (_Link(self.events),)
        elif name == "spliced":
            args = (_REQ, _Stream(self.events), None)
        return getattr(self.machine, name)(*args)


_INPUTS: list[tuple[str, tuple[Any, ...]]] = [
    ("opened", ()),
    ("bytesReceived", (b"x",)),
    ("headTimedOut", ()),
    ("routeRequested", (_REQ, [b"e"])),
    ("apexRequested", ([b"h"],)),
    ("answered", (b"resp",)),
    ("rejected", (404, "nobody")),
    ("framingBroken", ("bad",)),
    ("hostChanged", ("other",)),
    ("resolved", (None,)),  # a link (see _Machine.feed)
    ("resolveFailed", (Failure(ValueError("kv down")),)),
    ("spliced", (_REQ, None, None)),
    ("streamReset", ("no tunnel link: x",)),
    ("retryChosen", (_REQ, [b"e"])),
    ("streamFailed", ("boom",)),
    ("connectionLost", ()),
]

_PATHS: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    "Connecting": [],
    "AwaitingHead": [("opened", ())],
    "Done": [("connectionLost", ())],
}
_PATHS["Routing"] = _PATHS["AwaitingHead"] + [("routeRequested", (_REQ, [b"e"]))]
_PATHS["Streaming"] = _PATHS["Routing"] + [("resolved", (None,))]
_PATHS["Replaying"] = _PATHS["Streaming"] + [("streamReset", ("no tunnel link: x",))]
#: Streaming without a replay buffer (after a retry), told apart by its data.
_PATHS["Streaming (no replay)"] = _PATHS["Replaying"] + [("resolved", (None,))]

_LOOKUP = ["pause", f"resolve {_HOST}"]
_SPLICE = ["resume", "beforeSplice", f"open {_HOST}", "attach", "send e"]
_ROUTING: dict[str, tuple[list[str], str]] = {
    "bytesReceived": ([], "Routing"),
    "resolved": (_SPLICE, "Streaming"),
    "resolveFailed": (["resume", f"fail 502 route lookup for {_HOST} failed, try again"], "Done"),
    "rejected": (["fail 404 nobody"], "Done"),
    "framingBroken": (["fail 400 bad"], "Done"),
    "hostChanged": (["fail 421 other"], "Done"),
    "spliced": ([], "Streaming"),
    "connectionLost": ([], "Done"),
}
_STREAMING: dict[str, tuple[list[str], str]] = {
    "bytesReceived": (["send x"], "Streaming"),
    "streamReset": (["unregister", f"invalidate {_HOST}"] + _LOOKUP, "Replaying"),
    "retryChosen": (_LOOKUP, "Replaying"),
    "streamFailed": (["fail 502 the tunnel could not reach its target: boom"], "Done"),
    "framingBroken": (["reset the visitor broke HTTP/1.1 framing: bad", "abort"], "Done"),
    "hostChanged": (["reset the visitor asked for another host: other", "abort"], "Done"),
    "connectionLost": (["localLost"], "Done"),
}

#: (state, input) -> (outputs, next state); absent: deliberately impossible.
_TABLE: dict[str, dict[str, tuple[list[str], str]]] = {
    "Connecting": {
        "opened": ([], "AwaitingHead"),
        "routeRequested": (_LOOKUP, "Routing"),
        "rejected": (["fail 404 nobody"], "Done"),
        "connectionLost": ([], "Done"),
    },
    "AwaitingHead": {
        "bytesReceived": (["head"], "AwaitingHead"),
        "headTimedOut": (["abort"], "Done"),
        "routeRequested": (_LOOKUP, "Routing"),
        "apexRequested": (["fail 404 nothing is served on the apex here"], "Done"),
        "answered": (["write resp", "unregister", "close"], "Done"),
        "rejected": (["fail 404 nobody"], "Done"),
        "framingBroken": (["fail 400 bad"], "Done"),
        "connectionLost": ([], "Done"),
    },
    "Routing": _ROUTING,
    "Replaying": {
        **_ROUTING,
        "bytesReceived": ([], "Replaying"),
        "resolved": (_SPLICE, "Streaming (no replay)"),
        "spliced": ([], "Streaming (no replay)"),
    },
    "Streaming": _STREAMING,
    "Streaming (no replay)": {
        **_STREAMING,
        "bytesReceived": (["send x"], "Streaming (no replay)"),
        "streamReset": (
            ["fail 502 the tunnel could not reach its target: no tunnel link: x"],
            "Done",
        ),
    },
    "Done": {
        "bytesReceived": ([], "Done"),
        "resolved": ([], "Done"),
        "resolveFailed": ([], "Done"),
        "streamReset": ([], "Done"),
        "connectionLost": ([], "Done"),
    },
}
# the stream "spliced" hands over here comes without a replay buffer
_SPLICED_INTO = {"Routing": "Streaming (no replay)", "Replaying": "Streaming (no replay)"}


def _sends(events: list[str]) -> list[str]:
    """
    C{events} with each run of "send" events as one (the bytes a state
    holds are its data, not which state it is).
    """
    out: list[str] = []
    for e in events:
        if not (e.startswith("send ") and out and out[-1] == "send"):
            out.append("send" if e.startswith("send ") else e)
    return out


def _fingerprint(make: Callable[[], _Machine]) -> list[Any]:
    """
    How a machine made by C{make} answers each input (each on a fresh one;
    "!" when it cannot), how many timers it holds, and what a stream
    reset does once it is spliced: different states answer differently.
    """
    out: list[Any] = [len(make().gateway.clock.getDelayedCalls())]
    probes = [[i] for i in _INPUTS] + [[("resolved", (None,)), ("streamReset", ("no tunnel link: x",))]]
    for probe in probes:
        m = make()
        try:
            for name, args in probe:
                m.feed(name, args)
        except NoTransition:
            out.append("!")
        else:
            out.append(_sends(m.events))
    return out


class EveryInputTests(SynchronousTestCase):
    """
    Every input in every state of the visitor machine.
    """

    def machineIn(self, state: str, then: tuple[str, tuple[Any, ...]] | None = None) -> _Machine:
        m = _Machine()
        for name, args in _PATHS[state] + ([then] if then else []):
            m.feed(name, args)
        del m.events[:]
        return m

    def test_tableIsComplete(self) -> None:
        """
        The inputs tried are the machine's; the table covers every state.
        """
        declared = {k for k, v in vars(VisitorInputs).items() if callable(v) and not k.startswith("_")}
        self.assertEqual({n for n, _ in _INPUTS}, declared)
        self.assertEqual(set(_TABLE), set(_PATHS))

    def test_fingerprintsTellStatesApart(self) -> None:
        """
        Each state answers the inputs in its own way.
        """
        prints = {s: repr(_fingerprint(lambda s=s: self.machineIn(s))) for s in _PATHS}  # type: ignore[misc]
        self.assertEqual(len(set(prints.values())), len(prints), prints)

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state gives the table's outputs and leads to its
        state; the others raise NoTransition.
        """
        prints = {s: _fingerprint(lambda s=s: self.machineIn(s)) for s in _PATHS}  # type: ignore[misc]
        for state in _PATHS:
            for name, args in _INPUTS:
                m = self.machineIn(state)
                expected = _TABLE[state].get(name)
                if expected is None:
                    self.assertRaises(NoTransition, m.feed, name, args)
                    self.assertEqual(m.events, [], (state, name))
                    continue
                outputs, after = expected
                if name == "spliced":
                    after = _SPLICED_INTO[state]
                self.assertIsNone(m.feed(name, args))
                self.assertEqual(m.events, outputs, (state, name))
                now = _fingerprint(lambda s=state, i=(name, args): self.machineIn(s, i))  # type: ignore[misc]
                self.assertEqual(now, prints[after], (state, name, after))

    def test_forwardOnlyWhileStreaming(self) -> None:
        """
        The visitor holds Streaming's data path exactly while the machine
        is Streaming; it does what C{bytesReceived} does there, and after
        every input that leaves Streaming it is gone.
        """
        for state in _PATHS:
            streaming = state.startswith("Streaming")
            m = self.machineIn(state)
            self.assertEqual(m.side.forward is not None, streaming, state)
            if not streaming:
                continue
            m.side.forward(b"x")
            viaInput = self.machineIn(state)
            viaInput.feed("bytesReceived", (b"x",))
            self.assertEqual(m.events, viaInput.events)
            for name, args in _INPUTS:
                expected = _TABLE[state].get(name)
                if expected is None or expected[1].startswith("Streaming"):
                    continue
                m = self.machineIn(state)
                m.feed(name, args)
                self.assertIsNone(m.side.forward, (state, name))

    def test_forwardBrokenFraming(self) -> None:
        """
        A visitor that breaks the framing on Streaming's data path ends the
        machine as C{bytesReceived} would (stream reset, connection
        aborted, no data path left).
        """
        m = self.machineIn("Streaming")

        def broken(data: bytes) -> bytes:
            raise RequestError("bad")

        m.side.rewrite = broken  # type: ignore[method-assign]
        m.side.forward(b"x")
        self.assertEqual(m.events, ["reset the visitor broke HTTP/1.1 framing: bad", "abort"])
        self.assertIsNone(m.side.forward)
        m.feed("bytesReceived", (b"y",))  # Done drops late bytes
        self.assertEqual(len(m.events), 2)

    def test_forwardOtherHost(self) -> None:
        """
        A later head naming another host on Streaming's data path: nothing
        of it is sent, the stream is reset, the connection aborted and the
        refusal counted as a 421.
        """
        m = self.machineIn("Streaming")

        def other(data: bytes) -> bytes:
            raise HostChanged(b"b.example.test", b"a.example.test")

        m.side.rewrite = other  # type: ignore[method-assign]
        m.side.forward(b"x")
        self.assertEqual(len(m.events), 2)
        self.assertTrue(m.events[0].startswith("reset the visitor asked for another host: "), m.events)
        self.assertIn("names b.example.test, this connection is bound to a.example.test", m.events[0])
        self.assertEqual(m.events[1], "abort")
        self.assertIsNone(m.side.forward)
        self.assertEqual(m.gateway.metrics.errors, {421: 1})

    def test_headTimer(self) -> None:
        """
        AwaitingHead's timer is its own: it fires headTimedOut, and every
        way out of the state cancels it.
        """
        m = self.machineIn("AwaitingHead")
        m.gateway.clock.advance(m.gateway.config.headTimeout)
        self.assertEqual(m.events, ["abort"])
        for name, args in _INPUTS:
            if name in _TABLE["AwaitingHead"] and _TABLE["AwaitingHead"][name][1] != "AwaitingHead":
                m = self.machineIn("AwaitingHead", (name, args))
                self.assertEqual(m.gateway.clock.getDelayedCalls(), [], name)


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(data)
    return out


class _AnyLink(Link):
    def acceptsStreams(self) -> bool:
        return True


class ReplayTests(SynchronousTestCase):
    """
    The replay buffer with real visitors and links.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443"),
            MemoryRouteStore(self.clock),
            self.clock,
        )
        self.links, self.wires = [], []
        for _ in range(2):
            link, wire = _AnyLink(), StringTransport()
            link.makeConnection(wire)
            self.gateway.registry.add(_HOST, link)
            self.links.append(link)
            self.wires.append(wire)

    def visit(self, *chunks: bytes) -> tuple[HTTPVisitor, StringTransport, int]:
        visitor, transport = HTTPVisitor(self.gateway), StringTransport()
        visitor.makeConnection(transport)
        for chunk in chunks:
            visitor.dataReceived(chunk)
        first = 0 if self.wires[0].value() else 1
        return visitor, transport, first

    def reset(self, first: int, reason: bytes) -> None:
        sid = _frames(self.wires[first].value())[0][1]
        self.links[first].dataReceived(encodeFrame(RESET, sid, reason))

    def test_overTheLimitNotRetried(self) -> None:
        """
        A request that sent more than REPLAY_LIMIT bytes is not replayed:
        the visitor gets a 502.
        """
        head = b"POST / HTTP/1.1\r\nHost: a.example.test\r\nContent-Length: %d\r\n\r\n" % (REPLAY_LIMIT + 1)
        visitor, transport, first = self.visit(head, b"b" * (REPLAY_LIMIT + 1))
        self.wires[1 - first].clear()
        self.reset(first, b"cannot connect to 127.0.0.1:1: refused")
        self.assertEqual(self.wires[1 - first].value(), b"")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "))

    def test_underTheLimitRetried(self) -> None:
        """
        Just under the limit, the whole request is replayed on the other
        link.
        """
        body = b"b" * (REPLAY_LIMIT - 200)
        head = b"POST / HTTP/1.1\r\nHost: a.example.test\r\nContent-Length: %d\r\n\r\n" % len(body)
        visitor, transport, first = self.visit(head, body)
        self.reset(first, b"cannot connect to 127.0.0.1:1: refused")
        sent = b"".join(p for k, _, p in _frames(self.wires[1 - first].value()) if k == DATA)
        self.assertTrue(sent.endswith(body))
        self.assertEqual(transport.value(), b"")

    def test_answerStartedNotRetried(self) -> None:
        """
        Once the answer began, a reset is not retried: the visitor's
        connection is aborted (nothing may look complete).
        """
        visitor, transport, first = self.visit(b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
        sid = _frames(self.wires[first].value())[0][1]
        self.links[first].dataReceived(encodeFrame(DATA, sid, b"HTTP/1.1 200 OK\r\n"))
        self.wires[1 - first].clear()
        self.reset(first, b"no tunnel link: gone")
        self.assertEqual(self.wires[1 - first].value(), b"")
        self.assertTrue(transport.disconnecting or transport.disconnected)

    def test_retriedOnce(self) -> None:
        """
        The replayed stream is not retried again; it keeps no replay and no
        Alt-Svc is added to its answer.
        """
        self.gateway.altSvc = b'h3=":443"'
        visitor, transport, first = self.visit(b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
        self.reset(first, b"no tunnel link: gone")
        second = 1 - first
        opens = [f for f in _frames(self.wires[second].value()) if f[0] == OPEN]
        self.assertEqual(len(opens), 1)
        self.links[second].dataReceived(encodeFrame(DATA, opens[0][1], b"HTTP/1.1 200 OK\r\n\r\n"))
        self.assertEqual(transport.value(), b"HTTP/1.1 200 OK\r\n\r\n")
        self.wires[first].clear()
        self.reset(second, b"no tunnel link: gone again")
        self.assertEqual(self.wires[first].value(), b"")
        self.assertTrue(transport.disconnecting or transport.disconnected)

    def test_altSvcOnTheFirstAnswer(self) -> None:
        """
        The first stream's answer gets the Alt-Svc header.
        """
        self.gateway.altSvc = b'h3=":443"'
        visitor, transport, first = self.visit(b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
        sid = _frames(self.wires[first].value())[0][1]
        self.links[first].dataReceived(encodeFrame(DATA, sid, b"HTTP/1.1 200 OK\r\n\r\n"))
        self.assertEqual(transport.value(), b'HTTP/1.1 200 OK\r\nAlt-Svc: h3=":443"\r\n\r\n')
