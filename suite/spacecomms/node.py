"""
The SpaceComms node core: applies local and remote CDM / object-state
updates to the store (newest version per originator sequence wins),
supersedes older CDMs of the same conjunction, withdraws CDMs after TCA,
routes messages to peers, re-syncs on reconnect and enforces retention.
"""

from __future__ import annotations

import heapq
import hmac
import time as _time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from suite.spacecomms.antientropy import AntiEntropy
from suite.spacecomms.authority import ownerRefusal, ownership, provenance, sequenceWindow
from suite.spacecomms.cdm.jsonfmt import fromDict, toDict
from suite.spacecomms.cdm.model import CDM, CDMError, epochSeconds, validate
from suite.spacecomms.config import Config, PeerConfig, Policies
from suite.spacecomms.envelope import REPAIR_TYPES, ROUTED_TYPES, SUPPORTED_VERSIONS, Envelope
from suite.spacecomms.interfaces import IMessageSink, IPeerLink, IRecordStore
from suite.spacecomms.metrics import NodeMetrics
from suite.spacecomms.resync import endSync, sendSync
from suite.spacecomms.router import Router, TokenBucket
from suite.spacecomms.signing import Signer
from suite.spacecomms.store import Record

__all__ = ["SpaceNode", "CONJUNCTION_WINDOW_SECONDS", "NotOriginator", "RATE_LOG_INTERVAL_SECONDS"]

CONJUNCTION_WINDOW_SECONDS = 60.0
CLEANUP_INTERVAL_SECONDS = 60.0
#: Rate-limit drops are logged (and answered RATE_LIMITED) once per peer per interval.
RATE_LOG_INTERVAL_SECONDS = 5.0
CAPABILITIES = ["cdm", "object_state", "resync", "antientropy"]


class NotOriginator(Exception):
    """
    This node may not change a CDM another node originated (without an
    admin override).  C{owner} is the originator.
    """

    def __init__(self, key: str, owner: str, nodeId: str) -> None:
        super().__init__(ownerRefusal(key, owner, nodeId))
        self.key = key
        self.owner = owner


class _Drops:
    """
    Rate-limit drops from one peer within the current log interval.
    """

    def __init__(self, call: IDelayedCall, firstId: str) -> None:
        self.call = call
        self.count = 1
        self.firstId = firstId


