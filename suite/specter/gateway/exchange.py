"""
HTTP/1.1 exchanges with a tunnel target for HTTP/2 and HTTP/3 visitors.

An L{Exchange} is one persistent HTTP/1.1 connection to the target, carried
by one tunnel stream; it serves one request at a time and goes back to its
L{ExchangePool} (per link) after a complete response, so a busy visitor
does not open a stream, and the client a target connection, per request.
The request head and body are written to the stream as bytes; the
response is parsed as it arrives (L{suite.specter.gateway.http1}) and
handed to the request's L{IResponseSink}, piece by piece:

  - back-pressure from the visitor: the sink calls L{Exchange.pauseResponse}
    and the stream stops granting window to the target;
  - back-pressure from the target: the stream pauses the request body
    (L{IResponseSink.requestBodyPaused}) while its send window is empty.

L{SiteExchange} answers the same way from a C{twisted.web} site in this
process (the apex site), through an in-memory HTTP/1.1 connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IPushProducer, ISSLTransport, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.specter.gateway.http1 import (
    HEAD_LIMIT,
    BadMessage,
    ChunkedDecoder,
    HeadCache,
    RequestHead,
    ResponseHead,
)
from suite.specter.gateway.interfaces import IResponseSink
from suite.specter.tunnel.mux import LocalSide, Stream

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = ["Exchange", "ExchangePool", "SiteExchange"]

log = Logger()

#: What an exchange is reading.
_IDLE, _HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(5)


class _ResponseReader:
    """
    Parses the target's responses, one per request, into the current
    request's sink.  Subclasses provide the connection (L{_finished},
    L{_broken}).
    """

    lost = False

    def __init__(self, heads: HeadCache) -> None:
        self.heads = heads
        self.sink: IResponseSink | None = None
        self.method = b""
        self.reading = _IDLE
        self.buffer = b""
        self.remaining = 0
        self.chunks: ChunkedDecoder | None = None
        self.keepAlive = True
        self.requestOpen = False
        self.wasReset = False

    def _begin(self, sink: IResponseSink, method: bytes, bodyFollows: bool) -> None:
        self.sink = sink
        self.method = method
        self.reading = _HEAD
        self.buffer = b""
        self.requestOpen = bodyFollows

    # -- the target's bytes --------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """
        Bytes from the target.
        """
        if self.lost:
            return
        try:
            if self.reading == _IDLE:
                raise BadMessage("bytes from the target with no request outstanding")
            if self.reading == _HEAD:
                data = self._head(data)
            if data and self.reading != _IDLE and self.reading != _HEAD:
                self._body(data)
        except BadMessage as e:
            self._broken(f"the target's response broke HTTP/1.1: {e}")

    def _head(self, data: bytes) -> bytes:
        buf = self.buffer + data if self.buffer else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > HEAD_LIMIT:
                    raise BadMessage("response head too long")
                self.buffer = buf
                return b""
            if end > HEAD_LIMIT:
                raise BadMessage("response head too long")
            head = self.heads.parse(buf[:end])
            buf = buf[end + 4 :]
            if not head.interim:
                break
        self.buffer = b""
        self._started(head)
        return buf

    def _started(self, head: ResponseHead) -> None:
        self.keepAlive = head.keepAlive
        if self.method == b"HEAD" or head.code in (204, 304):
            reading = _IDLE
        elif head.chunked:
            reading = _CHUNKED
            self.chunks = ChunkedDecoder(self._deliver)
        elif head.length >= 0:
            reading = _LENGTH if head.length else _IDLE
            self.remaining = head.length
        else:
            reading = _UNTIL_CLOSE
            self.keepAlive = False
        self.reading = reading
        sink = self.sink
        if sink is not None:
            sink.responseStarted(head)
        if reading == _IDLE:
            self._done()

    def _deliver(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None and data:
            sink.responseData(data)

    def _body(self, data: bytes) -> None:
        reading = self.reading
        if reading == _LENGTH:
            remaining = self.remaining
            if len(data) < remaining:
                self.remaining = remaining - len(data)
                self._deliver(data)
                return
            if len(data) > remaining:
                self.keepAlive = False  # bytes past the response: do not reuse
                data = data[:remaining]
            self.remaining = 0
            self._deliver(data)
            self._done()
        elif reading == _CHUNKED:
            assert self.chunks is not None
            used = self.chunks.feed(data)
            if used >= 0:
                if used < len(data):
                    self.keepAlive = False
                self._done()
        else:
            self._deliver(data)

    def _done(self) -> None:
        sink, self.sink = self.sink, None
        self.reading = _IDLE
        self.chunks = None
        if self.requestOpen:
            self.keepAlive = False  # the target answered before the body ended
        if sink is not None:
            sink.responseEnded()
        self._finished()

    def _ended(self, reason: str) -> None:
        """
        The connection ended: a response read until close is complete,
        anything else was cut short.
        """
        sink, self.sink = self.sink, None
        reading, self.reading = self.reading, _IDLE
        if sink is None:
            return
        if reading == _UNTIL_CLOSE and not self.wasReset:
            sink.responseEnded()
        else:
            sink.responseFailed(reason)

    def _finished(self) -> None:
        raise NotImplementedError()

    def _broken(self, reason: str) -> None:
        raise NotImplementedError()


class _Side(LocalSide):
    """
    The stream's local side: the exchange is its transport.
    """


@implementer(IPushProducer)
class Exchange(_ResponseReader):
    """
    One persistent HTTP/1.1 connection to a tunnel target over C{stream};
    the stream's local transport.
    """

    disconnecting = False

    def __init__(self, pool: ExchangePool, link: Any, stream: Stream) -> None:
        super().__init__(pool.heads)
        self.pool = pool
        self.link = link
        self.stream = stream
        self.chunkedBody = False
        self.responsePaused = False
        self.producer: Any = None

    # -- the request (called by the front end) --------------------------------------------
    def start(self, head: RequestHead, sink: IResponseSink, bodyFollows: bool) -> None:
        """
        Send a request head; its response goes to C{sink}.  With
        C{bodyFollows} the body comes through L{sendBody} and L{endBody}.
        """
        self._begin(IResponseSink(sink), head.method, bodyFollows)
        self.chunkedBody = bodyFollows and head.length < 0
        self.stream.send(head.encode(bodyFollows))

    def sendBody(self, data: bytes) -> None:
        """
        Send a piece of the request body.
        """
        if not self.requestOpen or not data:
            return
        if self.chunkedBody:
            self.stream.send(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.stream.send(data)

    def endBody(self) -> None:
        """
        The request body is complete.
        """
        if self.requestOpen:
            self.requestOpen = False
            if self.chunkedBody:
                self.stream.send(b"0\r\n\r\n")

    def cancel(self) -> None:
        """
        The visitor gave up on the request: drop the stream (the target's
        connection closes with it).
        """
        self.sink = None
        self.close()

    def pauseResponse(self) -> None:
        """
        The visitor cannot take more of the response for now.
        """
        if not self.responsePaused:
            self.responsePaused = True
            self.stream.pauseProducing()

    def resumeResponse(self) -> None:
        """
        The visitor can take more of the response.
        """
        if self.responsePaused:
            self.responsePaused = False
            self.stream.resumeProducing()

    def close(self, reason: str = "the exchange was closed") -> None:
        """
        Close the stream (not to be reused).
        """
        if not self.lost:
            self.lost = True
            self.pool.forget(self)
            self.stream.localLost()
        self._ended(reason)

    # -- reader hooks ----------------------------------------------------------------------
    def _finished(self) -> None:
        if self.keepAlive and not self.lost:
            self.resumeResponse()  # a paused visitor leaves no hold on the next one
            self.pool.release(self)
        else:
            self.close()

    def _broken(self, reason: str) -> None:
        log.info("HTTP exchange on tunnel stream {sid}: {reason}", sid=self.stream.sid, reason=reason)
        self.close(reason)

    # -- what the stream calls (its local transport) ---------------------------------------
    def resetReceived(self, reason: str) -> None:
        """
        The peer reset the stream (the target could not be reached, or the
        client gave up on it).
        """
        self.wasReset = True
        if not self.lost:
            self.lost = True
            self.pool.forget(self)
        self._ended(f"the tunnel stream was reset: {reason}")

    def loseConnection(self) -> None:
        """
        The peer closed the stream.
        """
        if not self.lost:
            self.lost = True
            self.pool.forget(self)
            self.stream.localLost()
        self._ended("the tunnel target closed the connection")

    abortConnection = loseConnection

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        """
        The stream's send window is empty: hold the request body.
        """
        sink = self.sink
        if sink is not None:
            sink.requestBodyPaused()

    def resumeProducing(self) -> None:
        """
        The stream can send again.
        """
        sink = self.sink
        if sink is not None:
            sink.requestBodyResumed()

    def stopProducing(self) -> None:
        self.close()

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 0)

    getHost = getPeer


class ExchangePool:
    """
    The idle exchanges of each link, and the response-head cache they
    share.

    @ivar maxIdle: idle exchanges kept per link (each holds one stream and,
        on the client, one target connection): as many as the requests a
        busy visitor keeps in flight.
    """

    maxIdle = 256

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.heads = HeadCache()
        self.idle: dict[int, list[Exchange]] = {}
        gateway.onLinkDraining.append(self.dropIdle)

    def exchangeFor(self, link: Any, peer: str, host: str) -> Exchange:
        """
        An idle exchange on C{link}, or a new one (a new stream).
        """
        idle = self.idle.get(id(link))
        while idle:
            exchange = idle.pop()
            if not exchange.lost and not link.closed:
                return exchange
        stream: Stream = link.openStream({"kind": "http", "peer": peer, "host": host})
        self.gateway.metrics.streamsOpened += 1
        exchange = Exchange(self, link, stream)
        side = _Side()
        side.transport = exchange
        stream.onReset = exchange.resetReceived
        stream.attach(side)
        return exchange

    def release(self, exchange: Exchange) -> None:
        """
        C{exchange} finished a response: keep it for the next request.
        """
        idle = self.idle.setdefault(id(exchange.link), [])
        if len(idle) < self.maxIdle and not exchange.link.closed:
            idle.append(exchange)
        else:
            exchange.close()

    def forget(self, exchange: Exchange) -> None:
        """
        C{exchange}'s stream ended.
        """
        idle = self.idle.get(id(exchange.link))
        if idle is not None:
            if exchange in idle:
                idle.remove(exchange)
            if not idle:
                del self.idle[id(exchange.link)]

    def dropIdle(self, link: Any) -> None:
        """
        Close the idle exchanges of C{link} (its client is draining).
        """
        for exchange in self.idle.pop(id(link), []):
            exchange.close()


@implementer(ITransport, ISSLTransport)
class _InProcessTransport:
    """
    The transport of an in-memory HTTP/1.1 connection to a site: what the
    site writes is the response.  It reports the visitor's address and
    TLS (the visitor came over TLS).
    """

    disconnecting = False

    def __init__(self, exchange: SiteExchange, peer: Any) -> None:
        self.exchange = exchange
        self.peer = peer
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.exchange.write(data)

    def writeSequence(self, data: Any) -> None:
        self.exchange.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self.exchange.siteClosed()

    abortConnection = loseConnection

    def getPeer(self) -> Any:
        return self.peer

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 443)

    def getPeerCertificate(self) -> None:
        return None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass

    def getTcpNoDelay(self) -> bool:
        return True

    def getTcpKeepAlive(self) -> bool:
        return False

    def loseWriteConnection(self) -> None:
        self.loseConnection()


class SiteExchange(_ResponseReader):
    """
    One request to a C{twisted.web} site in this process (the apex site),
    over an in-memory HTTP/1.1 connection; same calls as L{Exchange}.
    """

    def __init__(self, site: Any, peer: Any, heads: HeadCache, clock: Any) -> None:
        super().__init__(heads)
        self.clock = clock
        self.transport = _InProcessTransport(self, peer)
        self.channel = site.buildProtocol(peer)
        self.channel.makeConnection(self.transport)
        self.chunkedBody = False

    def start(self, head: RequestHead, sink: IResponseSink, bodyFollows: bool) -> None:
        """
        Hand the request head to the site.
        """
        self._begin(IResponseSink(sink), head.method, bodyFollows)
        self.chunkedBody = bodyFollows and head.length < 0
        self.channel.dataReceived(head.encode(bodyFollows))

    def sendBody(self, data: bytes) -> None:
        """
        A piece of the request body.
        """
        if self.requestOpen and data and not self.lost:
            self.channel.dataReceived(b"%x\r\n%s\r\n" % (len(data), data) if self.chunkedBody else data)

    def endBody(self) -> None:
        """
        The request body is complete.
        """
        if self.requestOpen:
            self.requestOpen = False
            if self.chunkedBody and not self.lost:
                self.channel.dataReceived(b"0\r\n\r\n")

    def cancel(self) -> None:
        """
        The visitor gave up.
        """
        self.sink = None
        self.close()

    def pauseResponse(self) -> None:
        """
        The visitor cannot take more for now.
        """
        producer = self.transport.producer
        if producer is not None:
            producer.pauseProducing()

    def resumeResponse(self) -> None:
        """
        The visitor can take more.
        """
        producer = self.transport.producer
        if producer is not None:
            producer.resumeProducing()

    def close(self, reason: str = "the apex site closed the connection") -> None:
        """
        End the in-memory connection (on the next turn: the site may be in
        the middle of writing).
        """
        if not self.lost:
            self.lost = True
            self.clock.callLater(0, self.channel.connectionLost, Failure(ConnectionError("closed")))
        self._ended(reason)

    def siteClosed(self) -> None:
        """
        The site closed the connection.
        """
        self.close()

    def _finished(self) -> None:
        self.close()

    def _broken(self, reason: str) -> None:
        log.warn("apex site answer: {reason}", reason=reason)
        self.close(reason)
