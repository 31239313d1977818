"""
A local stand-in for a Sentry server: it speaks the ingestion API the
sentry-sdk client uses (C{POST /api/<project>/envelope/}, envelope format:
a JSON header line, then item header / payload line pairs; the body
compressed as C{Content-Encoding} says) and keeps what it received for the
test to inspect.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Site


class Envelope:
    """
    One received envelope: its header, its items, and the raw body.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        lines = raw.split(b"\n")
        self.header = json.loads(lines[0])
        self.items: list[tuple[dict[str, Any], Any]] = []
        rest = lines[1:]
        while len(rest) >= 2 and rest[0].strip():
            itemHeader, payload, rest = json.loads(rest[0]), rest[1], rest[2:]
            try:
                body: Any = json.loads(payload)
            except ValueError:
                body = payload
            self.items.append((itemHeader, body))

    def events(self) -> list[dict[str, Any]]:
        return [body for header, body in self.items if header.get("type") == "event"]


class _Envelopes(Resource):
    isLeaf = True

    def __init__(self, received: list[Envelope], key: str) -> None:
        super().__init__()
        self.received = received
        self.key = key

    def render_POST(self, request: Any) -> bytes:
        auth = (request.getHeader("x-sentry-auth") or "") + " " + (request.uri or b"").decode()
        if f"sentry_key={self.key}" not in auth:
            request.setResponseCode(401)
            return b'{"detail":"missing authorization information"}'
        body = request.content.read()
        encoding = (request.getHeader("content-encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding:
            request.setResponseCode(415)
            return b'{"detail":"unsupported content encoding"}'
        envelope = Envelope(body)
        self.received.append(envelope)
        request.setHeader(b"content-type", b"application/json")
        # one request per connection, so no idle channel outlives a test
        request.setHeader(b"connection", b"close")
        request.channel.persistent = False
        return json.dumps({"id": envelope.header.get("event_id")}).encode()


def sentryStandIn(key: str = "publickey") -> tuple[Site, list[Envelope]]:
    """
    A site serving C{/api/<project>/envelope/} and the list it appends to.
    """
    received: list[Envelope] = []
    root = Resource()
    api = Resource()
    root.putChild(b"api", api)

    class _Project(Resource):
        def getChild(self, path: bytes, request: Any) -> Resource:
            return _Envelopes(received, key)

    project = _Project()
    for name in (b"1", b"2", b"42"):
        api.putChild(name, project)
    return Site(root), received
