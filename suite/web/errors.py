"""
JSON error bodies for every HTTP surface of the suite.

Errors are C{{"error": reason, ...}} with C{Content-Type: application/json};
the reason is one line meant for the operator, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.error import UnsupportedMethod
from twisted.web.http import RESPONSES
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

__all__ = [
    "jsonError",
    "jsonResponse",
    "JSONNoResource",
    "JSONErrorResource",
    "JSONMethodsMixin",
    "ExactPathMixin",
    "notFound",
]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False, default=str).encode("utf-8") + b"\n"


#: Reason phrases missing from L{twisted.web.http.RESPONSES}.
_PHRASES = {
    413: b"Content Too Large",
    422: b"Unprocessable Content",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
}


def jsonResponse(request: IRequest, body: Any, code: int = 200) -> bytes:
    """
    Set C{code} and a JSON content type on C{request}; return C{body} encoded
    as JSON (to be returned from a C{render_*} method or written).
    """
    phrase = _PHRASES.get(code)
    if phrase is not None and code not in RESPONSES:
        request.setResponseCode(code, phrase)
    else:
        request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return _dumps(body)


def jsonError(request: IRequest, code: int, reason: str, **extra: Any) -> bytes:
    """
    Set status C{code} on C{request} and return the JSON body
    C{{"error": reason, **extra}}.
    """
    body: dict[str, Any] = {"error": " ".join(str(reason).split()) or "error"}
    for key, value in extra.items():
        if key != "error":
            body[key] = value
    return jsonResponse(request, body, code)


class JSONMethodsMixin(Resource):
    """
    A L{Resource} base (listed first when there are others) under which an
    unsupported method gets a JSON C{405} with an C{Allow} header instead of
    Twisted's HTML page.
    """

    def render(self, request: IRequest) -> Any:
        try:
            return super().render(request)
        except UnsupportedMethod as e:
            methods: list[bytes] = list(e.allowedMethods or ())
            allowed = [m.decode("ascii", "replace") for m in methods]
            request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
            method = (getattr(request, "method", b"") or b"").decode("ascii", "replace")[:16]
            return jsonError(request, 405, f"method {method} not allowed", allowed=allowed)


class ExactPathMixin(Resource):
    """
    A leaf L{Resource} base (listed before L{JSONMethodsMixin}) answering
    only its own path: Twisted hands a leaf every path below it
    (C{/healthz/x}), which here is a JSON C{404} naming the path.  A trailing
    slash (C{/healthz/}) is the resource itself.
    """

    def render(self, request: IRequest) -> Any:
        if any(getattr(request, "postpath", None) or ()):
            return notFound(request, "no such resource")
        return super().render(request)


class JSONErrorResource(Resource):
    """
    A leaf resource answering every method with one fixed JSON error.
    """

    isLeaf = True

    def __init__(self, code: int, reason: str, **extra: Any) -> None:
        super().__init__()
        self.code = code
        self.reason = reason
        self.extra = extra

    def render(self, request: IRequest) -> bytes:
        return jsonError(request, self.code, self.reason, **self.extra)


class JSONNoResource(JSONErrorResource):
    """
    A JSON C{404}: use it as the C{getChild} fallback of API resources.
    """

    def __init__(self, reason: str = "not found") -> None:
        super().__init__(404, reason)


def notFound(request: IRequest, reason: str = "not found") -> bytes:
    """
    Answer C{request} with a JSON 404 naming the path that was not found.
    """
    path = getattr(request, "path", b"") or b""
    return jsonError(request, 404, reason, path=path.decode("utf-8", "replace"))
