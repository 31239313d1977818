"""
HTTP/2 visitors: a server protocol driving the C{h2} library directly.

Each request is routed by its C{:authority} and forwarded as HTTP/1.1 on
a pooled tunnel stream (L{suite.specter.gateway.exchange}); the response
comes back as HEADERS and DATA on the visitor's stream.  Each stream's
phase (routing, forwarding, responding, draining its body, closed) is an
automat machine, L{suite.specter.gateway.h2stream}; this module is the
connection: it turns C{h2}'s events into the streams' inputs and sends
what they queue.  What keeps it lean per request:

  - a request opened by one HEADERS frame is read without C{h2}'s frame
    and event objects (L{suite.specter.gateway.h2internals.receive}; every
    other frame goes through C{h2}), and a stream whose route is known as
    it opens starts forwarding at once (one machine input per short
    answer);
  - HPACK blocks are decoded and encoded once per table state
    (L{suite.specter.gateway.h2internals}), and a request's HTTP/1.1 head is
    built once per distinct header list on a connection;
  - C{h2}'s header validation is replaced by the checks the HTTP/1.1 head
    needs (L{suite.specter.gateway.http1.buildRequestHead}: no CR, LF or
    NUL, lower-case token names, well-formed pseudo-headers, one authority:
    a C{Host} must agree with C{:authority}, RFC 9113 section 8.3.1),
    and the check that the certificate presented on the connection covers
    the authority (421 Misdirected Request otherwise, RFC 9113 section
    9.1.2; L{suite.specter.gateway.certnames}), both cached with the head;
  - request headers over the gateway's limit are answered 431 on their
    stream while the block decodes within L{HEADER_LIST_FACTOR} times the
    limit (so the HPACK state stays right); a larger block is not decoded
    and ends the connection (C{COMPRESSION_ERROR});
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

The connection's lifecycle (open, announced, going away, closed) is a
machine of its own, L{suite.specter.gateway.h2conn}.  When the gateway
drains (L{suite.specter.gateway.lifecycle.DrainMachine}), each connection
shuts down in two steps (RFC 9113 section 6.8) without closing C{h2}'s
connection: GOAWAY (C{NO_ERROR}, stream 2^31-1) and a PING; once the PING
is acknowledged (or after a second, or at the drain's deadline) GOAWAY
naming the last stream it took.  Streams opened before that are served;
later ones are refused (C{REFUSED_STREAM}: the visitor may retry them
elsewhere); the streams in flight finish and the connection closes when
none is left, or at the drain's deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h2.errors
import h2.events
import h2.exceptions
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.specter.gateway.certnames import (
    MISDIRECTED,
    Coverage,
    coverageOf,
    misdirectedReason,
    presentedNames,
)
from suite.specter.gateway.exchange import Exchange, ExchangePool, SiteExchange
from suite.specter.gateway.h2conn import (
    CLOSED,
    MAX_STREAM_ID,
    ConnectionInputs,
    ConnectionSide,
    Phase,
    newConnection,
)
from suite.specter.gateway.h2internals import (
    installCachingCodecs,
    receive,
    remoteOpen,
    sendGoAway,
    sendResponse,
)
from suite.specter.gateway.h2stream import END, MAX_BODY, Response, StreamCore, forwardedStream, newStream
from suite.specter.gateway.http1 import BadMessage, RequestHead, buildRequestHead
from suite.specter.gateway.visitor import serverName

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = [
    "H2Front",
    "H2Visitor",
    "TurnFlusher",
    "MAX_BODY",
    "STREAM_WINDOW",
    "CONNECTION_WINDOW",
    "HEADER_LIST_FACTOR",
    "headerListSize",
]

log = Logger()
#: Initial window of each visitor stream (request bodies).
STREAM_WINDOW = 1024 * 1024
#: Window of a visitor connection (all its request bodies together).
CONNECTION_WINDOW = 4 * 1024 * 1024
MAX_CONCURRENT_STREAMS = 128
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
_NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
_REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM
#: A request's header list up to this many times the gateway's
#: C{maxHeaderBytes} is decoded and answered 431 when over the limit (as
#: L{suite.web.limits.HEADER_BLOCK_FACTOR} does for the suite's sites); a
#: larger one ends the connection.
HEADER_LIST_FACTOR = 4
#: The opaque data of the PING sent with the first GOAWAY of a drain.
DRAIN_PING = b"drain\x00\x00\x00"


def headerListSize(headers: list[tuple[bytes, bytes]]) -> int:
    """
    The size of a header list as C{SETTINGS_MAX_HEADER_LIST_SIZE} counts it
    (RFC 9113 section 6.5.2: name, value and 32 bytes per field).
    """
    return sum(len(name) + len(value) + 32 for name, value in headers)


class Refusal:
    """
    A request head answered by the gateway itself, never routed: 400 (a
    malformed request), 421 (an authority the connection's certificate
    does not cover) or 431 (headers over the limit); kept in a
    connection's cache of request heads (but for 431).
    """

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


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


@implementer(IPushProducer)
class H2Visitor(Protocol, ConnectionSide):
    """
    One HTTP/2 visitor connection; its lifecycle is a
    L{suite.specter.gateway.h2conn} machine and each of its streams a
    L{suite.specter.gateway.h2stream} machine.

    @ivar phase: the lifecycle's state, lent by its machine
        (L{suite.specter.gateway.h2conn.Phase}): open, announced (the
        first GOAWAY is out, naming 2^31-1: every stream is still taken),
        going away (with the last stream id the final GOAWAY named:
        streams up to it finish, later ones are refused and the connection
        closes when none is left), or closed.
    @ivar writePaused: whether the visitor's TCP connection is full (the
        transport's producer API; flow control, not a lifecycle state).
    """

    transport: Any = None
    phase: Phase

    def __init__(self, front: H2Front) -> None:
        self.front = front
        self.gateway = front.gateway
        self.conn = H2Connection(_CONFIG)
        self.requests: dict[int, StreamCore] = {}
        #: Responses with something to send at the next flush.
        self.sendable: dict[int, Response] = {}
        self.heads: dict[tuple[Any, ...], RequestHead | Refusal] = {}
        #: The names the certificate presented on this connection covers
        #: (None: not TLS, nothing checked); set as the connection is made.
        self.coverage: Coverage | None = None
        self.ip = "?"
        self.peer = "?:0"
        self.writePaused = False
        self.answered = 0
        self.resets = 0
        self.lastActivity = 0.0
        self.lifecycle: ConnectionInputs = newConnection(self)

    # -- connection ------------------------------------------------------------------------
    def connectionMade(self) -> None:
        address = self.transport.getPeer()
        self.ip = str(getattr(address, "host", "?"))
        self.peer = f"{self.ip}:{getattr(address, 'port', 0)}"
        self.coverage = coverageOf(presentedNames(self.transport))
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
        # The setting above is advisory (RFC 9113 section 6.5.2): a header
        # list up to HEADER_LIST_FACTOR times it is decoded whole (the HPACK
        # state stays right) and answered 431; a larger one is not decoded
        # and ends the connection (COMPRESSION_ERROR, h2internals).
        conn.decoder.max_header_list_size = HEADER_LIST_FACTOR * self.gateway.config.maxHeaderBytes
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.transport.registerProducer(self, True)
        self.lastActivity = self.front.clock.seconds()
        self.lifecycle.opened()
        self.flush()
        # while the gateway drains, this is told to go away at once
        self.gateway.visitorOpened(self)

    def dataReceived(self, data: bytes) -> None:
        if self.phase is CLOSED:
            return
        self.lastActivity = self.front.clock.seconds()
        try:
            for item in receive(self.conn, data):
                if type(item) is tuple:
                    self._requestReceived(*item)
                elif self._events(item):
                    return
                if self.phase is CLOSED:
                    return
        except h2.exceptions.ProtocolError as e:
            log.info("HTTP/2 visitor {peer} broke the protocol: {error}", peer=self.peer, error=str(e))
            self._terminate()
            return
        self.flush()

    def _events(self, events: list[Any]) -> bool:
        """
        Handle C{h2}'s events; whether the connection is closed.
        """
        event: Any
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._requestReceived(event.stream_id, event.headers, event.stream_ended is not None)
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
                return True
            elif kind is h2.events.PingAckReceived and event.ping_data == DRAIN_PING:
                # every stream the visitor opened before the first GOAWAY is here
                self.lifecycle.pingAcked()
            if self.phase is CLOSED:
                return True
        return False

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.lifecycle.connectionLost()

    def release(self) -> None:
        """
        The transport is gone: drop the streams and what was queued (the
        lifecycle machine's output).
        """
        self.sendable = {}
        for stream in list(self.requests.values()):
            stream.inputs.abandoned()
        self.requests = {}
        self.front.flusher.dirty.pop(self, None)
        self.gateway.visitorClosed(self)

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
        self.lifecycle.hungUp()

    def hangUp(self) -> None:
        """
        Stop producing and lose the transport (the lifecycle machine's
        output as it closes).
        """
        try:
            self.transport.unregisterProducer()
        except RuntimeError:
            pass
        self.transport.loseConnection()

    def idleWait(self) -> float | None:
        """
        How long until the connection may be idle for the idle timeout;
        None if it is (no stream, nothing received for that long).
        """
        timeout: float = self.front.idleTimeout
        idle: float = self.front.clock.seconds() - self.lastActivity
        if self.requests or idle < timeout:
            return max(1.0, timeout - idle)
        return None

    def callLater(self, delay: float, call: Callable[[], None]) -> IDelayedCall:
        """
        Call C{call} in C{delay} seconds (the idle check's timer).
        """
        delayed: IDelayedCall = self.front.clock.callLater(delay, call)
        return delayed

    def terminate(self) -> None:
        """
        Send GOAWAY (C{NO_ERROR}) closing C{h2}'s connection (the idle
        timeout; the lifecycle machine's output).
        """
        try:
            self.conn.close_connection(_NO_ERROR)
        except h2.exceptions.ProtocolError:
            pass
        self.flush()

    # -- the gateway drains (suite.specter.gateway.lifecycle.DrainMachine) ------------------
    def goAway(self) -> None:
        """
        Tell the visitor to open no more streams here (GOAWAY, NO_ERROR,
        2^31-1 and a PING, then GOAWAY naming the last stream taken); close
        once the streams in flight are done.
        """
        self.lifecycle.drainStarted()

    def close(self) -> None:
        """
        The drain's deadline: close now, whatever is in flight.
        """
        self.lifecycle.deadlineReached()

    def highestStreamId(self) -> int:
        """
        The highest stream id the visitor opened.
        """
        return int(self.conn.highest_inbound_stream_id)

    def announceGoAway(self) -> None:
        """
        Send GOAWAY (C{NO_ERROR}, 2^31-1) and a PING, and what else is
        ready (the lifecycle machine's output as the drain begins).
        """
        sendGoAway(self.conn, MAX_STREAM_ID, _NO_ERROR)
        try:
            self.conn.ping(DRAIN_PING)
        except h2.exceptions.ProtocolError:
            pass  # the grace's timer sends the final GOAWAY
        self.flush()

    def sendGoAway(self, lastStreamId: int) -> None:
        """
        Send GOAWAY (C{NO_ERROR}, C{lastStreamId}) and what else is ready
        (the lifecycle machine's output).
        """
        sendGoAway(self.conn, lastStreamId, _NO_ERROR)
        self.flush()

    # -- requests --------------------------------------------------------------------------
    def _requestHead(self, headers: list[tuple[bytes, bytes]]) -> RequestHead | Refusal:
        """
        The request head of C{headers}, or why it is refused; built and
        checked once per distinct header list of the connection.
        """
        key = tuple(headers)
        found = self.heads.get(key)
        if found is None:
            limit = self.gateway.config.maxHeaderBytes
            if headerListSize(headers) > limit:
                # not kept: the cache holds heads up to the limit only
                return Refusal(431, f"request headers larger than {limit} bytes")
            try:
                found = buildRequestHead(headers, self.ip)
            except BadMessage as e:
                found = Refusal(400, f"malformed request: {e}")
            else:
                coverage = self.coverage
                if coverage is not None and found.host and not coverage.covers(found.host):
                    found = self._misdirected(found.host)
            if len(self.heads) >= 64:
                self.heads.clear()
            self.heads[key] = found
        return found

    def _requestReceived(self, sid: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        lastStreamId = self.phase.lastStreamId
        if lastStreamId is not None and sid > lastStreamId:
            # opened after our GOAWAY: never processed, the visitor may
            # safely retry it elsewhere
            self.resetStream(sid, _REFUSED)
            return
        head = self._requestHead(headers)
        if isinstance(head, Refusal):
            stream = newStream(self, sid, None, not ended)
            self.requests[sid] = stream
            stream.inputs.rejected(head.code, head.reason)
            return
        bodyFollows = not ended
        host = head.host
        gateway = self.gateway
        if head.length <= MAX_BODY and host and host not in gateway.config.apexes:
            link = gateway.registry.pick(host)
            if link is not None:
                # the common case: the stream opens forwarding
                self.requests[sid] = forwardedStream(
                    self, sid, head, bodyFollows, self.front.pool.exchangeFor(link, self.peer, host)
                )
                return
            stream = newStream(self, sid, head, bodyFollows)
            self.requests[sid] = stream
            stream.inputs.lookingUp()
            return
        stream = newStream(self, sid, head, bodyFollows)
        self.requests[sid] = stream
        inputs = stream.inputs
        if head.length > MAX_BODY:
            inputs.rejected(413, f"request body larger than {MAX_BODY} bytes")
            return
        if not host:
            inputs.rejected(400, "no :authority or Host header")
            return
        if gateway.apexSite is None:
            inputs.rejected(404, "nothing is served on the apex here")
            return
        front = self.front
        inputs.forwarded(
            SiteExchange(gateway.apexSite, self.transport.getPeer(), front.pool.heads, front.clock)
        )

    def _misdirected(self, host: str) -> Refusal:
        """
        The refusal of requests for C{host}, which the certificate of this
        connection does not cover (RFC 9113 section 9.1.2).
        """
        log.debug(
            "misdirected HTTP/2 request from {peer}: the certificate presented (SNI {sni}) does not cover {host}",
            peer=self.peer,
            sni=serverName(self.transport),
            host=host,
        )
        return Refusal(MISDIRECTED, misdirectedReason(host))

    def _dataReceived(self, event: Any) -> None:
        stream = self.requests.get(event.stream_id)
        if stream is None:
            self.giveBack(event.stream_id, event.flow_controlled_length)
        else:
            stream.inputs.bodyReceived(event.data, event.flow_controlled_length)

    def _streamEnded(self, sid: int) -> None:
        stream = self.requests.get(sid)
        # a request without a body ended with its head (nothing to tell)
        if stream is not None and stream.bodyFollows:
            stream.inputs.bodyEnded()

    def _streamReset(self, sid: int) -> None:
        stream = self.requests.get(sid)
        if stream is None:
            return
        stream.inputs.abandoned()
        self.resets += 1
        if self.resets > RESET_ALLOWANCE and self.resets > 2 * self.answered:
            log.warn("HTTP/2 visitor {peer} reset too many streams", peer=self.peer)
            self._terminate(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    # -- StreamSide ------------------------------------------------------------------------
    def exchangeFor(self, link: Any, host: str) -> Exchange:
        """
        An exchange on C{link} for a request to C{host}.
        """
        return self.front.pool.exchangeFor(link, self.peer, host)

    def acknowledge(self, stream: StreamCore) -> None:
        """
        The tunnel took C{stream}'s body bytes: reopen the visitor's windows.
        """
        size, stream.unacked = stream.unacked, 0
        if size:
            self.giveBack(stream.sid, size)

    def giveBack(self, sid: int, size: int) -> None:
        """
        Reopen the visitor's windows by C{size} bytes of stream C{sid}.
        """
        if size and self.phase is not CLOSED:
            try:
                self.conn.acknowledge_received_data(size, sid)
            except h2.exceptions.ProtocolError:
                return
            self.front.flusher.mark(self)

    def ready(self, response: Response) -> None:
        """
        C{response} has something to send.
        """
        self.sendable[response.stream.sid] = response
        self.front.flusher.mark(self)

    def resetStream(self, sid: int, code: int) -> None:
        """
        Reset stream C{sid} (a response cut short, or refused).
        """
        try:
            self.conn.reset_stream(sid, code)
        except h2.exceptions.ProtocolError:
            pass
        self.front.flusher.mark(self)

    def streamAnswered(self) -> None:
        """
        A response was sent whole.
        """
        self.answered += 1

    def streamClosed(self, stream: StreamCore) -> None:
        """
        C{stream} is over.
        """
        sid = stream.sid
        if self.requests.get(sid) is stream:
            del self.requests[sid]
        self.sendable.pop(sid, None)
        if self.phase.lastStreamId is not None:
            self.front.flusher.mark(self)  # the flush closes a drained connection

    # -- responses -------------------------------------------------------------------------
    def _windowOpened(self, sid: int) -> None:
        if sid:
            stream = self.requests.get(sid)
            if stream is not None:
                response = stream.response
                if response is not None and response.out:
                    self.sendable[sid] = response
        else:
            for stream in self.requests.values():
                response = stream.response
                if response is not None and response.out:
                    self.sendable[stream.sid] = response

    def flush(self) -> None:
        """
        Send the frames of every stream that has something ready, in one
        write; once the gateway drains and no stream is left, close.
        """
        if self.phase is CLOSED:
            return
        ready = self.sendable
        if ready and not self.writePaused:
            self.sendable = {}
            requests = self.requests
            for sid, response in ready.items():
                stream = requests.get(sid)
                if stream is not None and stream.response is response:
                    self._send(stream, response)
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)
        if self.phase.lastStreamId is not None and not self.requests:
            self.lifecycle.drained()

    def _send(self, stream: StreamCore, response: Response) -> None:
        conn = self.conn
        sid = stream.sid
        out = response.out
        try:
            head = response.headers
            if head is not None:
                response.headers = None
                if out and out[-1] is END and len(out) <= 2:
                    # the whole response is here: HEADERS and DATA in one go
                    if sendResponse(conn, sid, head, out[0] if len(out) == 2 else b"", True):
                        out.clear()
                        response.queued = 0
                        self._finished(stream)
                        return
                conn.send_headers(sid, head)
                stream.inputs.headersSent(response)
            while out:
                piece = out[0]
                if piece is END:
                    out.popleft()
                    conn.end_stream(sid)
                    self._finished(stream)
                    return
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    response.pause()
                    return
                if len(piece) > room:
                    out[0] = piece[room:]
                    piece = piece[:room]
                    end = False
                else:
                    out.popleft()
                    end = len(out) == 1 and out[0] is END
                    if end:
                        out.popleft()
                response.queued -= len(piece)
                conn.send_data(sid, piece, end_stream=end)
                if end:
                    self._finished(stream)
                    return
            response.resume()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
            log.debug("HTTP/2 stream {sid} of {peer} gone: {error}", sid=sid, peer=self.peer, error=str(e))
            stream.inputs.abandoned()

    def _finished(self, stream: StreamCore) -> None:
        if stream.bodyFollows and remoteOpen(self.conn, stream.sid):
            stream.inputs.responseSentEarly()
        else:
            stream.inputs.responseSent()

    # -- IPushProducer: the visitor's TCP connection is full ----------------------------
    def pauseProducing(self) -> None:
        """
        Stop sending; the exchanges stop reading from their targets.
        """
        self.writePaused = True
        for stream in self.requests.values():
            if stream.response is not None:
                stream.response.pause()

    def resumeProducing(self) -> None:
        """
        Carry on sending.
        """
        self.writePaused = False
        for stream in self.requests.values():
            response = stream.response
            if response is not None:
                if response.out or response.headers is not None:
                    self.sendable[stream.sid] = response
                else:
                    response.resume()
        self.front.flusher.mark(self)

    def stopProducing(self) -> None:
        """
        The connection is going away.
        """
        self.writePaused = True
