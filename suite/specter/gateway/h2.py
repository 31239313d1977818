"""
HTTP/2 visitors: Twisted's H2 server terminates HTTP/2; each request opens
a tunnel stream and is replayed as one HTTP/1.1 request (Twisted's
HTTP/1.1 client protocol running over the stream), whose response is
streamed back with back-pressure both ways.
"""

from __future__ import annotations

from io import BytesIO
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web._newclient import Request as ClientRequest
from twisted.web.client import FileBodyProducer
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from suite.specter.tunnel.mux import LocalSide, Stream

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = ["TunnelResource", "makeH2Site"]

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


class _Inbound:
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

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


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
            self.request.finish()


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

    maxIdle = 32

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway
        self.idle: dict[int, list[_PooledClient]] = {}
        self.altSvc: bytes | None = None

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
            inbound.loseConnection()

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
        self, link: Any, host: str, method: bytes, uri: bytes, headers: Headers, body: bytes | None, peer: str
    ) -> tuple[Deferred[Any], _Outbound]:
        """
        Send one request through C{link} on a pooled HTTP/1.1 stream; fire
        with the response (an L{twisted.web.iweb.IResponse}).
        """
        client, outbound = self._connection(peer, host, link)
        clean = Headers()
        for name, values in headers.getAllRawHeaders():
            if name.lower() not in _HOP:
                clean.setRawHeaders(name, values)
        clean.setRawHeaders(b"host", [host.encode()])
        clean.setRawHeaders(b"x-forwarded-proto", [b"https"])
        clean.setRawHeaders(b"x-forwarded-for", [peer.rsplit(":", 1)[0].encode()])
        producer = FileBodyProducer(BytesIO(body), cooperator=_Immediate()) if body else None
        return client.request(ClientRequest(method, uri, clean, producer, persistent=True)), outbound

    def _proxy(self, request: Request, host: str, link: Any) -> None:
        address = request.getClientAddress()
        peer = f"{getattr(address, 'host', '?')}:{getattr(address, 'port', 0)}"
        body = None
        content = request.content
        if content is not None:
            content.seek(0)
            body = content.read() or None
        d, outbound = self.forward(
            link, host, request.method, request.uri, request.requestHeaders, body, peer
        )

        def respond(response: Any) -> None:
            if request._disconnected:
                return
            request.setResponseCode(response.code, response.phrase)
            for name, values in response.headers.getAllRawHeaders():
                if name.lower() not in _HOP:
                    request.responseHeaders.setRawHeaders(name, values)
            if self.altSvc:
                request.responseHeaders.setRawHeaders(b"alt-svc", [self.altSvc])
            request.registerProducer(outbound, True)
            response.deliverBody(_Body(request))

        def failed(f: Failure) -> None:
            if not request._disconnected and not request.startedWriting:
                request.write(_page(request, 502, "the tunnel target did not answer"))
                request.finish()
            elif not request._disconnected:
                request.loseConnection()

        d.addCallbacks(respond, failed)
        request.notifyFinish().addErrback(lambda f: outbound.loseConnection())


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
