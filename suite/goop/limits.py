"""
Token buckets keyed by a string (a client address, a peer id), and the rule
for a peer's short name shared by C{goop.json} and the hub.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

__all__ = ["TokenBucket", "MAX_PEER_NAME", "peerNameProblem", "raiseFileLimit", "FD_HEADROOM"]

#: Descriptors kept beyond the SSE cap for listeners, publishes, health
#: checks, the database, logs and the P2P streams.
FD_HEADROOM = 1024

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


def raiseFileLimit(
    needed: int,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> tuple[int, int, str | None]:
    """
    Raise the soft limit on open files to the hard limit (as Go programs do
    at start), so every SSE client the hub's caps allow has a descriptor.
    Without it a systemd service starts with 1,024: a flood of event-stream
    clients would fill the table below C{--max-sse-clients}, and the hub
    would then accept and drop every other connection, health checks and
    publications included.

    @return: the soft limit before and after, and a warning when it is still
        below C{needed}.
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    after = soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            after = target
        except (OSError, ValueError):
            after = soft
    if after != resource.RLIM_INFINITY and after < needed:
        return (
            soft,
            after,
            f"open-file limit {after} is below the {needed} the hub's --max-sse-clients needs "
            f"(with {FD_HEADROOM} to spare); raise LimitNOFILE= in the unit or lower --max-sse-clients",
        )
    return soft, after, None
