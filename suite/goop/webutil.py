"""
Small helpers shared by Goop2's HTTP surfaces.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import secrets
from collections.abc import Sequence
from typing import Any

from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.error import UnsupportedMethod
from twisted.web.http import RESPONSES
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from suite.fileutil import writeAtomically
from suite.netutil import isIPAddress
from suite.web.limits import LimitedRequest, LimitedSite

__all__ = [
    "tcpServerEndpoint",
    "httpURL",
    "JSONErrorsSite",
    "PageRoot",
    "finishRequest",
    "header",
    "clientIP",
    "parseNetworks",
    "jsonResponse",
    "readBody",
    "JSONErrorPage",
    "isLoopback",
    "HostGuard",
    "loadSecret",
    "splitHost",
    "TOKEN_HEADER",
]


def header(request: IRequest, name: str) -> str:
    """One request header as text ("" when absent)."""
    value = request.getHeader(name.encode("ascii"))
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def isLoopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


Networks = Sequence["ipaddress.IPv4Network | ipaddress.IPv6Network"]


def parseNetworks(items: Sequence[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """C{["10.0.0.1", "192.168.0.0/16"]} → networks (C{ValueError} on a bad item)."""
    return tuple(ipaddress.ip_network(i, strict=False) for i in items)


def _inNetworks(address: str, networks: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in networks)


def clientIP(request: Request, trusted: Networks = ()) -> str:
    """
    The client's address.  Forwarding headers are believed only when the
    direct peer is one of the C{trusted} proxies (none by default): then the
    right-most C{X-Forwarded-For} address that is not itself a trusted proxy
    (or C{X-Real-IP} when there is no C{X-Forwarded-For}).
    """
    addr = request.getClientAddress()
    host = str(getattr(addr, "host", "") or "unix")
    if not trusted or not _inNetworks(host, trusted):
        return host
    fwd = [
        a.strip()
        for h in request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])
        for a in h.decode("latin-1").split(",")
    ]
    for a in reversed([a for a in fwd if a]):
        if not _inNetworks(a, trusted):
            return a[:64]
    real = header(request, "x-real-ip").strip()
    if real and not fwd:
        return real[:64]
    return fwd[0][:64] if fwd and fwd[0] else host


def jsonResponse(request: IRequest, code: int, body: Any) -> bytes:
    """Set the status and content type; return the JSON body."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def readBody(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than C{limit}."""
    length = header(request, "content-length")
    if length and (not length.isdigit() or int(length) > limit):
        return None
    assert request.content is not None
    request.content.seek(0)
    data: bytes = request.content.read(limit + 1)
    if len(data) > limit:
        return None
    return data


@implementer(IResource)
class _JSONErrors:
    """
    Render C{inner}, answering in JSON where Twisted would answer HTML: an
    unsupported method (405 with C{Allow}) and any error page a resource
    returns (Twisted's C{NoResource} of a resource without C{getChild}, ...).
    A leaf resource is found for any path below it; unless it says it reads
    those sub-paths (C{takesSubpaths = True}), they are a JSON 404.
    """

    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        self.inner = inner

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        child: IResource = self.inner.getChildWithDefault(name, request)
        return child

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError("a rendering wrapper has no children")

    def render(self, request: IRequest) -> Any:
        postpath = getattr(request, "postpath", None) or ()
        if (
            getattr(self.inner, "isLeaf", False)
            and not getattr(self.inner, "takesSubpaths", False)
            and any(postpath)
        ):
            # /peers.json/x, /self/x ...: a leaf that does not read the rest
            # of the path would answer it as itself
            return jsonResponse(request, 404, {"error": "no such resource"})
        try:
            body = self.inner.render(request)
        except UnsupportedMethod as e:
            allowed: list[bytes] = list(e.allowedMethods or ())
            if request.method == b"HEAD" and b"GET" in allowed:
                raise  # Twisted answers HEAD with the GET's headers
            request.setHeader(b"allow", b", ".join(allowed))
            method = request.method.decode("ascii", "replace")[:16]
            return jsonResponse(
                request,
                405,
                {"error": f"method {method} not allowed", "allowed": [m.decode() for m in allowed]},
            )
        code = getattr(request, "code", 200)
        if isinstance(body, bytes) and code >= 400:
            kind = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0]
            if not kind.startswith(b"application/json"):
                reason = RESPONSES.get(code, b"error").decode("ascii", "replace").lower()
                return jsonResponse(request, code, {"error": reason})
        return body


class JSONErrorsRequest(LimitedRequest):
    """A request of a L{JSONErrorsSite}: its errors are JSON whatever renders them."""

    def render(self, resrc: IResource) -> None:
        super().render(_JSONErrors(resrc))


class JSONErrorsSite(LimitedSite):
    """
    The L{LimitedSite} of every Goop2 surface (hub, viewer, manager): every
    error answer is JSON (C{{"error": reason}}), including those of
    resources that never chose one.
    """

    requestFactory = JSONErrorsRequest


class JSONErrorPage(Resource):
    """A leaf answering every method with one JSON error."""

    isLeaf = True
    takesSubpaths = True  # its own error, whatever follows

    def __init__(self, code: int, reason: str) -> None:
        super().__init__()
        self.code = code
        self.reason = reason

    def render(self, request: Request) -> bytes:
        return jsonResponse(request, self.code, {"error": self.reason})


class JSONDirectory(Resource):
    """
    A path segment (such as C{/api}) whose unknown children, and itself,
    answer a JSON 404 rather than Twisted's HTML page.
    """

    def getChild(self, path: bytes, request: Request) -> Resource:
        return JSONErrorPage(404, "no such API path")

    def render(self, request: Request) -> bytes:
        return jsonResponse(request, 404, {"error": "no such API path"})


