"""
The plain HTTP listener (C{--listen-http}): C{CONNECT HOST:PORT} to a
tunnel (then raw bytes both ways) and a redirect to HTTPS for everything
else.  It serves no tunnel content and no internal endpoint.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Factory

from suite.specter.gateway.forwarded import hostConflict
from suite.specter.gateway.visitor import _hostOf, _Visitor, errorPage
from suite.specter.gateway.visitormachine import Request, VisitorInputs
from suite.specter.tunnel.mux import closeTransport

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = ["PlainHTTPVisitor", "PlainHTTPFactory"]


def redirect(location: str) -> bytes:
    """
    A 308 response to C{location} that closes the connection.
    """
    safe = html.escape(location, quote=True)
    body = f'<!doctype html><html><body><a href="{safe}">{safe}</a></body></html>\n'.encode()
    return (
        f"HTTP/1.1 308 Permanent Redirect\r\nLocation: {location}\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class PlainHTTPVisitor(_Visitor):
    """
    One connection on the HTTP listener.
    """

    kind = "tcp"
    retries = False  # CONNECT streams are not retried

    def __init__(self, gateway: Gateway, httpsPort: int) -> None:
        super().__init__(gateway)
        self.httpsPort = httpsPort

    def connectionMade(self) -> None:
        self.machine.opened()

    def headReceived(self, head: bytes, inputs: VisitorInputs) -> None:
        limit = self.gateway.config.maxHeaderBytes
        end = head.find(b"\r\n\r\n")
        if end < 0 or end + 4 > limit:
            if len(head) > limit or end >= 0:
                inputs.answered(errorPage(431, f"request headers exceed {limit} bytes"))
            return
        line = head[: head.find(b"\r\n")].decode("ascii", "replace")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            inputs.answered(errorPage(400, "malformed request line"))
            return
        method, target, _ = parts
        head, rest = head[:end], head[end + 4 :]
        conflict = hostConflict(head.lower())
        if conflict is not None:  # two Hosts, or one naming another host than the target
            inputs.answered(errorPage(400, conflict))
            return
        if method == "CONNECT":
            host = _connectHost(target)
            if host is None:
                inputs.answered(errorPage(400, "CONNECT needs HOST:PORT (a port from 1 to 65535)"))
                return
            if not self.gateway.isPublicName(host):
                inputs.answered(errorPage(404, f"{host} is not served here"))
                return
            inputs.routeRequested(Request(host), [rest] if rest else [])
            return
        named = _hostOf(head)
        path = target if target.startswith("/") else "/"
        absolute = _absoluteForm(target)
        if absolute is not None:
            named, path = absolute
        if not named or not self.gateway.isPublicName(named):
            inputs.answered(errorPage(404, f"{named or 'no host'} is not served here"))
            return
        port = "" if self.httpsPort == 443 else f":{self.httpsPort}"
        inputs.answered(redirect(f"https://{named}{port}{path}"))

    def beforeSplice(self) -> None:
        self.transport.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")

    def fail(self, code: int, detail: str) -> None:
        self.transport.write(errorPage(code, detail))
        closeTransport(self.transport)


def _connectHost(target: str) -> str | None:
    """
    The host of a CONNECT target C{HOST:PORT} (C{[V6]:PORT}), lower-cased;
    None when the target has no valid port.
    """
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]").lower()


def _absoluteForm(target: str) -> tuple[str, str] | None:
    """
    The host and path of an absolute-form target (C{http://HOST[:PORT]/PATH?Q}),
    or None for any other form.
    """
    from urllib.parse import urlsplit

    if not target.lower().startswith(("http://", "https://")):
        return None
    try:
        parts = urlsplit(target)
        host = parts.hostname
    except ValueError:
        return None
    if not host:
        return None
    path = parts.path or "/"
    return host.lower(), path + (f"?{parts.query}" if parts.query else "")


class PlainHTTPFactory(Factory):
    """
    Builds L{PlainHTTPVisitor}s.
    """

    noisy = False

    def __init__(self, gateway: Gateway, httpsPort: int) -> None:
        self.gateway = gateway
        self.httpsPort = httpsPort

    def buildProtocol(self, addr: Any) -> PlainHTTPVisitor:
        proto = PlainHTTPVisitor(self.gateway, self.httpsPort)
        proto.factory = self
        return proto
