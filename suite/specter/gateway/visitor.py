"""
Visitor connections: HTTP/1.1 (routed once per connection by its first
request's Host, then spliced) and raw TCP (routed by SNI).

Only the first request head is parsed, with a size limit (431 beyond it);
a Host the certificate presented on the connection does not cover is
answered 421 and the connection closed (L{suite.specter.gateway.certnames});
after routing the connection's bytes move to the tunnel stream (HTTP/1.1
request heads rewritten with the forwarding headers).  The connection is
bound to the first request's host: a later request naming another host
is never forwarded (L{suite.specter.gateway.forwarded.HostChanged}; 421
before anything was spliced, else the stream reset and the connection
aborted).  Each connection's state is its
L{suite.specter.gateway.visitormachine.VisitorMachine}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.specter.gateway.certnames import (
    MISDIRECTED,
    MISDIRECTED_HEADERS,
    misdirectedReason,
    presentedNames,
)
from suite.specter.gateway.forwarded import (
    HostChanged,
    RequestError,
    RequestRewriter,
    hostConflict,
    missingHost,
    normalHost,
    targetAuthority,
)
from suite.specter.gateway.visitormachine import (
    REPLAY_LIMIT,
    Request,
    VisitorInputs,
    logHostChanged,
    newVisitorMachine,
)
from suite.specter.tunnel.mux import LocalSide, closeTransport

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = ["HTTPVisitor", "TCPVisitor", "errorHeaders", "errorPage", "serverName", "REPLAY_LIMIT"]

log = Logger()

_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def errorHeaders(code: int) -> tuple[tuple[bytes, bytes], ...]:
    """
    The headers a gateway error answer with C{code} carries besides its
    content type and length, over every HTTP version (C{Cache-Control:
    no-store} on a 421: L{MISDIRECTED_HEADERS}).
    """
    return MISDIRECTED_HEADERS if code == MISDIRECTED else ()


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
    extra = b"".join(b"%s: %s\r\n" % (name.title(), value) for name, value in errorHeaders(code))
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    return head + extra + b"Connection: close\r\n\r\n" + body


def serverName(transport: Any) -> str | None:
    """
    The SNI name a TLS visitor sent, lower case, or L{None}.
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    try:
        name = getHandle().get_servername()
    except Exception:  # no SNI readable: routed by Host
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


class _Visitor(LocalSide):
    """
    Shared parts of the visitor kinds: the protocol feeds its events to a
    L{suite.specter.gateway.visitormachine.VisitorMachine} and carries out
    what the machine asks of a L{VisitorSide}.
    """

    kind = "http"
    #: Whether a stream that fails before answering may be tried again.
    retries = True
    #: Streaming's data path, given and taken back by the machine.
    forward: Callable[[bytes], None] | None = None

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.machine = newVisitorMachine(self, gateway)

    # -- VisitorSide ---------------------------------------------------------------------
    def peer(self) -> str:
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', 0)}"

    def headReceived(self, head: bytes, inputs: VisitorInputs) -> None:
        """
        This kind of visitor sends no head the gateway reads.
        """

    def rewrite(self, data: bytes) -> bytes:
        return data

    def beforeSplice(self) -> None:
        pass

    def fail(self, code: int, detail: str) -> None:
        """
        Answer with an error page (HTTP) or just close (TCP).
        """
        self.gateway.metrics.errors[code] = self.gateway.metrics.errors.get(code, 0) + 1
        if self.kind == "http":
            self.transport.write(errorPage(code, detail))
        closeTransport(self.transport)

    # -- events -------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        forward = self.forward
        if forward is not None:
            forward(data)
        else:
            self.machine.bytesReceived(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.machine.connectionLost()


class HTTPVisitor(_Visitor):
    """
    An HTTP/1.1 visitor: parse the first request head, route, then splice.
    """

    kind = "http"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        #: Rewrites every request head on its way to the target (the
        #: forwarding headers), following the request framing.
        self.rewriter: RequestRewriter | None = None

    def connectionMade(self) -> None:
        ip = str(getattr(self.transport.getPeer(), "host", "?"))
        self.rewriter = RequestRewriter(ip, self.gateway.config.maxHeaderBytes)
        self.machine.opened()

    def rewrite(self, data: bytes) -> bytes:
        assert self.rewriter is not None
        return self.rewriter.feed(data)

    def headReceived(self, head: bytes, inputs: VisitorInputs) -> None:
        limit = self.gateway.config.maxHeaderBytes
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > limit:
                inputs.rejected(431, f"request headers exceed {limit} bytes")
            return
        if end + 4 > limit:
            inputs.rejected(431, f"request headers exceed {limit} bytes")
            return
        parts = head[: head.find(b"\r\n")].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            inputs.rejected(400, "malformed request line")
            return
        lower = head[:end].lower()
        # RFC 9112 3.2: HTTP/1.1 needs a Host line, which must agree with an
        # absolute-form or CONNECT target (later heads meet these checks in
        # the rewriter)
        conflict = hostConflict(lower) or missingHost(lower)
        if conflict is not None:
            inputs.rejected(400, conflict)
            return
        host = _hostOf(head[:end])
        if not host:
            # HTTP/1.0 without Host: its absolute-form target's authority,
            # else the SNI
            target = targetAuthority(lower)
            host = normalHost(target).decode("ascii", "replace") if target else serverName(self.transport)
        if not host:
            inputs.rejected(400, "no Host header")
            return
        names = presentedNames(self.transport)
        if names is not None and not names.covers(host):
            # the connection is bound to this first Host: 421, then closed
            log.debug(
                "misdirected HTTP/1.1 request from {peer}: the certificate presented (SNI {sni}) "
                "does not cover {host}",
                peer=self.peer(),
                sni=serverName(self.transport),
                host=host,
            )
            inputs.rejected(MISDIRECTED, misdirectedReason(host))
            return
        if host in self.gateway.config.apexes:
            inputs.apexRequested([head])
            return
        assert self.rewriter is not None
        # later heads on this connection must name the same host
        self.rewriter.bound = normalHost(host.encode("ascii", "replace"))
        try:
            rewritten = self.rewrite(head)
        except HostChanged as e:
            # a pipelined request for another host came with the first:
            # nothing is forwarded yet, so the 421 can answer the first
            logHostChanged(self.peer(), str(e))
            inputs.rejected(MISDIRECTED, str(e))
            return
        except RequestError as e:
            inputs.framingBroken(str(e))
            return
        inputs.routeRequested(Request(host, parts[0] in (b"GET", b"HEAD", b"OPTIONS")), [rewritten])


class TCPVisitor(_Visitor):
    """
    A raw TCP visitor: routed by its SNI name, then spliced.
    """

    kind = "tcp"

    def connectionMade(self) -> None:
        host = serverName(self.transport)
        if not host:
            log.info("raw TCP visitor {peer} sent no SNI name", peer=self.peer())
            self.machine.rejected(400, "no SNI")
            return
        self.machine.routeRequested(Request(host), [])
