"""
Records, ring positions and the operations every backend shares.

Each operation is written once against a tiny transaction protocol
(C{read(kind, key)} / C{write(kind, key, payload)} / C{stamp()}); the
in-memory table runs it on the reactor thread, SQLite runs it on its writer
thread.  A backend stamps every write with a new L{Version} (see
L{suite.kv.versions}); writing C{None} leaves a tombstone with its version,
so a deletion wins over older copies of the record met later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import msgpack

from suite.kv.versions import Version, newer

__all__ = [
    "RING_BITS",
    "RING_SIZE",
    "ringId",
    "inRange",
    "Record",
    "Incoming",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "StoreWriteFailed",
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
    "recordHash",
    "bucketBounds",
    "digestBuckets",
    "Table",
]

RING_BITS = 64
RING_SIZE = 1 << RING_BITS
KINDS = ("v", "s", "l")
VALUE, SET, LEASE = KINDS

#: C{(kind, key, payload, hlc, origin)}: C{(hlc, origin)} is the record's
#: L{Version}, kept flat (records move in bulk); a C{None} payload is a tombstone
Record = tuple[str, bytes, "bytes | None", int, int]
#: a record to import; a C{None} hlc (from a peer before versions) means a
#: record installed as a new local write, as such peers expect
Incoming = tuple[str, bytes, "bytes | None", "int | None", int]


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


class StoreWriteFailed(Exception):
    """
    The store could not write (or fsync) the change: it was not
    acknowledged.  The message names the file and the reason.
    """


class Tx(Protocol):
    """
    What an operation needs from a backend.
    """

    def read(self, kind: str, key: bytes) -> bytes | None: ...

    def write(self, kind: str, key: bytes, payload: bytes | None) -> None: ...

    def stamp(self) -> Version: ...


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
        # a fresh stamp: two copies of the lease granted apart (rings that
        # later merge) never share a token, so the loser's holder is fenced
        token = max(token + 1, tx.stamp().hlc)
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


def recordHash(kind: str, key: bytes, payload: bytes | None, hlc: int, origin: int) -> int:
    """
    A 64-bit hash of one record (tombstones and versions included).
    """
    h = hashlib.blake2b(kind.encode() + b"\0" + key + b"\0", digest_size=8)
    h.update(b"\x00" if payload is None else b"\x01" + payload)
    h.update(hlc.to_bytes(8, "big") + origin.to_bytes(8, "big"))
    return int.from_bytes(h.digest(), "big")


def digestBuckets(
    items: Iterable[tuple[int, str, bytes, bytes | None, int, int]], low: int, high: int, buckets: int
) -> list[tuple[int, int]]:
    """
    Per-bucket C{(count, digest)} of C{(ringId, kind, key, payload, hlc,
    origin)} items lying in C{(low, high]}, buckets as in L{bucketBounds}.
    """
    import bisect

    span = (high - low) % RING_SIZE or RING_SIZE
    ends = [span * (i + 1) // buckets for i in range(buckets)]
    counts = [0] * buckets
    accs = [0] * buckets
    for kid, kind, key, payload, hlc, origin in items:
        off = (kid - low) % RING_SIZE
        if off == 0 or off > span:
            continue
        i = bisect.bisect_left(ends, off)
        counts[i] += 1
        accs[i] ^= recordHash(kind, key, payload, hlc, origin)
    return list(zip(counts, accs, strict=True))


def recordDigest(records: Iterable[Record]) -> tuple[int, int]:
    """
    An order-independent digest of records (tombstones included): their
    count and the XOR of each record's 64-bit hash.
    """
    count = 0
    acc = 0
    for kind, key, payload, hlc, origin in records:
        count += 1
        acc ^= recordHash(kind, key, payload, hlc, origin)
    return count, acc


_MASK64 = (1 << 64) - 1


class Table:
    """
    An in-memory record table (used by the memory and aof backends).

    C{data} maps C{(kind, key)} to the live payload; C{versions} maps every
    record, live or tombstone, to its version packed in one integer
    (C{hlc << 64 | origin}, ordered as the version: one small object per
    record, which the garbage collector never visits); C{tombstones} holds
    the tombstones' packed versions; C{ids} caches each key's ring position.
    """

    def __init__(self) -> None:
        self.data: dict[tuple[str, bytes], bytes] = {}
        self.versions: dict[tuple[str, bytes], int] = {}
        self.tombstones: dict[tuple[str, bytes], int] = {}
        self.ids: dict[bytes, int] = {}
        self.bytes = 0

    def read(self, kind: str, key: bytes) -> bytes | None:
        return self.data.get((kind, key))

    def version(self, kind: str, key: bytes) -> Version | None:
        """
        The version of the record (or tombstone) held for C{(kind, key)}.
        """
        packed = self.versions.get((kind, key))
        return None if packed is None else Version(packed >> 64, packed & _MASK64)

    def write(self, kind: str, key: bytes, payload: bytes | None, hlc: int, origin: int) -> None:
        """
        Set a record (a tombstone when C{payload} is C{None}), whatever was there.
        """
        slot = (kind, key)
        data = self.data
        old = data.pop(slot, None)
        size = self.bytes
        if old is not None:
            size -= len(old) + len(key)
        elif self.tombstones and slot in self.tombstones:
            del self.tombstones[slot]
            size -= len(key)
        packed = (hlc << 64) | origin
        self.versions[slot] = packed
        if payload is not None:
            data[slot] = payload
            size += len(payload) + len(key)
        else:
            self.tombstones[slot] = packed
            size += len(key)
        self.bytes = size
        if key not in self.ids:
            self.ids[key] = ringId(key)

    def install(self, kind: str, key: bytes, payload: bytes | None, hlc: int, origin: int) -> bool:
        """
        Set a record copied from elsewhere if it wins over the one held
        (see L{suite.kv.versions.newer}); whether it did.
        """
        held = self.versions.get((kind, key))
        if held is not None:
            packed = (hlc << 64) | origin
            if packed < held:
                return False
            if packed == held:
                v = Version(hlc, origin)
                if not newer(payload, v, self.data.get((kind, key)), v):
                    return False
        self.write(kind, key, payload, hlc, origin)
        return True

    def forget(self, kind: str, key: bytes) -> bool:
        """
        Drop a record or tombstone without a trace; whether there was one.
        """
        slot = (kind, key)
        if self.versions.pop(slot, None) is None:
            return False
        old = self.data.pop(slot, None)
        if old is not None:
            self.bytes -= len(old) + len(key)
        else:
            del self.tombstones[slot]
            self.bytes -= len(key)
        return True

    def purge(self, before: Version) -> int:
        """
        Forget the tombstones older than C{before}; how many.
        """
        cutoff = (before[0] << 64) | before[1]
        doomed = [slot for slot, packed in self.tombstones.items() if packed < cutoff]
        for kind, key in doomed:
            self.forget(kind, key)
        return len(doomed)

    def records(self) -> list[Record]:
        """
        Every record and tombstone.
        """
        data = self.data
        return [
            (slot[0], slot[1], data.get(slot), packed >> 64, packed & _MASK64)
            for slot, packed in self.versions.items()
        ]

    def exportKey(self, key: bytes) -> list[Record]:
        out: list[Record] = []
        for kind in KINDS:
            slot = (kind, key)
            packed = self.versions.get(slot)
            if packed is not None:
                out.append((kind, key, self.data.get(slot), packed >> 64, packed & _MASK64))
        return out

    def digests(self, low: int, high: int, buckets: int) -> list[tuple[int, int]]:
        ids = self.ids
        data = self.data
        items = (
            (ids[slot[1]], slot[0], slot[1], data.get(slot), packed >> 64, packed & _MASK64)
            for slot, packed in self.versions.items()
        )
        return digestBuckets(items, low, high, buckets)

    def inRange(self, low: int, high: int) -> list[Record]:
        ids = self.ids
        data = self.data
        versions = self.versions
        out: list[Record] = []
        append = out.append
        wraps = low >= high
        for slot in versions:
            key = slot[1]
            kid = ids.get(key)
            if kid is None:
                kid = ids[key] = ringId(key)
            # inRange(kid, low, high), inlined: this loop visits every record
            if (kid > low or kid <= high) if wraps else (low < kid <= high):
                packed = versions[slot]
                append((slot[0], key, data.get(slot), packed >> 64, packed & _MASK64))
        return out
