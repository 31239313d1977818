"""
HTTP/3 visitors over QUIC (aioquic), on the same port number over UDP.

aioquic is asyncio-native, so this needs the asyncio reactor
(C{twistd --reactor=asyncio}); the QUIC server then shares the event loop
with Twisted, and each HTTP/3 request is forwarded like an HTTP/2 one (a
pooled HTTP/1.1 exchange on a tunnel stream, see
L{suite.specter.gateway.exchange}).
QUIC has no PROXY protocol: the gateway sees the UDP source address.
A request whose authority the certificate presented on the connection
does not cover is answered 421 Misdirected Request (RFC 9114 section
4.3.1; L{suite.specter.gateway.certnames}) and routed nowhere.

Each connection's lifecycle is a machine (L{suite.specter.gateway.h3conn}).
When the gateway drains (L{suite.specter.gateway.lifecycle.DrainMachine}
waits for HTTP/3 connections as for HTTP/2 ones), each connection sends
GOAWAY (RFC 9114 section 5.2) on its control stream naming the first
request stream the visitor has not opened, rejects requests on later
streams (C{H3_REQUEST_REJECTED}: the visitor may retry them elsewhere),
lets those in flight finish and closes the QUIC connection
(C{H3_NO_ERROR}) once every one was answered and acknowledged and the
GOAWAY was acknowledged too, or at the drain's deadline.  An open connection pays nothing for this: the checks
are the data path the machine lends the connection while it goes away.

aioquic has no API for a server's GOAWAY, nor for which request streams
were opened or are finished, nor for what the peer acknowledged:
L{sendGoAway}, L{nextRequestStreamId}, L{requestsLeft} and
L{controlStreamDelivered} read its internals (checked by
C{tests/specter/gateway/test_h3drain.py}).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, ProtocolNegotiated, QuicEvent
from aioquic.tls import pull_client_hello
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.specter.gateway.certnames import (
    MISDIRECTED,
    Coverage,
    coverageOf,
    misdirectedReason,
    quicPresentedNames,
)
from suite.specter.gateway.h3conn import GoingAway, H3ConnectionInputs, H3ConnectionSide, newH3Connection
from suite.specter.gateway.http1 import BadMessage, ResponseHead, buildRequestHead
from suite.specter.gateway.interfaces import IResponseSink
from suite.specter.gateway.visitor import errorHeaders

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway
    from suite.specter.gateway.exchange import ExchangePool

__all__ = [
    "H3Server",
    "isAsyncioReactor",
    "chooseCertificateBySNI",
    "sendGoAway",
    "nextRequestStreamId",
    "requestsLeft",
    "controlStreamDelivered",
    "MAX_BODY",
]

log = Logger()
H3_INTERNAL_ERROR = int(ErrorCode.H3_INTERNAL_ERROR)
H3_NO_ERROR = int(ErrorCode.H3_NO_ERROR)
H3_REQUEST_REJECTED = int(ErrorCode.H3_REQUEST_REJECTED)
#: The QUIC events the connection's lifecycle machine hears of.
_LIFECYCLE_EVENTS = frozenset({HandshakeCompleted, ConnectionTerminated})
MAX_BODY = 8 * 1024 * 1024


def isAsyncioReactor(reactor: Any) -> bool:
    """
    Whether C{reactor} runs on an asyncio event loop.
    """
    return hasattr(reactor, "_asyncioEventloop")


def chooseCertificateBySNI(quic: Any, select: Callable[[str | None], Any]) -> None:
    """
    Make the server-side L{aioquic.quic.connection.QuicConnection} C{quic}
    pick its certificate by SNI once the peer's ClientHello is parsed.

    aioquic builds its TLS context (L{aioquic.tls.Context}) when the first
    datagram arrives, with the configuration's one certificate.  The
    server reads the ClientHello in C{_server_handle_hello}, and
    negotiates the signature algorithm from the private key there: so the
    hello is parsed first (without consuming it) and the context's
    certificate, chain and key are set from C{select(server_name)} before
    aioquic goes on.  A name C{select} does not know (L{None}) keeps the
    configured (self-signed) certificate.
    """
    initialize = quic._initialize

    def initializeThenHook(peerCid: bytes) -> None:
        initialize(peerCid)
        context = quic.tls
        handleHello = context._server_handle_hello

        def selectingHello(inputBuf: Any, initialBuf: Any, handshakeBuf: Any) -> None:
            start = inputBuf.tell()
            try:
                name = pull_client_hello(inputBuf).server_name
            except Exception:
                name = None  # aioquic reports the malformed hello itself
            inputBuf.seek(start)
            material = select(name)
            if material is not None:
                context.certificate, context.certificate_chain, context.certificate_private_key = material
            handleHello(inputBuf, initialBuf, handshakeBuf)

        context._server_handle_hello = selectingHello

    quic._initialize = initializeThenHook


def sendGoAway(http: H3Connection, streamId: int) -> None:
    """
    Queue GOAWAY naming C{streamId} on the control stream of C{http}
    (aioquic keeps that stream's id in C{_local_control_stream_id}).
    """
    controlStreamId = http._local_control_stream_id
    assert controlStreamId is not None
    http._quic.send_stream_data(controlStreamId, encode_frame(FrameType.GOAWAY, encode_uint_var(streamId)))


def nextRequestStreamId(quic: QuicConnection) -> int:
    """
    The first client-initiated bidirectional (request) stream id the peer
    of server connection C{quic} has not opened: aioquic counts the
    streams opened in C{_local_max_streams_bidi.used} (opening one opens
    every lower one, RFC 9000 section 2.1).
    """
    return int(quic._local_max_streams_bidi.used) * 4


def requestsLeft(quic: QuicConnection, below: int) -> bool:
    """
    Whether a request stream under C{below} is not finished on server
    connection C{quic}: its request not wholly read, or its response not
    wholly acknowledged (or reset).  aioquic keeps the streams in
    C{_streams} until they are finished and sent for.
    """
    for streamId, stream in quic._streams.items():
        if streamId & 3 == 0 and streamId < below and not stream.is_finished:
            return True
    return False


def controlStreamDelivered(http: H3Connection) -> bool:
    """
    Whether the peer acknowledged everything sent on the control stream of
    C{http} (so a GOAWAY queued there arrived): aioquic's stream sender
    moves C{_buffer_start} up to C{_buffer_stop} as the data is
    acknowledged.
    """
    stream = http._quic._streams.get(http._local_control_stream_id)  # type: ignore[arg-type]
    if stream is None:
        return True
    sender = stream.sender
    return bool(sender._buffer_start == sender._buffer_stop)


class _Request:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""


@implementer(IResponseSink)
class _H3Response:
    """
    Streams a tunnelled response to one HTTP/3 stream.
    """

    def __init__(self, proto: _H3Protocol, streamId: int) -> None:
        self.proto = proto
        self.streamId = streamId
        self.started = False

    def responseStarted(self, head: ResponseHead) -> None:
        self.started = True
        self.proto.sendHeaders(self.streamId, [(b":status", b"%d" % head.code), *head.headers])

    def responseData(self, data: bytes) -> None:
        self.proto.sendData(self.streamId, data, False)

    def responseEnded(self) -> None:
        self.proto.sendData(self.streamId, b"", True)

    def responseFailed(self, reason: str) -> None:
        if self.started:  # cut short: never end it as if complete
            self.proto.resetStream(self.streamId)
        else:
            self.proto.respondError(self.streamId, 502, "the tunnel target did not answer")

    def requestBodyPaused(self) -> None:
        pass  # the body is in memory already

    def requestBodyResumed(self) -> None:
        pass


class _Leaving:
    """
    What the gateway's drain tells an HTTP/3 connection
    (L{suite.specter.gateway.lifecycle.DrainingVisitor}).
    """

    __slots__ = ("lifecycle",)

    def __init__(self, lifecycle: H3ConnectionInputs) -> None:
        self.lifecycle = lifecycle

    def goAway(self) -> None:
        """
        Send GOAWAY; close once the requests in flight are done.
        """
        self.lifecycle.drainStarted()

    def close(self) -> None:
        """
        The drain's deadline: close now.
        """
        self.lifecycle.deadlineReached()


class _H3Protocol(QuicConnectionProtocol, H3ConnectionSide):
    """
    One QUIC connection carrying HTTP/3; its lifecycle is a
    L{suite.specter.gateway.h3conn} machine.

    @ivar onRequestEvent: what each HTTP/3 event goes to: L{h3EventReceived},
        or while going away the data path the machine lends
        (L{_rejectingLater}).
    @ivar goingAway: while going away, the machine's C{GoingAway} data
        (lent); otherwise None.
    """

    gateway: Gateway
    pool: ExchangePool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http: H3Connection | None = None
        self.requests: dict[int, _Request] = {}
        self.onRequestEvent: Callable[[H3Event], None] = self.h3EventReceived
        self.goingAway: GoingAway | None = None
        #: The names the certificate presented covers (read at the first
        #: request, once the handshake chose it).
        self.coverage: Coverage | None = None
        self.lifecycle = newH3Connection(self)
        #: What the gateway's drain holds and tells to leave.
        self.leaving = _Leaving(self.lifecycle)

    def chooseCertificatesWith(self, select: Callable[[str | None], Any]) -> None:
        """
        Pick this connection's certificate by SNI (L{chooseCertificateBySNI}).
        """
        chooseCertificateBySNI(self._quic, select)

    def quic_event_received(self, event: QuicEvent) -> None:
        http = self.http
        if http is not None:
            for h3event in http.handle_event(event):
                self.onRequestEvent(h3event)
            if type(event) in _LIFECYCLE_EVENTS:
                self._lifecycleEvent(event)
        elif type(event) is ProtocolNegotiated and event.alpn_protocol in H3_ALPN:
            self.http = H3Connection(self._quic)

    def _lifecycleEvent(self, event: QuicEvent) -> None:
        if type(event) is HandshakeCompleted:
            # (not at ProtocolNegotiated: a close before the handshake
            # completes could not carry H3_NO_ERROR)
            self.lifecycle.opened()
            # while the gateway drains, this is told to go away at once
            self.gateway.visitorOpened(self.leaving)
        else:
            self.lifecycle.connectionLost()

    # -- H3ConnectionSide: the gateway drains ------------------------------------------
    def nextRequestStreamId(self) -> int:
        """
        The first request stream id the visitor has not opened.
        """
        return nextRequestStreamId(self._quic)

    def lendGoingAway(self, goingAway: GoingAway) -> None:
        """
        Take going away's data path: requests on streams from
        C{goingAway.streamId} on are rejected, and each send is followed
        by the check whether a request below it is left (the instance's
        C{transmit}, shadowing the class's until it is given back).
        """
        self.goingAway = goingAway
        self.onRequestEvent = self._rejectingLater
        vars(self)["transmit"] = self._transmitAndCheck

    def _giveBack(self) -> None:
        self.goingAway = None
        self.onRequestEvent = self.h3EventReceived
        vars(self).pop("transmit", None)

    def sendGoAway(self) -> None:
        """
        Send GOAWAY naming the stream id going away holds.
        """
        assert self.http is not None and self.goingAway is not None
        sendGoAway(self.http, self.goingAway.streamId)
        log.debug("HTTP/3 visitor told to go away, streams from {id} on", id=self.goingAway.streamId)
        self.transmit()

    def closeConnection(self) -> None:
        """
        Close the QUIC connection (C{H3_NO_ERROR}).
        """
        self._giveBack()
        self._quic.close(error_code=H3_NO_ERROR)
        self.transmit()

    def release(self) -> None:
        """
        The gateway no longer waits for this connection.
        """
        self._giveBack()
        self.gateway.visitorClosed(self.leaving)

    def _rejectingLater(self, event: H3Event) -> None:
        """
        Going away's data path: a request on a stream from the GOAWAY's
        id on is rejected (once), never processed.
        """
        goingAway = self.goingAway
        assert goingAway is not None
        if isinstance(event, (HeadersReceived, DataReceived)) and event.stream_id >= goingAway.streamId:
            streamId = event.stream_id
            if streamId not in goingAway.refused:
                goingAway.refused.add(streamId)
                self.requests.pop(streamId, None)
                quic = self._quic
                try:
                    quic.stop_stream(streamId, H3_REQUEST_REJECTED)
                except ValueError:
                    pass  # nothing more to read
                quic.reset_stream(streamId, H3_REQUEST_REJECTED)
            return
        self.h3EventReceived(event)

    def _transmitAndCheck(self) -> None:
        """
        Going away's C{transmit}: send, then close if no request below the
        GOAWAY's id is left and the GOAWAY arrived (closing drops what is
        not sent yet).
        """
        QuicConnectionProtocol.transmit(self)
        goingAway = self.goingAway
        http = self.http
        if (
            goingAway is not None
            and http is not None
            and not requestsLeft(self._quic, goingAway.streamId)
            and controlStreamDelivered(http)
        ):
            self.lifecycle.streamsDone()

    # -- requests ------------------------------------------------------------------------
    def h3EventReceived(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            request = self.requests.setdefault(event.stream_id, _Request())
            request.headers.extend(event.headers)
            if event.stream_ended:
                self.handle(event.stream_id)
        elif isinstance(event, DataReceived):
            request = self.requests.setdefault(event.stream_id, _Request())
            request.body += event.data
            if len(request.body) > MAX_BODY:
                self.requests.pop(event.stream_id, None)
                self.respondError(event.stream_id, 413, "request body too large")
                return
            if event.stream_ended:
                self.handle(event.stream_id)

    def sendHeaders(self, streamId: int, headers: list[tuple[bytes, bytes]]) -> None:
        """
        Send the response head on C{streamId}.
        """
        if self.http is None:
            return
        try:
            self.http.send_headers(streamId, headers)
        except Exception as e:  # the stream was reset by the peer
            log.debug("HTTP/3 stream {id} gone: {error}", id=streamId, error=str(e))
            return
        self.transmit()

    def sendData(self, streamId: int, data: bytes, end: bool) -> None:
        """
        Send response body bytes on C{streamId}.
        """
        if self.http is None:
            return
        try:
            self.http.send_data(streamId, data, end)
        except Exception as e:  # the stream was reset by the peer
            log.debug("HTTP/3 stream {id} gone: {error}", id=streamId, error=str(e))
            return
        self.transmit()

    def resetStream(self, streamId: int) -> None:
        """
        Abort the response on C{streamId} (RESET_STREAM, H3_INTERNAL_ERROR).
        """
        try:
            self._quic.reset_stream(streamId, H3_INTERNAL_ERROR)
        except Exception as e:  # already finished or reset
            log.debug("HTTP/3 stream {id} gone: {error}", id=streamId, error=str(e))
            return
        self.transmit()

    def respondError(self, streamId: int, code: int, detail: str) -> None:
        """
        Answer with a small error page.
        """
        assert self.http is not None
        errors = self.gateway.metrics.errors
        errors[code] = errors.get(code, 0) + 1
        body = f"{code} {detail}\n".encode()
        self.http.send_headers(
            streamId,
            [(b":status", str(code).encode()), (b"content-type", b"text/plain"), *errorHeaders(code)],
        )
        self.http.send_data(streamId, body, True)
        self.transmit()

    def handle(self, streamId: int) -> None:
        request = self.requests.pop(streamId, None)
        if request is None:
            return
        peer = self._quic._network_paths[0].addr if self._quic._network_paths else ("?", 0)
        try:
            head = buildRequestHead(request.headers, str(peer[0]))
        except BadMessage as e:
            self.respondError(streamId, 400, f"malformed request: {e}")
            return
        if request.body:
            head = replace(head, length=len(request.body))
        host = head.host
        if not host:
            self.respondError(streamId, 400, "no :authority")
            return
        coverage = self.coverage
        if coverage is None:
            tls = self._quic.tls
            coverage = self.coverage = coverageOf(quicPresentedNames(getattr(tls, "certificate", None)))
        if coverage is not None and not coverage.covers(host):
            log.debug(
                "misdirected HTTP/3 request from {peer}: the certificate presented does not cover {host}",
                peer=f"{peer[0]}:{peer[1]}",
                host=host,
            )
            self.respondError(streamId, MISDIRECTED, misdirectedReason(host))
            return
        d = self.gateway.resolve(host)

        def resolved(found: Any) -> None:
            if found is None or isinstance(found, str):
                self.respondError(
                    streamId, 404 if found is None else 502, found or f"no tunnel is serving {host}"
                )
                return
            exchange = self.pool.exchangeFor(found, f"{peer[0]}:{peer[1]}", host)
            exchange.start(head, _H3Response(self, streamId), bool(request.body))
            if request.body:
                exchange.sendBody(request.body)
                exchange.endBody()

        def failed(f: Failure) -> None:
            log.warn("route lookup for {host} failed: {error}", host=host, error=f.getErrorMessage())
            self.respondError(streamId, 502, f"route lookup for {host} failed, try again")

        d.addCallbacks(resolved, failed)


class H3Server:
    """
    The QUIC listener(s) for HTTP/3.
    """

    def __init__(
        self,
        gateway: Gateway,
        pool: ExchangePool,
        binds: list[tuple[str, int]],
        certificate: Any,
        key: Any,
        reactor: Any,
        select: Callable[[str | None], Any] | None = None,
    ) -> None:
        self.gateway = gateway
        #: SNI name -> (leaf, chain, key) or None (see
        #: L{_H3Protocol.chooseCertificatesWith}).
        self.select = select
        self.pool = pool
        self.binds = binds
        self.reactor = reactor
        self.servers: list[Any] = []
        self.configuration = QuicConfiguration(
            is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
        )
        self.configuration.certificate = certificate
        self.configuration.private_key = key

    def useCertificate(self, chainPEM: bytes, keyPEM: bytes) -> None:
        """
        Serve this certificate (PEM chain, leaf first, and its key) to QUIC
        connections from the next one on.  aioquic takes one certificate per
        listener; the gateway gives a per-SNI chooser instead (C{select}),
        which takes precedence for every name it knows.

        @raise ValueError: if the PEM data does not parse.
        """
        from suite.specter.gateway.listener import loadChain

        chain, key = loadChain(chainPEM, keyPEM)
        self.configuration.certificate = chain[0]
        self.configuration.certificate_chain = chain[1:]
        self.configuration.private_key = key

    def start(self) -> Deferred[None]:
        """
        Bind every UDP address; fire when listening.
        """
        loop: asyncio.AbstractEventLoop = self.reactor._asyncioEventloop
        configuration = self.configuration
        gateway, pool, select = self.gateway, self.pool, self.select

        def create(*args: Any, **kwargs: Any) -> _H3Protocol:
            proto = _H3Protocol(*args, **kwargs)
            proto.gateway = gateway
            proto.pool = pool
            if select is not None:
                proto.chooseCertificatesWith(select)
            return proto

        async def bindAll() -> None:
            for host, port in self.binds:
                self.servers.append(
                    await serve(host, port, configuration=configuration, create_protocol=create)
                )
                log.info("HTTP/3 (QUIC) listening on udp {host}:{port}", host=host, port=port)

        return Deferred.fromFuture(loop.create_task(bindAll()))

    def stop(self) -> None:
        """
        Close the QUIC listeners.
        """
        for server in self.servers:
            server.close()
        self.servers = []
