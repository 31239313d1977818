"""
Server-sent events with a connection cap, a per-IP cap and eviction of
clients that stop reading.

Used by the rendezvous hub (C{/events}) and the viewer's log tail.  A client
over a cap gets HTTP 429 with a JSON reason; a client whose unsent backlog
grows past C{maxBufferBytes} (it is not reading) is disconnected, so one
stalled reader never holds memory for the others.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from suite.goop.webutil import clientIP, jsonResponse

__all__ = ["SSEHub", "formatEvent"]

log = Logger()


def formatEvent(event: str, data: Any, id: str | None = None) -> bytes:
    """Encode one SSE frame (data is JSON-encoded unless already a str)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = [f"event: {event}"]
    if id is not None:
        lines.append(f"id: {id}")
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _backlog(request: Request) -> int:
    t = request.transport
    if t is None:
        return 0
    size = len(getattr(t, "dataBuffer", b"")) - int(getattr(t, "offset", 0))
    return size + int(getattr(t, "_tempDataLen", 0))


class _Client:
    __slots__ = ("request", "ip")

    def __init__(self, request: Request, ip: str) -> None:
        self.request = request
        self.ip = ip


class SSEHub:
    """
    Fan-out of events to connected clients.
    """

    def __init__(
        self,
        clock: Any,
        maxClients: int = 2048,
        maxPerIP: int = 64,
        keepaliveSeconds: float = 15.0,
        maxBufferBytes: int = 256 * 1024,
        initial: Callable[[], Iterable[bytes]] | None = None,
    ) -> None:
        self.clock = clock
        self.maxClients = maxClients
        self.maxPerIP = maxPerIP
        self.keepaliveSeconds = keepaliveSeconds
        self.maxBufferBytes = maxBufferBytes
        self.initial = initial
        self.clients: list[_Client] = []
        self.perIP: dict[str, int] = {}
        self.evicted = 0
        self._keepalive = LoopingCall(self._ping)
        self._keepalive.clock = clock

    @property
    def clientCount(self) -> int:
        return len(self.clients)

    def start(self) -> None:
        if not self._keepalive.running:
            self._keepalive.start(self.keepaliveSeconds, now=False)

    def stop(self) -> None:
        if self._keepalive.running:
            self._keepalive.stop()
        for c in list(self.clients):
            c.request.finish()
        self.clients.clear()
        self.perIP.clear()

    def resource(self) -> Resource:
        return _SSEResource(self)

    def _ping(self) -> None:
        self._send(b": keepalive\n\n")

    def publish(self, event: str, data: Any, id: str | None = None) -> None:
        """Send an event to every connected client."""
        if self.clients:
            self._send(formatEvent(event, data, id))

    def _send(self, frame: bytes) -> None:
        for c in list(self.clients):
            if _backlog(c.request) > self.maxBufferBytes:
                self.evicted += 1
                log.info("evicting SSE client {ip}: not reading", ip=c.ip)
                self._drop(c)
                t = c.request.transport
                if t is not None:
                    t.abortConnection() if hasattr(t, "abortConnection") else t.loseConnection()
                continue
            c.request.write(frame)

    def _drop(self, c: _Client) -> None:
        if c in self.clients:
            self.clients.remove(c)
            n = self.perIP.get(c.ip, 1) - 1
            if n <= 0:
                self.perIP.pop(c.ip, None)
            else:
                self.perIP[c.ip] = n

    def connect(self, request: Request) -> bytes | int:
        ip = clientIP(request)
        if len(self.clients) >= self.maxClients:
            return jsonResponse(request, 429, {"error": "too many event-stream clients"})
        if self.perIP.get(ip, 0) >= self.maxPerIP:
            return jsonResponse(request, 429, {"error": "too many event-stream clients from this address"})
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        client = _Client(request, ip)
        self.clients.append(client)
        self.perIP[ip] = self.perIP.get(ip, 0) + 1
        request.write(b": connected\n\nretry: 2000\n\n")
        if self.initial is not None:
            for frame in self.initial():
                request.write(frame)
        request.notifyFinish().addBoth(lambda _: self._drop(client))
        return NOT_DONE_YET


class _SSEResource(Resource):
    isLeaf = True

    def __init__(self, hub: SSEHub) -> None:
        super().__init__()
        self.hub = hub

    def render_GET(self, request: Request) -> bytes | int:
        return self.hub.connect(request)
