"""
Shared pieces of the REST API resources: JSON method dispatch, errors and
request helpers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from suite.spacecomms.cdm.sample import isoTime
from suite.spacecomms.node import SpaceNode
from suite.web.errors import jsonError, jsonResponse

__all__ = ["APIError", "Base", "NotFound", "arg", "body", "jsonBody", "iso", "log", "MAX_LIMIT", "ID"]

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


def jsonBody(request: IRequest) -> Any:
    raw = body(request)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise APIError(400, "request body: not valid JSON")


class Base(Resource):
    """
    Method dispatch with JSON errors: 405 for other methods, the reason of
    an L{APIError}, and 500 (logged, no traceback) for anything else.
    """

    methods: tuple[str, ...] = ()

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
        if method not in self.methods:
            request.setHeader(b"Allow", ", ".join(self.methods).encode())
            return jsonError(request, 405, f"method {method[:10]} not allowed")
        handler: Callable[[IRequest], Any] = getattr(self, "do_" + method)
        try:
            result = handler(request)
        except APIError as e:
            return jsonError(request, e.code, e.reason, **e.extra)
        except Exception:  # per request: logged, HTTP 500
            log.failure("internal error serving {method} {path}", method=method, path=request.path[:200])
            return jsonError(request, 500, "internal error")
        if isinstance(result, bytes):
            return result
        code, body = result
        return jsonResponse(request, body, code)


class NotFound(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return jsonError(request, 404, "no such endpoint")
