"""
Snapshots encoded off the reactor thread.

A L{suite.raft.node.RaftNode} snapshots on its own thread: every
C{snapshotThreshold} applied entries it asks its state machine for the
bytes, compacts the log and saves them, all in one reactor turn.  For a
large state that stalls the reactor for as long as the encoding takes.  A
snapshotter does the same work in three steps: at its own threshold it
I{captures} the state machine on the reactor thread
(L{suite.raft.interfaces.IRaftSnapshotCapture}: copies of the mutable
parts, no encoding), I{encodes} the capture in a thread (C{run}, e.g. the
reactor's thread pool), then, back on the reactor thread, compacts the log
and saves the bytes at the index of the capture, unless the node moved
past that index meanwhile (a snapshot installed from the leader, the
node's own snapshot, a stop).  Entries applied while the thread encodes
are in the log after the capture's index, not in its bytes.  The node's
own threshold stays as a backstop (set it above the snapshotter's).

States: C{Idle}; C{Encoding} (data: L{Encoding}, the capture's
L{SnapshotMeta}).  Inputs (L{SnapshotInputs}): C{applied(index)} in
C{Idle} asks the host whether a snapshot is due and, if so, feeds
C{begin(meta)}; in C{Encoding} it is ignored (one snapshot at a time).
C{begin(meta)} in C{Idle} captures, starts the encoding and goes to
C{Encoding}; in C{Encoding} it is ignored.  C{encoded(data)} in
C{Encoding} installs the bytes (L{SnapshotHost.install}) and goes back to
C{Idle}; C{failed(failure)} logs and goes back to C{Idle}; both are
ignored in C{Idle}.  The question C{pending()} answers the index being
encoded (C{None} in C{Idle}).  Outputs: the host's C{capture} and
C{install}, and C{run}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.raft.messages import SnapshotMeta
from suite.raft.node import RaftNode

__all__ = [
    "Encoding",
    "NodeSnapshotHost",
    "SnapshotCore",
    "SnapshotHost",
    "SnapshotInputs",
    "Snapshotter",
    "newSnapshotter",
]

log = Logger()

#: Runs an encoding function off the reactor thread; fires with its bytes.
Runner = Callable[[Callable[[], bytes]], Deferred[bytes]]


class SnapshotInputs(Protocol):
    def applied(self, index: int) -> None:
        """
        The node applied every entry up to C{index} (its applied hook).
        """

    def begin(self, meta: SnapshotMeta) -> None:
        """
        A snapshot is due at C{meta} (fed by L{applied}).
        """

    def encoded(self, snapshot: bytes) -> None:
        """
        The encoding in flight finished with the bytes C{snapshot}.
        """

    def failed(self, failure: Failure) -> None:
        """
        The encoding in flight failed.
        """

    def pending(self) -> int | None:
        """
        The index of the snapshot being encoded, or C{None}.
        """


class SnapshotHost(Protocol):
    """
    What a snapshotter works on: a Raft node (L{NodeSnapshotHost}).
    """

    def due(self, threshold: int) -> SnapshotMeta | None:
        """
        The snapshot point (the last applied entry) when at least
        C{threshold} entries were applied since the log's snapshot point;
        C{None} otherwise.
        """

    def capture(self) -> Callable[[], bytes]:
        """
        Freeze the state machine now; the function encodes it in any thread.
        """

    def install(self, meta: SnapshotMeta, data: bytes) -> bool:
        """
        Compact the log up to C{meta} and save C{data}, if the node has not
        moved past C{meta.index}; whether it did.
        """


@dataclass
class SnapshotCore:
    """
    The snapshotter's collaborators and counts.

    @ivar threshold: applied entries between snapshots.
    @ivar run: runs the encoding off the reactor thread.
    @ivar installed: snapshots compacted into the log.
    @ivar discarded: encoded snapshots dropped (the node had moved past them).
    """

    host: SnapshotHost
    threshold: int
    run: Runner
    installed: int = 0
    discarded: int = 0


@dataclass
class Encoding:
    """
    The state data of C{Encoding}: the point of the capture being encoded.
    """

    meta: SnapshotMeta


def _build() -> TypeMachine[SnapshotInputs, SnapshotCore]:
    b = TypeMachineBuilder(SnapshotInputs, SnapshotCore)
    idle = b.state("Idle")

    def encoding_(inputs: SnapshotInputs, core: SnapshotCore, meta: SnapshotMeta) -> Encoding:
        return Encoding(meta)

    encoding = b.state("Encoding", encoding_)

    @idle.upon(SnapshotInputs.applied).loop()
    def check(inputs: SnapshotInputs, core: SnapshotCore, index: int) -> None:
        meta = core.host.due(core.threshold)
        if meta is not None:
            inputs.begin(meta)

    @idle.upon(SnapshotInputs.begin).to(encoding)
    def start(inputs: SnapshotInputs, core: SnapshotCore, meta: SnapshotMeta) -> None:
        encode = core.host.capture()
        # A runner that finishes at once delivers encoded after this
        # transition (automat queues inputs made during one).
        maybeDeferred(core.run, encode).addCallbacks(inputs.encoded, inputs.failed)

    @encoding.upon(SnapshotInputs.encoded).to(idle)
    def install(inputs: SnapshotInputs, core: SnapshotCore, data: Encoding, snapshot: bytes) -> None:
        if core.host.install(data.meta, snapshot):
            core.installed += 1
        else:
            core.discarded += 1

    @encoding.upon(SnapshotInputs.failed).to(idle)
    def fail(inputs: SnapshotInputs, core: SnapshotCore, data: Encoding, failure: Failure) -> None:
        log.failure("encoding the snapshot at {index} failed", failure, index=data.meta.index)

    # One snapshot at a time.
    encoding.upon(SnapshotInputs.applied).loop().returns(None)
    encoding.upon(SnapshotInputs.begin).loop().returns(None)
    # Nothing in flight: no encoding to finish.
    idle.upon(SnapshotInputs.encoded).loop().returns(None)
    idle.upon(SnapshotInputs.failed).loop().returns(None)

    idle.upon(SnapshotInputs.pending).loop().returns(None)

    @encoding.upon(SnapshotInputs.pending).loop()
    def encodingAt(inputs: SnapshotInputs, core: SnapshotCore, data: Encoding) -> int | None:
        return data.meta.index

    return b.build()


#: The machine: C{Snapshotter(SnapshotCore(...))} -> L{SnapshotInputs}.
Snapshotter = _build()


class NodeSnapshotHost:
    """
    L{SnapshotHost} of a L{RaftNode}: its applier captures, its log,
    configurations and storage take the bytes as the node's own snapshot
    path does.
    """

    def __init__(self, node: RaftNode) -> None:
        self.node = node

    def due(self, threshold: int) -> SnapshotMeta | None:
        node = self.node
        if node.stopped or node.lastApplied - node.log.snapshotIndex < threshold:
            return None
        index = node.lastApplied
        term = node.log.term(index)
        if term is None:
            return None
        return SnapshotMeta(index, term, node.configs.at(index))

    def capture(self) -> Callable[[], bytes]:
        return self.node.applier.captureSnapshot()

    def install(self, meta: SnapshotMeta, data: bytes) -> bool:
        node = self.node
        index = meta.index
        if (
            node.stopped
            or not node.log.snapshotIndex < index <= node.lastApplied
            or node.log.term(index) != meta.term
        ):
            log.info(
                "node {node} drops the snapshot encoded at {index}: the log moved past it",
                node=node.id,
                index=index,
            )
            return False
        log.info("node {node} snapshots at {index} ({size} bytes)", node=node.id, index=index, size=len(data))
        node.compactTo(meta, data)
        return True


def newSnapshotter(node: RaftNode, threshold: int, run: Runner) -> SnapshotInputs:
    """
    A snapshotter of C{node}, C{Idle}, fed by the node's applied hook: every
    C{threshold} applied entries it captures the state on the reactor
    thread and encodes it with C{run}.
    """
    inputs = Snapshotter(SnapshotCore(NodeSnapshotHost(node), threshold, run))
    node.appliedHooks.append(inputs.applied)
    return inputs
