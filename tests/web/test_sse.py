"""
Tests for L{SSEHub}: delivery, keepalive, the client cap, slow clients,
idle eviction and Last-Event-ID replay.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

from suite.web.limits import LimitedSite
from suite.web.sse import SSEHub, formatEvent

from .support import Connection, parseResponse


def frames(raw: bytes) -> list[dict[str, Any]]:
    """
    Parse the event-stream part of C{raw} (after the response head, chunked
    framing removed) into frames: C{{"id", "event", "data", "comment"}}.
    """
    body = raw.partition(b"\r\n\r\n")[2] if raw.startswith(b"HTTP/") else raw
    text = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        text += body[:n]
        body = body[n + 2 :]
    out: list[dict[str, Any]] = []
    for block in text.decode().split("\n\n"):
        if not block:
            continue
        frame: dict[str, Any] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "":
                frame.setdefault("comment", []).append(value)
            elif field == "data":
                frame["data"] = frame["data"] + "\n" + value if "data" in frame else value
            else:
                frame[field] = value
        out.append(frame)
    return out


class SSETests(SynchronousTestCase):
    """
    An L{SSEHub} mounted on a site, with clients over in-memory transports.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def makeHub(self, **kwargs: Any) -> SSEHub:
        kwargs.setdefault("keepaliveSeconds", 15)
        self.hub = SSEHub(self.clock, **kwargs)
        root = Resource()
        root.putChild(b"events", self.hub.resource())
        self.site = LimitedSite(root, reactor=self.clock, timeout=None)
        self.addCleanup(self.hub.close)
        return self.hub

    def connect(self, headers: dict[bytes, bytes] | None = None) -> Connection:
        conn = Connection(self.site)
        conn.get(b"/events", headers)
        return conn

    def test_headersAndEvents(self) -> None:
        """
        A client gets a 200 C{text/event-stream} response, then every event
        published, with ids, names and JSON data.
        """
        hub = self.makeHub()
        conn = self.connect()
        hub.publish("join", {"peer": "p1"})
        hub.publish("note", "plain text", id="abc")
        raw = conn.received()
        code, headers, _ = parseResponse(raw)
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"content-type"], b"text/event-stream; charset=utf-8")
        self.assertEqual(headers[b"cache-control"], b"no-cache")
        events = [f for f in frames(raw) if "data" in f]
        self.assertEqual(
            events,
            [
                {"id": "1", "event": "join", "data": '{"peer":"p1"}'},
                {"id": "abc", "event": "note", "data": "plain text"},
            ],
        )
        self.assertEqual(json.loads(events[0]["data"]), {"peer": "p1"})

    def test_multiLine(self) -> None:
        """
        Multi-line data becomes several C{data:} lines; a newline cannot
        inject a field through the event name or id.
        """
        self.assertEqual(
            formatEvent("a\nid: 9", "one\r\ntwo\nthree", id="5\nevent: x"),
            b"id: 5\nevent: a\ndata: one\ndata: two\ndata: three\n\n",
        )
        self.assertEqual(formatEvent(None, [1, 2]), b"data: [1,2]\n\n")

    def test_fanOut(self) -> None:
        """
        Every connected client gets every event; C{clientCount} tracks them.
        """
        hub = self.makeHub()
        a, b = self.connect(), self.connect()
        self.assertEqual(hub.clientCount, 2)
        hub.publish("tick", 1)
        for conn in (a, b):
            self.assertEqual([f["data"] for f in frames(conn.received()) if "data" in f], ["1"])
        a.close()
        self.assertEqual(hub.clientCount, 1)
        hub.publish("tick", 2)
        self.assertEqual([f["data"] for f in frames(b.received()) if "data" in f], ["1", "2"])

    def test_keepalive(self) -> None:
        """
        A keepalive comment goes out every C{keepaliveSeconds} on the clock,
        and the timer stops when the last client leaves.
        """
        hub = self.makeHub(keepaliveSeconds=10)
        conn = self.connect()
        conn.take()
        self.clock.advance(9)
        self.assertEqual(conn.received(), b"")
        self.clock.advance(1)
        self.assertIn(b": keepalive\n\n", conn.take())
        self.clock.advance(10)
        self.assertIn(b": keepalive\n\n", conn.take())
        conn.close()
        self.assertEqual(hub.clientCount, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cap(self) -> None:
        """
        Past C{maxClients} a client is answered 429 with a JSON reason and
        not counted; once a slot frees up a new client gets in.
        """
        hub = self.makeHub(maxClients=2)
        first, _ = self.connect(), self.connect()
        third = self.connect()
        code, headers, body = parseResponse(third.received())
        self.assertEqual(code, 429)
        self.assertEqual(json.loads(body), {"error": "too many event-stream clients (limit 2)"})
        self.assertEqual(headers[b"retry-after"], b"5")
        self.assertEqual((hub.clientCount, hub.rejectedClients), (2, 1))
        first.close()
        fourth = self.connect()
        self.assertEqual(parseResponse(fourth.received())[0], 200)
        self.assertEqual(hub.clientCount, 2)

    def test_perAddressCap(self) -> None:
        """
        With C{maxPerIP}, one address may hold only that many streams; a
        slot frees when one of them leaves.
        """
        hub = self.makeHub(maxPerIP=1)
        first = self.connect()
        second = self.connect()
        code, _, body = parseResponse(second.received())
        self.assertEqual(code, 429)
        self.assertIn("from this address (limit 1)", json.loads(body)["error"])
        first.close()
        self.assertEqual(parseResponse(self.connect().received())[0], 200)
        self.assertEqual(hub.clientCount, 1)

    def test_initial(self) -> None:
        """
        Frames from C{initial} are sent to each new client first.
        """
        self.makeHub(initial=lambda: [formatEvent("log", "line 1"), formatEvent("log", "line 2")])
        conn = self.connect()
        self.assertEqual([f["data"] for f in frames(conn.received()) if "data" in f], ["line 1", "line 2"])

    def test_slowClientDropped(self) -> None:
        """
        A client whose socket stops accepting data gets frames queued up to
        C{maxBufferBytes}; past that it is dropped (connection aborted) and
        the other clients keep receiving.
        """
        hub = self.makeHub(maxBufferBytes=1000)
        slow, fast = self.connect(), self.connect()
        slow.pauseSocket()
        before = len(slow.received())
        for _ in range(5):
            hub.publish("x", "y" * 150)
        self.assertEqual(len(slow.received()), before)
        self.assertFalse(slow.transport.disconnecting)
        for _ in range(5):
            hub.publish("x", "y" * 150)
        self.assertTrue(slow.transport.disconnecting)
        self.assertEqual(hub.clientCount, 1)
        self.assertEqual(hub.droppedClients, 1)
        self.assertEqual(len([f for f in frames(fast.received()) if "data" in f]), 10)
        hub.publish("x", "z")
        self.assertEqual(len(slow.received()), before)

    def test_pausedClientCatchesUp(self) -> None:
        """
        Frames queued while a client was paused are written, in order, when
        its socket drains.
        """
        hub = self.makeHub(maxBufferBytes=10000)
        conn = self.connect()
        conn.take()
        conn.pauseSocket()
        for i in range(3):
            hub.publish("n", i)
        self.assertEqual(conn.received(), b"")
        conn.resumeSocket()
        self.assertEqual(
            [f["data"] for f in frames(b"HTTP/1.1 200\r\n\r\n" + conn.received())], ["0", "1", "2"]
        )

    def test_replay(self) -> None:
        """
        A client reconnecting with C{Last-Event-ID} first gets the events it
        missed from the ring buffer.
        """
        hub = self.makeHub(replaySize=3)
        for i in range(5):
            hub.publish("n", i)
        conn = self.connect({b"Last-Event-ID": b"3"})
        self.assertEqual([f["id"] for f in frames(conn.received()) if "data" in f], ["4", "5"])
        hub.publish("n", 5)
        self.assertEqual([f["id"] for f in frames(conn.received()) if "data" in f], ["4", "5", "6"])

    def test_replayUnknown(self) -> None:
        """
        An id that fell out of the ring (or never existed) replays nothing
        and says so in a comment.
        """
        hub = self.makeHub(replaySize=2)
        for i in range(5):
            hub.publish("n", i)
        conn = self.connect({b"Last-Event-ID": b"1"})
        parsed = frames(conn.received())
        self.assertEqual([f for f in parsed if "data" in f], [])
        self.assertIn(["replay unavailable"], [f.get("comment") for f in parsed])

    def test_idleEviction(self) -> None:
        """
        With C{idleTimeout}, a client that got no event for that long is
        closed (it reconnects with Last-Event-ID); an event resets the
        timer of every client that received it.
        """
        hub = self.makeHub(keepaliveSeconds=5, idleTimeout=20)
        old = self.connect()
        self.clock.advance(15)
        new = self.connect()
        self.clock.advance(5)
        self.assertEqual(hub.clientCount, 1)
        self.assertTrue(old.received().endswith(b"0\r\n\r\n"))
        self.assertFalse(new.received().endswith(b"0\r\n\r\n"))
        self.clock.advance(10)
        hub.publish("n", 1)
        self.clock.advance(15)
        self.assertEqual(hub.clientCount, 1)
        self.clock.advance(5)
        self.assertEqual(hub.clientCount, 0)

    def test_head(self) -> None:
        """
        HEAD answers the headers without joining the hub.
        """
        hub = self.makeHub()
        conn = Connection(self.site)
        conn.send(b"HEAD /events HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(parseResponse(conn.received())[0], 200)
        self.assertEqual(hub.clientCount, 0)

    def test_close(self) -> None:
        """
        C{close} ends every stream and stops the timer.
        """
        hub = self.makeHub()
        conn = self.connect()
        hub.close()
        self.assertEqual(hub.clientCount, 0)
        self.assertTrue(conn.received().endswith(b"0\r\n\r\n"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_verifyProducer(self) -> None:
        """
        Each client is the C{IPushProducer} registered on its request.
        """
        from twisted.internet.interfaces import IPushProducer
        from zope.interface.verify import verifyObject

        hub = self.makeHub()
        self.connect()
        [client] = hub._clients
        self.assertTrue(verifyObject(IPushProducer, client))

    def test_badArguments(self) -> None:
        """
        Negative limits are refused.
        """
        self.assertRaises(ValueError, SSEHub, self.clock, maxClients=-1)
        self.assertRaises(ValueError, SSEHub, self.clock, keepaliveSeconds=-1)


class _StreamClient(Protocol):
    def __init__(self, read: bool) -> None:
        self.read = read
        self.received = 0
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        if not self.read:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost.callback(None)


class LoopbackSSETests(TestCase):
    """
    Slow-client eviction over real sockets.
    """

    async def test_stalledReaderDropped(self) -> None:
        """
        A client that stops reading is disconnected once its queue passes
        the bound, while a client that reads keeps every event.
        """
        hub = SSEHub(reactor, keepaliveSeconds=0, maxBufferBytes=64 * 1024)
        root = Resource()
        root.putChild(b"events", hub.resource())
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            LimitedSite(root, reactor=reactor)
        )
        self.addCleanup(port.stopListening)
        self.addCleanup(hub.close)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        stalled, reader = _StreamClient(read=False), _StreamClient(read=True)
        stalledProtocol = await connectProtocol(endpoint, stalled)
        readerProtocol = await connectProtocol(endpoint, reader)
        self.addCleanup(lambda: stalledProtocol.transport.abortConnection())
        self.addCleanup(lambda: readerProtocol.transport.loseConnection())
        while hub.clientCount < 2:
            await deferLater(reactor, 0.01)
        payload = "x" * 16384
        sent = 0
        while hub.droppedClients == 0 and sent < 4000:
            hub.publish("blob", payload)
            sent += 1
            await deferLater(reactor, 0)
        self.assertEqual(hub.droppedClients, 1)
        # A paused transport does not notice the close until it reads again.
        stalledProtocol.transport.resumeProducing()
        await stalled.lost
        self.assertEqual(hub.clientCount, 1)
        self.assertFalse(reader.lost.called)
        while reader.received < sent * 16384:
            await deferLater(reactor, 0.01)
