"""
The node's peer table: the configured peers and their policies, the
established sessions (one L{IPeerLink} per peer), each peer's rate-limit
bucket and the capabilities it announced, and the HELLO checks that admit
a peer.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

from suite.spacecomms.config import PeerConfig, Policies
from suite.spacecomms.core import NodeCore
from suite.spacecomms.envelope import SUPPORTED_VERSIONS, Envelope
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.router import TokenBucket

__all__ = ["PeerTable", "CAPABILITIES"]

CAPABILITIES = ["cdm", "object_state", "resync", "antientropy", "restore", "sync_summary", "heartbeat_echo"]


class PeerTable:
    """
    Configured peers and established sessions.
    """

    def __init__(self, core: NodeCore, peers: Iterable[PeerConfig]) -> None:
        self.core = core
        self.configs: dict[str, PeerConfig] = {p.id: p for p in peers}
        self.links: dict[str, IPeerLink] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.caps: dict[str, frozenset[str]] = {}
        #: The C{own_sequence} each peer stated in its HELLO (None: it did
        #: not ask for a restore of its own entries).
        self.restoreAfter: dict[str, int | None] = {}
        #: What this node states to a peer as its own C{own_sequence} (the
        #: ledger's restore mark for that peer, set by the node).
        self.ownSequence: Callable[[str | None], int] = lambda peer: 0

    def replace(self, peers: Iterable[PeerConfig]) -> None:
        """
        Replace the configured peers; sessions of removed peers are closed.
        """
        new = {p.id: p for p in peers}
        for pid in list(self.links):
            if pid not in new:
                self.links[pid].close("peer removed from configuration")
        self.configs = new
        self.buckets = {k: v for k, v in self.buckets.items() if k in new}

    def policies(self, peerId: str) -> Policies:
        """
        The routing policies towards C{peerId} (all off for an unknown peer).
        """
        p = self.configs.get(peerId)
        return p.policies if p is not None else Policies(False, False, False, False)

    def capable(self, peer: str, capability: str) -> bool:
        """
        Whether C{peer} announced C{capability} in its HELLO (assumed when
        no HELLO was seen, as in simulations).
        """
        caps = self.caps.get(peer)
        return caps is None or capability in caps

    def checkHello(self, hello: Envelope, expectedPeer: str | None) -> tuple[str, str] | None:
        """
        None to admit the peer a HELLO names, or an (error code, reason).
        """
        p = hello.payload
        peerId = p["node_id"]
        if not set(p["versions"]) & set(SUPPORTED_VERSIONS):
            return (
                "UNSUPPORTED_VERSION",
                f"no common protocol version (this node speaks {', '.join(SUPPORTED_VERSIONS)})",
            )
        peer = self.configs.get(peerId)
        if peer is None:
            return ("UNAUTHORIZED", f"node {peerId} is not a configured peer")
        if expectedPeer is not None and peerId != expectedPeer:
            return ("UNAUTHORIZED", f"expected node {expectedPeer}, got {peerId}")
        if not hmac.compare_digest(p.get("auth_token", "").encode(), peer.auth_token.encode()):
            return ("UNAUTHORIZED", "auth token mismatch")
        caps = self.caps[peerId] = frozenset(c for c in p["capabilities"] if isinstance(c, str))
        own = p.get("own_sequence")
        self.restoreAfter[peerId] = own if "restore" in caps and isinstance(own, int) else None
        return None

    def helloPayload(self, peerId: str | None) -> dict[str, Any]:
        """
        The HELLO this node sends C{peerId} (with that peer's token).
        """
        token = self.configs[peerId].auth_token if peerId in self.configs else ""
        return {
            "node_id": self.core.nodeId,
            "node_name": self.core.config.node_name,
            "versions": list(SUPPORTED_VERSIONS),
            "capabilities": CAPABILITIES,
            "auth_token": token,
            "own_sequence": self.ownSequence(peerId),
            # The peer heartbeats at least every third of it (see
            # suite.spacecomms.session.heartbeatPeriod).
            "session_timeout_seconds": self.core.config.session_timeout_seconds,
        }

    def attach(self, link: IPeerLink) -> None:
        """
        Make C{link} the session to its peer (closing one it replaces) and
        give the peer a fresh rate-limit bucket.
        """
        peer = link.peerId
        old = self.links.get(peer)
        if old is not None and old is not link:
            old.close("replaced by a newer session")
        self.links[peer] = link
        pol = self.policies(peer)
        self.buckets[peer] = TokenBucket(self.core.clock, pol.rate_limit_per_second, pol.rate_limit_burst)

    def detach(self, link: IPeerLink) -> bool:
        """
        Forget C{link} if it is still its peer's session; return whether it was.
        """
        if self.links.get(link.peerId) is link:
            del self.links[link.peerId]
            return True
        return False
