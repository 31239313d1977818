"""
HTTP/3 visitors while the gateway drains, in memory: aioquic's client
connection and the gateway's QUIC protocol exchange datagrams directly,
time is a L{Clock} (the protocol's event loop is a stand-in over it), and
a tunnel link on a StringTransport stands in for the client and its
target.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.pki.mint import mintSelfSigned
from suite.specter.gateway.exchange import ExchangePool
from suite.specter.gateway.h3 import _H3Protocol, nextRequestStreamId, requestsLeft
from suite.specter.tunnel.frames import DATA, OPEN, FrameDecoder, encodeFrame
from tests.specter.gateway.h3client import GOAWAY, controlFrames
from tests.specter.gateway.support import linkedGateway

HOST = "app.example.test"
CLIENT = ("10.0.0.1", 5000)
SERVER = ("127.0.0.1", 443)
_CERTIFICATE = mintSelfSigned(["example.test", "*.example.test"], days=1)


class _Loop:
    """
    What an aioquic protocol asks of its event loop, over a L{Clock}.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def time(self) -> float:
        return self.clock.seconds()

    def call_at(self, when: float, call: Callable[..., Any], *args: Any) -> Any:
        return self.clock.callLater(max(0.0, when - self.clock.seconds()), call, *args)

    def call_soon(self, call: Callable[..., Any], *args: Any) -> Any:
        return self.clock.callLater(0, call, *args)


class _UDP:
    """
    The gateway's UDP socket: what it sent.
    """

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)


class _Harness:
    """
    A gateway with a tunnel link for L{HOST}, one HTTP/3 connection to it
    and aioquic's client at the other end.
    """

    def __init__(self, certificate: tuple[Any, Any] | None = None) -> None:
        self.clock, self.gateway, self.link, self.wire = linkedGateway(HOST)
        self.client = QuicConnection(
            configuration=QuicConfiguration(
                is_client=True, alpn_protocols=H3_ALPN, server_name=HOST, verify_mode=ssl.CERT_NONE
            )
        )
        serverConfig = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        serverConfig.certificate, serverConfig.private_key = certificate or _CERTIFICATE
        quic = QuicConnection(
            configuration=serverConfig,
            original_destination_connection_id=self.client.original_destination_connection_id,
        )
        asyncio.events._set_running_loop(_Loop(self.clock))  # type: ignore[arg-type]
        try:
            self.proto = _H3Protocol(quic)
        finally:
            asyncio.events._set_running_loop(None)
        self.proto.gateway = self.gateway
        self.proto.pool = ExchangePool(self.gateway)
        self.udp = _UDP()
        self.proto.connection_made(self.udp)  # type: ignore[arg-type]
        self.client.connect(SERVER, now=self.clock.seconds())
        self.http = H3Connection(self.client)
        #: The client's HTTP/3 events, its QUIC stream resets and its end.
        self.events: list[H3Event] = []
        self.resets: list[tuple[int, int]] = []
        self.terminated: ConnectionTerminated | None = None
        #: The bytes of the gateway's control stream (stream 3).
        self.control = b""
        self.pump()

    def pump(self, seconds: float = 0.1) -> None:
        """
        Exchange datagrams, letting C{seconds} pass in steps of 10 ms (for
        delayed acknowledgements), until both sides are quiet.
        """
        for step in range(int(seconds * 100) + 1):
            for _ in range(20):
                now = self.clock.seconds()
                moved = False
                for data, _addr in self.client.datagrams_to_send(now=now):
                    self.proto.datagram_received(data, CLIENT)
                    moved = True
                sent, self.udp.sent = self.udp.sent, []
                for data in sent:
                    self.client.receive_datagram(data, SERVER, now=now)
                    moved = True
                self._clientEvents()
                if not moved:
                    break
            if step < int(seconds * 100):
                self.clock.advance(0.01)
                timer = self.client.get_timer()
                if timer is not None and timer <= self.clock.seconds():
                    self.client.handle_timer(now=self.clock.seconds())

    def _clientEvents(self) -> None:
        event = self.client.next_event()
        while event is not None:
            if isinstance(event, StreamDataReceived) and event.stream_id == 3:
                self.control += event.data
            elif isinstance(event, StreamReset):
                self.resets.append((event.stream_id, event.error_code))
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event
            self.events += self.http.handle_event(event)
            event = self.client.next_event()

    def closedWith(self) -> int | None:
        """
        The error code the client's connection ended with, letting its
        draining period (three probe timeouts) pass; None if it did not.
        """
        self.pump(1.0)
        return None if self.terminated is None else self.terminated.error_code

    def open(self) -> bool:
        """
        Whether the gateway still waits for the connection.
        """
        return self.proto.leaving in self.gateway.visitors

    def goAways(self) -> list[int]:
        """
        The stream ids of the GOAWAY frames on the gateway's control stream.
        """
        return [_varint(p) for t, p in controlFrames(self.control) if t == GOAWAY]

    def request(self, path: str = "/", end: bool = True) -> int:
        """
        Send a GET for C{path} on a new request stream; its id.
        """
        sid = self.client.get_next_available_stream_id()
        self.http.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", HOST.encode()),
                (b":path", path.encode()),
            ],
            end_stream=end,
        )
        return sid

    def tunnelStreams(self) -> list[int]:
        """
        The tunnel streams the gateway opened since the last call.
        """
        out: list[tuple[int, int, bytes]] = []
        FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(self.wire.value())
        self.wire.clear()
        return [s for k, s, _ in out if k == OPEN]

    def answer(self, stream: int, body: bytes = b"ok") -> None:
        """
        The target answers on tunnel stream C{stream}.
        """
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        self.link.dataReceived(encodeFrame(DATA, stream, head + body))
        self.link.readHandled()

    def bodies(self) -> dict[int, bytes]:
        """
        The response bodies the client received whole, by stream.
        """
        out: dict[int, bytes] = {}
        ended: set[int] = set()
        for e in self.events:
            if isinstance(e, DataReceived):
                out[e.stream_id] = out.get(e.stream_id, b"") + e.data
            if isinstance(e, (DataReceived, HeadersReceived)) and e.stream_ended:
                ended.add(e.stream_id)
        return {sid: body for sid, body in out.items() if sid in ended}


