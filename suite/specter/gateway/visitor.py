"""
Visitor connections: HTTP/1.1 (routed once per connection by its first
request's Host, then spliced) and raw TCP (routed by SNI).

Only the first request head is parsed, with a size limit (431 beyond it);
after routing the connection's bytes move to the tunnel stream untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.specter.gateway.forwarded import RequestError, RequestRewriter
from suite.specter.tunnel.mux import LocalSide, Stream, abortTransport, closeTransport

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = ["HTTPVisitor", "TCPVisitor", "errorPage", "serverName", "REPLAY_LIMIT"]

log = Logger()
#: Bytes kept for a retry of a stream that fails before answering.
REPLAY_LIMIT = 64 * 1024

_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def errorPage(code: int, detail: str) -> bytes:
    """
    A complete HTTP/1.1 error response that closes the connection.
    """
    reason = _REASONS.get(code, "Error")
    safe = detail.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body = (
        f"<!doctype html><html><head><title>{code} {reason}</title></head>"
        f"<body><h1>{code} {reason}</h1><p>{safe}</p><hr><p>specter gateway</p></body></html>\n"
    ).encode()
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


def serverName(transport: Any) -> str | None:
    """
    The SNI name a TLS visitor sent, lower case, or L{None}.
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    try:
        name = getHandle().get_servername()
    except Exception:
        return None
    return name.decode("ascii", "replace").lower() if name else None


