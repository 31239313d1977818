"""
Tunnel routes: the in-memory store (tests, single node), the adapter over
the ring KV, the local link registry and the visitor-side route cache.

KV layout (all keys UTF-8):

  - C{tunnel/lease/<host>}: lease held by the owner (client CN), renewed
    by every gateway that holds a link for the host;
  - C{tunnel/route/<host>}: msgpack map C{owner}, C{kind}, C{expires}
    (wall-clock seconds), C{token};
  - C{tunnel/gw/<host>}: prefix set of C{HOST:PORT|EXPIRES} members, one
    per gateway holding links, replaced at each renewal (so a gateway that
    died stops being listed once its entry expires);
  - C{tunnel/hosts/<owner>}: prefix set of the owner's hostnames.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.specter.chord.errors import RemoteError
from suite.specter.gateway.interfaces import ILinkRegistry, IRouteStore

__all__ = ["Route", "RouteOwned", "MemoryRouteStore", "RingRouteStore", "RouteCache", "LinkRegistry"]

log = Logger()


@dataclass(frozen=True)
class Route:
    """
    Where a tunnel hostname is served.
    """

    hostname: str
    owner: str
    kind: str
    gateways: tuple[str, ...]
    expires: float


class RouteOwned(Exception):
    """
    The hostname belongs to another client.
    """


@implementer(IRouteStore)
class MemoryRouteStore:
    """
    Routes in a dict (one process; tests).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.routes: dict[str, dict[str, Any]] = {}
        self.tokens = itertools.count(1)

    def lookup(self, hostname: str) -> Deferred[Route | None]:
        entry = self.routes.get(hostname)
        if entry is None or entry["expires"] < self.clock.seconds():
            return succeed(None)
        now = self.clock.seconds()
        live = tuple(sorted(g for g, until in entry["gateways"].items() if until >= now))
        return succeed(Route(hostname, entry["owner"], entry["kind"], live, entry["expires"]))

    def publish(self, hostname: str, owner: str, kind: str, gateway: str, leaseTTL: float) -> Deferred[int]:
        now = self.clock.seconds()
        entry = self.routes.get(hostname)
        if entry is not None and entry["owner"] != owner and entry["expires"] >= now:
            raise RouteOwned(f"{hostname} belongs to another client")
        if entry is None or entry["owner"] != owner:
            entry = {"owner": owner, "gateways": {}, "token": next(self.tokens)}
            self.routes[hostname] = entry
        entry["kind"] = kind
        entry["expires"] = now + leaseTTL
        entry["gateways"][gateway] = now + leaseTTL
        return succeed(int(entry["token"]))

    def withdraw(self, hostname: str, gateway: str) -> Deferred[None]:
        entry = self.routes.get(hostname)
        if entry is not None:
            entry["gateways"].pop(gateway, None)
        return succeed(None)

    def release(self, hostname: str, owner: str) -> Deferred[bool]:
        entry = self.routes.get(hostname)
        if entry is None:
            return succeed(False)
        if entry["owner"] != owner:
            raise RouteOwned(f"{hostname} belongs to another client")
        del self.routes[hostname]
        return succeed(True)

    def owned(self, owner: str) -> Deferred[list[str]]:
        now = self.clock.seconds()
        return succeed(
            sorted(h for h, e in self.routes.items() if e["owner"] == owner and e["expires"] >= now)
        )


def _key(kind: str, name: str) -> bytes:
    return f"tunnel/{kind}/{name}".encode()


def _members(raw: list[Any]) -> list[tuple[bytes, str, float]]:
    """
    Parse C{HOST:PORT|EXPIRES} set members into (member, gateway, expires).
    """
    out = []
    for member in raw:
        data = member if isinstance(member, bytes) else str(member).encode()
        text = data.decode("utf-8", "replace")
        addr, sep, until = text.rpartition("|")
        if not sep:
            out.append((data, text, float("inf")))
            continue
        try:
            out.append((data, addr, float(until)))
        except ValueError:
            out.append((data, addr, 0.0))
    return out


