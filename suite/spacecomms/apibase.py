"""
Shared pieces of the REST API resources: JSON method dispatch, errors and
request helpers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from suite.cred.web import principalOf
from suite.spacecomms.cdm.sample import isoTime
from suite.spacecomms.logsetup import debugEnabled
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.store import StoreWriteError
from suite.web.errors import jsonError, jsonResponse
from suite.web.limits import LimitedSite

__all__ = [
    "APIError",
    "APISite",
    "Base",
    "NotFound",
    "arg",
    "body",
    "jsonBody",
    "iso",
    "log",
    "MAX_LIMIT",
    "ID",
]

log = Logger(namespace="spacecomms.api")
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_LIMIT = 10000


class APIError(Exception):
    def __init__(self, code: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.extra = extra


def iso(seconds: float | None) -> str | None:
    return None if seconds is None else isoTime(seconds) + "Z"


def arg(request: IRequest, name: str) -> str | None:
    values: list[bytes] | None = (request.args or {}).get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise APIError(400, f"query parameter {name}: not UTF-8")


def body(request: IRequest) -> bytes:
    content = request.content
    return content.read() if content is not None else b""


def _noConstant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def jsonBody(request: IRequest) -> Any:
    """
    The request body as JSON; NaN, Infinity and numbers out of the float
    range (which Python's parser would accept) are refused.
    """
    raw = body(request)
    try:
        return json.loads(raw, parse_constant=_noConstant, parse_float=_finite)
    except RecursionError:
        raise APIError(400, "request body: not valid JSON (nested too deeply)")
    except ValueError as e:
        raise APIError(400, f"request body: not valid JSON ({str(e)[:120]})")


class Base(Resource):
    """
    Method dispatch with JSON errors: 405 for other methods, the reason of
    an L{APIError}, and 500 (logged, no traceback) for anything else.
    """

    methods: tuple[str, ...] = ()
    #: The query parameters each method takes; with it set, any other (a
    #: typo such as C{?limt=}) or one given twice is refused with 400 rather
    #: than silently ignored.  None: not checked.
    queryParameters: dict[str, tuple[str, ...]] | None = None

    def __init__(self, node: SpaceNode) -> None:
        super().__init__()
        self.node = node

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return NotFound()

    def render(self, request: IRequest) -> bytes:
        method = (request.method or b"").decode("ascii", "replace").upper()
        if method == "HEAD" and "GET" in self.methods:
            method = "GET"
        return self._dispatch(method, request)

    def _dispatch(self, method: str, request: IRequest) -> bytes:
        if method not in self.methods:
            request.setHeader(b"Allow", ", ".join(self.methods).encode())
            return jsonError(request, 405, f"method {method[:10]} not allowed")
        handler: Callable[[IRequest], Any] = getattr(self, "do_" + method)
        try:
            self._checkQuery(method, request)
            result = handler(request)
        except APIError as e:
            return jsonError(request, e.code, e.reason, **e.extra)
        except StoreWriteError as e:
            # Not acknowledged: what the log does not hold was not kept (nor
            # announced), and the client may retry.
            log.error("{method} {path}: {reason}", method=method, path=request.path[:200], reason=str(e))
            request.setHeader(b"Retry-After", b"10")
            return jsonError(request, 503, f"{e}; not done, retry later")
        except Exception:  # per request: logged, HTTP 500
            log.failure("internal error serving {method} {path}", method=method, path=request.path[:200])
            return jsonError(request, 500, "internal error")
        if isinstance(result, bytes):
            return result
        code, body = result
        return jsonResponse(request, body, code)

    def _checkQuery(self, method: str, request: IRequest) -> None:
        if self.queryParameters is None:
            return
        allowed = self.queryParameters.get(method, ())
        for raw, values in sorted((request.args or {}).items()):
            name = raw.decode("utf-8", "replace")[:40]
            if name not in allowed:
                expected = f"one of {', '.join(allowed)}" if allowed else "none"
                raise APIError(400, f"query parameter {name}: unknown for {method} (expected {expected})")
            if len(values) > 1:
                raise APIError(400, f"query parameter {name}: given more than once")


class APISite(LimitedSite):
    """
    The API's site: its one access line per request is SpaceComms' own,
    C{api METHOD PATH -> CODE (token ID)} at debug, with the id of the token
    that made the request (never its secret) and the path without the query
    string; it replaces the shared access log (so a request is logged once)
    and is built only when the level is debug.
    """

    def log(self, request: Any) -> None:
        if not debugEnabled():
            return
        principal = principalOf(request)
        try:
            peer = request.getClientAddress()
            peerText = getattr(peer, "host", None) or str(peer)
        except Exception:  # only names the peer in the line
            peerText = "-"
        log.debug(
            "api {method} {path} -> {code} (token {principal})",
            method=(request.method or b"").decode("ascii", "replace")[:10],
            path=(request.path or b"")[:200].decode("utf-8", "replace"),
            code=getattr(request, "code", 0),
            bytes=getattr(request, "sentLength", 0),
            peer=peerText,
            principal=principal.name if principal is not None else "-",
        )


class NotFound(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return jsonError(request, 404, "no such endpoint")
