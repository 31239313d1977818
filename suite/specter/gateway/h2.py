"""
HTTP/2 visitors: Twisted's H2 server terminates HTTP/2; each request is
replayed as one HTTP/1.1 request on a pooled, persistent tunnel stream,
whose response is streamed back with back-pressure both ways.  HTTP/2 uses
a small HTTP/1.1 exchange of its own (L{_LeanClient}: the request written
as bytes, the response head and body framing parsed straight into the
visitor's request); HTTP/3 goes through Twisted's HTTP/1.1 client protocol
(L{TunnelResource.forward}).
"""

from __future__ import annotations

from io import BytesIO
from typing import TYPE_CHECKING, Any

import h2.exceptions
import priority
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._http2 import _END_STREAM_SENTINEL, H2Connection
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web._newclient import Request as ClientRequest
from twisted.web.client import FileBodyProducer, PotentialDataLoss, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from suite.specter.gateway.forwarded import FORWARDING_HEADERS, forwardedValue, forwardingLines
from suite.specter.tunnel.mux import LocalSide, Stream

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = ["TunnelResource", "makeH2Site", "BatchingH2Connection", "h2Channel"]

log = Logger()
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
}
_ADDRESS = IPv4Address("TCP", "127.0.0.1", 0)
#: Largest HTTP/2 request body accepted (413 beyond); bodies are buffered.
MAX_BODY = 8 * 1024 * 1024


class _NoFlowControl:
    """
    The producer half of the transport interface, for in-process pipes whose
    flow control is the tunnel stream's window: nothing to do here.
    """

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


