"""
The HTTP/2 stream machine: every input in every state against recording
fakes (outputs and the state it leads to), and its limits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from automat import NoTransition
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.h2stream import (
    DRAIN_LIMIT,
    END,
    MAX_BODY,
    QUEUE_LIMIT,
    Response,
    StreamCore,
    StreamInputs,
    newStream,
)
from suite.specter.gateway.http1 import ResponseHead, buildRequestHead

_HOST = "a.example.test"
_HEAD = buildRequestHead(
    [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", _HOST.encode())],
    "10.0.0.1",
)


class _Metrics:
    def __init__(self) -> None:
        self.errors: dict[int, int] = {}


class _Gateway:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.metrics = _Metrics()
        self.lookups: list[Deferred[Any]] = []

    def resolve(self, host: str) -> Deferred[Any]:
        self.events.append(f"resolve {host}")
        d: Deferred[Any] = Deferred()
        self.lookups.append(d)
        return d

    def altSvcFor(self, host: str) -> bytes | None:
        return None


class _Exchange:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def start(self, head: Any, sink: Any, bodyFollows: bool) -> None:
        self.events.append("start")

    def sendBody(self, data: bytes) -> None:
        self.events.append(f"send {data.decode()}")

    def endBody(self) -> None:
        self.events.append("endBody")

    def cancel(self) -> None:
        self.events.append("cancel")

    def pauseResponse(self) -> None:
        self.events.append("pause")

    def resumeResponse(self) -> None:
        self.events.append("resume")


class _Side:
    """
    A connection recording what its stream asks of it.
    """

    writePaused = False

    def __init__(self) -> None:
        self.events: list[str] = []
        self.gateway: Any = _Gateway(self.events)

    def exchangeFor(self, link: Any, host: str) -> Any:
        self.events.append(f"exchangeFor {host}")
        return _Exchange(self.events)

    def acknowledge(self, stream: StreamCore) -> None:
        self.events.append(f"ack {stream.unacked}")
        stream.unacked = 0

    def giveBack(self, sid: int, size: int) -> None:
        self.events.append(f"giveBack {size}")

    def ready(self, response: Response) -> None:
        self.events.append("ready")

    def resetStream(self, sid: int, code: int) -> None:
        self.events.append(f"reset {int(code)}")

    def streamAnswered(self) -> None:
        self.events.append("answered")

    def streamClosed(self, stream: StreamCore) -> None:
        self.events.append("closed")


def _state(stream: StreamCore) -> str:
    """
    The machine's state, as automat records it (a closed stream's core no
    longer reaches its machine: the tests keep it in L{_MACHINES}).
    """
    return _MACHINES[id(stream)].__automat_transitioner__._state.name  # type: ignore[attr-defined]


_MACHINES: dict[int, StreamInputs] = {}


_Args = Callable[[StreamCore], tuple[Any, ...]]


def _page(stream: StreamCore) -> tuple[Any, ...]:
    return (Response(stream, None, [(b":status", b"404")], deque([b"page", END]), 4),)


def _sentHead(stream: StreamCore) -> tuple[Any, ...]:
    return (stream.response,)


_INPUTS: list[tuple[str, _Args]] = [
    ("forwarded", lambda s: (_Exchange(s.side.events),)),  # type: ignore[attr-defined]
    ("lookingUp", lambda s: ()),
    ("resolved", lambda s: (object(),)),
    ("resolveFailed", lambda s: (Failure(RuntimeError("boom")),)),
    ("rejected", lambda s: (404, "nobody")),
    ("answered", _page),
    ("bodyReceived", lambda s: (b"x", 1)),
    ("bodyTooLarge", lambda s: ()),
    ("bodyEnded", lambda s: ()),
    ("responseFailed", lambda s: ("boom",)),
    ("headersSent", _sentHead),
    ("responseSent", lambda s: ()),
    ("responseSentEarly", lambda s: ()),
    ("abandoned", lambda s: ()),
]

_PATHS: dict[str, list[str]] = {
    "Opened": [],
    "Routing": ["lookingUp"],
    "Forwarding": ["forwarded"],
    "Responding": ["forwarded", "headersSent"],
    #: Responding with an error page (no exchange behind it).
    "Responding (page)": ["rejected"],
    "Draining": ["rejected", "responseSentEarly"],
    "Closed": ["abandoned"],
}

_PAGE = (["ready"], "Responding (page)")
_LATE: dict[str, tuple[list[str], str]] = {}

#: (state, input) -> (outputs, next state); absent: deliberately impossible.
_TABLE: dict[str, dict[str, tuple[list[str], str]]] = {
    "Opened": {
        "forwarded": (["start"], "Forwarding"),
        "lookingUp": ([f"resolve {_HOST}"], "Routing"),
        "rejected": _PAGE,
        "answered": _PAGE,
        "abandoned": (["closed"], "Closed"),
    },
    "Routing": {
        "forwarded": (["start"], "Forwarding"),
        "resolved": ([f"exchangeFor {_HOST}", "start"], "Forwarding"),
        "resolveFailed": _PAGE,
        "rejected": _PAGE,
        "answered": _PAGE,
        "bodyReceived": ([], "Routing"),
        "bodyTooLarge": _PAGE,
        "bodyEnded": ([], "Routing"),
        "abandoned": (["closed"], "Closed"),
    },
    "Forwarding": {
        "rejected": (["cancel", "ready"], "Responding (page)"),
        "answered": (["cancel", "ready"], "Responding (page)"),
        "bodyReceived": (["send x", "ack 1"], "Forwarding"),
        "bodyTooLarge": (["cancel", "ready"], "Responding (page)"),
        "bodyEnded": (["endBody"], "Forwarding"),
        "responseFailed": (["cancel", "ready"], "Responding (page)"),
        "headersSent": ([], "Responding"),
        "responseSent": (["answered", "cancel", "closed"], "Closed"),
        "responseSentEarly": (["answered", "cancel"], "Draining"),
        "abandoned": (["cancel", "closed"], "Closed"),
    },
    "Responding": {
        "resolved": ([], "Responding"),
        "resolveFailed": ([], "Responding"),
        "bodyReceived": (["send x", "ack 1"], "Responding"),
        "bodyTooLarge": (["reset 7", "cancel", "closed"], "Closed"),
        "bodyEnded": (["endBody"], "Responding"),
        "responseFailed": (["reset 2", "cancel", "closed"], "Closed"),
        "headersSent": ([], "Responding"),
        "responseSent": (["answered", "cancel", "closed"], "Closed"),
        "responseSentEarly": (["answered", "cancel"], "Draining"),
        "abandoned": (["cancel", "closed"], "Closed"),
    },
    "Responding (page)": {
        "resolved": ([], "Responding (page)"),
        "resolveFailed": ([], "Responding (page)"),
        "bodyReceived": (["giveBack 1"], "Responding (page)"),
        "bodyTooLarge": (["reset 7", "closed"], "Closed"),
        "bodyEnded": ([], "Responding (page)"),
        "responseFailed": (["reset 2", "closed"], "Closed"),
        "headersSent": ([], "Responding (page)"),
        "responseSent": (["answered", "closed"], "Closed"),
        "responseSentEarly": (["answered"], "Draining"),
        "abandoned": (["closed"], "Closed"),
    },
    "Draining": {
        "resolved": ([], "Draining"),
        "resolveFailed": ([], "Draining"),
        "bodyReceived": (["giveBack 1"], "Draining"),
        "bodyEnded": (["closed"], "Closed"),
        "abandoned": (["closed"], "Closed"),
    },
    "Closed": {
        "resolved": ([], "Closed"),
        "resolveFailed": ([], "Closed"),
        "bodyReceived": (["giveBack 1"], "Closed"),
        "bodyEnded": ([], "Closed"),
        "abandoned": ([], "Closed"),
    },
}


def _feed(stream: StreamCore, name: str) -> Any:
    args = dict(_INPUTS)[name](stream)
    return getattr(_MACHINES[id(stream)], name)(*args)


def _streamIn(state: str) -> tuple[StreamCore, _Side]:
    side = _Side()
    stream = newStream(side, 1, _HEAD, True)
    _MACHINES.clear()
    _MACHINES[id(stream)] = stream.inputs
    for name in _PATHS[state]:
        _feed(stream, name)
    del side.events[:]
    return stream, side


class EveryInputTests(SynchronousTestCase):
    """
    Every input in every state of the stream machine.
    """

    def test_tableIsComplete(self) -> None:
        """
        The inputs tried are the machine's; the table covers every state.
        """
        declared = {k for k, v in vars(StreamInputs).items() if callable(v) and not k.startswith("_")}
        self.assertEqual({n for n, _ in _INPUTS}, declared)
        self.assertEqual(set(_TABLE), set(_PATHS))
        self.assertEqual({s.split(" ")[0] for s in _PATHS}, {_state(_streamIn(s)[0]) for s in _PATHS})

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state gives the table's outputs and leads to its
        state; the others raise NoTransition and do nothing.
        """
        for state in _PATHS:
            for name, _ in _INPUTS:
                stream, side = _streamIn(state)
                expected = _TABLE[state].get(name)
                if expected is None:
                    self.assertRaises(NoTransition, _feed, stream, name)
                    self.assertEqual(side.events, [], (state, name))
                    continue
                outputs, after = expected
                self.assertIsNone(_feed(stream, name))
                self.assertEqual(side.events, outputs, (state, name))
                self.assertEqual(_state(stream), after.split(" ")[0], (state, name))
                # the answer the connection reaches in the phases that have one
                hasResponse = after == "Forwarding" or after.startswith("Responding")
                self.assertEqual(stream.response is not None, hasResponse, (state, name))
                if after == "Responding (page)":
                    assert stream.response is not None
                    self.assertIsNone(stream.response.exchange)


