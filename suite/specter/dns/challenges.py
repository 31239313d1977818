"""
The TXT values of challenge names, read from the ring KV through a server's
C{--listen-rpc} (see L{suite.specter.acmekeys} for the keys).

One connection is kept and re-opened on demand.  Answers are cached for a
second and concurrent questions for one name share one RPC call, so a query
flood costs the ring at most one call per name per second.  While the RPC
cannot be reached, lookups fail at once (one connection attempt per second
at most) with L{Unavailable}, which the server answers as SERVFAIL; the
outage is logged once when it starts and once when it ends.

Watchers (the server's answer cache) are told when a label's values change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.specter.acmekeys import MAX_VALUE, challengeKey
from suite.specter.dns.zone import Unavailable
from suite.specter.rpc import RPCClient, connectRPC

__all__ = ["RingChallenges", "CACHE_SECONDS", "MAX_VALUES"]

log = Logger()

#: How long a KV answer is reused.
CACHE_SECONDS = 1.0
#: At most this many TXT values are answered for one name.
MAX_VALUES = 16


def connectQuietly(reactor: Any, description: str, token: bytes | None = None) -> Deferred[RPCClient]:
    """
    L{suite.specter.rpc.connectRPC} (whose connections log no line per
    attempt), authenticated with C{token} over TCP.
    """
    return connectRPC(reactor, description, token)


class RingChallenges(Service):
    """
    C{txt(label)}: the TXT values of C{<label>.<ACME_ZONE>} from the ring.

    @ivar down: whether the RPC is in an outage (logged once).
    """

    def __init__(
        self,
        reactor: Any,
        description: str,
        connect: Callable[[Any, str], Deferred[Any]] = connectQuietly,
        cacheSeconds: float = CACHE_SECONDS,
        timeout: float = 2.0,
        retrySeconds: float = 1.0,
        maxEntries: int = 4096,
        maxInFlight: int = 256,
    ) -> None:
        self.reactor = reactor
        self.description = description
        self.connect = connect
        self.cacheSeconds = cacheSeconds
        self.timeout = timeout
        self.retrySeconds = retrySeconds
        self.maxEntries = maxEntries
        self.maxInFlight = maxInFlight
        self.cache: dict[str, tuple[float, list[bytes]]] = {}
        self.inFlight: dict[str, list[Deferred[list[bytes]]]] = {}
        self.client: Any = None
        self.connecting: list[Deferred[Any]] | None = None
        self.retryAt = 0.0
        self.lastError = ""
        self.down = False
        self.downSince = 0.0
        self.calls = 0
        self.failures = 0
        self.watchers: list[Callable[[str], None]] = []

    def watch(self, callback: Callable[[str], None]) -> None:
        """
        Call C{callback(label)} whenever the values read for C{label} differ
        from the ones read before.
        """
        self.watchers.append(callback)

    def freshUntil(self, label: str) -> float:
        """
        Until when the cached values of C{label} are answered (0: not cached).
        """
        hit = self.cache.get(label)
        return hit[0] if hit is not None else 0.0

    def txt(self, label: str) -> Deferred[list[bytes]]:
        now = self.reactor.seconds()
        hit = self.cache.get(label)
        if hit is not None and hit[0] > now:
            return succeed(list(hit[1]))
        waiters = self.inFlight.get(label)
        d: Deferred[list[bytes]] = Deferred()
        if waiters is not None:
            waiters.append(d)
            return d
        if len(self.inFlight) >= self.maxInFlight:
            return fail(Unavailable("too many lookups in flight"))
        self.inFlight[label] = [d]
        Deferred.fromCoroutine(self._fetch(label)).addBoth(self._fetched, label)
        return d

    def _fetched(self, result: Any, label: str) -> None:
        waiters = self.inFlight.pop(label, [])
        if isinstance(result, Failure):
            for w in waiters:
                w.errback(result)
            return
        now = self.reactor.seconds()
        before = self.cache.get(label)
        if len(self.cache) >= self.maxEntries:
            self.cache = {k: v for k, v in self.cache.items() if v[0] > now}
            if len(self.cache) >= self.maxEntries:
                self.cache.clear()
        self.cache[label] = (now + self.cacheSeconds, result)
        if before is not None and before[1] != result:
            for watcher in self.watchers:
                watcher(label)
        for w in waiters:
            w.callback(list(result))

    async def _fetch(self, label: str) -> list[bytes]:
        self.calls += 1
        client = await self._client()
        d = client.kv("list", challengeKey(label))
        timer = self.reactor.callLater(self.timeout, d.cancel)
        try:
            values = await d
        except CancelledError:
            self._forget(client)
            raise self._failed(f"no answer within {self.timeout:g}s") from None
        except Exception as e:  # ring boundary: a reason for the caller
            raise self._failed(str(e) or e.__class__.__name__) from None
        finally:
            if timer.active():
                timer.cancel()
        self._up()
        if not isinstance(values, list):
            return []
        good = sorted({v for v in values if isinstance(v, bytes) and 0 < len(v) <= MAX_VALUE})
        return good[:MAX_VALUES]

    def _client(self) -> Deferred[Any]:
        client = self.client
        if client is not None and not client.proto.closed:
            return succeed(client)
        self.client = None
        d: Deferred[Any] = Deferred()
        if self.connecting is not None:
            self.connecting.append(d)
            return d
        if self.reactor.seconds() < self.retryAt:
            return fail(Unavailable(self.lastError))
        self.connecting = [d]
        attempt = self.connect(self.reactor, self.description)
        timer = self.reactor.callLater(self.timeout, attempt.cancel)

        def done(result: Any) -> None:
            if timer.active():
                timer.cancel()
            waiters, self.connecting = self.connecting or [], None
            if isinstance(result, Failure):
                self.retryAt = self.reactor.seconds() + self.retrySeconds
                reason = (
                    f"no connection within {self.timeout:g}s"
                    if result.check(CancelledError)
                    else (str(result.value) or result.value.__class__.__name__)
                )
                error = self._failed(f"cannot connect to {self.description}: {reason}")
                for w in waiters:
                    w.errback(error)
                return
            if not self.running:
                result.close()
                for w in waiters:
                    w.errback(Unavailable("stopped"))
                return
            self.client = result
            for w in waiters:
                w.callback(result)

        attempt.addBoth(done)
        return d

    def _forget(self, client: Any) -> None:
        if self.client is client:
            self.client = None
        client.close()

    def _failed(self, reason: str) -> Unavailable:
        self.failures += 1
        self.lastError = reason
        if not self.down:
            self.down = True
            self.downSince = self.reactor.seconds()
            log.warn(
                "ring RPC unavailable ({reason}); answering SERVFAIL for challenge names until it returns",
                reason=reason,
            )
        return Unavailable(reason)

    def _up(self) -> None:
        if self.down:
            self.down = False
            log.info(
                "ring RPC reachable again after {seconds:.1f}s",
                seconds=self.reactor.seconds() - self.downSince,
            )

    def stopService(self) -> Any:
        super().stopService()
        if self.client is not None:
            self.client.close()
            self.client = None
        return None
