"""
Token buckets keyed by a string (a client address, a peer id), and the rule
for a peer's short name shared by C{goop.json} and the hub.
"""

from __future__ import annotations

__all__ = ["TokenBucket", "MAX_PEER_NAME", "peerNameProblem"]

#: The longest peer name (C{profile.name}) a peer may set or a hub accepts.
MAX_PEER_NAME = 64


def peerNameProblem(name: str) -> str | None:
    """
    Why C{name} is not a peer name (printable text of at most
    L{MAX_PEER_NAME} characters without surrounding spaces), or None.
    """
    if len(name) > MAX_PEER_NAME:
        return f"longer than {MAX_PEER_NAME} characters"
    if not name.isprintable() or name != name.strip():
        return "not printable text without control characters or surrounding spaces"
    return None


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
