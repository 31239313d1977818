"""
Records, ring positions and the operations every backend shares.

Each operation is written once against a tiny transaction protocol
(C{read(kind, key)} / C{write(kind, key, payload)}); the in-memory table
runs it on the reactor thread, SQLite runs it on its writer thread.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import msgpack

__all__ = [
    "RING_BITS",
    "RING_SIZE",
    "ringId",
    "inRange",
    "Record",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "KINDS",
    "Tx",
    "opPut",
    "opDelete",
    "opPrefixAppend",
    "opPrefixRemove",
    "opPrefixList",
    "opPrefixContains",
    "opAcquire",
    "opRenew",
    "opRelease",
    "recordDigest",
    "bucketBounds",
    "digestBuckets",
    "Table",
]

RING_BITS = 64
RING_SIZE = 1 << RING_BITS
KINDS = ("v", "s", "l")
VALUE, SET, LEASE = KINDS

Record = tuple[str, bytes, "bytes | None"]


def ringId(key: bytes) -> int:
    """
    The ring position of C{key}: the first 64 bits of its SHA-1.
    """
    return int.from_bytes(hashlib.sha1(key).digest()[:8], "big")


def inRange(x: int, low: int, high: int) -> bool:
    """
    Whether C{x} lies in the ring interval C{(low, high]}; C{low == high}
    means the whole ring.
    """
    if low < high:
        return low < x <= high
    return x > low or x <= high


@dataclass(frozen=True)
class Lease:
    """
    A granted lease: C{token} is the fencing token, strictly increasing per name.
    """

    name: bytes
    holder: bytes
    token: int
    expiresAt: float


class LeaseHeld(Exception):
    """
    The lease is held by another holder until C{expiresAt}.
    """


class LeaseLost(Exception):
    """
    The lease named was not (or no longer) held with that token.
    """


class Tx(Protocol):
    """
    What an operation needs from a backend.
    """

    def read(self, kind: str, key: bytes) -> bytes | None: ...

    def write(self, kind: str, key: bytes, payload: bytes | None) -> None: ...


def _members(tx: Tx, prefix: bytes) -> list[bytes]:
    raw = tx.read(SET, prefix)
    return list(msgpack.unpackb(raw)) if raw is not None else []


def opPut(tx: Tx, key: bytes, value: bytes) -> None:
    tx.write(VALUE, key, value)


def opDelete(tx: Tx, key: bytes) -> bool:
    if tx.read(VALUE, key) is None:
        return False
    tx.write(VALUE, key, None)
    return True


def opPrefixAppend(tx: Tx, prefix: bytes, child: bytes) -> bool:
    members = _members(tx, prefix)
    if child in members:
        return False
    members.append(child)
    members.sort()
    tx.write(SET, prefix, msgpack.packb(members))
    return True


def opPrefixRemove(tx: Tx, prefix: bytes, child: bytes) -> bool:
    members = _members(tx, prefix)
    if child not in members:
        return False
    members.remove(child)
    tx.write(SET, prefix, msgpack.packb(members) if members else None)
    return True


def opPrefixList(tx: Tx, prefix: bytes) -> list[bytes]:
    return _members(tx, prefix)


def opPrefixContains(tx: Tx, prefix: bytes, child: bytes) -> bool:
    return child in _members(tx, prefix)


def _lease(tx: Tx, name: bytes) -> tuple[bytes | None, int, float]:
    raw = tx.read(LEASE, name)
    if raw is None:
        return None, 0, 0.0
    holder, token, expires = msgpack.unpackb(raw)
    return holder, int(token), float(expires)


def _writeLease(tx: Tx, name: bytes, holder: bytes | None, token: int, expires: float) -> None:
    tx.write(LEASE, name, msgpack.packb([holder, token, expires]))


def opAcquire(tx: Tx, name: bytes, holder: bytes, ttl: float, now: float) -> Lease:
    current, token, expires = _lease(tx, name)
    if current is not None and expires > now and current != holder:
        raise LeaseHeld(f"lease {name!r} is held until {expires:.3f}")
    if current != holder or expires <= now:
        token += 1
    _writeLease(tx, name, holder, token, now + ttl)
    return Lease(name, holder, token, now + ttl)


def opRenew(tx: Tx, name: bytes, token: int, ttl: float, now: float) -> Lease:
    current, held, expires = _lease(tx, name)
    if current is None or held != token:
        raise LeaseLost(f"lease {name!r} is not held with token {token}")
    _writeLease(tx, name, current, held, now + ttl)
    return Lease(name, current, held, now + ttl)


def opRelease(tx: Tx, name: bytes, token: int, now: float) -> bool:
    current, held, expires = _lease(tx, name)
    if current is None or held != token:
        return False
    _writeLease(tx, name, None, held, 0.0)
    return expires > now


def bucketBounds(low: int, high: int, buckets: int) -> list[tuple[int, int]]:
    """
    Split the ring interval C{(low, high]} into C{buckets} consecutive
    intervals (the whole ring when C{low == high}).
    """
    span = (high - low) % RING_SIZE or RING_SIZE
    ends = [low + span * (i + 1) // buckets for i in range(buckets)]
    starts = [low, *ends[:-1]]
    return [(s % RING_SIZE, e % RING_SIZE) for s, e in zip(starts, ends, strict=True)]


def digestBuckets(
    items: Iterable[tuple[int, str, bytes, bytes]], low: int, high: int, buckets: int
) -> list[tuple[int, int]]:
    """
    Per-bucket C{(count, digest)} of C{(ringId, kind, key, payload)} items
    lying in C{(low, high]}, buckets as in L{bucketBounds}.
    """
    import bisect

    span = (high - low) % RING_SIZE or RING_SIZE
    ends = [span * (i + 1) // buckets for i in range(buckets)]
    counts = [0] * buckets
    accs = [0] * buckets
    for kid, kind, key, payload in items:
        off = (kid - low) % RING_SIZE
        if off == 0 or off > span:
            continue
        i = bisect.bisect_left(ends, off)
        h = hashlib.blake2b(kind.encode() + b"\0" + key + b"\0" + payload, digest_size=8)
        counts[i] += 1
        accs[i] ^= int.from_bytes(h.digest(), "big")
    return list(zip(counts, accs, strict=True))


def recordDigest(records: Iterable[Record]) -> tuple[int, int]:
    """
    An order-independent digest of records: their count and the XOR of
    each record's 64-bit hash.
    """
    count = 0
    acc = 0
    for kind, key, payload in records:
        if payload is None:
            continue
        count += 1
        h = hashlib.blake2b(kind.encode() + b"\0" + key + b"\0" + payload, digest_size=8)
        acc ^= int.from_bytes(h.digest(), "big")
    return count, acc


class Table:
    """
    An in-memory record table (used by the memory and aof backends).

    C{data} maps C{(kind, key)} to the payload; C{ids} caches each key's
    ring position.
    """

    def __init__(self) -> None:
        self.data: dict[tuple[str, bytes], bytes] = {}
        self.ids: dict[bytes, int] = {}
        self.bytes = 0

    def read(self, kind: str, key: bytes) -> bytes | None:
        return self.data.get((kind, key))

    def write(self, kind: str, key: bytes, payload: bytes | None) -> None:
        slot = (kind, key)
        old = self.data.pop(slot, None)
        if old is not None:
            self.bytes -= len(old) + len(key)
        if payload is not None:
            self.data[slot] = payload
            self.bytes += len(payload) + len(key)
            if key not in self.ids:
                self.ids[key] = ringId(key)

    def exportKey(self, key: bytes) -> list[Record]:
        return [(kind, key, self.data.get((kind, key))) for kind in KINDS]

    def digests(self, low: int, high: int, buckets: int) -> list[tuple[int, int]]:
        ids = self.ids
        return digestBuckets(
            ((ids[key], kind, key, payload) for (kind, key), payload in self.data.items()), low, high, buckets
        )

    def inRange(self, low: int, high: int) -> list[Record]:
        ids = self.ids
        out: list[Record] = []
        for (kind, key), payload in self.data.items():
            kid = ids.get(key)
            if kid is None:
                kid = ids[key] = ringId(key)
            if inRange(kid, low, high):
                out.append((kind, key, payload))
        return out
