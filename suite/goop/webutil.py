"""
Small helpers shared by Goop2's HTTP surfaces.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = [
    "PageRoot",
    "finishRequest",
    "header",
    "clientIP",
    "jsonResponse",
    "readBody",
    "JSONErrorPage",
    "isLoopback",
]


def header(request: Request, name: str) -> str:
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


def clientIP(request: Request) -> str:
    """
    The client's address; when the direct peer is a loopback reverse proxy,
    the last address it appended to X-Forwarded-For (or X-Real-IP).
    """
    addr = request.getClientAddress()
    host = getattr(addr, "host", "") or "unix"
    if isLoopback(host):
        fwd = header(request, "x-forwarded-for")
        if fwd:
            last = fwd.split(",")[-1].strip()
            if last:
                return last[:64]
        real = header(request, "x-real-ip")
        if real:
            return real.strip()[:64]
    return str(host)


def jsonResponse(request: Request, code: int, body: Any) -> bytes:
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
    data = request.content.read(limit + 1)
    if len(data) > limit:
        return None
    return data


class JSONErrorPage(Resource):
    """A leaf answering every method with one JSON error."""

    isLeaf = True

    def __init__(self, code: int, reason: str) -> None:
        super().__init__()
        self.code = code
        self.reason = reason

    def render(self, request: Request) -> bytes:
        return jsonResponse(request, self.code, {"error": self.reason})


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

    def __init__(self, pagePath: str, missing: str = "no such resource") -> None:
        super().__init__()
        self.missing = missing
        with open(pagePath, "rb") as f:
            self.page = f.read()

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return JSONErrorPage(404, self.missing)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", self.CSP)
        return self.page