class MountedAt(Resource):
    """
    A site root serving C{inner} under C{basePath} (C{"/a/b"}): C{/a/b}
    redirects to C{/a/b/} (so the page's relative links resolve under the
    prefix), C{/a/b/...} is C{inner}, anything else a JSON 404.
    """

    def __init__(self, basePath: str, inner: Resource) -> None:
        super().__init__()
        self.segments = [seg.encode() for seg in basePath.strip("/").split("/")]
        self.inner = inner

    def getChild(self, path: bytes, request: Request) -> Resource:
        rest = self.segments[1:]
        postpath, prepath = request.postpath, request.prepath
        assert postpath is not None and prepath is not None  # set by the site before traversal
        if path != self.segments[0] or postpath[: len(rest)] != rest:
            return JSONErrorPage(404, "no such resource")
        for _ in rest:
            prepath.append(postpath.pop(0))
        if not postpath:
            return _SlashRedirect()
        return self.inner

    def render(self, request: Request) -> bytes:
        return jsonResponse(request, 404, {"error": "no such resource"})


class _SlashRedirect(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        path: bytes = request.path
        request.redirect(path + b"/")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b""


def finishRequest(request: Request, body: bytes) -> None:
    """Write C{body} and finish, unless the client has gone away meanwhile."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.write(body)
    request.finish()


class PageRoot(Resource):
    """
    A site root that serves one self-contained HTML page at C{/} (inline
    script and style only, under a content security policy) and a JSON 404
    for any unknown child; the pages' APIs are added with C{putChild}.
    """

    CSP = b"default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"

    def __init__(self, pagePath: str, missing: str = "no such resource", token: str = "") -> None:
        super().__init__()
        self.missing = missing
        with open(pagePath, "rb") as f:
            self.page = f.read()
        if token:
            meta = b"<meta name=goop-token content='" + html.escape(token).encode() + b"'>"
            self.page = self.page.replace(b"<head>", b"<head>" + meta, 1)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return JSONErrorPage(404, self.missing)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", self.CSP)
        return self.page


TOKEN_HEADER = "x-goop-token"
SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")


def loadSecret(path: str) -> str:
    """
    The per-install secret kept in C{path} (created 0600 on first use), which
    pages of a local surface carry and its state-changing requests must send.
    """
    try:
        with open(path, encoding="ascii") as f:
            value = f.read().strip()
        if len(value) >= 32:
            return value
    except (OSError, UnicodeDecodeError):
        pass
    value = secrets.token_urlsafe(32)
    writeAtomically(path, (value + "\n").encode("ascii"))
    return value


def splitHost(value: str) -> tuple[str, int | None]:
    """C{Host} header → (lower-case name or literal without brackets, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return "", None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return "", None
        return name, int(rest[1:]) if rest else None
    name, sep, port = value.rpartition(":")
    if not sep:
        return value, None
    if not port.isdigit() or ":" in name:
        return "", None
    return name, int(port)


class HostGuard(Resource):
    """
    The root of a local web surface (viewer, manager) that refuses DNS
    rebinding: every request on every path must name in C{Host} the address
    the surface listens on, a loopback literal or C{localhost} (on the
    listening port), or one of the names configured explicitly; others get
    421.  When listening on a wildcard address any IP literal is accepted
    (a rebinding page always sends its own name).  Requests other than
    GET/HEAD/OPTIONS must also carry the per-install secret in
    C{X-Goop-Token} (the pages embed it); without it they get 403.
    """

    def __init__(self, inner: Resource, bindHost: str, secret: str, names: Sequence[str] = ()) -> None:
        super().__init__()
        self.inner = inner
        self.bindHost = bindHost.strip("[]").lower()
        self.secret = secret
        self.names = {n.strip().lower().rstrip(".") for n in names if n.strip()}
        self.port = 0

    def refusal(self, request: Request) -> tuple[int, str] | None:
        """Why C{request} is refused (status, reason), or None."""
        name, port = splitHost(header(request, "host"))
        if not name:
            return 421, "a Host header naming this server is required"
        name = name.rstrip(".")
        if (port if port is not None else 80) != self.port:
            return 421, "the Host header does not name this server's port"
        wildcard = self.bindHost in ("0.0.0.0", "::", "")
        literal = isIPAddress(name)
        if not (
            name in self.names
            or name == "localhost"
            or (literal and (isLoopback(name) or wildcard or name == self.bindHost))
        ):
            return 421, "the Host header does not name this server (DNS rebinding is refused)"
        if request.method not in SAFE_METHODS:
            token = header(request, TOKEN_HEADER)
            if not token or not hmac.compare_digest(token.encode(), self.secret.encode()):
                return 403, f"state-changing requests need this install's {TOKEN_HEADER} header"
        return None

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        refused = self.refusal(request)
        if refused is not None:
            return JSONErrorPage(*refused)
        child: Resource = self.inner.getChildWithDefault(path, request)
        return child

    def render(self, request: Request) -> bytes:
        refused = self.refusal(request)
        if refused is not None:
            return jsonResponse(request, refused[0], {"error": refused[1]})
        result: bytes = self.inner.render(request)
        return result


def tcpServerEndpoint(reactor: Any, host: str, port: int) -> IStreamServerEndpoint:
    """
    A TCP listening endpoint on C{host} (an IPv4 or IPv6 literal, or
    C{localhost}) and C{port}: built directly, since an IPv6 literal in an
    endpoint string would need its colons escaped.
    """
    if ":" in host:
        return TCP6ServerEndpoint(reactor, port, interface=host)
    return TCP4ServerEndpoint(reactor, port, interface=host)


def httpURL(host: str, port: int) -> str:
    """C{http://host:port} with an IPv6 literal in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