class StreamTests(SynchronousTestCase):
    """
    What the table does not show: bytes kept while routing, the body and
    drain limits, error pages, the sink's flow control.
    """

    def test_earlyBodyReplayed(self) -> None:
        """
        Body bytes (and the body's end) that came while the route was looked
        up are sent once the exchange starts, and acknowledged then.
        """
        stream, side = _streamIn("Routing")
        stream.inputs.bodyReceived(b"a", 10)
        stream.inputs.bodyReceived(b"b", 20)
        stream.inputs.bodyEnded()
        self.assertEqual((side.events, stream.unacked), ([], 30))
        side.gateway.lookups[0].callback(object())
        self.assertEqual(
            side.events, [f"exchangeFor {_HOST}", "start", "send a", "send b", "ack 30", "endBody"]
        )
        self.assertEqual(_state(stream), "Forwarding")

    def test_lookupAnswers(self) -> None:
        """
        Nobody serving the host is a 404 page, a host served out of reach a
        502 with the reason.
        """
        for found, code in ((None, 404), ("the tunnel is far", 502)):
            stream, side = _streamIn("Routing")
            side.gateway.lookups[0].callback(found)
            self.assertEqual(side.gateway.metrics.errors, {code: 1})
            assert stream.response is not None and stream.response.headers is not None
            self.assertEqual(stream.response.headers[0], (b":status", b"%d" % code))
            if found:
                self.assertIn(found.encode(), stream.response.out[0])

    def test_bodyTooLarge(self) -> None:
        """
        Past MAX_BODY the request is answered 413 (its exchange cancelled);
        once an answer began, the stream is reset instead.
        """
        stream, side = _streamIn("Forwarding")
        stream.inputs.bodyReceived(b"x" * (MAX_BODY + 1), 100)
        self.assertEqual(side.events, ["giveBack 100", "cancel", "ready"])
        self.assertEqual(side.gateway.metrics.errors, {413: 1})
        stream, side = _streamIn("Responding")
        stream.inputs.bodyReceived(b"x" * (MAX_BODY + 1), 100)
        self.assertEqual(side.events, ["giveBack 100", "reset 7", "cancel", "closed"])

    def test_drainLimit(self) -> None:
        """
        A body still coming after the answer is read and dropped up to
        DRAIN_LIMIT, then the stream is reset.
        """
        stream, side = _streamIn("Draining")
        stream.inputs.bodyReceived(b"", DRAIN_LIMIT)
        self.assertEqual(_state(stream), "Draining")
        stream.inputs.bodyReceived(b"", 1)
        self.assertEqual(side.events, [f"giveBack {DRAIN_LIMIT}", "giveBack 1", "reset 0", "closed"])
        self.assertEqual(_state(stream), "Closed")

    def test_unackedGivenBack(self) -> None:
        """
        Body bytes the tunnel never took go back to the visitor's window
        when the stream ends.
        """
        stream, side = _streamIn("Forwarding")
        assert stream.response is not None
        stream.response.requestBodyPaused()
        stream.inputs.bodyReceived(b"x", 5)
        self.assertEqual(side.events, ["send x"])
        stream.inputs.abandoned()
        self.assertEqual(side.events, ["send x", "cancel", "giveBack 5", "closed"])

    def test_sinkFlowControl(self) -> None:
        """
        The response queues the target's answer (not through the machine:
        the stream stays Forwarding until the head is sent), pauses its
        exchange past QUEUE_LIMIT and when the connection is write-paused,
        and resumes it.
        """
        stream, side = _streamIn("Forwarding")
        sink = stream.response
        assert sink is not None
        side.writePaused = True
        sink.responseStarted(ResponseHead(200, b"OK", ((b"content-length", b"5"),), 5, False, True))
        self.assertEqual(_state(stream), "Forwarding")
        self.assertEqual(side.events, ["pause", "ready"])
        sink.resume()
        sink.responseData(b"x" * (QUEUE_LIMIT + 1))
        sink.responseEnded()
        self.assertEqual(list(sink.out), [b"x" * (QUEUE_LIMIT + 1), END])
        self.assertEqual(side.events, ["pause", "ready", "resume", "pause", "ready", "ready"])
        self.assertIsNone(sink.exchange)
