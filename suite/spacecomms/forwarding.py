"""
Outbound routing: sending a message this node originates, forwarding one
it applied to the peers the routing rules allow (and that do not hold it
already, as far as the session knows: see L{Forwarder.wants}), saying
where a message went (or why nowhere) for the C{routing decision} log
line, and answering a peer with an ERROR.

One of this node's own entries a peer gave back (a restore) goes on as
this node's own first-hand message: path this node alone, hop 0, with the
originator's sequence and signature as given back, and without the
C{restore}/C{sync}/C{repair} marks of the session it came on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from suite.spacecomms.core import NodeCore, log
from suite.spacecomms.envelope import Envelope
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.peering import PeerTable

__all__ = ["Forwarder", "entryKind", "SESSION_MARKS"]

#: Payload marks that belong to one session's exchange (re-sync,
#: anti-entropy, restore), never sent on.
SESSION_MARKS = ("restore", "sync", "repair")


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
        #: Whether a message applied here should go on to a peer, given
        #: the entry's kind, key and version: False when the session with
        #: that peer knows the peer holds that version or newer, or that
        #: its re-sync under way will carry it (set by the node; see
        #: L{suite.spacecomms.resync.SendInputs.forwarding}).
        self.wants: Callable[[str, str, str, tuple[int, str]], bool] = lambda peer, kind, key, version: True

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

    def relay(self, env: Envelope, fromPeer: str) -> str:
        """
        Send on a routed message applied from C{fromPeer}, to the peers
        the routing rules allow and that want it (L{wants}); return where
        it went (or why nowhere), for the log line.  One of this node's own
        entries (given back by C{fromPeer}) goes as this node's own
        first-hand message, to every peer but C{fromPeer}.
        """
        core = self.core
        links = self.peers.links
        policies = {k: p.policies for k, p in self.peers.configs.items()}
        if env.source_node == core.nodeId:
            out = Envelope(
                env.message_type,
                core.nodeId,
                {k: v for k, v in env.payload.items() if k not in SESSION_MARKS},
                timestamp=core.now(),
                ttl=core.config.message_ttl_seconds,
                path=(core.nodeId,),
            )
            core.router.seen.seen(out.message_id)
            allowed = [p for p in core.router.targets(out, None, list(links), policies) if p != fromPeer]
        else:
            out = env.forwarded(core.nodeId)
            allowed = core.router.targets(env, fromPeer, list(links), policies)
        kind, key = entryKind(env)
        version = (env.payload["sequence"], env.source_node)
        targets = [p for p in allowed if self.wants(p, kind, key, version)]
        for peer in targets:
            links[peer].sendEnvelope(out)
        return self.describe(env, fromPeer, targets, [p for p in allowed if p not in targets])

    def describe(
        self, env: Envelope, fromPeer: str | None, targets: list[str], covered: list[str] | None = None
    ) -> str:
        """
        Where a message went, or why nowhere (hop limit, loop, policy, or
        the peers routing allows, C{covered}, have it already or get it
        from their re-sync under way).
        """
        held = ""
        if covered:
            verbs = ("has", "gets") if len(covered) == 1 else ("have", "get")
            held = f"held: {', '.join(covered)} {verbs[0]} it already or {verbs[1]} it by re-sync"
        if targets:
            return f"forwarded to {', '.join(targets)}" + (f" ({held})" if held else "")
        if held:
            return f"not forwarded ({held})"
        maxHops = self.core.router.maxHops
        # One of this node's own entries, given back, goes on at hop 0.
        relayed = fromPeer is not None and env.source_node != self.core.nodeId
        if relayed and env.hop_count + 1 >= maxHops:
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
