"""
Anti-entropy: repairs what routing lost (messages dropped by a rate limit,
a full buffer, a peer that was briefly overloaded) without reconnecting.

Every C{anti_entropy_interval_seconds} a node sends each established peer
(not while a re-sync with it is open) a C{DIGEST}: the kinds it accepts from
that peer and, for each of L{DIGEST_BUCKETS} buckets, the XOR of a 64-bit
hash of C{(kind, key, origin, sequence)} over its active entries whose key
falls in the bucket (the store keeps these up to date as records
change).  The peer computes the same over what it would forward
to the sender and answers C{DIGEST_SUMMARY} with its entries (active or
withdrawn: kind, key, origin, sequence, active) in the buckets that differ,
at most L{MAX_SUMMARY_ENTRIES}.  The sender then C{PULL}s the entries the
peer holds in a newer version (or holds active while it has none), at most
L{MAX_PULL_ITEMS} per round, and the peer answers each with an announce or
withdrawal marked C{repair}.  Those pass the usual routing, authority and
ordering rules, are forwarded on when applied, and are not counted by the
rate limit when they answer an outstanding pull.  Each side pulls only what
it misses; the other side's own round repairs the other direction.

The exchange is stateless request/response apart from the outstanding pull
set per peer, which a new round replaces and a lost session clears.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from suite.spacecomms.envelope import (
    DIGEST_BUCKETS,
    MAX_PULL_ITEMS,
    MAX_SUMMARY_ENTRIES,
    Envelope,
)
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.resync import DERIVED, entryEnvelope
from suite.spacecomms.store import Record, bucketOf

if TYPE_CHECKING:
    from suite.spacecomms.node import SpaceNode

__all__ = ["AntiEntropy"]

log = Logger(namespace="spacecomms.antientropy")

#: Each anti-entropy message type from one peer is handled at most this often (seconds).
MIN_ANSWER_INTERVAL = 0.5


class AntiEntropy:
    """
    The periodic digest exchange of one node with each of its peers.
    """

    def __init__(self, node: SpaceNode) -> None:
        self.node = node
        self.pending: dict[str, set[tuple[str, str]]] = {}
        self.lastAnswer: dict[tuple[str, str], float] = {}
        self.cursor: dict[str, int] = {}
        self._loop: LoopingCall | None = None
        self.rounds = 0

    def start(self) -> None:
        interval = self.node.config.anti_entropy_interval_seconds
        if interval <= 0:
            return
        self._loop = LoopingCall(self.round)
        self._loop.clock = self.node.clock
        self._loop.start(interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def peerGone(self, peer: str) -> None:
        self.pending.pop(peer, None)
        for slot in [s for s in self.lastAnswer if s[0] == peer]:
            del self.lastAnswer[slot]
        self.cursor.pop(peer, None)

    # -- digests ---------------------------------------------------------

    def _kinds(self, peer: str, accepting: bool) -> list[str]:
        pol = self.node.policies(peer)
        if accepting:
            return [k for k, ok in (("cdm", pol.accept_cdm), ("object", pol.accept_object_state)) if ok]
        return [k for k, ok in (("cdm", pol.forward_cdm), ("object", pol.forward_object_state)) if ok]

    def buckets(self, kinds: list[str]) -> list[int]:
        """
        The bucket hashes over this node's active entries of C{kinds}.
        """
        out = [0] * DIGEST_BUCKETS
        for kind in kinds:
            for i, h in enumerate(self.node.store.digest(kind)):
                out[i] ^= h
        return out

    def round(self) -> None:
        """
        Send a DIGEST to every established peer not in a re-sync.
        """
        self.rounds += 1
        node = self.node
        for peer, link in list(node.links.items()):
            if node.syncing(peer) or not node.peerCapable(peer, "antientropy"):
                continue
            kinds = self._kinds(peer, accepting=True)
            if not kinds:
                continue
            link.sendEnvelope(self._envelope("DIGEST", {"kinds": kinds, "buckets": self.buckets(kinds)}))

    def _envelope(self, mtype: str, payload: dict[str, Any]) -> Envelope:
        node = self.node
        return Envelope(mtype, node.nodeId, payload, timestamp=node.now(), path=(node.nodeId,))

    # -- the exchange ----------------------------------------------------

    def received(self, link: IPeerLink, env: Envelope) -> None:
        """
        A DIGEST, DIGEST_SUMMARY or PULL from C{link}'s peer.  Each type
        is handled at most every L{MIN_ANSWER_INTERVAL} per peer (a peer
        cannot make this node compute digests or send entries faster).
        """
        now = self.node.now()
        slot = (link.peerId, env.message_type)
        if now - self.lastAnswer.get(slot, float("-inf")) < MIN_ANSWER_INTERVAL:
            return
        self.lastAnswer[slot] = now
        if env.message_type == "DIGEST":
            self._answerDigest(link, env)
        elif env.message_type == "DIGEST_SUMMARY":
            self._pullMissing(link, env)
        else:
            self._answerPull(link, env)

    def _answerDigest(self, link: IPeerLink, env: Envelope) -> None:
        peer = link.peerId
        forwarded = self._kinds(peer, accepting=False)
        kinds = [k for k in env.payload["kinds"] if k in forwarded]
        mine = self.buckets(kinds)
        theirs = env.payload["buckets"]
        differ = {i for i in range(DIGEST_BUCKETS) if mine[i] != theirs[i]}
        if not differ:
            return
        byBucket: dict[int, list[list[Any]]] = {}
        for kind in kinds:
            for rec in self.node.store.records(kind):
                r: Record = rec
                b = bucketOf(r.key)
                if b in differ:
                    byBucket.setdefault(b, []).append([kind, r.key, r.origin, r.sequence, r.active])
        # Whole buckets, starting after the last bucket sent to this peer,
        # so a summary capped at MAX_SUMMARY_ENTRIES covers every bucket in
        # turn over successive rounds.
        start = self.cursor.get(peer, 0)
        order = sorted(byBucket, key=lambda b: (b - start) % DIGEST_BUCKETS)
        entries: list[list[Any]] = []
        for b in order:
            if entries and len(entries) + len(byBucket[b]) > MAX_SUMMARY_ENTRIES:
                break
            entries.extend(byBucket[b][:MAX_SUMMARY_ENTRIES])
            self.cursor[peer] = (b + 1) % DIGEST_BUCKETS
        link.sendEnvelope(self._envelope("DIGEST_SUMMARY", {"entries": entries}))

    def _pullMissing(self, link: IPeerLink, env: Envelope) -> None:
        peer = link.peerId
        node = self.node
        accepted = self._kinds(peer, accepting=True)
        want: list[list[str]] = []
        for kind, key, origin, sequence, active in env.payload["entries"]:
            if kind not in accepted or origin == node.nodeId or node.ledger.pastRetention(kind, sequence):
                continue
            mine: Record | None = node.store.get(kind, key)
            if mine is None and not active:
                continue
            if mine is None or (sequence, origin) > mine.version():
                want.append([kind, key])
                if len(want) >= MAX_PULL_ITEMS:
                    break
        self.pending[peer] = {(k, key) for k, key in want}
        if want:
            log.info(
                "anti-entropy with {peer}: pulling {count} missing or older entries",
                peer=peer,
                count=len(want),
            )
            link.sendEnvelope(self._envelope("PULL", {"items": want}))

    def _answerPull(self, link: IPeerLink, env: Envelope) -> None:
        forwarded = self._kinds(link.peerId, accepting=False)
        for kind, key in env.payload["items"]:
            if kind not in forwarded:
                continue
            r: Record | None = self.node.store.get(kind, key)
            if r is None or r.origin == link.peerId:
                continue
            if not r.active and r.reason in DERIVED:
                continue  # every node derives these itself
            out = entryEnvelope(self.node, r, "repair")
            self.node.router.seen.seen(out.message_id)
            link.sendEnvelope(out)

    def expected(self, peer: str, kind: str, key: str) -> bool:
        """
        Whether C{(kind, key)} answers an outstanding pull from C{peer}
        (then it is not counted by the rate limit); forgets it.
        """
        wanted = self.pending.get(peer)
        if wanted is None or (kind, key) not in wanted:
            return False
        wanted.discard((kind, key))
        return True
