"""
Token buckets keyed by a string (a client address, a peer id).
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Per-key token buckets (e.g. per client IP): C{rate} per second, C{burst}."""

    def __init__(self, rate: float, burst: float, maxKeys: int = 100000) -> None:
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            return False
        if key not in self.buckets and len(self.buckets) >= self.maxKeys:
            self.prune(now)
        self.buckets[key] = (tokens - 1.0, now)
        return True

    def prune(self, now: float) -> None:
        full = self.burst / self.rate if self.rate > 0 else 0
        for k, (_, last) in list(self.buckets.items()):
            if now - last >= full:
                del self.buckets[k]