@implementer(IMessageSink)
class SpaceNode:
    """
    One node's state and routing.  Sessions call the L{IMessageSink}
    methods; the API calls C{ingestCDM}, C{withdrawCDM}, C{announceObject}
    and C{withdrawObject}.
    """

    log = Logger(namespace="spacecomms.node")

    def __init__(self, config: Config, store: IRecordStore, clock: IReactorTime) -> None:
        self.config = config
        self.nodeId = config.node_id
        self.store = IRecordStore(store)
        self.clock = clock
        self.started = clock.seconds()
        self.router = Router(
            self.nodeId,
            clock,
            config.max_hop_count,
            max(config.message_ttl_seconds, 60.0),
            config.max_clock_skew_seconds,
        )
        self.links: dict[str, IPeerLink] = {}
        self.peerConfigs: dict[str, PeerConfig] = {p.id: p for p in config.peers}
        self.buckets: dict[str, TokenBucket] = {}
        self.syncs: dict[str, tuple[set[tuple[str, str]], IDelayedCall]] = {}
        self.syncSends: dict[str, IDelayedCall] = {}
        self.metrics = NodeMetrics(self)
        self.onPeersChanged: list[Callable[[], None]] = []
        self._lastSeq = 0
        self._lastCleanup = float("-inf")
        self._tcaHeap: list[tuple[float, str]] = []
        self._pairs: dict[frozenset[str], set[str]] = {}
        self._tick = LoopingCall(self.tick)
        self._tick.clock = clock
        self.antiEntropy = AntiEntropy(self)
        #: This node's signing identity (set when TLS is on); with it every
        #: routed message must carry a valid signature of its originator.
        self.signer: Signer | None = None
        self.peerCaps: dict[str, frozenset[str]] = {}
        self._drops: dict[str, _Drops] = {}

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        """
        Load the store and start the once-a-second lifecycle tick.
        """
        self.store.load()
        for r in self.store.records("cdm"):
            self._lastSeq = max(self._lastSeq, r.sequence if r.origin == self.nodeId else 0)
            if r.active and r.tca is not None:
                heapq.heappush(self._tcaHeap, (r.tca, r.key))
                self._pairs.setdefault(frozenset(r.objects), set()).add(r.key)
        self._tick.start(1.0, now=True)
        self.antiEntropy.start()

    def stop(self) -> Any:
        if self._tick.running:
            self._tick.stop()
        self.antiEntropy.stop()
        for peer in list(self._drops):
            self._drops[peer].call.cancel()
            self._logDrops(peer)
        for _, call in self.syncs.values():
            if call.active():
                call.cancel()
        self.syncs.clear()
        for call in self.syncSends.values():
            if call.active():
                call.cancel()
        self.syncSends.clear()
        return self.store.close()

    def now(self) -> float:
        return self.clock.seconds()

    def nextSequence(self, after: int = 0) -> int:
        """
        A per-originator sequence number: strictly increasing (and above
        C{after}, the version it replaces), and based on the clock in
        microseconds so it keeps increasing across restarts.
        """
        self._lastSeq = max(self._lastSeq + 1, int(self.now() * 1_000_000), after + 1)
        return self._lastSeq

    def peerCapable(self, peer: str, capability: str) -> bool:
        """
        Whether C{peer} announced C{capability} in its HELLO (assumed when
        no HELLO was seen, as in simulations).
        """
        caps = self.peerCaps.get(peer)
        return caps is None or capability in caps

    # -- reconfiguration -------------------------------------------------

    def setPeers(self, peers: list[PeerConfig]) -> None:
        """
        Replace the peer table (SIGHUP reload, API); sessions of removed
        peers are closed.
        """
        new = {p.id: p for p in peers}
        for pid in list(self.links):
            if pid not in new:
                self.links[pid].close("peer removed from configuration")
        self.peerConfigs = new
        self.buckets = {k: v for k, v in self.buckets.items() if k in new}
        for cb in self.onPeersChanged:
            cb()

    def policies(self, peerId: str) -> Policies:
        p = self.peerConfigs.get(peerId)
        return p.policies if p is not None else Policies(False, False, False, False)

    # -- local operations --------------------------------------------------

    def _checkOwner(self, key: str, old: Record | None, override: bool) -> bool:
        """
        Refuse (L{NotOriginator}) a change to another node's CDM unless
        C{override}; return whether an override is being used.
        """
        if old is None or old.origin == self.nodeId:
            return False
        if not override:
            raise NotOriginator(key, old.origin, self.nodeId)
        self.log.warn(
            "authority: admin override of cdm {cdm_id} (originator {owner}) by this node {node}",
            cdm_id=key,
            owner=old.origin,
            node=self.nodeId,
        )
        return True

    def ingestCDM(self, cdm: CDM, override: bool = False) -> tuple[Record, bool]:
        """
        Store a CDM submitted to this node and announce it.  Returns the
        record and whether it was new (False for an identical resubmission).

        @raise NotOriginator: the CDM id belongs to another node's CDM and
            C{override} is False.
        @raise CDMError: its TCA has already passed (field C{TCA}).
        """
        body = toDict(cdm)
        key = cdm.messageId
        old = self.store.get("cdm", key)
        if old is not None and old.active and old.body == body and old.origin == self.nodeId:
            return old, False
        now = self.now()
        tca = cdm.tcaSeconds
        if tca < now:
            raise CDMError("TCA", "has passed: a CDM for a past conjunction is not stored or announced")
        overriding = self._checkOwner(key, old, override) or (old is not None and old.override)
        seq = self.nextSequence(old.sequence if old is not None else 0)
        payload = self._payload("CDM_ANNOUNCE", {"cdm_id": key, "sequence": seq, "cdm": body}, overriding)
        record = Record(
            "cdm",
            key,
            self.nodeId,
            seq,
            True,
            body,
            None,
            old.createdAt if old is not None else now,
            now,
            None,
            tca,
            list(cdm.objectDesignators()),
            overriding,
            payload.get("signature"),
            payload.get("cert"),
        )
        self._store(record)
        self._supersede(record)
        self._originate("CDM_ANNOUNCE", payload)
        return record, True

    def _payload(self, mtype: str, payload: dict[str, Any], override: bool = False) -> dict[str, Any]:
        """
        A payload this node originates: marked as an override if it is
        one, and signed when this node has a TLS identity.
        """
        if override:
            payload["override"] = True
        if self.signer is not None:
            self.signer.sign(mtype, self.nodeId, payload)
        return payload

    def withdrawCDM(self, key: str, reason: str = "FALSE_POSITIVE", override: bool = False) -> Record | None:
        """
        Withdraw a CDM everywhere (C{DELETE /cdms/{id}}).

        @raise NotOriginator: another node originated it and C{override} is
            False.
        """
        old = self.store.get("cdm", key)
        if old is None or not old.active:
            return None
        overriding = self._checkOwner(key, old, override) or old.override
        seq = self.nextSequence(old.sequence)
        payload = self._payload(
            "CDM_WITHDRAW", {"cdm_id": key, "sequence": seq, "reason": reason}, overriding
        )
        record = self._tombstone(old, reason, seq, self.nodeId, None, overriding, payload)
        self._originate("CDM_WITHDRAW", payload)
        return record

    def announceObject(self, objectId: str, state: dict[str, Any]) -> Record:
        now = self.now()
        seq = self.nextSequence()
        payload = self._payload(
            "OBJECT_STATE_ANNOUNCE", {"object_id": objectId, "sequence": seq, "state": state}
        )
        record = Record(
            "object",
            objectId,
            self.nodeId,
            seq,
            True,
            state,
            None,
            now,
            now,
            signature=payload.get("signature"),
            cert=payload.get("cert"),
        )
        self._store(record)
        self._originate("OBJECT_STATE_ANNOUNCE", payload)
        return record

    def withdrawObject(self, objectId: str, reason: str = "NO_LONGER_TRACKED") -> Record | None:
        old = self.store.get("object", objectId)
        if old is None or not old.active:
            return None
        seq = self.nextSequence()
        payload = self._payload(
            "OBJECT_STATE_WITHDRAW", {"object_id": objectId, "sequence": seq, "reason": reason}
        )
        record = self._tombstone(old, reason, seq, self.nodeId, None, None, payload)
        self._originate("OBJECT_STATE_WITHDRAW", payload)
        return record

    # -- store helpers -----------------------------------------------------

    def _store(self, record: Record) -> None:
        self.store.put(record)
        if record.kind == "cdm" and record.active and record.tca is not None:
            heapq.heappush(self._tcaHeap, (record.tca, record.key))
            self._pairs.setdefault(frozenset(record.objects), set()).add(record.key)

    def _tombstone(
        self,
        old: Record,
        reason: str,
        sequence: int,
        origin: str,
        learnedFrom: str | None = None,
        override: bool | None = None,
        signed: dict[str, Any] | None = None,
    ) -> Record:
        """
        Store a withdrawal of C{old}; C{signed} is the signed payload that
        made it (None for one this node derives itself: SUPERSEDED,
        TCA_PASSED), whose signature is kept to re-send it.
        """
        now = self.now()
        record = Record(
            old.kind,
            old.key,
            origin,
            sequence,
            False,
            None,
            reason,
            old.createdAt,
            now,
            learnedFrom,
            old.tca,
            old.objects,
            old.override if override is None else override,
            None if signed is None else signed.get("signature"),
            None if signed is None else signed.get("cert"),
        )
        self.store.put(record)
        return record

    def _supersede(self, record: Record) -> None:
        """
        A newer CDM for the same conjunction (same two objects, TCA within
        a minute) replaces older ones, which are withdrawn as SUPERSEDED.
        """
        if record.tca is None or record.body is None:
            return
        pair = frozenset(record.objects)
        keys = self._pairs.get(pair, set())
        if not keys - {record.key}:
            return
        mine = _created(record)
        for key in sorted(keys):
            o: Record | None = self.store.get("cdm", key)
            if o is None or not o.active or frozenset(o.objects) != pair:
                keys.discard(key)
                continue
            if o.key == record.key or o.tca is None:
                continue
            if abs(o.tca - record.tca) > CONJUNCTION_WINDOW_SECONDS:
                continue
            if (_created(o), o.sequence) < (mine, record.sequence):
                self._tombstone(o, "SUPERSEDED", o.sequence, o.origin, o.learnedFrom)
                keys.discard(o.key)
                self.log.info("cdm {cdm_id} superseded by {newer}", cdm_id=o.key, newer=record.key)
            elif (_created(o), o.sequence) > (mine, record.sequence):
                self._tombstone(record, "SUPERSEDED", record.sequence, record.origin, record.learnedFrom)
                keys.discard(record.key)
                self.log.info("cdm {cdm_id} superseded by {newer}", cdm_id=record.key, newer=o.key)
                return

    # -- lifecycle ---------------------------------------------------------

    def tick(self) -> None:
        """
        Withdraw CDMs whose TCA has passed (TCA_PASSED, on every node) and,
        once a minute, apply the retention limits.
        """
        now = self.now()
        while self._tcaHeap and self._tcaHeap[0][0] < now:
            _, key = heapq.heappop(self._tcaHeap)
            r = self.store.get("cdm", key)
            if r is not None and r.active and r.tca is not None and r.tca < now:
                self._tombstone(r, "TCA_PASSED", r.sequence, r.origin, r.learnedFrom)
                self.log.info("cdm {cdm_id} withdrawn: TCA_PASSED", cdm_id=key)
        if self.config.cleanup_enabled and now - self._lastCleanup >= CLEANUP_INTERVAL_SECONDS:
            self._lastCleanup = now
            for kind, hours in (
                ("cdm", self.config.cdm_retention_hours),
                ("object", self.config.object_retention_hours),
            ):
                limit = now - hours * 3600
                for r in self.store.records(kind):
                    if r.updatedAt < limit:
                        self.store.remove(kind, r.key)
                        self.log.info("retention: removed {kind} {key}", kind=kind, key=r.key)

    # -- routing -----------------------------------------------------------

    def _originate(self, mtype: str, payload: dict[str, Any]) -> None:
        env = Envelope(
            mtype,
            self.nodeId,
            payload,
            timestamp=self.now(),
            ttl=self.config.message_ttl_seconds,
            path=(self.nodeId,),
        )
        self.router.seen.seen(env.message_id)
        if not self.links:
            return
        targets = self._forward(env, None)
        kind = "cdm" if mtype.startswith("CDM") else "object"
        self.log.info(
            "routing decision: {message_type} {message_id} for {kind} {key} originated here; {forwarding}",
            message_type=env.message_type,
            message_id=env.message_id,
            node=self.nodeId,
            kind=kind,
            key=payload["cdm_id" if kind == "cdm" else "object_id"],
            forwarding=self._describe(env, None, targets),
        )

    def _forward(self, env: Envelope, fromPeer: str | None) -> list[str]:
        """
        Send C{env} on to the peers the routing rules allow; return them.
        """
        targets = self.router.targets(
            env, fromPeer, list(self.links), {k: p.policies for k, p in self.peerConfigs.items()}
        )
        if targets:
            out = env if fromPeer is None else env.forwarded(self.nodeId)
            for peer in targets:
                self.links[peer].sendEnvelope(out)
        return targets

    def _describe(self, env: Envelope, fromPeer: str | None, targets: list[str]) -> str:
        """
        Where a message went, or why nowhere (hop limit, loop, policy).
        """
        if targets:
            return f"forwarded to {', '.join(targets)}"
        if fromPeer is not None and env.hop_count + 1 >= self.router.maxHops:
            return f"not forwarded (hop limit: max_hop_count {self.router.maxHops} reached)"
        others = [p for p in self.links if p != fromPeer]
        if not others:
            return "not forwarded (no other established peer)"
        if all(p in env.path or p == env.source_node for p in others):
            return "not forwarded (loop: every other peer is on the path)"
        return "not forwarded (policy: forwarding disabled towards the other peers)"

    def _error(self, link: IPeerLink, code: str, reason: str, ref: str | None = None) -> None:
        self.metrics.error()
        link.sendEnvelope(
            Envelope(
                "ERROR",
                self.nodeId,
                {"code": code, "message": reason, "ref_message_id": ref},
                timestamp=self.now(),
                path=(self.nodeId,),
            )
        )

    # -- IMessageSink ------------------------------------------------------

    def checkHello(self, hello: Envelope, expectedPeer: str | None) -> tuple[str, str] | None:
        p = hello.payload
        peerId = p["node_id"]
        if not set(p["versions"]) & set(SUPPORTED_VERSIONS):
            return (
                "UNSUPPORTED_VERSION",
                f"no common protocol version (this node speaks {', '.join(SUPPORTED_VERSIONS)})",
            )
        peer = self.peerConfigs.get(peerId)
        if peer is None:
            return ("UNAUTHORIZED", f"node {peerId} is not a configured peer")
        if expectedPeer is not None and peerId != expectedPeer:
            return ("UNAUTHORIZED", f"expected node {expectedPeer}, got {peerId}")
        if not hmac.compare_digest(p.get("auth_token", "").encode(), peer.auth_token.encode()):
            return ("UNAUTHORIZED", "auth token mismatch")
        self.peerCaps[peerId] = frozenset(c for c in p["capabilities"] if isinstance(c, str))
        return None

    def helloPayload(self, peerId: str | None) -> dict[str, Any]:
        token = self.peerConfigs[peerId].auth_token if peerId in self.peerConfigs else ""
        return {
            "node_id": self.nodeId,
            "node_name": self.config.node_name,
            "versions": list(SUPPORTED_VERSIONS),
            "capabilities": CAPABILITIES,
            "auth_token": token,
        }

    def heartbeatCounts(self) -> dict[str, int]:
        return {"cdm_count": self.store.count("cdm", True), "object_count": self.store.count("object", True)}

    def sessionEstablished(self, link: IPeerLink) -> None:
        link = IPeerLink(link)
        peer = link.peerId
        old = self.links.get(peer)
        if old is not None and old is not link:
            old.close("replaced by a newer session")
        self.links[peer] = link
        self.buckets[peer] = TokenBucket(
            self.clock, self.policies(peer).rate_limit_per_second, self.policies(peer).rate_limit_burst
        )
        if peer in self.syncs:
            self.syncs.pop(peer)[1].cancel()
        self.syncs[peer] = (
            set(),
            self.clock.callLater(self.config.resync_grace_seconds, endSync, self, peer, "grace time"),
        )
        sendSync(self, link)
        for cb in self.onPeersChanged:
            cb()

    def sessionLost(self, link: IPeerLink, reason: str) -> None:
        peer = link.peerId
        if self.links.get(peer) is link:
            del self.links[peer]
            entry = self.syncs.pop(peer, None)
            if entry is not None and entry[1].active():
                entry[1].cancel()
            send = self.syncSends.pop(peer, None)
            if send is not None and send.active():
                send.cancel()
            self.antiEntropy.peerGone(peer)
        for cb in self.onPeersChanged:
            cb()

    def envelopeReceived(self, link: IPeerLink, env: Envelope) -> None:
        peer = link.peerId
        self.metrics.received()
        sync = self.syncs.get(peer)
        routed = env.message_type in ROUTED_TYPES
        if routed and sync is not None:
            # Re-announced during the sync window: counts as refreshed even
            # if it is dropped below, so it is never mistaken for stale.
            kind = "cdm" if env.message_type.startswith("CDM") else "object"
            sync[0].add((kind, env.payload["cdm_id" if kind == "cdm" else "object_id"]))
        bucket = self.buckets.get(peer)
        if (
            routed
            and bucket is not None
            and not self._exempt(peer, env, sync is not None)
            and not bucket.take()
        ):
            self._rateLimited(link, env)
            return
        if env.protocol_version not in SUPPORTED_VERSIONS:
            self._error(
                link,
                "UNSUPPORTED_VERSION",
                f"protocol version {env.protocol_version[:20]} not supported",
                env.message_id,
            )
            return
        mtype = env.message_type
        if mtype == "HEARTBEAT":
            self.metrics.heartbeat(peer, max(0.0, self.now() - env.timestamp) * 1000.0)
            return
        if mtype == "END_OF_SYNC":
            endSync(self, peer, "END_OF_SYNC")
            return
        if mtype == "ERROR":
            self.log.warn(
                "peer {peer} reported error {code}: {reason}",
                peer=peer,
                code=env.payload.get("code"),
                reason=str(env.payload.get("message"))[:200],
            )
            return
        if mtype == "HELLO":
            self._error(link, "INVALID_MESSAGE", "HELLO on an established session", env.message_id)
            return
        if mtype in REPAIR_TYPES:
            self.antiEntropy.received(link, env)
            return
        self._routed(link, env)

    def _exempt(self, peer: str, env: Envelope, syncing: bool) -> bool:
        """
        Whether a routed message is not counted by the rate limit: a
        re-announcement during the peer's re-sync, or the answer to one of
        this node's anti-entropy pulls.
        """
        p = env.payload
        if syncing and p.get("sync") is True:
            return True
        if p.get("repair") is not True:
            return False
        kind = "cdm" if env.message_type.startswith("CDM") else "object"
        return self.antiEntropy.expected(peer, kind, p["cdm_id" if kind == "cdm" else "object_id"])

    def _rateLimited(self, link: IPeerLink, env: Envelope) -> None:
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
        call = self.clock.callLater(RATE_LOG_INTERVAL_SECONDS, self._logDrops, peer)
        self._drops[peer] = _Drops(call, env.message_id)
        self._error(link, "RATE_LIMITED", "rate limit exceeded", env.message_id)

    def _logDrops(self, peer: str) -> None:
        drops = self._drops.pop(peer, None)
        if drops is None:
            return
        self.log.warn(
            "rate limit exceeded: peer {peer}: dropped {count} messages in {seconds:g}s (first {message_id})",
            peer=peer,
            count=drops.count,
            seconds=RATE_LOG_INTERVAL_SECONDS,
            message_id=drops.firstId,
            node=self.nodeId,
        )

    def _routed(self, link: IPeerLink, env: Envelope) -> None:
        peer = link.peerId
        p = env.payload
        kind = "cdm" if env.message_type.startswith("CDM") else "object"
        key = p["cdm_id"] if kind == "cdm" else p["object_id"]
        decision = self.router.inbound(env, peer, self.policies(peer))
        if not decision.accept:
            self._dropped(env, peer, kind, key, decision.reason)
            return
        started = _time.perf_counter()
        seq = p["sequence"]
        old: Record | None = self.store.get(kind, key)
        refusal = provenance(env, peer) or sequenceWindow(seq, self.now(), self.config.max_clock_skew_seconds)
        overriding = False
        if refusal is None:
            refusal, overriding = ownership(env, kind, key, old, self.config.override_nodes)
        if refusal is not None:
            self._dropped(env, peer, kind, key, refusal)
            return
        if old is not None and old.version() >= (seq, env.source_node):
            self.log.info(
                "routing decision: ignored {message_type} {message_id} from {peer} for {kind} {key}: not newer than the stored version",
                message_type=env.message_type,
                message_id=env.message_id,
                node=self.nodeId,
                peer=peer,
                kind=kind,
                key=key,
            )
            return
        if self.signer is not None and env.source_node != peer:
            # Relayed: the originator's signature speaks for it.  (First-hand
            # messages are authenticated by the session itself: its token
            # and the certificate that names the peer.)
            refusal = self.signer.verify(env.message_type, env.source_node, p, self.now())
            if refusal is not None:
                self._dropped(env, peer, kind, key, refusal)
                return
        signature, cert = p.get("signature"), p.get("cert")
        if overriding:
            self.log.warn(
                "authority: admin override of cdm {cdm_id} (originator {owner}) by {origin}, via {peer}",
                cdm_id=key,
                owner=old.origin if old is not None else "?",
                origin=env.source_node,
                peer=peer,
                node=self.nodeId,
            )
        override = p.get("override") is True and env.source_node in self.config.override_nodes
        now = self.now()
        if env.message_type == "CDM_ANNOUNCE":
            try:
                cdm = validate(fromDict(p["cdm"]))
            except CDMError as e:
                self.metrics.invalidCDM()
                self.log.warn(
                    "cdm validation failed: {field}: {reason} (from peer {peer})",
                    field=e.field,
                    reason=e.reason,
                    peer=peer,
                )
                self._error(link, "INVALID_MESSAGE", f"cdm validation failed: {e}", env.message_id)
                return
            if cdm.messageId != key:
                self._error(
                    link,
                    "INVALID_MESSAGE",
                    "payload.cdm_id differs from the CDM's MESSAGE_ID",
                    env.message_id,
                )
                return
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
            self._store(record)
            self._supersede(record)
            self.metrics.cdmProcessed(_time.perf_counter() - started)
        elif env.message_type == "OBJECT_STATE_ANNOUNCE":
            self._store(
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
            self._tombstone(base, p.get("reason") or "ERROR", seq, env.source_node, peer, override, p)
        targets = self._forward(env, peer)
        self.log.info(
            "routing decision: applied {message_type} {message_id} from {peer} for {kind} {key} (origin {origin}); {forwarding}",
            message_type=env.message_type,
            message_id=env.message_id,
            node=self.nodeId,
            peer=peer,
            kind=kind,
            key=key,
            origin=env.source_node,
            forwarding=self._describe(env, peer, targets),
        )

    def _dropped(self, env: Envelope, peer: str, kind: str, key: str, reason: str) -> None:
        self.log.info(
            "routing decision: dropped {message_type} {message_id} from {peer} for {kind} {key}: {reason}",
            message_type=env.message_type,
            message_id=env.message_id,
            node=self.nodeId,
            peer=peer,
            kind=kind,
            key=key,
            reason=reason,
        )


def _created(r: Record) -> float:
    try:
        return epochSeconds(str((r.body or {})["header"]["CREATION_DATE"]))
    except (KeyError, TypeError, CDMError):
        return 0.0
