"""
Routed messages from peers: the rate-limit drop report (one RATE_LIMITED
answer and one log line per peer per interval) and applying an announce or
withdrawal — routing policy, provenance, authority, sequence window,
ordering and signature checks, then store and forward on, each outcome
logged as a C{routing decision}.
"""

from __future__ import annotations

import time as _time

from twisted.internet.interfaces import IDelayedCall

from suite.spacecomms.authority import ownership, provenance, sequenceWindow
from suite.spacecomms.cdm.jsonfmt import fromDict, toDict
from suite.spacecomms.cdm.model import CDMError, validate
from suite.spacecomms.core import NodeCore, log
from suite.spacecomms.envelope import Envelope
from suite.spacecomms.forwarding import Forwarder, entryKind
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.ledger import Ledger
from suite.spacecomms.local import LocalUpdates
from suite.spacecomms.peering import PeerTable
from suite.spacecomms.store import Record

__all__ = ["Inbound", "RATE_LOG_INTERVAL_SECONDS"]

#: Rate-limit drops are logged (and answered RATE_LIMITED) once per peer per interval.
RATE_LOG_INTERVAL_SECONDS = 5.0


class _Drops:
    """
    Rate-limit drops from one peer within the current log interval.
    """

    def __init__(self, call: IDelayedCall, firstId: str) -> None:
        self.call = call
        self.count = 1
        self.firstId = firstId


