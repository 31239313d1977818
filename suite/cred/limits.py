"""
Throttling of failed authentication attempts per client.

    limiter = FailureLimiter(reactor, maxFailures=10, windowSeconds=60)
    root.putChild(b"_internal", requireBasicAuth(internal, checker, "specter", limiter=limiter))

A client (keyed by its address) that has failed C{maxFailures} times within
the last C{windowSeconds} is answered 429 with C{Retry-After} without its
credentials being checked, until its oldest failure leaves the window.  Only
offered-and-wrong credentials count: a request without credentials (a
browser's first try) does not.  Memory is bounded: at most C{maxTracked}
clients are remembered, the least recently failing forgotten first.  No
timers: expiry is computed from C{clock.seconds()} when a client is seen.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from twisted.internet.interfaces import IReactorTime

__all__ = ["FailureLimiter"]


class FailureLimiter:
    """
    A sliding-window count of failures per key.
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxFailures: int = 10,
        windowSeconds: float = 60.0,
        maxTracked: int = 10000,
    ) -> None:
        if maxFailures < 1 or windowSeconds <= 0 or maxTracked < 1:
            raise ValueError("maxFailures, windowSeconds and maxTracked must be positive")
        self._clock = clock
        self.maxFailures = maxFailures
        self.windowSeconds = float(windowSeconds)
        self.maxTracked = maxTracked
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = now - self.windowSeconds
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def blockedFor(self, key: str) -> float:
        """
        Seconds until C{key} may try again; 0 when it may try now.
        """
        now = self._clock.seconds()
        times = self._recent(key, now)
        if times is None or len(times) < self.maxFailures:
            return 0.0
        return max(0.0, times[-self.maxFailures] + self.windowSeconds - now)

    def failed(self, key: str) -> None:
        """
        Record one failure for C{key}.
        """
        now = self._clock.seconds()
        times = self._recent(key, now)
        if times is None:
            times = deque(maxlen=self.maxFailures)
            self._failures[key] = times
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.maxTracked:
            self._failures.popitem(last=False)

    @property
    def trackedCount(self) -> int:
        """
        How many keys have failures on record (some may have expired).
        """
        return len(self._failures)
