"""
The control-plane feed client on a fake clock, against the real feed
resources served in memory.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface.verify import verifyObject

from suite.clustor.feeds import FeedClient, FeedError, describeFailure
from suite.clustor.interfaces import IFeedClient
from suite.clustor.server import ControlPlaneStore, addFeedResources
from tests.clustor.helpers import captureLogs, writeState

PATHS = {"placement": "/routing", "features": "/features", "warmup": "/warmup", "activation": "/activation"}


class Switchable(Resource):
    """
    Delegates to the real feed resources, or answers 500 while broken.
    """

    def __init__(self, real: Resource) -> None:
        super().__init__()
        self.real = real
        self.broken = False
        self.requests: list[Request] = []

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        self.requests.append(request)
        if self.broken:
            return _Error()
        return self.real.getChildWithDefault(path, request)


class _Error(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setResponseCode(500)
        return b"boom"


class _Fixed(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render_GET(self, request: Request) -> bytes:
        return self.body


class _Hanging:
    """
    An HTTP client whose requests never answer.
    """

    def __init__(self) -> None:
        self.calls: list[Deferred[Any]] = []

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append(d)
        return d


class _StalledBody:
    """
    An HTTP client whose responses send headers and then never finish the body.
    """

    def __init__(self) -> None:
        self.protocols: list[Any] = []

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        client = self

        class Response:
            code = 200
            length = UNKNOWN_LENGTH
            headers = Headers()

            def deliverBody(self, protocol: Any) -> None:
                client.protocols.append(protocol)

        return succeed(Response())


class FeedClientTests(SynchronousTestCase):
    """
    Polling, staleness, warnings and metrics of L{FeedClient}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        store = ControlPlaneStore(writeState(self.mktemp()))
        real = Resource()
        addFeedResources(real, store)
        self.server = Switchable(real)
        self.http = StubTreq(self.server)
        self.registry = CollectorRegistry()
        self.events = captureLogs(self)

    def makeClient(self, http: Any = None, **kw: Any) -> FeedClient:
        client = FeedClient("http://cp.test/", PATHS, http or self.http, self.clock, self.registry, **kw)
        client.startService()
        self.addCleanup(lambda: client.stopService() if client.running else None)
        if http is None:
            self.http.flush()
        return client

    def tick(self, seconds: int) -> None:
        for _ in range(seconds):
            self.clock.advance(1)
            self.http.flush()

    def metric(self, name: str, feed: str) -> float | None:
        return self.registry.get_sample_value(name, {"feed": feed})

    def warnings(self, feed: str) -> list[dict[str, Any]]:
        return [e for e in self.events if "is stale" in e.get("log_format", "") and e.get("feed") == feed]

    def test_interface(self) -> None:
        """
        The client provides L{IFeedClient}.
        """
        client = self.makeClient()
        self.assertTrue(verifyObject(IFeedClient, client))
        self.assertEqual(client.feeds, ("placement", "features", "warmup", "activation"))

    def test_fetchesEveryFeed(self) -> None:
        """
        At start every feed is fetched and fresh.
        """
        client = self.makeClient()
        placement = client.latest("placement")
        assert placement is not None
        self.assertEqual([p["id"] for p in placement["partitions"]], ["p0", "p1"])
        self.assertEqual(client.latest("warmup")["partitions"]["p1"], {"ready": False})  # type: ignore[index]
        for feed in PATHS:
            self.assertFalse(client.isStale(feed))
            self.assertEqual(self.metric("clustor_feed_staleness_ms", feed), 0.0)
            self.assertEqual(self.metric("clustor_feed_latency_ms", feed), 0.0)

    def test_conditionalRequests(self) -> None:
        """
        Later polls send If-None-Match and a 304 counts as a refresh.
        """
        client = self.makeClient()
        self.tick(5)
        last = self.server.requests[-1]
        self.assertIsNotNone(last.getHeader(b"if-none-match"))
        self.assertEqual(client.stalenessMs("placement"), 0.0)
        self.assertIsNotNone(client.latest("placement"))

    def test_staleAfterThirtySeconds(self) -> None:
        """
        With the control plane failing, staleness grows with the clock; past
        30 s the feed is stale and one warning is logged; a later success
        makes it fresh again.
        """
        client = self.makeClient()
        self.server.broken = True
        self.tick(30)
        self.assertFalse(client.isStale("placement"))
        self.assertEqual(self.warnings("placement"), [])
        self.tick(2)
        self.assertTrue(client.isStale("placement"))
        self.assertGreater(self.metric("clustor_feed_staleness_ms", "placement") or 0, 30_000)
        self.assertEqual(self.metric("clustor_feed_errors_total", "placement"), 32.0)
        self.tick(10)
        warnings = self.warnings("placement")
        self.assertEqual(len(warnings), 1)
        self.assertIn("HTTP 500", warnings[0]["error"])
        self.server.broken = False
        self.tick(1)
        self.assertFalse(client.isStale("placement"))
        self.assertTrue(any("fresh again" in e.get("log_format", "") for e in self.events))

    def test_neverFetchedIsStale(self) -> None:
        """
        A feed never fetched is stale, with staleness counted from start.
        """
        self.server.broken = True
        client = self.makeClient()
        self.assertTrue(client.isStale("placement"))
        self.assertIsNone(client.latest("placement"))
        self.assertEqual(client.lastError("placement"), "HTTP 500 from http://cp.test/routing")
        self.tick(3)
        self.assertEqual(client.stalenessMs("placement"), 3000.0)

    def test_timeout(self) -> None:
        """
        A fetch that never answers times out on the clock and is retried.
        """
        hanging = _Hanging()
        client = self.makeClient(http=hanging, timeoutMs=2000)
        self.assertEqual(len(hanging.calls), 4)
        self.clock.advance(1)
        self.assertEqual(len(hanging.calls), 4)  # still in flight: no duplicate
        self.clock.advance(1)
        self.assertEqual(client.lastError("placement"), "timed out after 2000 ms")
        self.assertEqual(self.metric("clustor_feed_latency_ms", "placement"), 2000.0)
        self.clock.advance(1)
        self.assertEqual(len(hanging.calls), 8)
        client.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restartAfterStop(self) -> None:
        """
        Stopping cancels the fetches in flight, and a restarted client
        fetches every feed again at once.
        """
        hanging = _Hanging()
        client = self.makeClient(http=hanging, timeoutMs=60_000)
        self.assertEqual(len(hanging.calls), 4)
        client.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([d.called for d in hanging.calls], [True] * 4)
        client.startService()
        self.assertEqual(len(hanging.calls), 8)
        self.clock.advance(1)
        self.assertEqual(len(hanging.calls), 8)  # still in flight: no duplicate
        client.stopService()

    def test_stopIsQuiet(self) -> None:
        """
        The fetches that stopping cancels are not reported as failed fetches,
        whatever error the cancelled connection attempt ends with.
        """

        class Connecting(_Hanging):
            def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred(
                    lambda d: d.errback(ConnectingCancelledError(IPv4Address("TCP", "127.0.0.1", 1)))
                )
                self.calls.append(d)
                return d

        for http in (_Hanging(), Connecting()):
            client = self.makeClient(http=http, timeoutMs=60_000)
            client.stopService()
            self.assertEqual([d.called for d in http.calls], [True] * 4)
            self.assertEqual([e for e in self.events if "fetch failed" in e.get("log_format", "")], [])
            self.assertEqual(self.metric("clustor_feed_errors_total", "placement"), 0.0)
            self.assertIsNone(client.lastError("placement"))
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stalledBodyTimesOut(self) -> None:
        """
        The timeout covers the body too: a response whose body never ends
        fails the fetch, and the next poll tries again.
        """
        stalled = _StalledBody()
        client = self.makeClient(http=stalled, timeoutMs=1500)
        self.assertEqual(len(stalled.protocols), 4)
        self.clock.advance(1)
        self.assertEqual(len(stalled.protocols), 4)
        self.clock.advance(1)
        self.assertEqual(client.lastError("features"), "timed out after 1500 ms")
        self.assertEqual(len(stalled.protocols), 8)
        client.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_oversizedAndNotJSON(self) -> None:
        """
        Oversized and non-JSON bodies are fetch errors with a reason.
        """
        root = Resource()
        root.putChild(b"routing", _Fixed(b"x" * 5000))
        root.putChild(b"features", _Fixed(b"not json"))
        root.putChild(b"warmup", _Fixed(b"[1, 2]"))
        root.putChild(b"activation", _Fixed(b"{}"))
        self.http = StubTreq(root)
        client = self.makeClient(maxBytes=1000)
        self.assertEqual(client.lastError("placement"), "response larger than 1000 bytes")
        self.assertIn("not JSON", client.lastError("features") or "")
        self.assertIn("not an object", client.lastError("warmup") or "")
        self.assertEqual(client.latest("activation"), {})


class DescribeFailureTests(SynchronousTestCase):
    """
    Fetch failures are described in one readable line.
    """

    def test_kinds(self) -> None:
        """
        Feed errors as written, timeouts with the limit, wrapped causes unwrapped.
        """
        self.assertEqual(describeFailure(Failure(FeedError("HTTP 503 from x")), 100), "HTTP 503 from x")
        self.assertEqual(describeFailure(Failure(defer.TimeoutError()), 250), "timed out after 250 ms")
        refused = Failure(ConnectionRefusedError("127.0.0.1:1"))
        self.assertTrue(describeFailure(refused, 1).startswith("ConnectionRefusedError: "))
        wrapped = Failure(ResponseNeverReceived([Failure(ValueError("bad handshake"))]))
        self.assertEqual(describeFailure(wrapped, 1), "ValueError: bad handshake")
