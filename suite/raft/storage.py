"""
What storage hands back at start-up, and an in-memory L{IRaftStorage}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from suite.raft.interfaces import IRaftStorage
from suite.raft.messages import Entry, SnapshotMeta


@dataclass
class Recovered:
    """
    Durable state read back at start-up.
    """

    term: int = 0
    votedFor: str | None = None
    snapshot: tuple[SnapshotMeta, bytes] | None = None
    entries: list[Entry] = field(default_factory=list)


def applyAppend(entries: list[Entry], truncateAfter: int | None, new: Sequence[Entry], base: int) -> None:
    """
    Apply one append (with optional truncation) to a list of entries that
    starts after index C{base}.
    """
    if truncateAfter is not None:
        del entries[max(0, truncateAfter - base) :]
    if new:
        expected = base + len(entries) + 1
        if new[0].index != expected:
            raise ValueError(f"append at {new[0].index}, expected {expected}")
        entries.extend(new)


def applyCompaction(entries: list[Entry], base: int, meta: SnapshotMeta) -> list[Entry]:
    """
    Entries kept after a snapshot at C{meta}: the suffix if the log holds
    the snapshot's last entry, else nothing.
    """
    offset = meta.index - base - 1
    if 0 <= offset < len(entries) and entries[offset].term == meta.term:
        return entries[offset + 1 :]
    if offset < 0:
        return [e for e in entries if e.index > meta.index]
    return []


@implementer(IRaftStorage)
class MemoryStorage:
    """
    Storage that is durable at once (for unit tests and single-process use).
    """

    def __init__(self) -> None:
        self.state = Recovered()

    def _base(self) -> int:
        return self.state.snapshot[0].index if self.state.snapshot else 0

    def load(self) -> Deferred[Recovered]:
        s = self.state
        return succeed(Recovered(s.term, s.votedFor, s.snapshot, list(s.entries)))

    def saveHardState(self, term: int, votedFor: str | None) -> Deferred[None]:
        self.state.term, self.state.votedFor = term, votedFor
        return succeed(None)

    def appendEntries(self, truncateAfter: int | None, entries: Sequence[Entry]) -> Deferred[None]:
        applyAppend(self.state.entries, truncateAfter, entries, self._base())
        return succeed(None)

    def saveSnapshot(self, meta: SnapshotMeta, data: bytes) -> Deferred[None]:
        self.state.entries = applyCompaction(self.state.entries, self._base(), meta)
        self.state.snapshot = (meta, data)
        return succeed(None)

    def readSnapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        return self.state.snapshot

    def sync(self) -> Deferred[None]:
        """
        Fires when every earlier write is durable.
        """
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)
