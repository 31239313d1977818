"""
Server-sent events (C{text/event-stream}) with bounded memory.

L{SSEHub} fans events out to every connected client:

  - C{maxClients} caps connections; one more is answered C{429} (JSON);
  - each client has a bounded buffer: while its socket does not accept data
    (the transport paused us) frames queue up to C{maxBufferBytes}; past
    that the client is dropped, so a reader that stops reading costs at most
    that much memory;
  - a comment line is sent every C{keepaliveSeconds} on the injected clock,
    which keeps proxies from closing the stream and finds dead peers;
  - with C{idleTimeout}, a client that got no event for that long is closed
    (EventSource clients reconnect with C{Last-Event-ID});
  - the last C{replaySize} events are kept and replayed to a client that
    reconnects with C{Last-Event-ID}.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from suite.web.errors import JSONMethodsMixin, jsonError

__all__ = ["SSEHub", "SSEResource", "formatEvent"]

log = Logger()


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def formatEvent(event: str | None, data: Any, id: str | None = None) -> bytes:
    """
    Encode one event frame.  C{data} that is not a C{str} is sent as JSON;
    multi-line data becomes several C{data:} lines.
    """
    if not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"), default=str)
    parts: list[str] = []
    if id is not None:
        parts.append(f"id: {_lines(str(id))[0]}")
    if event:
        parts.append(f"event: {_lines(event)[0]}")
    parts.extend(f"data: {line}" for line in _lines(data))
    return ("\n".join(parts) + "\n\n").encode("utf-8")


@implementer(IPushProducer)
class _Client:
    """
    One connected stream: its request, its paused state and bounded queue.
    """

    def __init__(self, hub: SSEHub, request: IRequest) -> None:
        self.hub = hub
        self.request = request
        self.paused = False
        self.queue: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.closed = False
        self.address = "-"
        self.lastEvent = hub.clock.seconds()

    # IPushProducer: the transport tells us when its buffer is full/drained.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self.queue and not self.paused and not self.closed:
            frame = self.queue.popleft()
            self.queued -= len(frame)
            self.request.write(frame)

    def stopProducing(self) -> None:
        self.hub._forget(self)
        self.closed = True

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        if not self.paused and not self.queue:
            self.request.write(frame)
            return
        if self.queued + len(frame) > self.hub.maxBufferBytes:
            log.info(
                "dropping slow event-stream client {peer}: over {limit} bytes buffered",
                peer=_peer(self.request),
                limit=self.hub.maxBufferBytes,
            )
            self.hub.droppedClients += 1
            self.close(abort=True)
            return
        self.queue.append(frame)
        self.queued += len(frame)

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.hub._forget(self)
        self.queue.clear()
        self.queued = 0
        request: Any = self.request
        if abort:
            transport = getattr(getattr(request, "channel", None), "transport", None)
            if transport is not None and hasattr(transport, "abortConnection"):
                transport.abortConnection()
                return
        try:
            request.unregisterProducer()
            request.finish()
        except Exception:  # a client going away: logged, others served
            log.failure("closing event-stream client failed")


def _host(request: IRequest) -> str:
    try:
        address = request.getClientAddress()
    except Exception:  # only names the client in log lines
        return "-"
    return str(getattr(address, "host", None) or address)


def _peer(request: IRequest) -> str:
    try:
        return str(request.getClientAddress())
    except Exception:  # only names the client in log lines
        return "-"


class SSEResource(JSONMethodsMixin, Resource):
    """
    The C{GET} endpoint of an L{SSEHub}.
    """

    isLeaf = True

    def __init__(self, hub: SSEHub) -> None:
        super().__init__()
        self.hub = hub

    def render_GET(self, request: Request) -> int | bytes:
        return self.hub._connect(request)

    def render_HEAD(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        return b""


class SSEHub:
    """
    Fan published events out to every connected event-stream client.

    @param clock: drives keepalives and idle eviction.
    @param maxClients: connections beyond this get C{429}.
    @param keepaliveSeconds: interval of the C{: keepalive} comment (0 = off).
    @param maxBufferBytes: per-client queue bound while its socket is full.
    @param idleTimeout: close a client with no event for this long (seconds).
    @param replaySize: events kept for C{Last-Event-ID} replay.
    @param retryMillis: reconnection delay advertised to clients.
    @param maxPerIP: connections allowed from one client address (429 past
        it); L{None} for no per-address cap.
    @param initial: called for each new client; the frames it returns are
        sent first (a snapshot, the tail of a log).
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxClients: int = 256,
        keepaliveSeconds: float = 15,
        maxBufferBytes: int = 256 * 1024,
        idleTimeout: float | None = None,
        replaySize: int = 64,
        retryMillis: int | None = 3000,
        maxPerIP: int | None = None,
        initial: Callable[[], Iterable[bytes]] | None = None,
    ) -> None:
        if maxClients < 0:
            raise ValueError(f"maxClients must be >= 0, not {maxClients}")
        if keepaliveSeconds < 0:
            raise ValueError(f"keepaliveSeconds must be >= 0, not {keepaliveSeconds}")
        self.clock = clock
        self.maxClients = maxClients
        self.keepaliveSeconds = keepaliveSeconds
        self.maxBufferBytes = maxBufferBytes
        self.idleTimeout = idleTimeout
        self.retryMillis = retryMillis
        self.maxPerIP = maxPerIP
        self.initial = initial
        self._perIP: collections.Counter[str] = collections.Counter()
        self.droppedClients = 0
        self.rejectedClients = 0
        self._clients: list[_Client] = []
        self._ring: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=max(replaySize, 0))
        self._nextId = 1
        self._ticker: LoopingCall | None = None
        self._idleCall: IDelayedCall | None = None

    @property
    def clientCount(self) -> int:
        """
        How many clients are connected now.
        """
        return len(self._clients)

    def resource(self) -> SSEResource:
        """
        A leaf resource serving the stream (mount it with C{putChild}).
        """
        return SSEResource(self)

    def publish(self, event: str | None, data: Any, id: str | int | None = None) -> str:
        """
        Send an event to every client; remember it for replay.  Without an
        C{id} a sequence number is assigned.

        @return: the event's id.
        """
        if id is None:
            eventId = str(self._nextId)
            self._nextId += 1
        else:
            eventId = str(id)
        frame = formatEvent(event, data, eventId)
        self._ring.append((eventId, frame))
        now = self.clock.seconds()
        for client in list(self._clients):
            client.lastEvent = now
            client.send(frame)
        return eventId

    def close(self) -> None:
        """
        End every stream and stop the timers (on service stop).
        """
        for client in list(self._clients):
            client.close()
        self._stopTicker()

    # Internals.

    def _connect(self, request: Request) -> int | bytes:
        if len(self._clients) >= self.maxClients:
            self.rejectedClients += 1
            request.setHeader(b"Retry-After", b"5")
            return jsonError(request, 429, f"too many event-stream clients (limit {self.maxClients})")
        address = _host(request)
        if self.maxPerIP is not None and self._perIP[address] >= self.maxPerIP:
            self.rejectedClients += 1
            request.setHeader(b"Retry-After", b"5")
            return jsonError(
                request,
                429,
                f"too many event-stream clients from this address (limit {self.maxPerIP})",
            )
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        client = _Client(self, request)
        client.address = address
        self._clients.append(client)
        self._perIP[address] += 1
        request.registerProducer(client, True)
        request.notifyFinish().addBoth(self._finished, client)
        head = b": connected\n"
        if self.retryMillis is not None:
            head += b"retry: %d\n" % (self.retryMillis,)
        client.send(head + b"\n")
        if self.initial is not None:
            try:
                for frame in self.initial():
                    client.send(frame)
            except Exception:  # a producer's bug must not cost the stream: logged
                log.failure("initial event-stream frames failed")
        lastId = request.getHeader(b"Last-Event-ID")
        if lastId is not None:
            self._replay(client, lastId.decode("utf-8", "replace").strip())
        self._startTicker()
        return NOT_DONE_YET

    def _replay(self, client: _Client, lastId: str) -> None:
        ids = [eventId for eventId, _ in self._ring]
        if lastId not in ids:
            client.send(b": replay unavailable\n\n")
            return
        start = len(ids) - ids[::-1].index(lastId)
        for _, frame in list(self._ring)[start:]:
            client.send(frame)

    def _finished(self, result: Failure | None, client: _Client) -> None:
        client.closed = True
        self._forget(client)

    def _forget(self, client: _Client) -> None:
        if client in self._clients:
            self._clients.remove(client)
            self._perIP[client.address] -= 1
            if self._perIP[client.address] <= 0:
                del self._perIP[client.address]
        if not self._clients:
            self._stopTicker()

    def _startTicker(self) -> None:
        if self._ticker is not None or not self.keepaliveSeconds:
            return
        ticker = LoopingCall(self._tick)
        ticker.clock = self.clock
        self._ticker = ticker
        d = ticker.start(self.keepaliveSeconds, now=False)
        d.addErrback(lambda f: log.failure("event-stream keepalive failed", f))

    def _stopTicker(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None and ticker.running:
            ticker.stop()

    def _tick(self) -> None:
        now = self.clock.seconds()
        for client in list(self._clients):
            if self.idleTimeout is not None and now - client.lastEvent >= self.idleTimeout:
                log.debug("closing idle event-stream client {peer}", peer=_peer(client.request))
                client.close()
                continue
            client.send(b": keepalive\n\n")