def _varint(payload: bytes) -> int:
    from aioquic.buffer import Buffer

    return int(Buffer(data=payload).pull_uint_var())


class H3DrainTests(SynchronousTestCase):
    """
    The gateway drains: HTTP/3 visitors get GOAWAY naming the first
    request stream not taken, requests on later streams are rejected,
    those in flight finish, and the QUIC connection closes (H3_NO_ERROR)
    once they are done or at the drain's deadline.
    """

    def setUp(self) -> None:
        self.h = _Harness()
        self.addCleanup(self.h.clock.advance, 1000)

    def test_opened(self) -> None:
        """
        A connection that negotiated HTTP/3 is one of the gateway's
        visitors and serves requests through the tunnel.
        """
        h = self.h
        self.assertEqual(h.gateway.visitors, {h.proto.leaving})
        sid = h.request("/a")
        h.pump()
        (stream,) = h.tunnelStreams()
        h.answer(stream)
        h.pump()
        self.assertEqual(h.bodies(), {sid: b"ok"})
        self.assertEqual(h.goAways(), [])

    def test_goAwayThenInFlightFinish(self) -> None:
        """
        GOAWAY names the first stream the visitor has not opened; a request
        on a later stream is rejected (H3_REQUEST_REJECTED) and never
        reaches the tunnel; the two in flight are answered whole, then the
        connection closes with H3_NO_ERROR and, with the link gone too,
        the drain ends.
        """
        h = self.h
        first, second = h.request("/1"), h.request("/2")
        h.pump()
        streams = h.tunnelStreams()
        self.assertEqual(len(streams), 2)
        done = h.gateway.drain()
        h.pump()
        self.assertEqual(h.goAways(), [8])
        later = h.request("/3")
        self.assertEqual(later, 8)
        h.pump()
        self.assertIn((later, ErrorCode.H3_REQUEST_REJECTED), h.resets)
        self.assertEqual(h.tunnelStreams(), [])
        h.answer(streams[0])
        h.pump()
        self.assertTrue(h.open())
        h.answer(streams[1])
        h.pump()
        self.assertEqual(h.bodies(), {first: b"ok", second: b"ok"})
        self.assertEqual(h.closedWith(), ErrorCode.H3_NO_ERROR)
        self.assertEqual(h.gateway.visitors, set())
        self.assertNoResult(done)
        h.link.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(done)

    def test_idleConnectionClosedAtOnce(self) -> None:
        """
        A connection with nothing in flight gets GOAWAY (naming stream 0
        when it sent no request) and is closed; the drain does not wait
        for it.
        """
        h = self.h
        h.link.connectionLost(Failure(ConnectionDone()))
        done = h.gateway.drain()
        h.pump()
        self.assertEqual(h.goAways(), [0])
        self.assertEqual(h.closedWith(), ErrorCode.H3_NO_ERROR)
        self.successResultOf(done)

    def test_requestAwaitingItsBody(self) -> None:
        """
        A request whose body is still coming when the gateway drains was
        taken (its stream is below the GOAWAY's): it is answered, not
        rejected (here by the gateway itself, as the only tunnel link was
        asked to move), and the connection closes after.
        """
        h = self.h
        sid = h.request("/upload", end=False)
        h.pump()
        h.gateway.drain()
        h.pump()
        self.assertEqual(h.goAways(), [4])
        self.assertTrue(h.open())
        h.http.send_data(sid, b"body", end_stream=True)
        h.pump()
        self.assertEqual(h.resets, [])
        self.assertEqual(h.bodies(), {sid: b"404 no tunnel is serving app.example.test\n"})
        self.assertEqual(h.closedWith(), ErrorCode.H3_NO_ERROR)

    def test_deadline(self) -> None:
        """
        A request still in flight at the drain's deadline: the connection
        is closed then (H3_NO_ERROR).
        """
        h = self.h
        h.request("/slow")
        h.pump()
        done = h.gateway.drain()
        h.pump(4.5)
        self.assertTrue(h.open())
        h.pump(0.6)
        self.assertEqual(h.closedWith(), ErrorCode.H3_NO_ERROR)
        self.successResultOf(done)
        self.assertEqual(h.gateway.visitors, set())

    def test_openedWhileDraining(self) -> None:
        """
        A connection that negotiates HTTP/3 while the gateway drains is
        told to go away at once (GOAWAY naming stream 0) and, with nothing
        in flight, closed.
        """
        late = _DrainingFirst()
        self.addCleanup(late.clock.advance, 1000)
        self.assertEqual(late.goAways(), [0])
        self.assertEqual(late.closedWith(), ErrorCode.H3_NO_ERROR)

    def test_connectionLost(self) -> None:
        """
        A connection that ends (here the client closes it) is no longer
        waited for.
        """
        h = self.h
        self.assertTrue(h.open())
        h.client.close()
        h.pump(1)
        self.assertEqual(h.gateway.visitors, set())


