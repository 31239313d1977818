"""
A client for the Raft KV client API with timeout, retry attempts and
backoff (the knobs behind C{CEPTRA_RAFT_CLIENT_TIMEOUT_MS},
C{CEPTRA_RAFT_CLIENT_RETRY_ATTEMPTS}, C{CEPTRA_RAFT_CLIENT_BACKOFF_MS}).

Writes carry a client id and a sequence number, so a retry after a timeout
or a leader change is applied once.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger

from suite.raft.transport import FrameProtocol

log = Logger()


class RaftClientError(Exception):
    """
    The request failed on every attempt; the message holds the last reason.
    """


@dataclass
class ClientSettings:
    timeoutMs: float = 2000.0
    retryAttempts: int = 10
    backoffMs: float = 50.0


class _ClientProtocol(FrameProtocol):
    maxFrameBytes = 16 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[int, Deferred[Any]] = {}
        self.ids = itertools.count(1)

    def request(self, op: str, key: str, value: Any, client: str, seq: int) -> Deferred[Any]:
        reqId = next(self.ids)
        d: Deferred[Any] = Deferred()
        self.waiting[reqId] = d
        self.sendFrame(msgpack.packb([reqId, op, key, value, client, seq], use_bin_type=True))
        return d

    def frameReceived(self, frame: bytes) -> None:
        reqId, ok, value, error, leader = msgpack.unpackb(frame, raw=False)
        d = self.waiting.pop(reqId, None)
        if d is not None:
            d.callback((ok, value, error, leader))

    def connectionLost(self, reason: Any = None) -> None:
        waiting, self.waiting = self.waiting, {}
        for d in waiting.values():
            d.errback(ConnectionError("connection lost"))


class RaftClient:
    """
    Talks to a set of nodes (C{servers}: node id -> address), following
    leader hints.

    @param connect: C{connect(address, factory) -> Deferred[protocol]}.
    """

    def __init__(
        self,
        clock: Any,
        connect: Callable[[str, Factory], Deferred[Any]],
        servers: dict[str, str],
        settings: ClientSettings | None = None,
        clientId: str | None = None,
    ) -> None:
        self.clock = clock
        self.connect = connect
        self.servers = dict(servers)
        self.order = sorted(servers)
        self.settings = settings or ClientSettings()
        self.clientId = clientId or uuid.uuid4().hex
        self.seq = 0
        self.target = self.order[0]
        self.connections: dict[str, _ClientProtocol] = {}

    async def _conn(self, node: str) -> _ClientProtocol:
        proto = self.connections.get(node)
        if proto is not None and proto.transport is not None and not proto.transport.disconnecting:  # type: ignore[attr-defined]
            return proto
        connected: _ClientProtocol = await self.connect(
            self.servers[node], Factory.forProtocol(_ClientProtocol)
        )
        self.connections[node] = connected
        return connected

    async def call(self, op: str, key: str = "", value: Any = None) -> Any:
        """
        Run one operation; writes are retried under one sequence number.
        """
        seq = 0
        if op in ("put", "append", "delete", "cas"):
            self.seq += 1
            seq = self.seq
        last = "no attempt made"
        s = self.settings
        for attempt in range(max(1, s.retryAttempts)):
            node = self.target
            try:
                proto = await self._conn(node)
                d = proto.request(op, key, value, self.clientId, seq)
                d.addTimeout(s.timeoutMs / 1000.0, self.clock)
                ok, result, error, leader = await d
                if ok:
                    return result
                last = error
                if leader in self.servers and leader != node:
                    self.target = leader
                    continue
            except (TimeoutError, ConnectionError, OSError) as e:
                last = f"{node}: {e.__class__.__name__} {e}"
                self.connections.pop(node, None)
            except Exception as e:  # any failure of the pluggable connector: next node
                last = f"{node}: {e.__class__.__name__} {e}"
                self.connections.pop(node, None)
            self.target = self.order[(self.order.index(node) + 1) % len(self.order)]
            await deferLater(
                self.clock, min(s.backoffMs * (2 ** min(attempt, 4)), 1000.0) / 1000.0, lambda: None
            )
        raise RaftClientError(last)

    def close(self) -> None:
        for proto in self.connections.values():
            if proto.transport is not None:
                proto.transport.loseConnection()
        self.connections.clear()
