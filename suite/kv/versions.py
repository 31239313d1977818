"""
Record versions: hybrid logical clock timestamps, and the merge order.

Every record a store holds (a value, a prefix set, a lease, or the tombstone
a deletion leaves) carries the L{Version} of the write that made it:

    hlc     (wall-clock milliseconds << 16) | counter
    origin  the 64-bit id of the writer (a Chord vnode id), breaking ties

The writer's L{HybridClock} never goes backwards and never repeats: a stamp is
the wall clock in milliseconds when that is ahead, else one more than the
last stamp (the counter in the low 16 bits; when it overflows the stamp runs
ahead of the wall clock by a millisecond).  A store observes the versions it
installs from other stores, so its next stamp is newer than any version it
holds.

Two copies of a record are merged by keeping the greater one in the order of
L{mergeKey}: version first, then a live record before a tombstone, then the
payload's bytes (versions only tie for records written before versions
existed, which all have version L{ZERO}).  Merging is therefore a maximum:
commutative, associative and idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

__all__ = [
    "COUNTER_BITS",
    "TOMBSTONE_HORIZON",
    "Version",
    "ZERO",
    "HybridClock",
    "versionAt",
    "mergeKey",
    "newer",
    "mergeRecords",
    "describe",
]

COUNTER_BITS = 16
#: seconds a tombstone is kept before it may be purged (7 days)
TOMBSTONE_HORIZON = 7 * 86400.0


class Version(NamedTuple):
    """
    The version of one record: a hybrid logical clock stamp and its writer.
    """

    hlc: int
    origin: int

    @property
    def wallMs(self) -> int:
        """
        The wall-clock milliseconds part of the stamp.
        """
        return self.hlc >> COUNTER_BITS

    @property
    def counter(self) -> int:
        """
        The logical counter part of the stamp.
        """
        return self.hlc & ((1 << COUNTER_BITS) - 1)


#: the version of every record written before versions existed
ZERO = Version(0, 0)
#: builds a Version without the Python-level constructor (on every write)
_newVersion = tuple.__new__


def versionAt(seconds: float, origin: int = 0) -> Version:
    """
    The smallest version stamped at wall-clock time C{seconds}.
    """
    return Version(max(0, int(seconds * 1000)) << COUNTER_BITS, origin)


class HybridClock:
    """
    Stamps the writes of one writer (C{origin}) from C{seconds}, the wall
    clock (an L{IReactorTime}'s C{seconds}).
    """

    def __init__(self, seconds: Callable[[], float], origin: int = 0) -> None:
        self.seconds = seconds
        self.origin = origin
        self.last = 0

    def stamp(self) -> Version:
        """
        A version newer than every one stamped or observed before.
        """
        now = int(self.seconds() * 1000) << COUNTER_BITS
        last = self.last + 1
        if now > last:
            last = now
        self.last = last
        return _newVersion(Version, (last, self.origin))

    def observe(self, hlc: int) -> None:
        """
        Take note of the stamp of a version installed from elsewhere, so
        later stamps are newer.
        """
        if hlc > self.last:
            self.last = hlc


def mergeKey(payload: bytes | None, version: Version) -> tuple[Version, bool, bytes]:
    """
    The order two copies of a record are merged by: the greater one wins.
    """
    return (version, payload is not None, payload or b"")


def newer(payload: bytes | None, version: Version, otherPayload: bytes | None, otherVersion: Version) -> bool:
    """
    Whether C{(payload, version)} wins over the other copy (strictly).
    """
    if version != otherVersion:
        return version > otherVersion
    return mergeKey(payload, version) > mergeKey(otherPayload, otherVersion)


RecordState = tuple[bytes | None, Version]


def mergeRecords(
    *stores: Iterable[tuple[str, bytes, bytes | None, int, int]],
) -> dict[tuple[str, bytes], RecordState]:
    """
    The merge of several collections of C{(kind, key, payload, hlc, origin)}
    records: per C{(kind, key)}, the copy that wins.  (The specification
    the stores' imports follow; used by tests.)
    """
    out: dict[tuple[str, bytes], RecordState] = {}
    for records in stores:
        for kind, key, payload, hlc, origin in records:
            version = Version(hlc, origin)
            slot = (kind, key)
            held = out.get(slot)
            if held is None or newer(payload, version, held[0], held[1]):
                out[slot] = (payload, version)
    return out


def describe(version: Version) -> dict[str, object]:
    """
    A version for people: its stamp, wall-clock time (ISO 8601, UTC),
    counter and origin (hex).
    """
    import datetime

    when = datetime.datetime.fromtimestamp(version.wallMs / 1000, datetime.UTC)
    return {
        "hlc": version.hlc,
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "counter": version.counter,
        "origin": f"{version.origin:016x}",
    }
