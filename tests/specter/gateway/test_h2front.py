"""
The HTTP/2 front end against an in-memory C{h2} client, with a tunnel link
on a StringTransport standing in for the client and its target.
"""

from __future__ import annotations

from typing import Any, TypeVar

import h2.events
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from suite.specter.gateway.core import GatewayLink
from suite.specter.gateway.h2 import DRAIN_PING, MAX_BODY, H2Front, headerListSize
from suite.specter.gateway.h2conn import MAX_STREAM_ID
from suite.specter.gateway.h2stream import Response, newStream
from suite.specter.gateway.interfaces import IResponseSink
from suite.specter.gateway.lifecycle import newDrainMachine
from suite.specter.tunnel.frames import (
    CLOSE,
    DATA,
    OPEN,
    RESET,
    WINDOW,
    FrameDecoder,
    decodeControl,
    encodeFrame,
)
from tests.specter.gateway.support import linkedGateway

_Event = TypeVar("_Event", bound=h2.events.Event)

HOST = "app.example.test"
#: A second tunnel, on its own link.
OTHER = "other.example.test"


class _Apex(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"apex " + request.uri


class _Harness:
    """
    A gateway with one tunnel link for L{HOST}, one HTTP/2 visitor
    connection and the client driving it.
    """

    def __init__(
        self, clientSettings: dict[int, int] | None = None, validate: bool = True, handle: Any = None
    ) -> None:
        self.clock, self.gateway, self.link, self.wire = linkedGateway(HOST)
        self.front = H2Front(self.gateway, self.clock)
        self.visitor = self.front.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 5000))
        self.writes = 0
        write = self.transport.write

        def counting(data: bytes) -> None:
            self.writes += 1
            write(data)

        self.transport.write = counting  # type: ignore[method-assign]
        if handle is not None:
            # a TLS transport's: the certificate the handshake presented
            self.transport.getHandle = lambda: handle  # type: ignore[attr-defined]
        self.visitor.makeConnection(self.transport)
        self.client = H2Connection(
            H2Configuration(
                client_side=True, validate_outbound_headers=validate, normalize_outbound_headers=validate
            )
        )
        self.client.initiate_connection()
        if clientSettings:
            self.client.update_settings(clientSettings)
        self.events: list[Any] = []
        #: GOAWAY frames the gateway sent, as (last stream id, error code),
        #: kept from C{h2}'s client when C{stripGoAway} (which ends its
        #: connection on one: it cannot let streams in flight finish).
        self.goAways: list[tuple[int, int]] = []
        self.stripGoAway = False
        #: Whether the client never sees (so never acknowledges) a PING.
        self.dropPings = False
        self.pump()
        self.decoded = 0
        self.frames: list[tuple[int, int, bytes]] = []

    def pump(self, acknowledge: bool = True) -> list[Any]:
        """
        Deliver what each side wrote to the other until both are quiet;
        return the client's new events.
        """
        new: list[Any] = []
        for _ in range(20):
            data = self.client.data_to_send()
            if data:
                self.visitor.dataReceived(data)
            self.clock.advance(0)
            out = self.transport.value()
            self.transport.clear()
            if self.stripGoAway:
                out = self._takeGoAways(out)
            if self.dropPings:
                out = self._dropPings(out)
            if not data and not out:
                break
            if out:
                events = self.client.receive_data(out)
                for event in events:
                    if acknowledge and isinstance(event, h2.events.DataReceived):
                        self.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                new += events
        self.events += new
        return new

    def _takeGoAways(self, data: bytes) -> bytes:
        kept = []
        while data:
            length = int.from_bytes(data[:3], "big")
            frame, data = data[: 9 + length], data[9 + length :]
            if frame[3] == 7:  # GOAWAY
                self.goAways.append((int.from_bytes(frame[9:13], "big"), int.from_bytes(frame[13:17], "big")))
            else:
                kept.append(frame)
        return b"".join(kept)

    def _dropPings(self, data: bytes) -> bytes:
        kept = []
        while data:
            length = int.from_bytes(data[:3], "big")
            frame, data = data[: 9 + length], data[9 + length :]
            if frame[3] != 6:  # PING
                kept.append(frame)
        return b"".join(kept)

    def request(
        self,
        sid: int,
        path: str = "/",
        host: str = HOST,
        method: str = "GET",
        end: bool = True,
        extra: Any = (),
    ) -> None:
        headers = [(":method", method), (":scheme", "https"), (":path", path), (":authority", host), *extra]
        self.client.send_headers(sid, headers, end_stream=end)

    def linkFrames(self) -> list[tuple[int, int, bytes]]:
        """
        The tunnel frames the gateway wrote since the last call.
        """
        out: list[tuple[int, int, bytes]] = []
        FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(self.wire.value())
        self.wire.clear()
        self.frames += out
        return out

    def answer(self, *pieces: tuple[int, bytes]) -> None:
        """
        The target's bytes on tunnel streams, in one link read.
        """
        self.link.dataReceived(b"".join(encodeFrame(DATA, sid, data) for sid, data in pieces))
        self.link.readHandled()  # what the gateway's TLS transport calls after a read

    def of(self, kind: type[_Event]) -> list[_Event]:
        """
        The events of type C{kind} the client has received.
        """
        return [e for e in self.events if isinstance(e, kind)]


