"""
Interfaces of L{suite.raft}.

A L{suite.raft.node.RaftNode} is wired from collaborators that provide these
interfaces: the replicated L{IRaftStateMachine} (the application), an
L{IRaftStorage} (durable term/vote, log and snapshots), an L{IRaftTransport}
(messages to peers) and an in-memory L{IRaftLog}.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


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

    def entry(index: int) -> object:
        """
        The L{suite.raft.messages.Entry} at C{index} (must be present).
        """

    def slice(start: int, stop: int, maxBytes: int) -> list[object]:
        """
        Entries C{start <= i < stop}, at least one, at most about C{maxBytes}.
        """

    def append(entries: list[object]) -> None:
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

    def load() -> object:
        """
        Read everything back at start-up: a L{suite.raft.storage.Recovered}.
        """

    def saveHardState(term: int, votedFor: str | None) -> object:
        """
        Persist the current term and vote; Deferred fires when durable.
        """

    def appendEntries(truncateAfter: int | None, entries: list[object]) -> object:
        """
        Optionally drop entries after C{truncateAfter}, then append C{entries};
        Deferred fires when durable.
        """

    def saveSnapshot(meta: object, data: bytes) -> object:
        """
        Persist a snapshot (L{suite.raft.messages.SnapshotMeta} + bytes) and
        compact the log up to it; Deferred fires when durable.
        """

    def readSnapshot() -> object:
        """
        The latest (meta, data) or None.
        """

    def close() -> object:
        """
        Flush and release files; Deferred.
        """


class IRaftTransport(Interface):
    """
    Best-effort delivery of Raft messages between nodes.  Messages may be
    lost, duplicated or reordered; Raft tolerates all three.
    """

    def send(message: object) -> None:
        """
        Send C{message} (its C{dst} names the peer); never raises for a
        network failure.
        """

    def setReceiver(receiver: object) -> None:
        """
        Register the callable that is given every inbound message.
        """

    def updatePeers(addresses: object) -> None:
        """
        Learn node id -> address mappings from a configuration change.
        """
