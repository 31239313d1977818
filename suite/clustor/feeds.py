"""
The control-plane feed client: a service that polls the control plane's
feeds (placement/routing, features, warmup, activation) over HTTP(S) on an
injected clock, keeps the last good document of each, and exports
freshness metrics:

- C{clustor_feed_staleness_ms{feed=...}}: milliseconds since the feed was
  last refreshed (since start when it never was), computed at scrape time;
- C{clustor_feed_latency_ms{feed=...}}: duration of the last fetch;
- C{clustor_feed_errors_total{feed=...}}: failed fetches.

A feed older than the staleness threshold (30 s by default) is logged as a
warning once when it turns stale, and once more when it recovers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.clustor.freshness import FeedFreshness, FreshnessCore, FreshnessMachine
from suite.clustor.interfaces import IFeedClient
from suite.serial import SerialJob
from suite.web.client import BodyTooLarge, collectBody

__all__ = [
    "DEFAULT_STALE_MS",
    "MAX_FEED_BYTES",
    "FeedError",
    "FeedClient",
]

log = Logger(namespace="clustor.feeds")

#: Staleness above which a feed is logged and reported stale.
DEFAULT_STALE_MS = 30_000
#: Largest feed document accepted.
MAX_FEED_BYTES = 4 * 1024 * 1024


class FeedError(Exception):
    """
    A fetch failed: bad status, oversized or non-JSON body.
    """


@dataclass
class _FeedState:
    name: str
    url: str
    document: dict[str, Any] | None = None
    etag: bytes | None = None
    lastSuccess: float | None = None
    lastLatencyMs: float | None = None
    lastError: str | None = None
    freshness: FeedFreshness | None = None
    #: runs this feed's fetches one at a time (a poll while one is in
    #: flight is skipped)
    fetching: SerialJob | None = None


def _collectLimited(response: Any, limit: int) -> Deferred[bytes]:
    def tooLarge(failure: Failure) -> bytes:
        failure.trap(BodyTooLarge)
        raise FeedError(f"response larger than {limit} bytes")

    return collectBody(response, limit).addErrback(tooLarge)


def describeFailure(failure: Failure, timeoutMs: int) -> str:
    """
    One line saying why a fetch failed.
    """
    if failure.check(FeedError):
        return failure.getErrorMessage()
    if failure.check(defer.TimeoutError, CancelledError):
        return f"timed out after {timeoutMs} ms"
    reasons = getattr(failure.value, "reasons", None)
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], Failure):
        # ResponseNeverReceived, RequestTransmissionFailed, ...: the cause is inside.
        return describeFailure(reasons[0], timeoutMs)
    name = failure.type.__name__ if failure.type is not None else "error"
    text = " ".join(failure.getErrorMessage().split())
    return f"{name}: {text}" if text else name


class _FeedCollector:
    """
    The C{clustor_feed_*} metrics, read from the client at scrape time.
    """

    def __init__(self, client: FeedClient) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        staleness = GaugeMetricFamily(
            "clustor_feed_staleness_ms",
            "Milliseconds since the control-plane feed was last refreshed.",
            labels=["feed"],
        )
        latency = GaugeMetricFamily(
            "clustor_feed_latency_ms",
            "Duration of the last control-plane feed fetch in milliseconds.",
            labels=["feed"],
        )
        errors = CounterMetricFamily(
            "clustor_feed_errors", "Failed control-plane feed fetches.", labels=["feed"]
        )
        for feed in self.client.feeds:
            staleness.add_metric([feed], self.client.stalenessMs(feed))
            last = self.client.lastLatencyMs(feed)
            if last is not None:
                latency.add_metric([feed], last)
            errors.add_metric([feed], self.client.errorCounts[feed])
        yield staleness
        yield latency
        yield errors


@implementer(IFeedClient)
class FeedClient(Service):
    """
    Poll each feed every C{intervalMs} milliseconds.

    @param baseURL: the control plane's URL (C{CEPTRA_CONTROL_PLANE_URL}).
    @param paths: feed name -> path (e.g. C{{"placement": "/routing"}}).
    @param http: the HTTP client: a L{treq.client.HTTPClient} (mTLS agent
        wired by the caller) or anything with its C{get(url, headers=...)}.
    @param registry: where the C{clustor_feed_*} metrics are registered.
    """

    def __init__(
        self,
        baseURL: str,
        paths: Mapping[str, str],
        http: Any,
        clock: IReactorTime,
        registry: CollectorRegistry,
        intervalMs: int = 1000,
        staleAfterMs: int = DEFAULT_STALE_MS,
        timeoutMs: int = 5000,
        maxBytes: int = MAX_FEED_BYTES,
    ) -> None:
        base = baseURL.rstrip("/")
        self._feeds: dict[str, _FeedState] = {
            name: _FeedState(name, base + path) for name, path in paths.items()
        }
        self.feeds = tuple(self._feeds)
        for st in self._feeds.values():
            st.fetching = SerialJob(partial(self._fetch, st), f"control-plane feed {st.name}", log=log)
        self.http = http
        self.clock = clock
        self.intervalMs = intervalMs
        self.staleAfterMs = staleAfterMs
        self.timeoutMs = timeoutMs
        self.maxBytes = maxBytes
        self._startedAt = clock.seconds()
        self._loop: LoopingCall | None = None
        self._pending: set[Deferred[Any]] = set()
        self.errorCounts: dict[str, int] = {name: 0 for name in self._feeds}
        registry.register(_FeedCollector(self))

    # IFeedClient

    def stalenessMs(self, feed: str) -> float:
        st = self._feeds[feed]
        since = st.lastSuccess if st.lastSuccess is not None else self._startedAt
        return max(0.0, (self.clock.seconds() - since) * 1000.0)

    def latest(self, feed: str) -> dict[str, Any] | None:
        return self._feeds[feed].document

    def isStale(self, feed: str) -> bool:
        st = self._feeds[feed]
        return st.lastSuccess is None or self.stalenessMs(feed) > self.staleAfterMs

    def lastLatencyMs(self, feed: str) -> float | None:
        """
        Duration of the last fetch of C{feed} (successful or not), or C{None}.
        """
        return self._feeds[feed].lastLatencyMs

    def lastError(self, feed: str) -> str | None:
        """
        The reason the last fetch of C{feed} failed, or C{None} after a success.
        """
        return self._feeds[feed].lastError

    # service

    def startService(self) -> None:
        super().startService()
        self._startedAt = self.clock.seconds()
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self.clock
        self._loop.start(self.intervalMs / 1000.0, now=True).addErrback(
            lambda f: log.failure("feed poll loop failed", f)
        )

    def stopService(self) -> None:
        # Not running before the fetches in flight are cancelled: their
        # failures (cancelled connections and lookups) are not reported.
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        for d in list(self._pending):
            d.cancel()

    # polling

    def poll(self) -> None:
        """
        Start a fetch of every feed not already being fetched, and check
        staleness.
        """
        for st in self._feeds.values():
            assert st.fetching is not None
            st.fetching.poll()
        self.checkStaleness()

    def checkStaleness(self) -> None:
        """
        Tell each feed's freshness machine when the feed is overdue; it warns
        once when the feed turns stale.
        """
        for st in self._feeds.values():
            staleMs = self.stalenessMs(st.name)
            if staleMs > self.staleAfterMs:
                self._freshness(st).overdue(staleMs, self.staleAfterMs, st.lastError)

    def _freshness(self, st: _FeedState) -> FeedFreshness:
        if st.freshness is None:
            st.freshness = FreshnessMachine(FreshnessCore(st.name, log))
        return st.freshness

    def _fetch(self, st: _FeedState) -> Deferred[Any]:
        started = self.clock.seconds()
        headers = {b"accept": [b"application/json"]}
        if st.etag is not None:
            headers[b"if-none-match"] = [st.etag]
        d: Deferred[Any] = self.http.get(st.url, headers=headers)
        d.addCallback(self._gotResponse, st)
        # The timeout covers the whole fetch, body included: cancelling a
        # Deferred waiting on the body cancels the body collection too.
        d.addTimeout(self.timeoutMs / 1000.0, self.clock)
        d.addCallbacks(self._succeeded, self._failed, callbackArgs=(st, started), errbackArgs=(st, started))
        self._pending.add(d)
        d.addBoth(self._forget, d)
        d.addErrback(lambda f: log.failure("control-plane feed {feed}: unexpected error", f, feed=st.name))
        return d

    def _forget(self, result: object, d: Deferred[Any]) -> object:
        self._pending.discard(d)
        return result

    def _gotResponse(self, response: Any, st: _FeedState) -> Any:
        if response.code == 304 and st.document is not None:
            return _collectLimited(response, self.maxBytes).addCallback(lambda _: (st.document, st.etag))
        if response.code != 200:
            return _collectLimited(response, 64 * 1024).addBoth(
                lambda _: Failure(FeedError(f"HTTP {response.code} from {st.url}"))
            )
        etags = response.headers.getRawHeaders(b"etag") or [None]

        def parse(body: bytes) -> tuple[dict[str, Any], bytes | None]:
            try:
                doc = json.loads(body)
            except ValueError:
                raise FeedError(f"{st.url} returned a body that is not JSON") from None
            if not isinstance(doc, dict):
                raise FeedError(f"{st.url} returned JSON that is not an object")
            return doc, etags[0]

        return _collectLimited(response, self.maxBytes).addCallback(parse)

    def _succeeded(self, result: tuple[dict[str, Any], bytes | None], st: _FeedState, started: float) -> None:
        now = self.clock.seconds()
        st.document, st.etag = result
        st.lastSuccess = now
        st.lastError = None
        st.lastLatencyMs = (now - started) * 1000.0
        self._freshness(st).refreshed()

    def _failed(self, failure: Failure, st: _FeedState, started: float) -> None:
        if not self.running:
            return
        now = self.clock.seconds()
        st.lastLatencyMs = (now - started) * 1000.0
        self.errorCounts[st.name] += 1
        reason = describeFailure(failure, self.timeoutMs)
        if reason != st.lastError:
            log.warn("control-plane feed {feed} fetch failed: {reason}", feed=st.name, reason=reason)
        st.lastError = reason