class _Inbound(_NoFlowControl):
    """
    The transport the stream writes peer bytes to: it feeds the HTTP
    client protocol.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.lost = False

    def write(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def loseConnection(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def abort(self, reason: str) -> None:
        """
        The stream was reset: the HTTP client sees a failed connection, so
        a response cut short is never taken for a complete one.
        """
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionLost(f"tunnel stream reset: {reason}")))


@implementer(IPushProducer)
class _Outbound:
    """
    The transport the HTTP client protocol writes to: it sends on the stream.
    """

    disconnecting = False

    def __init__(self, stream: Stream, inbound: _Inbound) -> None:
        self.stream = stream
        self.inbound = inbound

    def write(self, data: bytes) -> None:
        self.stream.send(data)

    def writeSequence(self, data: Any) -> None:
        self.stream.send(b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True
        self.stream.sendClose()
        self.inbound.loseConnection()

    abortConnection = loseConnection

    def getPeer(self) -> IPv4Address:
        return _ADDRESS

    def getHost(self) -> IPv4Address:
        return _ADDRESS

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        self.stream.pauseProducing()

    def resumeProducing(self) -> None:
        self.stream.resumeProducing()

    def stopProducing(self) -> None:
        self.loseConnection()


class _Side(LocalSide):
    pass


class _Body(Protocol):
    def __init__(self, request: Request) -> None:
        self.request = request

    def dataReceived(self, data: bytes) -> None:
        if not self.request._disconnected:
            self.request.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if not self.request._disconnected and not self.request.finished:
            self.request.unregisterProducer()
            if reason.check(ResponseDone, PotentialDataLoss):
                self.request.finish()
            else:  # cut short: reset rather than look complete
                abortRequest(self.request)


def abortRequest(request: Request) -> None:
    """
    End a response that was cut short so that it cannot look complete: an
    HTTP/2 stream is reset (RST_STREAM; C{loseConnection} would end it
    with END_STREAM), another channel is aborted.
    """
    channel = getattr(request, "channel", None)
    abort = getattr(channel, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        request.loseConnection()


def _page(request: Request, code: int, detail: str) -> bytes:
    from suite.specter.gateway.visitor import errorPage

    page = errorPage(code, detail)
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    return page[page.index(b"\r\n\r\n") + 4 :]


class TunnelResource(Resource):
    """
    Every path: proxy the request through the tunnel of its host.
    """

    isLeaf = True

    #: Idle persistent streams kept per link (each holds one connection to
    #: the target on the client side); as many as the HTTP/2 requests in
    #: flight at once, so a busy visitor does not open and close a stream
    #: (and a target connection) per request.
    maxIdle = 256

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway
        self.idle: dict[int, list[_PooledClient]] = {}
        self.leanIdle: dict[int, list[_LeanClient]] = {}
        self.altSvc: bytes | None = None
        draining = getattr(gateway, "onLinkDraining", None)
        if draining is not None:
            draining.append(self.dropIdle)

    def dropIdle(self, link: Any) -> None:
        """
        Close the idle pooled streams of C{link} (its client is draining).
        """
        for client in self.idle.pop(id(link), []):
            client.outbound.loseConnection()
        for lean in self.leanIdle.pop(id(link), []):
            lean.outbound.loseConnection()

    def render(self, request: Request) -> Any:
        host = (request.getHeader(b"host") or b"").decode("ascii", "replace").lower()
        host = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
        if not host:
            return _page(request, 400, "no :authority or Host header")
        if host in self.gateway.config.apexes:
            if self.gateway.apexResource is None:
                return _page(request, 404, "nothing is served on the apex here")
            from twisted.web.resource import getChildForRequest

            return getChildForRequest(self.gateway.apexResource, request).render(request)
        link = self.gateway.registry.pick(host)
        if link is not None:
            self._proxy(request, host, link)
            return NOT_DONE_YET
        d = self.gateway.resolve(host)

        def resolved(found: Any) -> None:
            if request._disconnected:
                return
            if found is None or isinstance(found, str):
                body = _page(request, 404 if found is None else 502, found or f"no tunnel is serving {host}")
                request.write(body)
                request.finish()
            else:
                self._proxy(request, host, found)

        def failed(f: Failure) -> None:
            log.warn("route lookup for {host} failed: {error}", host=host, error=f.getErrorMessage())
            if not request._disconnected:
                request.write(_page(request, 502, f"route lookup for {host} failed, try again"))
                request.finish()

        d.addCallbacks(resolved, failed)
        return NOT_DONE_YET

    def _connection(self, peer: str, host: str, link: Any) -> tuple[_PooledClient, _Outbound]:
        """
        An idle persistent HTTP/1.1 connection (a tunnel stream) on C{link},
        or a new one.
        """
        idle = self.idle.get(id(link))
        while idle:
            client = idle.pop()
            if not client.lost and not link.closed:
                return client, client.outbound
        stream: Stream = link.openStream({"kind": "http", "peer": peer, "host": host})
        self.gateway.metrics.streamsOpened += 1
        client = _PooledClient(self, link)
        inbound = _Inbound(client)
        side = _Side()
        side.transport = inbound  # type: ignore[assignment]
        outbound = _Outbound(stream, inbound)
        client.outbound = outbound
        client.makeConnection(outbound)  # type: ignore[arg-type]
        stream.attach(side)

        def reset(reason: str) -> None:
            inbound.abort(reason)

        stream.onReset = reset
        return client, outbound

    def release(self, client: _PooledClient) -> None:
        """
        A persistent connection finished its response: keep it for reuse.
        """
        idle = self.idle.setdefault(id(client.link), [])
        if len(idle) < self.maxIdle and not client.lost:
            client.outbound.resumeProducing()  # a paused visitor left no hold on the next one
            idle.append(client)
        else:
            client.outbound.loseConnection()

    def forget(self, client: _PooledClient) -> None:
        """
        A pooled connection was lost.
        """
        idle = self.idle.get(id(client.link))
        if idle is not None:
            if client in idle:
                idle.remove(client)
            if not idle:
                del self.idle[id(client.link)]

    def forward(
        self,
        link: Any,
        host: str,
        method: bytes,
        uri: bytes,
        headers: Headers,
        body: bytes | None,
        peer: str,
        authority: str | None = None,
    ) -> tuple[Deferred[Any], _Outbound]:
        """
        Send one request through C{link} on a pooled HTTP/1.1 stream; fire
        with the response (an L{twisted.web.iweb.IResponse}).  C{Host} is
        C{authority} (what the visitor asked for, port included), else
        C{host}; the forwarding headers are set (L{forwardingLines}).
        """
        client, outbound = self._connection(peer, host, link)
        clean = Headers()
        for name, values in headers.getAllRawHeaders():
            if name.lower() not in _HOP:
                clean.setRawHeaders(name, values)
        authority = authority or host
        ip = peer.rsplit(":", 1)[0]
        clean.setRawHeaders(b"host", [authority.encode("ascii", "replace")])
        clean.setRawHeaders(b"x-forwarded-proto", [b"https"])
        clean.setRawHeaders(b"x-forwarded-for", [ip.encode("ascii", "replace")])
        clean.setRawHeaders(b"forwarded", [forwardedValue(ip, authority)])
        producer = FileBodyProducer(BytesIO(body), cooperator=_Immediate()) if body else None
        return client.request(ClientRequest(method, uri, clean, producer, persistent=True)), outbound

    def _leanConnection(self, peer: str, host: str, link: Any) -> _LeanClient:
        """
        An idle persistent HTTP/1.1 exchange (a tunnel stream) on C{link}
        for the HTTP/2 front end, or a new one.
        """
        idle = self.leanIdle.get(id(link))
        while idle:
            client = idle.pop()
            if not client.lost and not link.closed:
                return client
        stream: Stream = link.openStream({"kind": "http", "peer": peer, "host": host})
        self.gateway.metrics.streamsOpened += 1
        client = _LeanClient(self, link, stream)
        side = _Side()
        side.transport = client  # type: ignore[assignment]
        stream.attach(side)
        stream.onReset = client.resetReceived
        return client

    def releaseLean(self, client: _LeanClient) -> None:
        """
        An HTTP/2 exchange finished its response: keep its stream for reuse.
        """
        idle = self.leanIdle.setdefault(id(client.link), [])
        if len(idle) < self.maxIdle and not client.lost:
            client.outbound.resumeProducing()  # a paused visitor left no hold on the next one
            idle.append(client)
        else:
            client.outbound.loseConnection()

    def forgetLean(self, client: _LeanClient) -> None:
        """
        An HTTP/2 exchange's stream ended.
        """
        idle = self.leanIdle.get(id(client.link))
        if idle is not None:
            if client in idle:
                idle.remove(client)
            if not idle:
                del self.leanIdle[id(client.link)]

    def _proxy(self, request: Request, host: str, link: Any) -> None:
        address = request.getClientAddress()
        ip = getattr(address, "host", "?")
        body = b""
        content = request.content
        if content is not None:
            content.seek(0)
            body = content.read()
        client = self._leanConnection(f"{ip}:{getattr(address, 'port', 0)}", host, link)
        client.host = host
        authority = (request.getHeader(b"host") or host.encode()).decode("ascii", "replace")
        client.send(request, requestBytes(request, authority, ip, body))
        outbound = client.outbound
        request.notifyFinish().addErrback(lambda f: outbound.loseConnection())


def requestBytes(request: Request, host: str, ip: str, body: bytes) -> bytes:
    """
    The HTTP/1.1 request a tunnel target sees for an HTTP/2 C{request}:
    hop-by-hop headers dropped, C{Host} set to C{host} (the visitor's
    C{:authority}, port included), the forwarding headers replaced
    (L{forwardingLines}), C{Content-Length} for a body.
    """
    out = [
        request.method,
        b" ",
        request.uri,
        b" HTTP/1.1\r\nHost: ",
        host.encode("ascii", "replace"),
        b"\r\n",
    ]
    for name, values in request.requestHeaders.getAllRawHeaders():
        if name.lower() in _SKIP:
            continue
        for value in values:  # Headers already replaced any CR/LF in values
            out += [name, b": ", value, b"\r\n"]
    out.append(forwardingLines(ip, host))
    if body:
        out += [b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body]
    else:
        out.append(b"\r\n")
    return b"".join(out)


_SKIP = _HOP | {b"content-length", b"host"} | FORWARDING_HEADERS
#: Body framing of a response being read (besides a byte count).
_CHUNKED = -1
_UNTIL_CLOSE = -2
#: Longest response head, or chunk-size/trailer line, accepted from a target.
_HEAD_LIMIT = 64 * 1024


class _BadResponse(Exception):
    """
    The target's response broke HTTP/1.1 framing.
    """


class _LeanClient(_NoFlowControl):
    """
    One persistent HTTP/1.1 connection over a tunnel stream, serving one
    HTTP/2 request at a time: it is the transport the stream writes the
    target's bytes to, and parses them into the visitor's request.

    The response is streamed: each body piece is written to the visitor as
    it arrives; the visitor's HTTP/2 flow control pauses the tunnel stream
    (L{_Outbound} is the request's producer), so nothing is buffered beyond
    one read.
    """

    def __init__(self, resource: TunnelResource, link: Any, stream: Stream) -> None:
        self.resource = resource
        self.link = link
        self.stream = stream
        self.outbound = _Outbound(stream, self)  # type: ignore[arg-type]
        self.lost = False
        self.request: Request | None = None
        self.method = b""
        self.head = True
        self.buffer = b""
        self.remaining = 0
        self.chunkState = 0  # 0: size line, 1: data, 2: CRLF after data, 3: trailers
        self.chunkLeft = 0
        self.persistent = True
        self.host = ""
        self.wasReset = False

    def send(self, request: Request, data: bytes) -> None:
        """
        Send one request; its response goes to C{request}.
        """
        self.request = request
        self.method = request.method
        self.head = True
        self.buffer = b""
        self.stream.send(data)

    # -- the stream writes the target's bytes here ------------------------------------
    def write(self, data: bytes) -> None:
        if self.lost:
            return
        try:
            if self.request is None:
                raise _BadResponse("bytes from the target with no request outstanding")
            if self.head:
                data = self._head(data)
                if self.head and self.request is not None:
                    return  # the head is not complete yet
            if self.request is not None:
                if data:
                    self._body(data)
            elif data:
                raise _BadResponse("bytes past the end of the response")
        except (_BadResponse, ValueError) as e:
            log.info(
                "HTTP/2 exchange on tunnel stream {sid} broke: {error}", sid=self.stream.sid, error=str(e)
            )
            self.outbound.loseConnection()

    def _head(self, data: bytes) -> bytes:
        buf = self.buffer + data if self.buffer else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _HEAD_LIMIT:
                    raise _BadResponse("response head too long")
                self.buffer = buf
                return b""
            lines = buf[:end].split(b"\r\n")
            buf = buf[end + 4 :]
            status = lines[0].split(b" ", 2)
            if len(status) < 2 or not status[0].startswith(b"HTTP/1."):
                raise _BadResponse("malformed status line")
            code = int(status[1])
            if 100 <= code < 200 and code != 101:
                continue  # an interim answer (100 Continue): the real one follows
            self.buffer = b""
            self._respond(code, status[2] if len(status) > 2 else b"", status[0], lines[1:])
            return buf

    def _respond(self, code: int, phrase: bytes, version: bytes, lines: list[bytes]) -> None:
        request = self.request
        assert request is not None
        headers = []
        length = -1
        chunked = False
        persistent = version != b"HTTP/1.0"
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep:
                raise _BadResponse("malformed header line")
            name = name.strip()
            value = value.strip()
            lower = name.lower()
            if lower in _HOP:
                if lower == b"transfer-encoding":
                    chunked = value.lower().endswith(b"chunked")
                elif lower == b"connection" and b"close" in value.lower():
                    persistent = False
                continue
            if lower == b"content-length":
                length = int(value)
                if length < 0:
                    raise _BadResponse("negative Content-Length")
            headers.append((name, value))
        if self.method == b"HEAD" or code in (204, 304):
            self.remaining = 0
        elif chunked:
            self.remaining = _CHUNKED
            self.chunkState = 0
        elif length >= 0:
            self.remaining = length
        else:
            self.remaining = _UNTIL_CLOSE
            persistent = False
        self.persistent = persistent
        self.head = False
        if not request._disconnected:
            request.setResponseCode(code, phrase)
            raw = request.responseHeaders
            for name, value in headers:
                raw.addRawHeader(name, value)
            altSvc = self.resource.altSvc
            servesH3 = getattr(self.resource.gateway, "servesH3", None)
            if altSvc and (servesH3 is None or servesH3(self.host)):
                raw.setRawHeaders(b"alt-svc", [altSvc])
            request.registerProducer(self.outbound, True)
        if self.remaining == 0:
            self._done()

    def _deliver(self, data: bytes) -> None:
        request = self.request
        if request is not None and not request._disconnected:
            request.write(data)

    def _body(self, data: bytes) -> None:
        remaining = self.remaining
        if remaining == _UNTIL_CLOSE:
            self._deliver(data)
        elif remaining == _CHUNKED:
            self._chunked(data)
        elif len(data) < remaining:
            self.remaining = remaining - len(data)
            self._deliver(data)
        else:
            if len(data) > remaining:
                self.persistent = False  # bytes past the response: do not reuse
                data = data[:remaining]
            self.remaining = 0
            self._deliver(data)
            self._done()

    def _chunked(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        self.buffer = b""
        pos = 0
        size = len(buf)
        while pos < size:
            state = self.chunkState
            if state == 1:
                take = min(self.chunkLeft, size - pos)
                self._deliver(buf[pos : pos + take])
                pos += take
                self.chunkLeft -= take
                if not self.chunkLeft:
                    self.chunkState = 2
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if size - pos > _HEAD_LIMIT:
                    raise _BadResponse("chunk line too long")
                self.buffer = buf[pos:]
                return
            line = buf[pos:eol]
            pos = eol + 2
            if state == 0:
                chunk = int(line.split(b";", 1)[0].strip(), 16)
                if chunk < 0:
                    raise _BadResponse("negative chunk size")
                self.chunkState = 1 if chunk else 3
                self.chunkLeft = chunk
            elif state == 2:
                if line:
                    raise _BadResponse("chunk data longer than its size")
                self.chunkState = 0
            elif not line:  # the empty line after the trailers: the response is complete
                if pos < size:
                    self.persistent = False
                self._done()
                return

    def _done(self) -> None:
        request, self.request = self.request, None
        self.head = True
        self.buffer = b""
        if request is not None and not request._disconnected:
            if request.producer is not None:
                request.unregisterProducer()
            request.finish()
        if self.persistent and not self.lost:
            self.resource.releaseLean(self)
        else:
            self.outbound.loseConnection()

    # -- the stream ended (CLOSE, RESET or our own close) --------------------------------
    def resetReceived(self, reason: str) -> None:
        """
        The peer reset the stream (e.g. the target could not be reached, or
        the client gave up on it): an answer already started is reset too.
        """
        self.wasReset = True
        self.loseConnection()

    def loseConnection(self) -> None:
        if self.lost:
            return
        self.lost = True
        self.resource.forgetLean(self)
        if not self.stream.closeSent:
            self.stream.sendClose()
        else:
            self.link.forget(self.stream.sid)
        request, self.request = self.request, None
        if request is None or request._disconnected:
            return
        if self.head:
            if not request.startedWriting:
                request.write(_page(request, 502, "the tunnel target did not answer"))
                request.finish()
            else:
                abortRequest(request)
        elif self.remaining == _UNTIL_CLOSE and not self.wasReset:
            if request.producer is not None:
                request.unregisterProducer()
            request.finish()
        else:
            abortRequest(request)


class _PooledClient(HTTP11ClientProtocol):
    """
    An HTTP/1.1 client connection over one tunnel stream, returned to its
    resource's pool after each response.
    """

    outbound: _Outbound

    def __init__(self, resource: TunnelResource, link: Any) -> None:
        super().__init__(quiescentCallback=resource.release)
        self.resource = resource
        self.link = link
        self.lost = False

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = True
        self.resource.forget(self)
        super().connectionLost(reason)


class _Immediate:
    """
    A cooperator that runs a body producer's work at once (bodies are
    already in memory).
    """

    def cooperate(self, iterator: Any) -> Any:
        from twisted.internet.defer import succeed

        for _ in iterator:
            pass

        class _Task:
            def whenDone(self) -> Any:
                return succeed(iterator)

            def pause(self) -> None:
                pass

            def resume(self) -> None:
                pass

            def stop(self) -> None:
                pass

        return _Task()


class BatchingH2Connection(H2Connection):
    """
    Twisted's HTTP/2 server connection, writing the frames of a reactor turn
    together instead of one at a time.

    Twisted's connection encodes and writes each response's HEADERS at
    once, then wakes its sending loop synchronously (a L{Deferred} per
    wake-up) for the DATA frame and again for the end of the stream, each
    written on its own, and sends one frame per reactor turn
    (C{callLater(0)} between frames).  Here:

      - response HEADERS are only encoded (C{h2} buffers them) and a DATA
        write or end of stream only queues and unblocks the stream; one
        C{callLater(0)} per turn runs the sending loop once for every
        stream that became ready in that turn;
      - the loop sends up to C{framesPerTurn} frames per run, a body's last
        DATA frame carries END_STREAM (no separate empty frame), and the
        encoded bytes go to the transport in one write (or every
        C{writeChunk} bytes, so the transport's back-pressure still acts
        within a run).

    Priority order, flow control and transport back-pressure are
    Twisted's: the loop stops when no stream can send, when the transport
    pauses us, or after C{framesPerTurn} frames.  What this relies on in
    Twisted (its loop's state, L{H2Connection.writeHeaders},
    C{writeDataToStream}, C{endRequest}) is fingerprinted by
    C{tests/test_twisted_private.py}.
    """

    framesPerTurn = 64
    writeChunk = 64 * 1024
    transport: Any = None
    _flushCall: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        # what Twisted's protocol switcher does for an upgraded channel
        self.transport.registerProducer(self, True)

    def abortRequest(self, streamID: int) -> None:
        """
        Reset stream C{streamID} with INTERNAL_ERROR: Twisted resets with
        NO_ERROR, which a client may take for the normal end of a response
        (curl does), so a response cut short would look complete.
        """
        from h2.errors import ErrorCodes

        self.conn.reset_stream(streamID, error_code=ErrorCodes.INTERNAL_ERROR)
        if self._tryToWriteControlData():
            self._requestDone(streamID)

    # -- what a stream's request calls: queue, and flush once per turn -----------------
    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any, streamID: int) -> None:
        headers.insert(0, (b":status", code))
        try:
            self.conn.send_headers(streamID, headers)
        except h2.exceptions.StreamClosedError:
            return  # the client closed the stream: as Twisted, drop quietly
        self._scheduleFlush()

    def writeDataToStream(self, streamID: int, data: bytes) -> None:
        self._outboundStreamQueues[streamID].append(data)
        if self.conn.local_flow_control_window(streamID) > 0:
            self.priority.unblock(streamID)
            self._scheduleFlush()
        if self.remainingOutboundWindow(streamID) <= 0:
            self.streams[streamID].flowControlBlocked()

    def endRequest(self, streamID: int) -> None:
        self._outboundStreamQueues[streamID].append(_END_STREAM_SENTINEL)
        self.priority.unblock(streamID)
        self._scheduleFlush()

    def _scheduleFlush(self) -> None:
        if self._flushCall is None:
            self._flushCall = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flushCall = None
        d = self._sendingDeferred
        if d is not None:  # the loop is waiting for data: run it now
            self._sendingDeferred = None
            d.callback(None)
        else:
            self._tryToWriteControlData()

    def connectionLost(self, reason: Any = None, _cancelTimeouts: bool = True) -> None:
        call, self._flushCall = self._flushCall, None
        if call is not None and call.active():
            call.cancel()
        super().connectionLost(reason, _cancelTimeouts)

    def _sendPrioritisedData(self, *args: Any) -> None:
        try:
            self._sendFrames()
        finally:
            self._tryToWriteControlData()

    def _sendFrames(self) -> None:
        pending = 0
        queues = self._outboundStreamQueues
        for _ in range(self.framesPerTurn):
            if not self._stillProducing:
                return
            stream = None
            while stream is None:
                try:
                    stream = next(self.priority)
                except priority.DeadlockError:
                    # every stream is blocked or idle: wait for data
                    assert self._sendingDeferred is None
                    self._sendingDeferred = Deferred()
                    self._sendingDeferred.addCallback(self._sendPrioritisedData)
                    return
            if self._consumerBlocked is not None:
                self._consumerBlocked.addCallback(self._sendPrioritisedData)
                return
            self.resetTimeout()
            queue = queues[stream]
            frameData = queue.popleft()
            if frameData is _END_STREAM_SENTINEL:
                self.conn.end_stream(stream)
                self._requestDone(stream)
                continue
            remainingWindow = self.conn.local_flow_control_window(stream)
            maxFrameSize = min(self.conn.max_outbound_frame_size, remainingWindow)
            if len(frameData) > maxFrameSize:
                queue.appendleft(frameData[maxFrameSize:])
                frameData = frameData[:maxFrameSize]
            last = bool(queue) and queue[0] is _END_STREAM_SENTINEL
            if last:
                queue.popleft()
                self.conn.send_data(stream, frameData, end_stream=True)
                self._requestDone(stream)
                pending += len(frameData)
            else:
                if frameData:
                    self.conn.send_data(stream, frameData)
                    pending += len(frameData)
                if not queue:
                    self.priority.block(stream)
                if self.remainingOutboundWindow(stream) <= 0:
                    self.streams[stream].flowControlBlocked()
            if pending >= self.writeChunk:
                pending = 0
                self._tryToWriteControlData()  # lets the transport pause us
        self._reactor.callLater(0, self._sendPrioritisedData)


def h2Channel(site: Site, addr: Any) -> BatchingH2Connection:
    """
    The HTTP/2 channel for a connection that negotiated C{h2}, set up as
    Twisted's protocol switcher sets up its own.
    """
    generic: Any = site.buildProtocol(addr)  # the site's reactor, timeout and request factory
    channel: Any = BatchingH2Connection(site.reactor)
    channel.requestFactory = site.requestFactory
    channel.site = site
    channel.factory = site
    channel.timeOut = generic.timeOut
    channel.callLater = generic.callLater
    return channel  # type: ignore[no-any-return]


def makeH2Site(gateway: Gateway, reactor: Any) -> Site:
    """
    The site that serves HTTP/2 visitors.
    """
    from suite.web.limits import LimitedSite

    site = LimitedSite(
        TunnelResource(gateway),
        maxBodyBytes=MAX_BODY,
        maxHeaderBytes=gateway.config.maxHeaderBytes,
        reactor=reactor,
    )
    site.displayTracebacks = False
    site.noisy = False
    return site
