"""
Goop2's event streams on top of L{suite.web.sse.SSEHub}.

The shared hub gives the overall cap (429), per-client bounded buffers with
eviction of clients that stop reading, keepalives and idle eviction.  This
adapter adds a per-client-address cap that understands the loopback reverse
proxy in front of the rendezvous hub (the address is the last
C{X-Forwarded-For} hop when the direct client is loopback), so one address
cannot take every slot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from suite.goop.webutil import clientIP, jsonResponse, parseNetworks
from suite.web.sse import SSEHub as _SharedHub
from suite.web.sse import formatEvent

__all__ = ["SSEHub", "formatEvent"]


class SSEHub:
    """Event fan-out with overall and per-address caps."""

    def __init__(
        self,
        clock: Any,
        maxClients: int = 2048,
        maxPerIP: int = 64,
        keepaliveSeconds: float = 15.0,
        maxBufferBytes: int = 256 * 1024,
        idleTimeout: float | None = 600.0,
        initial: Callable[[], Iterable[bytes]] | None = None,
        trustedProxies: Sequence[str] = (),
    ) -> None:
        self.maxPerIP = maxPerIP
        self.trustedProxies = parseNetworks(trustedProxies)
        self.perIP: Counter[str] = Counter()
        self.hub = _SharedHub(
            clock,
            maxClients=maxClients,
            keepaliveSeconds=keepaliveSeconds,
            maxBufferBytes=maxBufferBytes,
            idleTimeout=idleTimeout,
            maxPerIP=None,
            initial=initial,
            retryMillis=2000,
        )
        self._inner = self.hub.resource()

    @property
    def clientCount(self) -> int:
        return self.hub.clientCount

    @property
    def evicted(self) -> int:
        return self.hub.droppedClients

    def start(self) -> None:
        """Nothing to start: the shared hub runs its timers while clients are connected."""

    def stop(self) -> None:
        self.hub.close()

    def publish(self, event: str, data: Any, id: str | None = None) -> None:
        self.hub.publish(event, data, id)

    def resource(self) -> Resource:
        return _Resource(self)

    def connect(self, request: Request) -> bytes | int:
        ip = clientIP(request, self.trustedProxies)
        if self.perIP[ip] >= self.maxPerIP:
            request.setHeader(b"retry-after", b"5")
            return jsonResponse(request, 429, {"error": "too many event-stream clients from this address"})
        result = self._inner.render_GET(request)
        if result is NOT_DONE_YET:
            self.perIP[ip] += 1
            request.notifyFinish().addBoth(lambda _: self._release(ip))
        return result

    def _release(self, ip: str) -> None:
        self.perIP[ip] -= 1
        if self.perIP[ip] <= 0:
            del self.perIP[ip]


class _Resource(Resource):
    isLeaf = True

    def __init__(self, hub: SSEHub) -> None:
        super().__init__()
        self.hub = hub

    def render_GET(self, request: Request) -> bytes | int:
        return self.hub.connect(request)