@implementer(IRouteStore)
class RingRouteStore:
    """
    Routes in the ring KV (an L{suite.specter.interfaces.IRing}).
    """

    def __init__(self, ring: Any, clock: IReactorTime) -> None:
        self.ring = ring
        self.clock = clock

    async def _lookup(self, hostname: str) -> Route | None:
        raw = await self.ring.kv("get", _key("route", hostname), [])
        if raw is None:
            return None
        entry = msgpack.unpackb(raw, raw=False)
        if entry["expires"] < self.clock.seconds():
            return None
        now = self.clock.seconds()
        members = _members(await self.ring.kv("list", _key("gw", hostname), []))
        names = tuple(sorted({addr for _, addr, until in members if until >= now}))
        return Route(hostname, entry["owner"], entry["kind"], names, entry["expires"])

    def lookup(self, hostname: str) -> Deferred[Route | None]:
        return Deferred.fromCoroutine(self._lookup(hostname))

    async def _publish(self, hostname: str, owner: str, kind: str, gateway: str, leaseTTL: float) -> int:
        from suite.specter.chord.errors import LEASE_HELD, RemoteError

        try:
            lease = await self.ring.kv("acquire", _key("lease", hostname), [owner.encode(), leaseTTL])
        except RemoteError as e:
            if e.code == LEASE_HELD:
                raise RouteOwned(f"{hostname} belongs to another client") from None
            raise
        token = int(lease[2])
        now = self.clock.seconds()
        entry = {"owner": owner, "kind": kind, "expires": now + leaseTTL, "token": token}
        key = _key("gw", hostname)
        fresh = f"{gateway}|{int(now + leaseTTL) + 1}".encode()
        await self.ring.kv("append", key, [fresh])
        for member, addr, until in _members(await self.ring.kv("list", key, [])):
            # our older entries, and entries of gateways that stopped renewing long ago
            if member != fresh and (addr == gateway or until < now - leaseTTL):
                await self.ring.kv("remove", key, [member])
        await self.ring.kv("put", _key("route", hostname), [msgpack.packb(entry)])
        await self.ring.kv("append", _key("hosts", owner), [hostname.encode()])
        return token

    def publish(self, hostname: str, owner: str, kind: str, gateway: str, leaseTTL: float) -> Deferred[int]:
        return Deferred.fromCoroutine(self._publish(hostname, owner, kind, gateway, leaseTTL))

    async def _withdraw(self, hostname: str, gateway: str) -> None:
        key = _key("gw", hostname)
        for member, addr, _ in _members(await self.ring.kv("list", key, [])):
            if addr == gateway:
                await self.ring.kv("remove", key, [member])

    def withdraw(self, hostname: str, gateway: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._withdraw(hostname, gateway))

    async def _release(self, hostname: str, owner: str) -> bool:
        raw = await self.ring.kv("get", _key("route", hostname), [])
        if raw is None:
            await self.ring.kv("remove", _key("hosts", owner), [hostname.encode()])
            return False
        entry = msgpack.unpackb(raw, raw=False)
        if entry["owner"] != owner:
            raise RouteOwned(f"{hostname} belongs to another client")
        await self.ring.kv("delete", _key("route", hostname), [])
        try:
            # an expired or re-granted lease answers False: nothing to do
            await self.ring.kv("release", _key("lease", hostname), [entry["token"]])
        except RemoteError as e:
            # the route is gone; the lease lapses by itself at its expiry
            log.warn("could not release the lease of {hostname}: {error}", hostname=hostname, error=str(e))
        for gw in await self.ring.kv("list", _key("gw", hostname), []):
            await self.ring.kv("remove", _key("gw", hostname), [gw])
        await self.ring.kv("remove", _key("hosts", owner), [hostname.encode()])
        return True

    def release(self, hostname: str, owner: str) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._release(hostname, owner))

    async def _owned(self, owner: str) -> list[str]:
        names = await self.ring.kv("list", _key("hosts", owner), [])
        return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    def owned(self, owner: str) -> Deferred[list[str]]:
        return Deferred.fromCoroutine(self._owned(owner))


class RouteCache:
    """
    Visitor-side cache in front of an L{IRouteStore}: positive answers for
    C{ttl} seconds, misses for C{negativeTTL} seconds, at most C{size}
    entries.
    """

    def __init__(
        self,
        store: IRouteStore,
        clock: IReactorTime,
        ttl: float = 5.0,
        negativeTTL: float = 1.0,
        size: int = 10000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.size = size
        self.entries: dict[str, tuple[float, Route | None]] = {}

    def lookup(self, hostname: str) -> Deferred[Route | None]:
        """
        The cached answer, or the store's (then cached).
        """
        now = self.clock.seconds()
        hit = self.entries.get(hostname)
        if hit is not None and hit[0] > now:
            return succeed(hit[1])

        def remember(route: Route | None) -> Route | None:
            if len(self.entries) >= self.size:
                self.entries.clear()
            self.entries[hostname] = (self.clock.seconds() + (self.ttl if route else self.negativeTTL), route)
            return route

        answer: Deferred[Route | None] = self.store.lookup(hostname)
        return answer.addCallback(remember)

    def invalidate(self, hostname: str) -> None:
        """
        Forget C{hostname} (a link for it came or went here).
        """
        self.entries.pop(hostname, None)


@implementer(ILinkRegistry)
class LinkRegistry:
    """
    The local links, by hostname.
    """

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.links: dict[str, list[Any]] = {}
        self._turn = itertools.count()

    def add(self, hostname: str, link: Any) -> None:
        links = self.links.setdefault(hostname, [])
        if link not in links:
            links.append(link)

    def remove(self, hostname: str, link: Any) -> None:
        links = self.links.get(hostname)
        if links and link in links:
            links.remove(link)
            if not links:
                del self.links[hostname]

    def pick(self, hostname: str) -> Any:
        links = self.links.get(hostname)
        if not links:
            return None
        live = [link for link in links if link.acceptsStreams()]
        if not live:
            return None
        return live[next(self._turn) % len(live)]

    def hostnames(self) -> list[str]:
        """
        Hostnames with at least one local link.
        """
        return sorted(self.links)
