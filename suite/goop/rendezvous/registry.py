"""
The hub's view of live peers: verified publications with an expiry.

L{PeerRegistry} is pure (no I/O, time passed in); the hub feeds it verified
publications and asks it to evict expired peers.  Every change yields an
event (join, update, leave) that the hub fans out over SSE and, with a shared
peer DB, to the other instances.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass
from typing import Any

from suite.goop.identity import verifySignature
from suite.goop.jsonutil import parseJSON
from suite.goop.limits import TokenBucket, peerNameProblem

__all__ = ["PeerRegistry", "PublishError", "verifyPublication", "TokenBucket", "MAX_PUBLISH_BYTES"]

MAX_PUBLISH_BYTES = 16 * 1024
MAX_SKEW_SECONDS = 300.0
MIN_TTL, MAX_TTL = 5, 86400


class PublishError(ValueError):
    """A publication was refused; the message is the reason."""


def verifyPublication(body: bytes, signature: str, now: float, sourceIP: str) -> dict[str, Any]:
    """
    Check a signed C{/publish} body and return the public peer record.
    """
    try:
        doc = parseJSON(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise PublishError("body is not JSON") from None
    if not isinstance(doc, dict):
        raise PublishError("body must be a JSON object")
    pub = doc.get("public_key")
    if not isinstance(pub, str) or not signature:
        raise PublishError("public_key and X-Goop-Signature are required")
    try:
        peerId = verifySignature(pub, signature, body)
    except ValueError as e:
        raise PublishError(f"signature: {e}") from None
    if doc.get("peer_id") != peerId:
        raise PublishError("peer_id is not the hash of public_key")
    ts = doc.get("ts")
    if (
        isinstance(ts, bool)
        or not isinstance(ts, (int, float))
        or not math.isfinite(ts)
        or abs(ts - now) > MAX_SKEW_SECONDS
    ):
        raise PublishError("ts missing or too far from the hub's clock")
    ttl = doc.get("ttl", 120)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not MIN_TTL <= ttl <= MAX_TTL:
        raise PublishError(f"ttl must be an integer from {MIN_TTL} to {MAX_TTL}")
    label = doc.get("label", "")
    if not isinstance(label, str):
        raise PublishError("label must be a string")
    if not all(c.isprintable() or c == " " for c in label):
        raise PublishError("label: one line of text without control characters")
    # The peer's own short name: optional (older peers do not send it).
    name = doc.get("name", "")
    if not isinstance(name, str):
        raise PublishError("name must be a string")
    problem = peerNameProblem(name)
    if problem:
        raise PublishError(f"name: {problem}")
    port = doc.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise PublishError("port must be 0..65535")
    # The only address recorded is the one the publication came from: a
    # peer's own list of addresses (C{addrs}) is ignored, or any key holder
    # could point every follower's dials at a host and port of its choosing.
    host = f"[{sourceIP}]" if ":" in sourceIP else sourceIP
    addrs = [f"{host}:{port}"] if port else []
    seq = doc.get("seq", int(ts * 1e6))
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise PublishError("seq must be a non-negative integer")
    kind = doc.get("kind", "online")
    if kind not in ("online", "offline"):
        raise PublishError("kind must be online or offline")
    rendezvous = doc.get("rendezvous", False)
    if not isinstance(rendezvous, bool):
        raise PublishError("rendezvous must be true or false")
    return {
        "peer_id": peerId,
        "public_key": pub,
        "label": label[:200],
        "name": name,
        "addrs": addrs,
        "port": port,
        "rendezvous": rendezvous,
        "ttl": ttl,
        "ts": float(ts),
        "seq": seq,
        "kind": kind,
    }


@dataclass
class _Entry:
    record: dict[str, Any]
    expires: float
    encoded: bytes = b""


def _seq(record: dict[str, Any]) -> int:
    seq = record.get("seq")
    return int(seq) if isinstance(seq, int) else int(float(record["ts"]) * 1e6)


class PeerRegistry:
    """
    Live peers keyed by peer id, and the highest publication sequence seen
    per peer, kept after the peer leaves for longer than a publication stays
    acceptable (so its old "online" record cannot be replayed).
    """

    def __init__(self) -> None:
        self.peers: dict[str, _Entry] = {}
        self._expiry: list[tuple[float, str]] = []
        self.lastSeq: dict[str, tuple[int, float]] = {}
        self._tombstones: list[tuple[float, str]] = []

    def _remember(self, pid: str, seq: int, now: float) -> None:
        old = self.lastSeq.get(pid)
        if old is not None and old[0] >= seq:
            return
        keep = now + 2 * MAX_SKEW_SECONDS
        self.lastSeq[pid] = (seq, keep)
        heapq.heappush(self._tombstones, (keep, pid))
        if len(self._tombstones) > 4 * len(self.lastSeq) + 1024:
            self._tombstones = [(k, p) for p, (_, k) in self.lastSeq.items()]
            heapq.heapify(self._tombstones)

    def isStale(self, pub: dict[str, Any]) -> bool:
        """Whether C{pub} is not newer than the last publication seen from its peer."""
        last = self.lastSeq.get(pub["peer_id"])
        return last is not None and _seq(pub) <= last[0]

    def _track(self, pid: str, expires: float) -> None:
        heapq.heappush(self._expiry, (expires, pid))
        if len(self._expiry) > 4 * len(self.peers) + 1024:
            self._expiry = [(e.expires, p) for p, e in self.peers.items()]
            heapq.heapify(self._expiry)

    def __len__(self) -> int:
        return len(self.peers)

    def apply(self, pub: dict[str, Any], now: float) -> tuple[str, dict[str, Any]] | None:
        """
        Apply a verified publication.  Return C{(event, record)} or None when
        it changes nothing visible (a stale or replayed publication).
        """
        pid = pub["peer_id"]
        old = self.peers.get(pid)
        if self.isStale(pub):
            raise PublishError("stale or replayed publication: seq is not newer than the last one")
        self._remember(pid, _seq(pub), now)
        if pub["kind"] == "offline":
            if old is None:
                return None
            del self.peers[pid]
            return "leave", old.record
        record = {k: v for k, v in pub.items() if k != "kind"}
        record["first_seen"] = old.record["first_seen"] if old else now
        record["last_seen"] = now
        record["expires"] = now + pub["ttl"]
        self.peers[pid] = _Entry(record, record["expires"], _encode(record))
        self._track(pid, record["expires"])
        if old is None:
            return "join", record
        if any(old.record.get(k) != record.get(k) for k in ("addrs", "label", "name")):
            return "update", record
        return "heartbeat", record

    def merge(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """Take a record read from the shared DB (newer wins)."""
        pid = record["peer_id"]
        old = self.peers.get(pid)
        if self.isStale(record):
            return None
        self._remember(pid, _seq(record), float(record.get("last_seen", record["ts"])))
        self.peers[pid] = _Entry(record, record["expires"], _encode(record))
        self._track(pid, record["expires"])
        return ("join" if old is None else "heartbeat"), record

    def remove(self, peerId: str, record: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Drop a peer (that left through another instance: C{record} is its last record)."""
        if record is not None:
            self._remember(peerId, _seq(record), float(record.get("last_seen", record["ts"])))
        e = self.peers.pop(peerId, None)
        return e.record if e else None

    def evict(self, now: float) -> list[dict[str, Any]]:
        """Drop peers whose TTL has run out; return their records."""
        out = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires, pid = heapq.heappop(heap)
            e = self.peers.get(pid)
            if e is not None and e.expires <= now:
                out.append(self.peers.pop(pid).record)
        stones = self._tombstones
        while stones and stones[0][0] <= now:
            keep, pid = heapq.heappop(stones)
            last = self.lastSeq.get(pid)
            if last is not None and last[1] <= now and pid not in self.peers:
                del self.lastSeq[pid]
        return out

    def list(self) -> list[dict[str, Any]]:
        """Live peers, oldest first."""
        return sorted((e.record for e in self.peers.values()), key=lambda r: r["first_seen"])

    def listJSON(self) -> bytes:
        """The same list as JSON, joined from per-record encodings made at publish time."""
        entries = sorted(self.peers.values(), key=lambda e: e.record["first_seen"])
        return b"[" + b",".join(e.encoded for e in entries) + b"]"


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()
