"""
HTTP/2 visitors: a server protocol driving the C{h2} library directly.

Each request is routed by its C{:authority} and forwarded as HTTP/1.1 on
a pooled tunnel stream (L{suite.specter.gateway.exchange}); the response
comes back as HEADERS and DATA on the visitor's stream.  What keeps it
lean per request:

  - HPACK blocks are decoded and encoded once per table state
    (L{suite.specter.gateway.h2internals}), and a request's HTTP/1.1 head is
    built once per distinct header list on a connection;
  - C{h2}'s header validation is replaced by the checks the HTTP/1.1 head
    needs (L{suite.specter.gateway.http1.buildRequestHead}: no CR, LF or
    NUL, lower-case token names, well-formed pseudo-headers);
  - responses are queued and sent in one pass when the frames that carried
    them have all been read (end of a link read, end of a visitor read, or
    else once per reactor turn): a short response leaves as one HEADERS and
    one DATA frame with END_STREAM, and every response ready in that pass
    goes to the transport in one write;
  - large windows (L{STREAM_WINDOW}, L{CONNECTION_WINDOW}); C{h2} sends
    WINDOW_UPDATE only once half a window was consumed, and request body
    bytes are acknowledged when the tunnel took them (so a target that
    does not read holds the visitor, bounded by the windows).

Flow control towards the visitor: a response is sent as the visitor's
windows allow; while one waits (or the visitor's TCP connection is full)
its exchange stops granting window to the tunnel target.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import h2.errors
import h2.events
import h2.exceptions
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.specter.gateway.exchange import Exchange, ExchangePool, SiteExchange
from suite.specter.gateway.h2internals import installCachingCodecs, sendResponse
from suite.specter.gateway.http1 import BadMessage, RequestHead, ResponseHead, buildRequestHead
from suite.specter.gateway.interfaces import IResponseSink
from suite.specter.gateway.visitor import errorPage

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = ["H2Front", "H2Visitor", "TurnFlusher", "MAX_BODY", "STREAM_WINDOW", "CONNECTION_WINDOW"]

log = Logger()
#: Largest HTTP/2 request body accepted (413 beyond).
MAX_BODY = 8 * 1024 * 1024
#: Initial window of each visitor stream (request bodies).
STREAM_WINDOW = 1024 * 1024
#: Window of a visitor connection (all its request bodies together).
CONNECTION_WINDOW = 4 * 1024 * 1024
MAX_CONCURRENT_STREAMS = 128
#: Request body bytes read and dropped after an early answer before the
#: stream is reset.
DRAIN_LIMIT = 16 * 1024 * 1024
#: Response bytes queued for a visitor stream before its exchange pauses.
QUEUE_LIMIT = 64 * 1024
#: Streams a visitor may reset before it has had as many answers: beyond
#: that (and twice the answers), the connection is closed (rapid reset).
RESET_ALLOWANCE = 200
_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
_END = object()
#: The :status fields of common answers (one object each: their hashes are
#: computed once for the HPACK cache's lookups).
_STATUS = {
    code: (b":status", b"%d" % code) for code in (200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 500)
}


class TurnFlusher:
    """
    Sends what HTTP/2 connections queued: at the end of each link read
    (L{flushAll}, called by the gateway's links), or else once per reactor
    turn.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.dirty: dict[H2Visitor, None] = {}
        self.call: Any = None

    def mark(self, visitor: H2Visitor) -> None:
        """
        C{visitor} has something to send.
        """
        self.dirty[visitor] = None
        if self.call is None:
            self.call = self.clock.callLater(0, self._turn)

    def _turn(self) -> None:
        self.call = None
        self.flushAll()

    def flushAll(self) -> None:
        """
        Send what every connection queued.
        """
        while self.dirty:
            dirty, self.dirty = self.dirty, {}
            for visitor in dirty:
                visitor.flush()

    def stop(self) -> None:
        """
        Cancel the pending turn (tests, shutdown).
        """
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


class H2Front:
    """
    What HTTP/2 connections share: the gateway, the exchange pool and the
    flusher; builds one L{H2Visitor} per connection.
    """

    def __init__(self, gateway: Gateway, clock: Any, pool: ExchangePool | None = None) -> None:
        self.gateway = gateway
        self.clock = clock
        self.pool = pool if pool is not None else ExchangePool(gateway)
        self.flusher = TurnFlusher(clock)
        self.idleTimeout = 60.0
        gateway.afterLinkRead.append(self.flusher.flushAll)

    def buildProtocol(self, addr: Any) -> H2Visitor:
        """
        The protocol of one visitor connection that negotiated C{h2}.
        """
        return H2Visitor(self)


@implementer(IResponseSink)
class _Request:
    """
    One visitor stream: its request on the way to the target and the
    response on the way back.

    @ivar out: response pieces not sent yet (C{_END} once complete).
    @ivar unacked: request body bytes received but not yet taken by the
        tunnel (acknowledged to the visitor when they are).
    """

    def __init__(self, visitor: H2Visitor, sid: int, bodyFollows: bool) -> None:
        self.visitor = visitor
        self.sid = sid
        self.exchange: Exchange | SiteExchange | None = None
        self.head: RequestHead | None = None
        self.bodyFollows = bodyFollows
        self.ended = not bodyFollows
        self.early: list[bytes] = []
        self.unacked = 0
        self.bodyBytes = 0
        self.bodyPaused = False
        self.responseHead: list[tuple[bytes, bytes]] | None = None
        self.responded = False
        self.out: deque[Any] = deque()
        self.queued = 0
        self.paused = False
        self.done = False

    # -- IResponseSink ---------------------------------------------------------------------
    def responseStarted(self, head: ResponseHead) -> None:
        status = _STATUS.get(head.code)
        if status is None:
            status = (b":status", b"%d" % head.code)
        headers = [status, *head.headers]
        assert self.head is not None
        altSvc = self.visitor.gateway.altSvcFor(self.head.host)
        if altSvc is not None:
            headers.append((b"alt-svc", altSvc))
        self.responseHead = headers
        self.visitor.ready(self)

    def responseData(self, data: bytes) -> None:
        self.out.append(data)
        self.queued += len(data)
        if self.queued > QUEUE_LIMIT:
            self._pauseExchange()
        self.visitor.ready(self)

    def responseEnded(self) -> None:
        self.out.append(_END)
        self.exchange = None
        self.visitor.ready(self)

    def responseFailed(self, reason: str) -> None:
        self.exchange = None
        if self.done:
            return
        if self.responseHead is None and not self.responded:
            self.visitor.answer(self, 502, f"the tunnel target did not answer: {reason}")
        else:  # cut short: reset, never end as if complete
            self.visitor.resetStream(self, h2.errors.ErrorCodes.INTERNAL_ERROR)

    def requestBodyPaused(self) -> None:
        self.bodyPaused = True

    def requestBodyResumed(self) -> None:
        self.bodyPaused = False
        if self.unacked:
            self.visitor.acknowledge(self)

    # -- helpers ---------------------------------------------------------------------------
    def _pauseExchange(self) -> None:
        if not self.paused and self.exchange is not None:
            self.paused = True
            self.exchange.pauseResponse()

    def _resumeExchange(self) -> None:
        if self.paused:
            self.paused = False
            if self.exchange is not None:
                self.exchange.resumeResponse()


@implementer(IPushProducer)
class H2Visitor(Protocol):
    """
    One HTTP/2 visitor connection.
    """

    transport: Any = None

    def __init__(self, front: H2Front) -> None:
        self.front = front
        self.gateway = front.gateway
        self.conn = H2Connection(_CONFIG)
        self.requests: dict[int, _Request] = {}
        #: Requests with something to send at the next flush.
        self.sendable: dict[int, _Request] = {}
        self.heads: dict[tuple[Any, ...], RequestHead | str] = {}
        #: Streams answered before their request body ended: bytes of the
        #: body read since (and dropped).
        self.draining: dict[int, int] = {}
        self.ip = "?"
        self.peer = "?:0"
        self.writePaused = False
        self.closed = False
        self.answered = 0
        self.resets = 0
        self.lastActivity = 0.0
        self.idleCall: Any = None

    # -- connection ------------------------------------------------------------------------
    def connectionMade(self) -> None:
        address = self.transport.getPeer()
        self.ip = str(getattr(address, "host", "?"))
        self.peer = f"{self.ip}:{getattr(address, 'port', 0)}"
        conn = self.conn
        conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.gateway.config.maxHeaderBytes,
            },
        )
        installCachingCodecs(conn)
        conn.decoder.max_header_list_size = self.gateway.config.maxHeaderBytes
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.transport.registerProducer(self, True)
        self.lastActivity = self.front.clock.seconds()
        self.idleCall = self.front.clock.callLater(self.front.idleTimeout, self._idleCheck)
        self.flush()

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        self.lastActivity = self.front.clock.seconds()
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            log.info("HTTP/2 visitor {peer} broke the protocol: {error}", peer=self.peer, error=str(e))
            self._terminate()
            return
        event: Any
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._requestReceived(event)
            elif kind is h2.events.DataReceived:
                self._dataReceived(event)
            elif kind is h2.events.StreamEnded:
                self._streamEnded(event.stream_id)
            elif kind is h2.events.StreamReset:
                self._streamReset(event.stream_id)
            elif kind is h2.events.WindowUpdated or kind is h2.events.RemoteSettingsChanged:
                self._windowOpened(getattr(event, "stream_id", 0))
            elif kind is h2.events.ConnectionTerminated:
                self._terminate()
                return
            if self.closed:
                return
        self.flush()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.closed = True
        if self.idleCall is not None and self.idleCall.active():
            self.idleCall.cancel()
        self.idleCall = None
        requests, self.requests = self.requests, {}
        self.sendable = {}
        for request in requests.values():
            self._drop(request)
        self.front.flusher.dirty.pop(self, None)

    def _terminate(self, code: int | None = None) -> None:
        """
        Close the connection (after a GOAWAY when C{code} is given).
        """
        if code is not None:
            try:
                self.conn.close_connection(code)
            except h2.exceptions.ProtocolError:
                pass
        self.flush()
        self.closed = True
        try:
            self.transport.unregisterProducer()
        except RuntimeError:
            pass
        self.transport.loseConnection()

    def _idleCheck(self) -> None:
        clock = self.front.clock
        idle = clock.seconds() - self.lastActivity
        if self.requests or idle < self.front.idleTimeout:
            self.idleCall = clock.callLater(max(1.0, self.front.idleTimeout - idle), self._idleCheck)
            return
        self.idleCall = None
        self._terminate(h2.errors.ErrorCodes.NO_ERROR)

    # -- requests --------------------------------------------------------------------------
    def _requestHead(self, headers: list[tuple[bytes, bytes]]) -> RequestHead | str:
        key = tuple(headers)
        found = self.heads.get(key)
        if found is None:
            try:
                found = buildRequestHead(headers, self.ip)
            except BadMessage as e:
                found = str(e)
            if len(self.heads) >= 64:
                self.heads.clear()
            self.heads[key] = found
        return found

    def _requestReceived(self, event: Any) -> None:
        sid = event.stream_id
        request = _Request(self, sid, event.stream_ended is None)
        self.requests[sid] = request
        head = self._requestHead(event.headers)
        if isinstance(head, str):
            self.answer(request, 400, f"malformed request: {head}")
            return
        request.head = head
        if head.length > MAX_BODY:
            self.answer(request, 413, f"request body larger than {MAX_BODY} bytes")
            return
        host = head.host
        if not host:
            self.answer(request, 400, "no :authority or Host header")
            return
        gateway = self.gateway
        if host in gateway.config.apexes:
            if gateway.apexSite is None:
                self.answer(request, 404, "nothing is served on the apex here")
                return
            exchange = SiteExchange(
                gateway.apexSite, self.transport.getPeer(), self.front.pool.heads, self.front.clock
            )
            self._start(request, exchange)
            return
        link = gateway.registry.pick(host)
        if link is not None:
            self._start(request, self.front.pool.exchangeFor(link, self.peer, host))
            return
        d = gateway.resolve(host)
        d.addCallbacks(self._resolved, self._resolveFailed, callbackArgs=(request,), errbackArgs=(request,))

    def _resolved(self, found: Any, request: _Request) -> None:
        if request.done or self.closed:
            return
        assert request.head is not None
        if found is None or isinstance(found, str):
            self.answer(
                request, 404 if found is None else 502, found or f"no tunnel is serving {request.head.host}"
            )
        else:
            self._start(request, self.front.pool.exchangeFor(found, self.peer, request.head.host))
        self.flush()

    def _resolveFailed(self, failure: Failure, request: _Request) -> None:
        assert request.head is not None
        host = request.head.host
        log.warn("route lookup for {host} failed: {error}", host=host, error=failure.getErrorMessage())
        if not request.done and not self.closed:
            self.answer(request, 502, f"route lookup for {host} failed, try again")
            self.flush()

    def _start(self, request: _Request, exchange: Exchange | SiteExchange) -> None:
        assert request.head is not None
        request.exchange = exchange
        exchange.start(request.head, request, request.bodyFollows)
        if request.early:
            early, request.early = request.early, []
            for piece in early:
                exchange.sendBody(piece)
            if not request.bodyPaused:
                self.acknowledge(request)
        if request.ended and request.bodyFollows:
            exchange.endBody()

    def _dataReceived(self, event: Any) -> None:
        sid = event.stream_id
        request = self.requests.get(sid)
        size = event.flow_controlled_length
        if request is None or request.done:
            self.conn.acknowledge_received_data(size, sid)
            drained = self.draining.get(sid)
            if drained is not None:
                drained += size
                self.draining[sid] = drained
                if drained > DRAIN_LIMIT:
                    del self.draining[sid]
                    self.conn.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)
            return
        data = event.data
        request.bodyBytes += len(data)
        if request.bodyBytes > MAX_BODY:
            if request.responseHead is None and not request.responded:
                exchange, request.exchange = request.exchange, None
                if exchange is not None:
                    exchange.cancel()
                self.answer(request, 413, f"request body larger than {MAX_BODY} bytes")
            else:
                self.resetStream(request, h2.errors.ErrorCodes.REFUSED_STREAM)
            self.conn.acknowledge_received_data(size, sid)
            return
        request.unacked += size
        exchange = request.exchange
        if exchange is None:
            request.early.append(data)
            return
        exchange.sendBody(data)
        if not request.bodyPaused:
            self.acknowledge(request)

    def acknowledge(self, request: _Request) -> None:
        """
        The tunnel took C{request}'s body bytes: reopen the visitor's windows.
        """
        size, request.unacked = request.unacked, 0
        if size and not self.closed:
            try:
                self.conn.acknowledge_received_data(size, request.sid)
            except h2.exceptions.ProtocolError:
                return
            self.front.flusher.mark(self)

    def _streamEnded(self, sid: int) -> None:
        self.draining.pop(sid, None)
        request = self.requests.get(sid)
        if request is None or request.ended:
            return
        request.ended = True
        if request.exchange is not None:
            request.exchange.endBody()

    def _streamReset(self, sid: int) -> None:
        self.draining.pop(sid, None)
        request = self.requests.pop(sid, None)
        if request is None:
            return
        self.sendable.pop(sid, None)
        self._drop(request)
        self.resets += 1
        if self.resets > RESET_ALLOWANCE and self.resets > 2 * self.answered:
            log.warn("HTTP/2 visitor {peer} reset too many streams", peer=self.peer)
            self._terminate(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def _drop(self, request: _Request) -> None:
        request.done = True
        exchange, request.exchange = request.exchange, None
        if exchange is not None:
            exchange.cancel()
        self._giveBack(request)

    def _giveBack(self, request: _Request) -> None:
        """
        Body bytes of a finished request that were never acknowledged go
        back to the connection's window.
        """
        if request.unacked and not self.closed:
            self.acknowledge(request)

    # -- responses -------------------------------------------------------------------------
    def ready(self, request: _Request) -> None:
        """
        C{request} has something to send.
        """
        if request.done:
            return
        self.sendable[request.sid] = request
        self.front.flusher.mark(self)

    def answer(self, request: _Request, code: int, detail: str) -> None:
        """
        Answer C{request} with an error page from the gateway.
        """
        errors = self.gateway.metrics.errors
        errors[code] = errors.get(code, 0) + 1
        page = errorPage(code, detail)
        body = page[page.index(b"\r\n\r\n") + 4 :]
        request.responseHead = [
            (b":status", b"%d" % code),
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        request.out = deque([body, _END])
        request.queued = len(body)
        self.sendable[request.sid] = request
        self.front.flusher.mark(self)

    def resetStream(self, request: _Request, code: int) -> None:
        """
        Reset C{request}'s stream (a response cut short, or refused).
        """
        if request.done:
            return
        self.requests.pop(request.sid, None)
        self.sendable.pop(request.sid, None)
        self._drop(request)
        try:
            self.conn.reset_stream(request.sid, code)
        except h2.exceptions.ProtocolError:
            pass
        self.front.flusher.mark(self)

    def _windowOpened(self, sid: int) -> None:
        if sid:
            request = self.requests.get(sid)
            if request is not None and request.out:
                self.sendable[sid] = request
        else:
            for request in self.requests.values():
                if request.out:
                    self.sendable[request.sid] = request

    def flush(self) -> None:
        """
        Send the frames of every stream that has something ready, in one
        write.
        """
        if self.closed:
            return
        ready = self.sendable
        if ready and not self.writePaused:
            self.sendable = {}
            for request in ready.values():
                if not request.done:
                    self._send(request)
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def _send(self, request: _Request) -> None:
        conn = self.conn
        sid = request.sid
        out = request.out
        try:
            head = request.responseHead
            if head is not None and not request.responded:
                request.responded = True
                if out and out[-1] is _END and len(out) <= 2:
                    # the whole response is here: HEADERS and DATA in one go
                    if sendResponse(conn, sid, head, out[0] if len(out) == 2 else b"", True):
                        out.clear()
                        request.queued = 0
                        self._finished(request)
                        return
                conn.send_headers(sid, head)
            if not request.responded:
                return
            while out:
                piece = out[0]
                if piece is _END:
                    out.popleft()
                    conn.end_stream(sid)
                    self._finished(request)
                    return
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    request._pauseExchange()
                    return
                if len(piece) > room:
                    out[0] = piece[room:]
                    piece = piece[:room]
                    end = False
                else:
                    out.popleft()
                    end = len(out) == 1 and out[0] is _END
                    if end:
                        out.popleft()
                request.queued -= len(piece)
                conn.send_data(sid, piece, end_stream=end)
                if end:
                    self._finished(request)
                    return
            request._resumeExchange()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
            log.debug("HTTP/2 stream {sid} of {peer} gone: {error}", sid=sid, peer=self.peer, error=str(e))
            self.requests.pop(sid, None)
            self._drop(request)

    def _finished(self, request: _Request) -> None:
        request.done = True
        self.answered += 1
        self.requests.pop(request.sid, None)
        if not request.ended:
            # answered before the body ended: the rest of the body is read
            # and dropped (up to DRAIN_LIMIT), then the stream is reset
            exchange, request.exchange = request.exchange, None
            if exchange is not None:
                exchange.cancel()
            self.draining[request.sid] = 0
        self._giveBack(request)

    # -- IPushProducer: the visitor's TCP connection is full ----------------------------
    def pauseProducing(self) -> None:
        """
        Stop sending; the exchanges stop reading from their targets.
        """
        self.writePaused = True
        for request in self.requests.values():
            request._pauseExchange()

    def resumeProducing(self) -> None:
        """
        Carry on sending.
        """
        self.writePaused = False
        for request in self.requests.values():
            if request.out or (request.responseHead is not None and not request.responded):
                self.sendable[request.sid] = request
            else:
                request._resumeExchange()
        self.front.flusher.mark(self)

    def stopProducing(self) -> None:
        """
        The connection is going away.
        """
        self.writePaused = True
