"""
Outbound routing: sending a message this node originates, forwarding one
it applied to the peers the routing rules allow, saying where a message
went (or why nowhere) for the C{routing decision} log line, and answering
a peer with an ERROR.
"""

from __future__ import annotations

from typing import Any

from suite.spacecomms.core import NodeCore, log
from suite.spacecomms.envelope import Envelope
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.peering import PeerTable

__all__ = ["Forwarder", "entryKind"]


def entryKind(env: Envelope) -> tuple[str, str]:
    """
    The kind (C{cdm} or C{object}) and key a routed message is about.
    """
    kind = "cdm" if env.message_type.startswith("CDM") else "object"
    return kind, env.payload["cdm_id" if kind == "cdm" else "object_id"]


class Forwarder:
    """
    Sends envelopes to established peers.
    """

    def __init__(self, core: NodeCore, peers: PeerTable) -> None:
        self.core = core
        self.peers = peers

    def originate(self, mtype: str, payload: dict[str, Any]) -> None:
        """
        Send a message this node originates to every peer routing allows.
        """
        core = self.core
        env = Envelope(
            mtype,
            core.nodeId,
            payload,
            timestamp=core.now(),
            ttl=core.config.message_ttl_seconds,
            path=(core.nodeId,),
        )
        core.router.seen.seen(env.message_id)
        if not self.peers.links:
            return
        targets = self.forward(env, None)
        kind, key = entryKind(env)
        log.info(
            "routing decision: {message_type} {message_id} for {kind} {key} originated here; {forwarding}",
            message_type=env.message_type,
            message_id=env.message_id,
            node=core.nodeId,
            kind=kind,
            key=key,
            forwarding=self.describe(env, None, targets),
        )

    def forward(self, env: Envelope, fromPeer: str | None) -> list[str]:
        """
        Send C{env} on to the peers the routing rules allow; return them.
        """
        links = self.peers.links
        targets = self.core.router.targets(
            env, fromPeer, list(links), {k: p.policies for k, p in self.peers.configs.items()}
        )
        if targets:
            out = env if fromPeer is None else env.forwarded(self.core.nodeId)
            for peer in targets:
                links[peer].sendEnvelope(out)
        return targets

    def describe(self, env: Envelope, fromPeer: str | None, targets: list[str]) -> str:
        """
        Where a message went, or why nowhere (hop limit, loop, policy).
        """
        if targets:
            return f"forwarded to {', '.join(targets)}"
        maxHops = self.core.router.maxHops
        if fromPeer is not None and env.hop_count + 1 >= maxHops:
            return f"not forwarded (hop limit: max_hop_count {maxHops} reached)"
        others = [p for p in self.peers.links if p != fromPeer]
        if not others:
            return "not forwarded (no other established peer)"
        if all(p in env.path or p == env.source_node for p in others):
            return "not forwarded (loop: every other peer is on the path)"
        return "not forwarded (policy: forwarding disabled towards the other peers)"

    def error(self, link: IPeerLink, code: str, reason: str, ref: str | None = None) -> None:
        """
        Answer C{link}'s peer with an ERROR (counted in the error rate).
        """
        core = self.core
        core.metrics.error()
        link.sendEnvelope(
            Envelope(
                "ERROR",
                core.nodeId,
                {"code": code, "message": reason, "ref_message_id": ref},
                timestamp=core.now(),
                path=(core.nodeId,),
            )
        )