def _stateOf(inputs: Any) -> str:
    """
    The state of a stream machine (automat's own record of it).
    """
    return inputs.__automat_transitioner__._state.name


def _streamsOpened(frames: list[tuple[int, int, bytes]]) -> list[int]:
    return [s for k, s, _ in frames if k == OPEN]


class H2FrontTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = _Harness()

    def test_interfaces(self) -> None:
        """
        Visitor connections are push producers (their TCP connection
        pauses them); each request is an L{IResponseSink}.
        """
        self.assertTrue(verifyObject(IPushProducer, self.h.visitor))
        self.assertIs(self.h.transport.producer, self.h.visitor)
        self.assertTrue(
            verifyObject(IResponseSink, Response(newStream(self.h.visitor, 1, None, False), None))
        )

    def test_settings(self) -> None:
        """
        The visitor is offered large windows and a stream limit.
        """
        changed = self.h.of(h2.events.RemoteSettingsChanged)[0].changed_settings
        self.assertEqual(changed[SettingCodes.INITIAL_WINDOW_SIZE].new_value, 1024 * 1024)
        self.assertEqual(changed[SettingCodes.MAX_CONCURRENT_STREAMS].new_value, 128)
        self.assertEqual(self.h.client.outbound_flow_control_window, 4 * 1024 * 1024)

    def test_requestForwarded(self) -> None:
        """
        A request goes down a new tunnel stream as HTTP/1.1 with the
        forwarding headers; the stream names the visitor and the host.
        """
        self.h.request(1, "/path?q=1", extra=[("accept", "*/*"), ("x-forwarded-for", "6.6.6.6")])
        self.h.pump()
        frames = self.h.linkFrames()
        (kind, sid, meta), (dataKind, dataSid, head) = frames
        self.assertEqual((kind, dataKind, dataSid), (OPEN, DATA, sid))
        self.assertEqual(decodeControl(meta), {"kind": "http", "peer": "10.0.0.1:5000", "host": HOST})
        self.assertTrue(
            head.startswith(b"GET /path?q=1 HTTP/1.1\r\nHost: app.example.test\r\naccept: */*\r\n")
        )
        self.assertIn(b"X-Forwarded-For: 10.0.0.1\r\n", head)
        self.assertNotIn(b"6.6.6.6", head)
        self.assertTrue(head.endswith(b"\r\n\r\n"))

    def test_responsesOfOneReadInOneWrite(self) -> None:
        """
        Ten answers carried by one link read go out in one write, each as
        HEADERS and one DATA frame ending the stream; the streams go back
        to the pool and serve the next requests.
        """
        for i in range(10):
            self.h.request(1 + 2 * i, f"/{i}")
        self.h.pump()
        streams = _streamsOpened(self.h.linkFrames())
        self.assertEqual(len(streams), 10)
        writes = self.h.writes
        self.h.answer(
            *[(s, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Sid: %d\r\n\r\nhello" % s) for s in streams]
        )
        self.assertEqual(self.h.writes, writes + 1)
        self.h.pump()
        self.assertEqual(len(self.h.of(h2.events.StreamEnded)), 10)
        for event in self.h.of(h2.events.DataReceived):
            self.assertEqual(event.data, b"hello")
            self.assertIsNotNone(event.stream_ended)
        response = self.h.of(h2.events.ResponseReceived)[0]
        self.assertEqual(response.headers[:2], [(b":status", b"200"), (b"content-length", b"5")])
        self.h.request(21, "/again")
        self.h.pump()
        self.assertEqual(_streamsOpened(self.h.linkFrames()), [])

    def test_noBody(self) -> None:
        """
        An answer without a body is one HEADERS frame ending the stream.
        """
        self.h.request(1)
        self.h.pump()
        (sid,) = _streamsOpened(self.h.linkFrames())
        self.h.answer((sid, b"HTTP/1.1 204 No Content\r\n\r\n"))
        self.h.pump()
        ended = self.h.of(h2.events.ResponseReceived)[0].stream_ended
        assert ended is not None
        self.assertEqual(ended.stream_id, 1)
        self.assertEqual(self.h.of(h2.events.DataReceived), [])

    def test_altSvc(self) -> None:
        """
        With HTTP/3 served, answers advertise it.
        """
        self.h.gateway.altSvc = b'h3=":443"'
        self.h.request(1)
        self.h.pump()
        (sid,) = _streamsOpened(self.h.linkFrames())
        self.h.answer((sid, b"HTTP/1.1 204 No Content\r\n\r\n"))
        self.h.pump()
        self.assertIn((b"alt-svc", b'h3=":443"'), self.h.of(h2.events.ResponseReceived)[0].headers)

    def test_errorPages(self) -> None:
        """
        An unknown host gets 404, a request without :authority or Host 400,
        a malformed one 400, the apex 404 without an apex site: pages from
        the gateway, counted.
        """
        h = _Harness(validate=False)
        h.request(1, host="nobody.example.test")
        h.client.send_headers(3, [(":method", "GET"), (":scheme", "https"), (":path", "/")], end_stream=True)
        h.request(5, extra=[("x-bad", "a\r\nb")])
        h.request(7, host="example.test")
        h.pump()
        codes = {e.stream_id: dict(e.headers)[b":status"] for e in h.of(h2.events.ResponseReceived)}
        self.assertEqual(codes, {1: b"404", 3: b"400", 5: b"400", 7: b"404"})
        bodies = {e.stream_id: e.data for e in h.of(h2.events.DataReceived)}
        self.assertIn(b"no tunnel is serving nobody.example.test", bodies[1])
        self.assertIn(b"CR, LF or NUL", bodies[5])
        self.assertEqual(h.gateway.metrics.errors, {404: 2, 400: 2})
        self.assertEqual(len(h.of(h2.events.StreamEnded)), 4)

    def test_apex(self) -> None:
        """
        Requests for an apex are answered by the apex site in process.
        """
        self.h.gateway.setApexResource(_Apex())
        self.h.request(1, "/_internal", host="example.test")
        self.h.pump()
        self.assertEqual(self.h.of(h2.events.DataReceived)[0].data, b"apex /_internal")
        self.assertEqual(self.h.linkFrames(), [])

    def test_flowControlledResponse(self) -> None:
        """
        A response larger than the visitor's window is sent as it opens
        the window; meanwhile the tunnel stream grants the target nothing.
        """
        h = _Harness({SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        h.request(1)
        h.pump()
        (sid,) = _streamsOpened(h.linkFrames())
        h.answer((sid, b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + b"a" * 30000))
        h.pump(acknowledge=False)
        self.assertEqual(sum(len(e.data) for e in h.of(h2.events.DataReceived)), 1000)
        self.assertTrue(h.link.streams[sid].localWritePaused)
        self.assertNotIn(WINDOW, [k for k, _, _ in h.linkFrames()])
        h.client.increment_flow_control_window(100000, 1)
        h.pump()
        self.assertEqual(sum(len(e.data) for e in h.of(h2.events.DataReceived)), 30000)
        self.assertFalse(h.link.streams[sid].localWritePaused)
        self.assertIn(WINDOW, [k for k, _, _ in h.linkFrames()])
        h.answer((sid, b"a" * 40000))
        h.pump()
        self.assertEqual(sum(len(e.data) for e in h.of(h2.events.DataReceived)), 70000)
        self.assertEqual(len(h.of(h2.events.StreamEnded)), 1)

    def test_requestBody(self) -> None:
        """
        A request body is streamed down the tunnel stream; bytes the tunnel
        could not take yet are acknowledged to the visitor only once it
        took them.
        """
        self.h.request(1, method="POST", end=False, extra=[("content-length", "300000")])
        self.h.pump()
        (sid,) = _streamsOpened(self.h.linkFrames())
        self.h.client.send_data(1, b"b" * 16000)
        self.h.pump()
        request = self.h.visitor.requests[1]
        self.assertEqual(request.unacked, 0)
        for _ in range(17):
            self.h.client.send_data(1, b"b" * 16000)
        self.h.client.send_data(1, b"b" * 12000, end_stream=True)
        self.h.pump()
        assert request.response is not None
        self.assertTrue(request.response.bodyPaused)
        self.assertGreater(request.unacked, 0)
        sent = sum(len(p) for k, _, p in self.h.linkFrames() if k == DATA)
        self.h.link.dataReceived(encodeFrame(WINDOW, sid, (400000).to_bytes(4, "big")))
        self.assertEqual(request.unacked, 0)
        sent += sum(len(p) for k, _, p in self.h.linkFrames() if k == DATA)
        self.assertEqual(sent, 300000)
        self.h.answer((sid, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"))
        self.h.pump()
        self.assertEqual(dict(self.h.of(h2.events.ResponseReceived)[0].headers)[b":status"], b"201")

    def test_bodyTooLarge(self) -> None:
        """
        A declared body over the limit is answered 413 at once; what the
        visitor still sends is read and dropped.
        """
        self.h.request(1, method="POST", end=False, extra=[("content-length", str(MAX_BODY + 1))])
        self.h.pump()
        self.assertEqual(dict(self.h.of(h2.events.ResponseReceived)[0].headers)[b":status"], b"413")
        self.assertEqual(self.h.linkFrames(), [])
        self.h.client.send_data(1, b"x" * 16000)
        self.h.pump()
        self.assertEqual(self.h.of(h2.events.StreamReset), [])
        self.assertEqual(_stateOf(self.h.visitor.requests[1].inputs), "Draining")

    def test_visitorReset(self) -> None:
        """
        A visitor that resets its stream closes the tunnel stream.
        """
        self.h.request(1)
        self.h.pump()
        (sid,) = _streamsOpened(self.h.linkFrames())
        self.h.client.reset_stream(1, ErrorCodes.CANCEL)
        self.h.pump()
        self.assertEqual(self.h.linkFrames(), [(CLOSE, sid, b"")])
        self.h.answer((sid, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        self.h.pump()
        self.assertEqual(self.h.of(h2.events.ResponseReceived), [])

    def test_targetUnreachable(self) -> None:
        """
        A tunnel stream reset before any answer is a 502 page.
        """
        self.h.request(1)
        self.h.pump()
        (sid,) = _streamsOpened(self.h.linkFrames())
        self.h.link.dataReceived(encodeFrame(RESET, sid, b"cannot connect to 127.0.0.1:1"))
        self.h.pump()
        self.assertEqual(dict(self.h.of(h2.events.ResponseReceived)[0].headers)[b":status"], b"502")
        self.assertIn(b"cannot connect", self.h.of(h2.events.DataReceived)[0].data)

    def test_cutShort(self) -> None:
        """
        An answer cut short resets the visitor's stream (never ends it as
        if complete).
        """
        self.h.request(1)
        self.h.pump()
        (sid,) = _streamsOpened(self.h.linkFrames())
        self.h.answer((sid, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
        self.h.link.dataReceived(encodeFrame(CLOSE, sid))
        self.h.pump()
        (reset,) = self.h.of(h2.events.StreamReset)
        self.assertEqual(reset.error_code, ErrorCodes.INTERNAL_ERROR)
        self.assertEqual(self.h.of(h2.events.StreamEnded), [])

    def test_transportPaused(self) -> None:
        """
        While the visitor's TCP connection is full nothing is sent and the
        tunnel streams grant their targets no window; resuming sends.
        """
        self.h.request(1)
        self.h.pump()
        (sid,) = _streamsOpened(self.h.linkFrames())
        self.h.visitor.pauseProducing()
        self.h.answer((sid, b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n" + b"z" * 2000))
        self.h.pump()
        self.assertEqual(self.h.of(h2.events.ResponseReceived), [])
        self.assertTrue(self.h.link.streams[sid].localWritePaused)
        self.h.visitor.resumeProducing()
        self.h.pump()
        self.assertEqual(sum(len(e.data) for e in self.h.of(h2.events.DataReceived)), 2000)
        self.assertFalse(self.h.link.streams[sid].localWritePaused)

    def test_idleTimeout(self) -> None:
        """
        A connection without requests for the idle timeout is closed with
        GOAWAY; one with a request outstanding is not.
        """
        self.h.request(1)
        self.h.pump()
        self.h.clock.advance(61)
        self.assertFalse(self.h.transport.disconnecting)
        (sid,) = _streamsOpened(self.h.linkFrames())
        self.h.answer((sid, b"HTTP/1.1 204 No Content\r\n\r\n"))
        self.h.pump()
        self.h.clock.advance(61)
        self.h.pump()
        self.assertTrue(self.h.transport.disconnecting)
        self.assertEqual(len(self.h.of(h2.events.ConnectionTerminated)), 1)

    def test_protocolError(self) -> None:
        """
        A visitor that breaks HTTP/2 gets GOAWAY and is disconnected.
        """
        self.h.visitor.dataReceived(b"\x00\x00\x01\x09\x00\x00\x00\x00\x05x")  # CONTINUATION out of place
        self.assertTrue(self.h.transport.disconnecting)
        events = self.h.client.receive_data(self.h.transport.value())
        goaway = events[-1]
        assert isinstance(goaway, h2.events.ConnectionTerminated), events
        self.assertEqual(goaway.error_code, ErrorCodes.PROTOCOL_ERROR)

    def test_rapidReset(self) -> None:
        """
        A visitor opening and resetting streams without waiting for answers
        is disconnected.
        """
        sid = 1
        for _ in range(30):
            for _ in range(10):
                self.h.request(sid)
                self.h.client.reset_stream(sid, ErrorCodes.CANCEL)
                sid += 2
            self.h.pump()
            if self.h.transport.disconnecting:
                break
        self.assertTrue(self.h.transport.disconnecting)
        self.assertEqual(
            self.h.of(h2.events.ConnectionTerminated)[0].error_code, ErrorCodes.ENHANCE_YOUR_CALM
        )

    def test_connectionLost(self) -> None:
        """
        A lost visitor connection closes its requests' tunnel streams and
        leaves no timer behind.
        """
        self.h.request(1)
        self.h.pump()
        (sid,) = _streamsOpened(self.h.linkFrames())
        self.h.visitor.connectionLost()
        self.assertEqual(self.h.linkFrames(), [(CLOSE, sid, b"")])
        self.h.clock.advance(0)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])


class H2HeaderLimitTests(SynchronousTestCase):
    """
    Request headers over the gateway's limit (16 KiB, advertised as
    C{SETTINGS_MAX_HEADER_LIST_SIZE}): 431 on their stream while the block
    can be decoded whole, the end of the connection (C{COMPRESSION_ERROR})
    beyond.
    """

    def setUp(self) -> None:
        self.h = _Harness()

    def test_431OnTheStream(self) -> None:
        """
        A header list just over the limit, and one near four times it (in
        CONTINUATION frames), are answered 431 with the reason on their own
        streams; nothing goes down the tunnel, the connection stays open and
        its HPACK state right: the next request, whose fields the client
        indexed while sending the refused ones, is forwarded whole.
        """
        h = self.h
        h.request(1, extra=[("x-kept", "indexed"), ("x-big", "a" * 17_000)])
        h.request(3, end=False, extra=[("x-kept", "indexed"), ("x-big", "b" * 65_000)])
        h.pump()
        codes = {e.stream_id: dict(e.headers)[b":status"] for e in h.of(h2.events.ResponseReceived)}
        self.assertEqual(codes, {1: b"431", 3: b"431"})
        bodies = {e.stream_id: e.data for e in h.of(h2.events.DataReceived)}
        self.assertIn(b"request headers larger than 16384 bytes", bodies[1])
        self.assertEqual(h.linkFrames(), [])
        self.assertEqual(h.gateway.metrics.errors, {431: 2})
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.of(h2.events.ConnectionTerminated), [])
        # the header list's size counts 32 bytes per field (RFC 9113 6.5.2)
        self.assertEqual(headerListSize([(b"ab", b"cde")]), 37)
        h.request(5, extra=[("x-kept", "indexed")])
        h.pump()
        (kind, _, _), (_, _, head) = h.linkFrames()
        self.assertEqual(kind, OPEN)
        self.assertIn(b"x-kept: indexed\r\n", head)
        # refused heads that large are not kept in the connection's cache
        self.assertEqual([headerListSize(list(k)) <= 16384 for k in h.visitor.heads], [True])

    def test_tooLargeToDecode(self) -> None:
        """
        A header list over four times the limit is not decoded: GOAWAY with
        C{COMPRESSION_ERROR} (RFC 9113 section 4.3) and the connection
        closes; nothing goes down the tunnel.
        """
        h = self.h
        h.request(1, extra=[("x-big", "a" * 70_000)])
        h.pump()
        (terminated,) = h.of(h2.events.ConnectionTerminated)
        self.assertEqual(terminated.error_code, ErrorCodes.COMPRESSION_ERROR)
        self.assertEqual(h.of(h2.events.ResponseReceived), [])
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.linkFrames(), [])


class H2AuthorityTests(SynchronousTestCase):
    """
    RFC 9113 8.3.1: a request's C{Host} header must agree with its
    C{:authority}; the gateway answers a request that breaks the rule 400
    (as every malformed request) and routes none of it by either name.
    """

    def setUp(self) -> None:
        self.h = _Harness(validate=False)
        self.other = GatewayLink(self.h.gateway, "other-owner")
        self.otherWire = StringTransport()
        self.other.makeConnection(self.otherWire)
        self.h.gateway.registry.add(OTHER, self.other)

    def statuses(self) -> dict[int, bytes]:
        return {e.stream_id: dict(e.headers)[b":status"] for e in self.h.of(h2.events.ResponseReceived)}

    def bodies(self) -> dict[int, bytes]:
        return {e.stream_id: e.data for e in self.h.of(h2.events.DataReceived)}

    def test_malformedAuthorityRefused(self) -> None:
        """
        Host naming another tunnel than :authority, or another port; two
        Host headers; two :authority; user information; a Host alone for
        a tunnel beside a second one: 400 with the reason, no tunnel
        stream opened on either link.
        """
        cases = [
            [(":authority", HOST), ("host", OTHER)],
            [(":authority", "nobody.example.test"), ("host", HOST)],
            [(":authority", HOST), ("host", HOST + ":8443")],
            [(":authority", HOST), ("host", HOST), ("host", OTHER)],
            [("host", OTHER), ("host", HOST)],
            [(":authority", HOST), (":authority", OTHER)],
            [(":authority", "user@" + HOST)],
        ]
        for n, extra in enumerate(cases):
            pseudo = [(":method", "GET"), (":scheme", "https"), (":path", "/")]
            ordered = [*pseudo, *(h for h in extra if h[0][0] == ":"), *(h for h in extra if h[0][0] != ":")]
            self.h.client.send_headers(1 + 2 * n, ordered, end_stream=True)
        self.h.pump()
        self.assertEqual(self.statuses(), {1 + 2 * n: b"400" for n in range(len(cases))})
        bodies = self.bodies()
        self.assertIn(b"the Host header disagrees with :authority", bodies[1])
        self.assertIn(b"the Host header disagrees with :authority", bodies[3])
        self.assertIn(b"the Host header disagrees with :authority", bodies[5])
        self.assertIn(b"more than one Host header", bodies[7])
        self.assertIn(b"more than one Host header", bodies[9])
        self.assertIn(b"more than one :authority", bodies[11])
        self.assertIn(b"user information", bodies[13])
        self.assertEqual(self.h.linkFrames(), [])
        self.assertEqual(self.otherWire.value(), b"")
        self.assertEqual(self.h.gateway.metrics.errors, {400: len(cases)})

    def test_agreeingHostForwarded(self) -> None:
        """
        A Host equal to :authority up to case and the default port is
        forwarded by the :authority, which is the Host the target sees.
        """
        self.h.request(1, host=HOST, extra=[("host", "APP.example.test:443")])
        self.h.pump()
        (kind, _, meta), (_, _, head) = self.h.linkFrames()
        self.assertEqual((kind, decodeControl(meta)["host"]), (OPEN, HOST))
        self.assertTrue(head.startswith(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n"))
        self.assertNotIn(b"APP", head)
        self.assertEqual(self.otherWire.value(), b"")


class H2DrainTests(SynchronousTestCase):
    """
    The gateway drains: HTTP/2 visitors get the two GOAWAYs of a graceful
    shutdown (2^31-1 with a PING, then the last stream taken once the PING
    is acknowledged or after a second), their streams in flight finish,
    later streams are refused, the connection closes when its streams are
    done or at the drain's deadline.
    """

    def setUp(self) -> None:
        self.h = _Harness()
        self.h.stripGoAway = True

    def test_goAwayThenInFlightFinish(self) -> None:
        """
        GOAWAY 2^31-1 and a PING, then (on the PING's acknowledgement)
        GOAWAY naming the last stream taken (NO_ERROR); a stream the
        visitor opened after that is refused (it may retry it elsewhere);
        the two in flight are answered whole, then the connection closes
        and, with the link gone too, the drain ends.
        """
        h = self.h
        h.request(1)
        h.request(3)
        h.pump()
        streams = _streamsOpened(h.linkFrames())
        self.assertEqual(len(streams), 2)
        done = h.gateway.drain()
        h.pump()
        self.assertEqual(h.goAways, [(MAX_STREAM_ID, ErrorCodes.NO_ERROR), (3, ErrorCodes.NO_ERROR)])
        self.assertEqual([e.ping_data for e in h.of(h2.events.PingReceived)], [DRAIN_PING])
        # the grace's timer is gone: the idle check and the drain's deadline are left
        self.assertEqual(sorted(c.getTime() for c in h.clock.getDelayedCalls()), [5.0, 60.0])
        self.assertFalse(h.transport.disconnecting)
        h.request(5)
        h.pump()
        (refused,) = h.of(h2.events.StreamReset)
        self.assertEqual((refused.stream_id, refused.error_code), (5, ErrorCodes.REFUSED_STREAM))
        self.assertEqual(_streamsOpened(h.linkFrames()), [])
        h.answer((streams[0], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        h.pump()
        self.assertFalse(h.transport.disconnecting)
        h.answer((streams[1], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        h.pump()
        self.assertEqual(sorted(e.stream_id for e in h.of(h2.events.StreamEnded)), [1, 3])
        self.assertEqual([e.data for e in h.of(h2.events.DataReceived)], [b"ok", b"ok"])
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.goAways, [(MAX_STREAM_ID, ErrorCodes.NO_ERROR), (3, ErrorCodes.NO_ERROR)])
        h.visitor.connectionLost()
        self.assertNoResult(done)
        h.link.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(done)

    def test_streamBetweenGoAwaysServed(self) -> None:
        """
        A stream the visitor opened before it read the first GOAWAY (sent
        before its PING's acknowledgement) is taken, not refused: the
        final GOAWAY names it and it is answered (here by the gateway
        itself, as the only tunnel link was asked to move), while the
        stream in flight finishes.
        """
        h = self.h
        h.request(1)
        h.pump()
        (stream,) = _streamsOpened(h.linkFrames())
        done = h.gateway.drain()
        h.request(3)  # crosses the first GOAWAY on the wire
        h.pump()
        self.assertEqual(h.goAways, [(MAX_STREAM_ID, ErrorCodes.NO_ERROR), (3, ErrorCodes.NO_ERROR)])
        self.assertEqual(h.of(h2.events.StreamReset), [])
        self.assertEqual([e.stream_id for e in h.of(h2.events.ResponseReceived)], [3])
        self.assertFalse(h.transport.disconnecting)
        h.answer((stream, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        h.pump()
        self.assertEqual(sorted(e.stream_id for e in h.of(h2.events.StreamEnded)), [1, 3])
        self.assertTrue(h.transport.disconnecting)
        h.visitor.connectionLost()
        h.link.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(done)

    def test_graceWithoutAck(self) -> None:
        """
        A visitor that does not acknowledge the PING gets the final GOAWAY
        a second after the first; streams it opened meanwhile are served,
        and an idle connection then closes.
        """
        h = self.h
        h.dropPings = True
        h.link.connectionLost(Failure(ConnectionDone()))
        done = h.gateway.drain()
        h.pump()
        self.assertEqual(h.goAways, [(MAX_STREAM_ID, ErrorCodes.NO_ERROR)])
        self.assertFalse(h.transport.disconnecting)  # nothing in flight, but announced only
        h.clock.advance(0.99)
        h.pump()
        self.assertEqual(len(h.goAways), 1)
        h.clock.advance(0.01)
        h.pump()
        self.assertEqual(h.goAways, [(MAX_STREAM_ID, ErrorCodes.NO_ERROR), (0, ErrorCodes.NO_ERROR)])
        self.assertTrue(h.transport.disconnecting)
        self.assertNoResult(done)
        h.visitor.connectionLost()
        self.successResultOf(done)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_idleVisitorClosedOnAck(self) -> None:
        """
        A visitor with nothing in flight gets GOAWAY 2^31-1, then, on the
        PING's acknowledgement, GOAWAY naming stream 0 (none taken) and is
        closed at once; the drain does not wait for it.
        """
        h = self.h
        h.link.connectionLost(Failure(ConnectionDone()))
        done = h.gateway.drain()
        h.pump()
        self.assertEqual(h.goAways, [(MAX_STREAM_ID, ErrorCodes.NO_ERROR), (0, ErrorCodes.NO_ERROR)])
        self.assertTrue(h.transport.disconnecting)
        self.assertNoResult(done)
        h.visitor.connectionLost()
        self.successResultOf(done)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_deadline(self) -> None:
        """
        A stream still in flight at the drain's deadline: the connection is
        closed then.
        """
        h = self.h
        h.request(1)
        h.pump()
        done = h.gateway.drain()
        h.pump()
        h.clock.advance(4.9)
        self.assertFalse(h.transport.disconnecting)
        h.clock.advance(0.1)
        self.assertTrue(h.transport.disconnecting)
        self.successResultOf(done)

    def test_deadlineBeforeAck(self) -> None:
        """
        A drain deadline shorter than the grace: the final GOAWAY goes out
        at the deadline, naming the last stream taken, and the connection
        closes.
        """
        h = self.h
        h.dropPings = True
        h.gateway.config.drainSeconds = 0.5
        h.gateway.drainMachine = newDrainMachine(h.gateway, h.clock, 0.5)
        h.request(1)
        h.pump()
        done = h.gateway.drain()
        h.pump()
        h.clock.advance(0.5)
        self.assertTrue(h.transport.disconnecting)
        h.pump()
        self.assertEqual(h.goAways, [(MAX_STREAM_ID, ErrorCodes.NO_ERROR), (1, ErrorCodes.NO_ERROR)])
        self.successResultOf(done)

    def test_openedWhileDraining(self) -> None:
        """
        A visitor connecting while the gateway drains is told to go away
        right after the server preface (GOAWAY 2^31-1 and a PING), and
        closed once the final GOAWAY is out.
        """
        self.h.gateway.drain()
        visitor = self.h.front.buildProtocol(None)
        transport = StringTransport()
        visitor.makeConnection(transport)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(_goAways(transport.value()), [MAX_STREAM_ID])
        self.assertIn(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + DRAIN_PING, transport.value())
        self.h.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(_goAways(transport.value()), [MAX_STREAM_ID, 0])


def _goAways(data: bytes) -> list[int]:
    """
    The last stream ids of the GOAWAY frames in C{data} (after the
    SETTINGS the server starts with).
    """
    found = []
    while data:
        length = int.from_bytes(data[:3], "big")
        frame, data = data[: 9 + length], data[9 + length :]
        if frame[3] == 7:
            found.append(int.from_bytes(frame[9:13], "big"))
    return found
