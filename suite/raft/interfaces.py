"""
Interfaces of L{suite.raft}.

A L{suite.raft.node.RaftNode} is wired from collaborators that provide these
interfaces: the replicated L{IRaftStateMachine} (the application), an
L{IRaftStorage} (durable term/vote, log and snapshots), an L{IRaftTransport}
(messages to peers) and an in-memory L{IRaftLog}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from suite.raft.messages import Entry, Message, SnapshotMeta
    from suite.raft.storage import Recovered


class IRaftStateMachine(Interface):
    """
    The deterministic application replicated by Raft.  The node calls these
    methods on the reactor thread, in log order, exactly once per index.
    """

    def apply(index: int, command: bytes) -> object:
        """
        Apply the committed C{command} found at log C{index}; return the
        result handed back to the proposer (must be msgpack-serialisable).
        """

    def snapshot() -> bytes:
        """
        Serialise the whole state (as of the last applied index).
        """

    def restore(data: bytes) -> None:
        """
        Replace the whole state with one produced by L{snapshot}.
        """


class IRaftSnapshotCapture(Interface):
    """
    A state machine whose snapshot can be encoded off the reactor thread
    (L{suite.raft.snapshotter}): the capture is cheap and runs on the
    reactor thread; the encoding runs in a thread while entries are
    applied.
    """

    def captureSnapshot() -> Callable[[], bytes]:
        """
        Freeze the state as of the last applied index; return a function,
        safe to call once from another thread while L{IRaftStateMachine.apply}
        goes on, that returns the bytes L{IRaftStateMachine.snapshot} would
        return now.
        """


class IRaftLog(Interface):
    """
    The in-memory view of the replicated log: entries after a compaction
    point (C{snapshotIndex}, C{snapshotTerm}).
    """

    snapshotIndex = Attribute("Index of the last entry folded into the snapshot.")
    snapshotTerm = Attribute("Term of that entry.")

    def lastIndex() -> int:
        """
        Index of the last entry (C{snapshotIndex} when empty).
        """

    def lastTerm() -> int:
        """
        Term of the last entry.
        """

    def term(index: int) -> int | None:
        """
        Term of the entry at C{index}, or None if compacted away or absent.
        """

    def entry(index: int) -> Entry:
        """
        The L{suite.raft.messages.Entry} at C{index} (must be present).
        """

    def slice(start: int, stop: int, maxBytes: int) -> list[Entry]:
        """
        Entries C{start <= i < stop}, at least one, at most about C{maxBytes}.
        """

    def append(entries: Sequence[Entry]) -> None:
        """
        Append entries that follow C{lastIndex()} exactly.
        """

    def truncateAfter(index: int) -> None:
        """
        Drop every entry after C{index}.
        """

    def compact(index: int, term: int) -> None:
        """
        Drop entries up to and including C{index}; it becomes the snapshot point.
        """


class IRaftStorage(Interface):
    """
    Durable state of one node.  Every mutating call returns a Deferred that
    fires once the change is durable (fsynced); changes become durable in
    the order they were requested.  Implementations must not block the
    reactor thread.
    """

    def load() -> Deferred[Recovered]:
        """
        Read everything back at start-up: a L{suite.raft.storage.Recovered}.
        """

    def saveHardState(term: int, votedFor: str | None) -> Deferred[None]:
        """
        Persist the current term and vote; Deferred fires when durable.
        """

    def appendEntries(truncateAfter: int | None, entries: Sequence[Entry]) -> Deferred[None]:
        """
        Optionally drop entries after C{truncateAfter}, then append C{entries};
        Deferred fires when durable.
        """

    def saveSnapshot(meta: SnapshotMeta, data: bytes) -> Deferred[None]:
        """
        Persist a snapshot (L{suite.raft.messages.SnapshotMeta} + bytes) and
        compact the log up to it; Deferred fires when durable.
        """

    def readSnapshot() -> tuple[SnapshotMeta, bytes] | None:
        """
        The latest (meta, data) or None (the newest requested, even if its
        write is still in progress).
        """

    def sync() -> Deferred[None]:
        """
        Fires once every write requested before the call is durable.
        """

    def close() -> Deferred[None]:
        """
        Flush and release files; Deferred.
        """


class IRaftTransport(Interface):
    """
    Best-effort delivery of Raft messages between nodes.  Messages may be
    lost, duplicated or reordered; Raft tolerates all three.
    """

    def send(message: Message) -> None:
        """
        Send C{message} (its C{dst} names the peer); never raises for a
        network failure.
        """

    def setReceiver(receiver: Callable[[Message], None]) -> None:
        """
        Register the callable that is given every inbound message.
        """

    def updatePeers(addresses: Mapping[str, str]) -> None:
        """
        Learn node id -> address mappings from a configuration change.
        """


class IRaftGroupStore(Interface):
    """
    Where a node keeps the id of the Raft group it belongs to
    (L{suite.raft.groupid}), durably, apart from its log.
    """

    def load() -> Deferred[int]:
        """
        The recorded group id, or 0 when none is recorded yet.
        """

    def save(group: int) -> Deferred[None]:
        """
        Record C{group}; fires once it is durable.
        """
