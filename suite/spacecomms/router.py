"""
Routing rules for announce/withdraw messages: per-peer policies, hop and
TTL limits, loop prevention (path vector, message-id dedup, never back to
the previous hop) and per-peer token-bucket rate limits.  Pure decisions;
the node applies them and logs each one as a C{routing decision}.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from suite.spacecomms.config import Policies
from suite.spacecomms.envelope import Envelope

__all__ = ["TokenBucket", "SeenCache", "Decision", "Router", "isRestore"]


class TokenBucket:
    """
    C{rate} tokens per second, at most C{burst} saved up.
    """

    def __init__(self, clock: IReactorTime, rate: float, burst: int) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = clock.seconds()

    def take(self) -> bool:
        now = self.clock.seconds()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SeenCache:
    """
    Message ids seen recently (bounded, oldest forgotten first, entries
    expire after C{lifetime} seconds).
    """

    def __init__(self, clock: IReactorTime, lifetime: float, maxEntries: int = 200_000) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.maxEntries = maxEntries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen(self, messageId: str) -> bool:
        """
        True if C{messageId} was seen before; remember it either way.
        """
        now = self.clock.seconds()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at + self.lifetime >= now and len(self._seen) < self.maxEntries:
                break
            self._seen.popitem(last=False)
        if messageId in self._seen:
            return True
        self._seen[messageId] = now
        return False

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True)
class Decision:
    """
    Whether to take a message in, and why.
    """

    accept: bool
    reason: str


def isCDM(env: Envelope) -> bool:
    return env.message_type.startswith("CDM_")


def isRestore(env: Envelope, nodeId: str, fromPeer: str) -> bool:
    """
    Whether C{env} is C{fromPeer} giving back one of C{nodeId}'s own
    entries: marked C{"restore": true}, originated by C{nodeId}, and
    relayed by C{fromPeer} alone (path C{[nodeId, fromPeer]}).
    """
    return (
        env.payload.get("restore") is True
        and env.source_node == nodeId
        and tuple(env.path) == (nodeId, fromPeer)
        and env.hop_count == 1
    )


class Router:
    """
    The routing rules of one node.
    """

    def __init__(
        self, nodeId: str, clock: IReactorTime, maxHops: int, seenLifetime: float, maxSkew: float = 300.0
    ) -> None:
        self.nodeId = nodeId
        self.clock = clock
        self.maxHops = maxHops
        self.maxSkew = maxSkew
        self.seen = SeenCache(clock, seenLifetime)

    def inbound(self, env: Envelope, fromPeer: str, policies: Policies, restoring: bool = False) -> Decision:
        """
        Decide whether a routed message from C{fromPeer} is taken in.
        C{restoring}: C{fromPeer}'s re-sync is open, so one of this node's
        own entries it re-states first-hand, marked C{restore}, is a
        restore, not a loop.
        """
        if env.source_node == self.nodeId or self.nodeId in env.path:
            if not (restoring and isRestore(env, self.nodeId, fromPeer)):
                return Decision(False, "loop: this node is already on the path")
        if self.seen.seen(env.message_id):
            return Decision(False, "loop: duplicate message id")
        if env.hop_count >= self.maxHops:
            return Decision(
                False, f"hop limit: hop count {env.hop_count} reached max_hop_count {self.maxHops}"
            )
        now = self.clock.seconds()
        if env.ttl and env.timestamp + env.ttl < now:
            return Decision(False, "ttl: expired")
        if env.timestamp > now + self.maxSkew:
            return Decision(
                False, f"ttl: timestamp is more than max_clock_skew_seconds ({self.maxSkew:g}) ahead"
            )
        if isCDM(env) and not policies.accept_cdm:
            return Decision(False, f"policy: accept_cdm is false for peer {fromPeer}")
        if not isCDM(env) and not policies.accept_object_state:
            return Decision(False, f"policy: accept_object_state is false for peer {fromPeer}")
        return Decision(True, "accepted")

    def targets(
        self,
        env: Envelope,
        fromPeer: str | None,
        established: Iterable[str],
        policies: Mapping[str, Policies],
    ) -> list[str]:
        """
        The established peers a message goes on to: not the previous hop,
        nobody already on its path, only where the forward policy allows,
        and only while under the hop limit.
        """
        if fromPeer is not None and env.hop_count + 1 >= self.maxHops:
            return []
        out = []
        for peer in established:
            if peer == fromPeer or peer in env.path or peer == env.source_node:
                continue
            pol = policies.get(peer)
            if pol is None:
                continue
            if isCDM(env) and not pol.forward_cdm:
                continue
            if not isCDM(env) and not pol.forward_object_state:
                continue
            out.append(peer)
        return out
