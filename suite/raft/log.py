"""
The in-memory Raft log: entries after the last snapshot point.
"""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import implementer

from suite.raft.interfaces import IRaftLog
from suite.raft.messages import Entry


@implementer(IRaftLog)
class RaftLog:
    """
    A list of L{Entry} following (C{snapshotIndex}, C{snapshotTerm}).
    """

    def __init__(self, snapshotIndex: int = 0, snapshotTerm: int = 0, entries: list[Entry] | None = None):
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        self._entries: list[Entry] = list(entries or [])
        for offset, e in enumerate(self._entries):
            if e.index != snapshotIndex + 1 + offset:
                raise ValueError(f"log entry {e.index} out of sequence")

    def lastIndex(self) -> int:
        return self.snapshotIndex + len(self._entries)

    def lastTerm(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshotTerm

    def term(self, index: int) -> int | None:
        if index == self.snapshotIndex:
            return self.snapshotTerm
        offset = index - self.snapshotIndex - 1
        if 0 <= offset < len(self._entries):
            return self._entries[offset].term
        return None

    def entry(self, index: int) -> Entry:
        offset = index - self.snapshotIndex - 1
        if offset < 0:
            raise IndexError(f"entry {index} is compacted")
        return self._entries[offset]

    def slice(self, start: int, stop: int, maxBytes: int) -> list[Entry]:
        lo = start - self.snapshotIndex - 1
        hi = min(stop, self.lastIndex() + 1) - self.snapshotIndex - 1
        if lo < 0:
            raise IndexError(f"entry {start} is compacted")
        out: list[Entry] = []
        size = 0
        for e in self._entries[lo:hi]:
            size += e.size()
            if out and size > maxBytes:
                break
            out.append(e)
        return out

    def append(self, entries: Sequence[Entry]) -> None:
        if entries and entries[0].index != self.lastIndex() + 1:
            raise ValueError(f"append at {entries[0].index} does not follow {self.lastIndex()}")
        self._entries.extend(entries)

    def truncateAfter(self, index: int) -> None:
        if index < self.snapshotIndex:
            raise IndexError(f"cannot truncate into the snapshot at {self.snapshotIndex}")
        del self._entries[index - self.snapshotIndex :]

    def compact(self, index: int, term: int) -> None:
        if index <= self.snapshotIndex:
            return
        if self.term(index) == term:
            del self._entries[: index - self.snapshotIndex]
        else:
            self._entries = []
        self.snapshotIndex = index
        self.snapshotTerm = term

    def entries(self) -> list[Entry]:
        """
        A copy of the entries held (for checkers and tests).
        """
        return list(self._entries)