class _DrainingFirst(_Harness):
    """
    A harness whose gateway drains before the QUIC handshake.
    """

    def pump(self, seconds: float = 0.1) -> None:
        if not self.gateway.draining:
            self.link.connectionLost(Failure(ConnectionDone()))
            self.gateway.drain()
        super().pump(seconds)


class AioquicInternalsTests(SynchronousTestCase):
    """
    What the HTTP/3 drain reads in aioquic beyond its API.
    """

    def test_nextRequestStreamId(self) -> None:
        """
        The first request stream id not opened counts the streams the
        client opened, lower ones included.
        """
        h = _Harness()
        self.addCleanup(h.clock.advance, 1000)
        self.assertEqual(nextRequestStreamId(h.proto._quic), 0)
        h.client.send_stream_data(8, b"", end_stream=False)
        h.client.send_stream_data(8, b"x")
        h.pump()
        self.assertEqual(nextRequestStreamId(h.proto._quic), 12)

    def test_requestsLeft(self) -> None:
        """
        A request stream is left until its request was read and its
        response acknowledged whole; streams from the limit on are not
        counted.
        """
        h = _Harness()
        self.addCleanup(h.clock.advance, 1000)
        quic = h.proto._quic
        sid = h.request()
        h.pump()
        self.assertTrue(requestsLeft(quic, 4))
        self.assertFalse(requestsLeft(quic, 0))
        (stream,) = h.tunnelStreams()
        h.answer(stream)
        self.assertTrue(requestsLeft(quic, 4))  # sent, not acknowledged yet
        h.pump()
        self.assertEqual(h.bodies(), {sid: b"ok"})
        self.assertFalse(requestsLeft(quic, 4))
