"""
HTTP/3 visitors over QUIC (aioquic), on the same port number over UDP.

aioquic is asyncio-native, so this needs the asyncio reactor
(C{twistd --reactor=asyncio}); the QUIC server then shares the event loop
with Twisted, and each HTTP/3 request is forwarded like an HTTP/2 one (a
pooled HTTP/1.1 exchange on a tunnel stream, see
L{suite.specter.gateway.exchange}).
QUIC has no PROXY protocol: the gateway sees the UDP source address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from aioquic.tls import pull_client_hello
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.specter.gateway.http1 import BadMessage, ResponseHead, buildRequestHead
from suite.specter.gateway.interfaces import IResponseSink

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway
    from suite.specter.gateway.exchange import ExchangePool

__all__ = ["H3Server", "isAsyncioReactor", "chooseCertificateBySNI", "MAX_BODY"]

log = Logger()
H3_INTERNAL_ERROR = int(ErrorCode.H3_INTERNAL_ERROR)
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


class _H3Protocol(QuicConnectionProtocol):
    """
    One QUIC connection carrying HTTP/3.
    """

    gateway: Gateway
    pool: ExchangePool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http: H3Connection | None = None
        self.requests: dict[int, _Request] = {}

    def chooseCertificatesWith(self, select: Callable[[str | None], Any]) -> None:
        """
        Pick this connection's certificate by SNI (L{chooseCertificateBySNI}).
        """
        chooseCertificateBySNI(self._quic, select)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self.http = H3Connection(self._quic)
        if self.http is not None:
            for h3event in self.http.handle_event(event):
                self.h3EventReceived(h3event)

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
        body = f"{code} {detail}\n".encode()
        self.http.send_headers(streamId, [(b":status", str(code).encode()), (b"content-type", b"text/plain")])
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