def _hostOf(head: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip().decode("ascii", "replace").lower()
            if host.startswith("["):
                return host[: host.find("]") + 1]
            return host.rsplit(":", 1)[0] if ":" in host else host
    return None


class _FirstHeadInjector:
    """
    Stands in for a visitor's transport until the first response head has
    passed, adding one header line to it (C{Alt-Svc}), then steps aside so
    later bytes go straight to the transport.
    """

    def __init__(self, stream: Stream, transport: Any, line: bytes, limit: int = 64 * 1024) -> None:
        self.stream = stream
        self.transport = transport
        self.line = line
        self.limit = limit
        self.buffer = b""

    def write(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 and len(self.buffer) <= self.limit:
            return
        out = self.buffer
        if end >= 0 and out.startswith(b"HTTP/1."):
            out = out[: end + 2] + self.line + out[end + 2 :]
        self.buffer = b""
        self.stream.localTransport = self.transport
        self.transport.write(out)

    def loseConnection(self) -> None:
        if self.buffer:
            self.transport.write(self.buffer)
            self.buffer = b""
        self.stream.localTransport = self.transport
        self.transport.loseConnection()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _Visitor(LocalSide):
    """
    Shared parts of the two visitor kinds.
    """

    kind = "http"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.early: list[bytes] = []
        self.done = False
        self.timer: Any = None
        #: What was sent down the stream before any answer came back, so a
        #: stream that fails at once can be tried again (None: too late).
        self.replay: list[bytes] | None = []
        self.replaySize = 0
        self.retried = False
        self.idempotent = False

    def startHeadTimer(self) -> None:
        """
        Close the connection if no request head arrives in time.
        """
        self.timer = self.gateway.clock.callLater(self.gateway.config.headTimeout, self._headTimedOut)

    def stopHeadTimer(self) -> None:
        """
        The head arrived (or the connection ended).
        """
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _headTimedOut(self) -> None:
        self.timer = None
        if self.stream is None and not self.done:
            self.done = True
            self.transport.abortConnection()

    def _peer(self) -> str:
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', 0)}"

    def route(self, hostname: str) -> None:
        """
        Find the link for C{hostname} and splice, or answer with an error.
        """
        self.hostname = hostname
        self.stopHeadTimer()
        link = self.gateway.registry.pick(hostname)
        if link is not None:
            self._splice(link)
            return
        self.transport.pauseProducing()
        d = self.gateway.resolve(hostname)
        d.addCallbacks(self._resolved, self._resolveFailed)

    def _resolved(self, link: Any) -> None:
        if self.done:
            return
        self.transport.resumeProducing()
        if link is None:
            self.fail(404, f"no tunnel is serving {self.hostname}")
        elif isinstance(link, str):
            self.fail(502, link)
        else:
            self._splice(link)

    def _resolveFailed(self, failure: Failure) -> None:
        log.warn(
            "route lookup for {host} failed: {error}", host=self.hostname, error=failure.getErrorMessage()
        )
        if not self.done:
            self.transport.resumeProducing()
            self.fail(502, f"route lookup for {self.hostname} failed, try again")

    def _splice(self, link: Any) -> None:
        stream: Stream = link.openStream({"kind": self.kind, "peer": self._peer(), "host": self.hostname})
        stream.onReset = self._reset
        stream.attach(self)
        altSvc = self.gateway.altSvcFor(self.hostname)
        if altSvc is not None and self.kind == "http" and not self.retried:
            stream.localTransport = _FirstHeadInjector(
                stream, self.transport, b"Alt-Svc: " + altSvc + b"\r\n"
            )
        early, self.early = self.early, []
        for chunk in early:
            self.remember(chunk)
            stream.send(chunk)
        self.gateway.metrics.streamsOpened += 1

    def remember(self, data: bytes) -> None:
        """
        Keep C{data} for a retry while nothing has come back (bounded).
        """
        replay = self.replay
        if replay is None:
            return
        stream = self.stream
        self.replaySize += len(data)
        if (stream is not None and stream.bytesIn) or self.replaySize > REPLAY_LIMIT:
            self.replay = None
        else:
            replay.append(data)

    def _retryable(self, reason: str) -> bool:
        stream = self.stream
        if self.retried or self.replay is None or stream is None or stream.bytesIn:
            return False
        # the target surely saw nothing, or the request may safely be repeated
        return reason.startswith(("no tunnel link", "cannot connect")) or self.idempotent

    def _reset(self, reason: str) -> None:
        if self._retryable(reason):
            assert self.replay is not None
            stream = self.stream
            self.retried = True
            self.stream = None
            try:
                self.transport.unregisterProducer()
            except RuntimeError:
                pass
            if stream is not None and stream.sourcePaused:
                self.transport.resumeProducing()
            self.early, self.replay, self.replaySize = self.replay, [], 0
            self.gateway.cache.invalidate(self.hostname)
            log.info("retrying {host} on another link: {reason}", host=self.hostname, reason=reason)
            self.route(self.hostname)
            return
        if self.stream is not None and self.stream.bytesIn == 0 and self.kind == "http":
            self.fail(502, f"the tunnel could not reach its target: {reason}")
        else:
            # an answer cut short must not look complete: abort (no TLS
            # close_notify, TCP reset) rather than close cleanly
            self.done = True
            abortTransport(self.transport)

    def fail(self, code: int, detail: str) -> None:
        """
        Answer with an error page (HTTP) or just close (TCP).
        """
        self.done = True
        self.stopHeadTimer()
        self.gateway.metrics.errors[code] = self.gateway.metrics.errors.get(code, 0) + 1
        if self.kind == "http":
            self.transport.write(errorPage(code, detail))
        closeTransport(self.transport)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.done = True
        self.stopHeadTimer()
        if self.stream is not None:
            self.stream.localLost()
            self.stream = None


class HTTPVisitor(_Visitor):
    """
    An HTTP/1.1 visitor: parse the first request head, route, then splice.
    """

    kind = "http"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self.head = b""
        self.routing = False
        #: Rewrites every request head on its way to the target (the
        #: forwarding headers), following the request framing.
        self.rewriter: RequestRewriter | None = None

    def _rewrite(self, data: bytes) -> bytes | None:
        """
        C{data} with its request heads rewritten, or L{None} when the
        visitor broke HTTP/1.1 framing (the connection is then closed).
        """
        assert self.rewriter is not None
        try:
            return self.rewriter.feed(data)
        except RequestError as e:
            log.info("HTTP/1.1 visitor {peer}: {error}", peer=self._peer(), error=str(e))
            stream = self.stream
            if stream is None:
                self.fail(400, str(e))
            else:
                stream.reset(f"the visitor broke HTTP/1.1 framing: {e}")
                self.done = True
                self.transport.abortConnection()
            return None

    def connectionMade(self) -> None:
        self.startHeadTimer()

    def dataReceived(self, data: bytes) -> None:
        stream = self.stream
        if stream is not None:
            if self.rewriter is not None:
                rewritten = self._rewrite(data)
                if rewritten is None:
                    return
                data = rewritten
            if self.replay is not None:
                self.remember(data)
            stream.send(data)
            return
        if self.done:
            return
        if self.routing:
            if self.rewriter is not None:
                rewritten = self._rewrite(data)
                if rewritten is None:
                    return
                data = rewritten
            self.early.append(data)
            return
        self.head += data
        limit = self.gateway.config.maxHeaderBytes
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > limit:
                self.fail(431, f"request headers exceed {limit} bytes")
            return
        if end + 4 > limit:
            self.fail(431, f"request headers exceed {limit} bytes")
            return
        line = self.head[: self.head.find(b"\r\n")]
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.fail(400, "malformed request line")
            return
        host = _hostOf(self.head[:end]) or serverName(self.transport)
        if not host:
            self.fail(400, "no Host header")
            return
        self.routing = True
        self.idempotent = parts[0] in (b"GET", b"HEAD", b"OPTIONS")
        head, self.head = self.head, b""
        if host in self.gateway.config.apexes:
            self.early.append(head)
            self.serveApex()
            return
        ip = str(getattr(self.transport.getPeer(), "host", "?"))
        self.rewriter = RequestRewriter(ip, limit)
        rewritten = self._rewrite(head)
        if rewritten is None:
            return
        self.early.append(rewritten)
        self.route(host)

    def serveApex(self) -> None:
        """
        A request for an apex itself: hand the connection to the apex site
        (C{/_internal} when credentials are configured, 404 otherwise).
        """
        self.stopHeadTimer()
        site = self.gateway.apexSite
        if site is None:
            self.fail(404, "nothing is served on the apex here")
            return
        self.done = True
        proto = site.buildProtocol(self.transport.getPeer())
        self.transport.wrappedProtocol = proto
        proto.makeConnection(self.transport)
        early, self.early = self.early, []
        for chunk in early:
            proto.dataReceived(chunk)


class TCPVisitor(_Visitor):
    """
    A raw TCP visitor: routed by its SNI name, then spliced.
    """

    kind = "tcp"

    def connectionMade(self) -> None:
        host = serverName(self.transport)
        if not host:
            log.info("raw TCP visitor {peer} sent no SNI name", peer=self._peer())
            self.fail(400, "no SNI")
            return
        self.route(host)

    def dataReceived(self, data: bytes) -> None:
        stream = self.stream
        if stream is not None:
            if self.replay is not None:
                self.remember(data)
            stream.send(data)
        elif not self.done:
            self.early.append(data)