class Inbound:
    """
    Applies the routed messages peers send.
    """

    def __init__(
        self, core: NodeCore, peers: PeerTable, ledger: Ledger, forwarder: Forwarder, local: LocalUpdates
    ) -> None:
        self.core = core
        self.peers = peers
        self.ledger = ledger
        self.forwarder = forwarder
        self.local = local
        self._drops: dict[str, _Drops] = {}

    def stop(self) -> None:
        """
        Log the drops of the current interval now and cancel their timers.
        """
        for peer in list(self._drops):
            self._drops[peer].call.cancel()
            self._logDrops(peer)

    def rateLimited(self, link: IPeerLink, env: Envelope) -> None:
        """
        Count a message dropped by C{link}'s rate limit: the first drop of
        an interval is answered RATE_LIMITED, and one line per peer per
        interval says how many were dropped (anti-entropy repairs them).
        """
        peer = link.peerId
        drops = self._drops.get(peer)
        if drops is not None:
            drops.count += 1
            return
        call = self.core.clock.callLater(RATE_LOG_INTERVAL_SECONDS, self._logDrops, peer)
        self._drops[peer] = _Drops(call, env.message_id)
        self.forwarder.error(link, "RATE_LIMITED", "rate limit exceeded", env.message_id)

    def _logDrops(self, peer: str) -> None:
        drops = self._drops.pop(peer, None)
        if drops is None:
            return
        log.warn(
            "rate limit exceeded: peer {peer}: dropped {count} messages in {seconds:g}s (first {message_id})",
            peer=peer,
            count=drops.count,
            seconds=RATE_LOG_INTERVAL_SECONDS,
            message_id=drops.firstId,
            node=self.core.nodeId,
        )

    def apply(self, link: IPeerLink, env: Envelope, restoring: bool = False) -> bool:
        """
        Apply a routed message from C{link}'s peer if every rule admits it,
        and forward it on; return whether it was applied.  C{restoring}:
        the peer's re-sync is open, so it may give back this node's own
        entries (L{isRestore}); those are checked like any relayed message
        (with TLS, this node's own signature must verify) and sent on, as
        this node's own, to the other peers that lack them.  One that is
        older than a version this node made since it started (numbered
        higher, as a node whose clock is behind numbers its new versions
        lower) is not taken: that version is announced again above it.
        """
        core = self.core
        peer = link.peerId
        p = env.payload
        kind, key = entryKind(env)
        decision = core.router.inbound(env, peer, self.peers.policies(peer), restoring)
        if not decision.accept:
            self._dropped(env, peer, kind, key, decision.reason)
            return False
        restore = env.source_node == core.nodeId
        started = _time.perf_counter()
        seq = p["sequence"]
        if self.ledger.pastRetention(kind, seq):
            self._dropped(
                env,
                peer,
                kind,
                key,
                "retention: last changed by its originator before this node's retention limit",
            )
            return False
        old: Record | None = core.store.get(kind, key)
        refusal = provenance(env, peer) or sequenceWindow(seq, core.now(), core.config.max_clock_skew_seconds)
        overriding = False
        if refusal is None:
            refusal, overriding = ownership(env, kind, key, old, core.config.override_nodes)
        if refusal is not None:
            self._dropped(env, peer, kind, key, refusal)
            return False
        if old is not None and old.version() >= (seq, env.source_node):
            self._decision("ignored", env, peer, kind, key, ": not newer than the stored version")
            return False
        if core.signer is not None and env.source_node != peer:
            # Relayed: the originator's signature speaks for it.  (First-hand
            # messages are authenticated by the session itself: its token
            # and the certificate that names the peer.)
            refusal = core.signer.verify(env.message_type, env.source_node, p, core.now())
            if refusal is not None:
                self._dropped(env, peer, kind, key, refusal)
                return False
        if restore and old is not None and self.ledger.writtenHere(old):
            # An older copy of a version this node made since it started,
            # numbered higher (its clock was ahead before it lost its
            # store): this node's version stays, announced again above it.
            again = self.local.reassert(old, seq)
            self._decision(
                "ignored",
                env,
                peer,
                kind,
                key,
                ": older than the version this node made since it started; that version announced"
                " again as sequence {sequence}",
                sequence=again.sequence,
            )
            return False
        signature, cert = p.get("signature"), p.get("cert")
        if overriding:
            log.warn(
                "authority: admin override of cdm {cdm_id} (originator {owner}) by {origin}, via {peer}",
                cdm_id=key,
                owner=old.origin if old is not None else "?",
                origin=env.source_node,
                peer=peer,
                node=core.nodeId,
            )
        override = p.get("override") is True and env.source_node in core.config.override_nodes
        now = core.now()
        if env.message_type == "CDM_ANNOUNCE":
            try:
                cdm = validate(fromDict(p["cdm"]))
            except CDMError as e:
                core.metrics.invalidCDM()
                log.warn(
                    "cdm validation failed: {field}: {reason} (from peer {peer})",
                    field=e.field,
                    reason=e.reason,
                    peer=peer,
                )
                self.forwarder.error(link, "INVALID_MESSAGE", f"cdm validation failed: {e}", env.message_id)
                return False
            if cdm.messageId != key:
                self.forwarder.error(
                    link,
                    "INVALID_MESSAGE",
                    "payload.cdm_id differs from the CDM's MESSAGE_ID",
                    env.message_id,
                )
                return False
            record = Record(
                "cdm",
                key,
                env.source_node,
                seq,
                True,
                # Signed: keep the CDM exactly as signed, to re-send it.
                p["cdm"] if signature is not None else toDict(cdm),
                None,
                old.createdAt if old is not None else now,
                now,
                peer,
                cdm.tcaSeconds,
                list(cdm.objectDesignators()),
                override,
                signature,
                cert,
            )
            self.ledger.put(record)
            self.ledger.supersede(record)
            core.metrics.cdmProcessed(_time.perf_counter() - started)
        elif env.message_type == "OBJECT_STATE_ANNOUNCE":
            self.ledger.put(
                Record(
                    "object",
                    key,
                    env.source_node,
                    seq,
                    True,
                    p["state"],
                    None,
                    now,
                    now,
                    peer,
                    signature=signature,
                    cert=cert,
                )
            )
        else:
            base = old or Record(kind, key, env.source_node, seq, False, createdAt=now)
            self.ledger.tombstone(base, p.get("reason") or "ERROR", seq, env.source_node, peer, override, p)
        if restore:
            # Numbered after it, this node's next updates win over it.
            self.ledger.restored(seq)
        # Given back or relayed, it goes on to the peers that lack it.
        forwarding = self.forwarder.relay(env, peer)
        self._decision(
            "applied",
            env,
            peer,
            kind,
            key,
            " (origin {origin}); {forwarding}",
            origin=env.source_node,
            forwarding=forwarding,
        )
        return True

    def _dropped(self, env: Envelope, peer: str, kind: str, key: str, reason: str) -> None:
        self._decision("dropped", env, peer, kind, key, ": {reason}", reason=reason)

    def _decision(
        self, verb: str, env: Envelope, peer: str, kind: str, key: str, tail: str, **fields: object
    ) -> None:
        """
        Log one C{routing decision} line about a message from C{peer}.
        """
        log.info(
            "routing decision: " + verb + " {message_type} {message_id} from {peer} for {kind} {key}" + tail,
            message_type=env.message_type,
            message_id=env.message_id,
            node=self.core.nodeId,
            peer=peer,
            kind=kind,
            key=key,
            **fields,
        )
