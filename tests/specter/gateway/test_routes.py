"""
Route stores, the route cache and the link registry.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.kv.memory import MemoryStore
from suite.specter.gateway.interfaces import ILinkRegistry, IRouteStore
from suite.specter.gateway.routes import (
    LinkRegistry,
    MemoryRouteStore,
    RingRouteStore,
    RouteCache,
    RouteOwned,
)


class _Ring:
    """
    A one-vnode ring over a real memory KV store.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: list[str] = []

    def kv(self, op: str, key: bytes, args: list[Any]) -> Deferred[Any]:
        from suite.specter.chord.ids import VnodeRef
        from suite.specter.chord.replication import Replicator
        from suite.specter.chord.view import RingView

        self.calls.append(op)
        # a vnode that owns nothing yet (no read-through to replicas) and
        # has no replicas: no peer is ever called
        view = RingView(VnodeRef(1, "a:1", 0), successors=1)
        rep = Replicator(view, self.store, None, None, Clock(), replicas=1, antiEntropy=60.0)  # type: ignore[arg-type]
        return Deferred.fromCoroutine(rep.apply(op, key, args))


def _memoryStore(clock: Clock) -> Any:
    return MemoryStore(clock=clock)


class _Contract:
    def makeStore(self, clock: Clock) -> Any:
        raise NotImplementedError

    def test_interface(self) -> None:
        """
        The store provides IRouteStore.
        """
        self.assertTrue(verifyObject(IRouteStore, self.makeStore(Clock())))  # type: ignore[attr-defined]

    def test_publishLookupRelease(self) -> None:
        """
        A published route is found with its gateways; the owner lists and
        releases it.
        """
        clock = Clock()
        store = self.makeStore(clock)
        ok: Any = self
        ok.successResultOf(store.publish("a.example.test", "alice", "http", "g1:443", 30))
        ok.successResultOf(store.publish("a.example.test", "alice", "http", "g2:443", 30))
        route = ok.successResultOf(store.lookup("a.example.test"))
        ok.assertEqual((route.owner, route.kind, route.gateways), ("alice", "http", ("g1:443", "g2:443")))
        ok.assertEqual(ok.successResultOf(store.owned("alice")), ["a.example.test"])
        ok.successResultOf(store.withdraw("a.example.test", "g1:443"))
        ok.assertEqual(ok.successResultOf(store.lookup("a.example.test")).gateways, ("g2:443",))
        ok.assertTrue(ok.successResultOf(store.release("a.example.test", "alice")))
        ok.assertIsNone(ok.successResultOf(store.lookup("a.example.test")))

    def test_otherOwnerRefused(self) -> None:
        """
        Another client cannot take or release a live hostname.
        """
        clock = Clock()
        store = self.makeStore(clock)
        ok: Any = self
        ok.successResultOf(store.publish("a.example.test", "alice", "http", "g1:443", 30))
        ok.failureResultOf(
            _defer(store.publish, "a.example.test", "mallory", "http", "g1:443", 30), RouteOwned
        )
        ok.failureResultOf(_defer(store.release, "a.example.test", "mallory"), RouteOwned)


def _defer(f: Any, *args: Any) -> Deferred[Any]:
    from twisted.internet.defer import maybeDeferred

    return maybeDeferred(f, *args)


class MemoryRouteStoreTests(_Contract, SynchronousTestCase):
    def makeStore(self, clock: Clock) -> Any:
        return MemoryRouteStore(clock)

    def test_expiry(self) -> None:
        """
        A route whose lease was not renewed disappears.
        """
        clock = Clock()
        store = MemoryRouteStore(clock)
        store.publish("a.example.test", "alice", "http", "g1:443", 30)
        clock.advance(31)
        self.assertIsNone(self.successResultOf(store.lookup("a.example.test")))


class RingRouteStoreTests(_Contract, SynchronousTestCase):
    def makeStore(self, clock: Clock) -> Any:
        return RingRouteStore(_Ring(_memoryStore(clock)), clock)


class CacheTests(SynchronousTestCase):
    def test_negativeCacheIsShort(self) -> None:
        """
        Misses are cached for the negative TTL only, hits for the TTL.
        """
        clock = Clock()
        store = MemoryRouteStore(clock)
        cache = RouteCache(store, clock, ttl=5, negativeTTL=1)
        self.assertIsNone(self.successResultOf(cache.lookup("a.example.test")))
        store.publish("a.example.test", "alice", "http", "g1:443", 30)
        self.assertIsNone(self.successResultOf(cache.lookup("a.example.test")))
        clock.advance(1.5)
        route = self.successResultOf(cache.lookup("a.example.test"))
        assert route is not None
        self.assertEqual(route.owner, "alice")
        store.release("a.example.test", "alice")
        self.assertIsNotNone(self.successResultOf(cache.lookup("a.example.test")))
        cache.invalidate("a.example.test")
        self.assertIsNone(self.successResultOf(cache.lookup("a.example.test")))


class RegistryTests(SynchronousTestCase):
    def test_roundRobin(self) -> None:
        """
        Live links are picked in turn; closed ones are skipped.
        """

        class L:
            def __init__(self, live: bool) -> None:
                self.live = live

            def acceptsStreams(self) -> bool:
                return self.live

        registry = LinkRegistry("g1:443")
        self.assertTrue(verifyObject(ILinkRegistry, registry))
        a, b, c = L(True), L(True), L(False)
        for link in (a, b, c):
            registry.add("h", link)
        picked = {id(registry.pick("h")) for _ in range(6)}
        self.assertEqual(picked, {id(a), id(b)})
        registry.remove("h", a)
        registry.remove("h", b)
        self.assertIsNone(registry.pick("h"))
        self.assertIsNone(registry.pick("other"))
        _ = succeed(None)


class _GatewayExpiry:
    def makeStore(self, clock: Clock) -> Any:
        raise NotImplementedError

    def test_deadGatewayExpires(self) -> None:
        """
        A gateway that stops renewing (it died) drops out of the route's
        gateways once its entry expires, while another keeps it alive.
        """
        clock = Clock()
        store = self.makeStore(clock)
        ok: Any = self
        ok.successResultOf(store.publish("a.example.test", "alice", "http", "g1:443", 30))
        ok.successResultOf(store.publish("a.example.test", "alice", "http", "g2:443", 30))
        for _ in range(4):
            clock.advance(10)
            ok.successResultOf(store.publish("a.example.test", "alice", "http", "g2:443", 30))
        route = ok.successResultOf(store.lookup("a.example.test"))
        ok.assertEqual(route.gateways, ("g2:443",))


class MemoryExpiryTests(_GatewayExpiry, SynchronousTestCase):
    def makeStore(self, clock: Clock) -> Any:
        return MemoryRouteStore(clock)


class RingExpiryTests(_GatewayExpiry, SynchronousTestCase):
    def makeStore(self, clock: Clock) -> Any:
        return RingRouteStore(_Ring(_memoryStore(clock)), clock)

    def test_renewalReplacesItsEntry(self) -> None:
        """
        Renewing keeps one set member per gateway.
        """
        clock = Clock()
        ring = _Ring(_memoryStore(clock))
        store = RingRouteStore(ring, clock)
        for _ in range(5):
            self.successResultOf(store.publish("a.example.test", "alice", "http", "g1:443", 30))
            clock.advance(10)
        members = self.successResultOf(ring.kv("list", b"tunnel/gw/a.example.test", []))
        self.assertEqual(len(members), 1)


class _FailingRelease(_Ring):
    """
    A ring whose lease releases fail (the ring cannot be reached).
    """

    def kv(self, op: str, key: bytes, args: list[Any]) -> Deferred[Any]:
        if op == "release":
            from twisted.internet.defer import fail

            from suite.specter.chord import errors as E
            from suite.specter.chord.errors import RemoteError

            self.calls.append(op)
            return fail(RemoteError(E.TIMEOUT, "no answer"))
        return super().kv(op, key, args)


class RingReleaseTests(SynchronousTestCase):
    def test_failedLeaseReleaseLogged(self) -> None:
        """
        A route whose lease cannot be released is still released (the
        lease lapses by itself) and the failure is logged, not swallowed.
        """
        from twisted.logger import LogLevel, capturedLogs

        clock = Clock()
        ring = _FailingRelease(_memoryStore(clock))
        store = RingRouteStore(ring, clock)
        self.successResultOf(store.publish("a.example.test", "alice", "http", "g1:443", 30))
        with capturedLogs() as events:
            self.assertTrue(self.successResultOf(store.release("a.example.test", "alice")))
        self.assertIn("release", ring.calls)
        self.assertIsNone(self.successResultOf(store.lookup("a.example.test")))
        [event] = [e for e in events if e.get("hostname") == "a.example.test"]
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["error"], "timeout: no answer")

    def test_otherErrorsRaised(self) -> None:
        """
        An error that is not the ring's fails the release instead of being
        taken for a lapsed lease.
        """

        class Broken(_Ring):
            def kv(self, op: str, key: bytes, args: list[Any]) -> Deferred[Any]:
                if op == "release":
                    from twisted.internet.defer import fail

                    return fail(TypeError("bug"))
                return super().kv(op, key, args)

        clock = Clock()
        store = RingRouteStore(Broken(_memoryStore(clock)), clock)
        self.successResultOf(store.publish("a.example.test", "alice", "http", "g1:443", 30))
        self.failureResultOf(store.release("a.example.test", "alice"), TypeError)


class OverlayOrderTests(SynchronousTestCase):
    def test_failedPeersLast(self) -> None:
        """
        Gateways that failed to answer lately are tried last, for a while.
        """
        from suite.specter.gateway.overlay import OverlayPool

        clock = Clock()
        pool = OverlayPool(None, None, clock)  # type: ignore[arg-type]
        pool.failedAt["a:1"] = clock.seconds()
        self.assertEqual(pool.order(["a:1", "b:1", "c:1"]), ["b:1", "c:1", "a:1"])
        clock.advance(31)
        self.assertEqual(pool.order(["a:1", "b:1", "c:1"]), ["a:1", "b:1", "c:1"])
