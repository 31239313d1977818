"""
The per-follower progress machine alone, over a recording replicator.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from suite.raft.log import RaftLog
from suite.raft.messages import AppendEntriesResponse, Configuration, Entry, SnapshotMeta
from suite.raft.progress import Progress, ProgressInputs, Snapshot, newProgress
from suite.raft.settings import RaftSettings

SNAPSHOT: Snapshot = (SnapshotMeta(2, 1, Configuration(frozenset({"a", "b"}))), b"0123456789")


class RecordingReplicator:
    """
    A L{Replicator} over a log holding a snapshot at 2 and entries 3..10,
    one entry per AppendEntries and two messages in flight at most.
    """

    def __init__(self) -> None:
        self.settings = RaftSettings(maxInflight=2, maxAppendBytes=1)
        self._log = RaftLog(2, 1, [Entry(2, i) for i in range(3, 11)])
        self.snapshot: Snapshot | None = SNAPSHOT
        self.events: list[str] = []

    @property
    def log(self) -> RaftLog:
        return self._log

    def sendEntries(self, pr: Progress, prevTerm: int, entries: list[Entry]) -> None:
        self.events.append(f"append {pr.next - 1}+{len(entries)} e{pr.epoch}")

    def sendChunk(self, peer: str, snapshot: Snapshot, offset: int) -> None:
        self.events.append(f"chunk {offset}")

    def readSnapshot(self) -> Snapshot | None:
        return self.snapshot

    def progressed(self, pr: Progress) -> None:
        # As the leader does: commit, then send more.
        self.events.append(f"progressed {pr.match}")
        pr.inputs.send()


def stateOf(inputs: ProgressInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


def rejection(
    rejectIndex: int, conflictIndex: int, conflictTerm: int = 0, epoch: int = 0
) -> AppendEntriesResponse:
    return AppendEntriesResponse("b", "a", 1, False, 0, rejectIndex, conflictTerm, conflictIndex, epoch)


#: How to reach each state: the first C{next}, then inputs.
PATHS: dict[str, tuple[int, tuple[Callable[[ProgressInputs], None], ...]]] = {
    "Probe": (6, ()),
    "ProbeSent": (6, (lambda p: p.send(),)),
    "Replicate": (6, (lambda p: p.send(), lambda p: p.appendAccepted(5))),
    "Snapshot": (2, (lambda p: p.send(),)),
}

#: One call of each input (the machine's whole alphabet).
CALLS: dict[str, Callable[[ProgressInputs], None]] = {
    "send": lambda p: p.send(),
    "appendAccepted": lambda p: p.appendAccepted(7),
    "appendRejected": lambda p: p.appendRejected(rejection(5, 4)),
    "heartbeatAnswered": lambda p: p.heartbeatAnswered(),
    "snapshotInstalled": lambda p: p.snapshotInstalled(8),
    "snapshotChunkAnswered": lambda p: p.snapshotChunkAnswered(2, 4),
    "probeSent": lambda p: p.probeSent(),
    "resumed": lambda p: p.resumed(),
    "snapshotStarted": lambda p: p.snapshotStarted(SNAPSHOT),
    "becomeProbe": lambda p: p.becomeProbe(4),
}

#: (state, input) -> (outputs, new state, (next, match, epoch) after).  A
#: pair not listed is ignored: no output, same state, nothing changed.
EXPECTED: dict[str, dict[str, tuple[list[str], str, tuple[int, int, int]]]] = {
    # next 6, match 0, epoch 0
    "Probe": {
        "send": (["append 5+1 e0"], "ProbeSent", (6, 0, 0)),
        "appendAccepted": (["progressed 7", "append 7+1 e0", "append 8+1 e0"], "Replicate", (10, 7, 0)),
        "appendRejected": (["append 3+1 e1"], "ProbeSent", (4, 0, 1)),
        "heartbeatAnswered": (["append 5+1 e0"], "ProbeSent", (6, 0, 0)),
        "snapshotInstalled": (["progressed 8", "append 8+1 e1"], "ProbeSent", (9, 8, 1)),
        "probeSent": ([], "ProbeSent", (6, 0, 0)),
        "snapshotStarted": (["chunk 0"], "Snapshot", (6, 0, 0)),
        "becomeProbe": ([], "Probe", (4, 0, 1)),
    },
    # next 6, match 0, epoch 0, the probe at 5 out
    "ProbeSent": {
        "appendAccepted": (["progressed 7", "append 7+1 e0", "append 8+1 e0"], "Replicate", (10, 7, 0)),
        "appendRejected": (["append 3+1 e1"], "ProbeSent", (4, 0, 1)),
        "heartbeatAnswered": (["append 5+1 e0"], "ProbeSent", (6, 0, 0)),
        "snapshotInstalled": (["progressed 8", "append 8+1 e1"], "ProbeSent", (9, 8, 1)),
        "resumed": ([], "Probe", (6, 0, 0)),
        "snapshotStarted": (["chunk 0"], "Snapshot", (6, 0, 0)),
        "becomeProbe": ([], "Probe", (4, 0, 1)),
    },
    # next 8, match 5, epoch 0, AppendEntries ending at 6 and 7 in flight
    # (an event names the index an AppendEntries follows, and its length)
    "Replicate": {
        "appendAccepted": (["progressed 7", "append 7+1 e0", "append 8+1 e0"], "Replicate", (10, 7, 0)),
        "snapshotInstalled": (["progressed 8", "append 8+1 e1"], "ProbeSent", (9, 8, 1)),
        "snapshotStarted": (["chunk 0"], "Snapshot", (8, 5, 0)),
        "becomeProbe": ([], "Probe", (4, 5, 1)),
    },
    # next 2, match 0, epoch 0, the chunk at 0 of the snapshot at 2 out
    "Snapshot": {
        "appendAccepted": (["progressed 7"], "Snapshot", (8, 7, 0)),
        "snapshotInstalled": (["progressed 8", "append 8+1 e1"], "ProbeSent", (9, 8, 1)),
        "snapshotChunkAnswered": (["chunk 4"], "Snapshot", (2, 0, 0)),
        "becomeProbe": ([], "Probe", (4, 0, 1)),
    },
}


def progressIn(state: str) -> tuple[Progress, RecordingReplicator]:
    r = RecordingReplicator()
    next, path = PATHS[state]
    pr = newProgress("b", r, next)
    for step in path:
        step(pr.inputs)
    assert stateOf(pr.inputs) == state, (state, stateOf(pr.inputs))
    del r.events[:]
    return pr, r


class ProgressMachineTests(SynchronousTestCase):
    """
    Probe, ProbeSent, Replicate and Snapshot answer every input.
    """

    def test_everyInputInEveryState(self) -> None:
        """
        Every state answers every input as the table says.
        """
        self.assertEqual(set(CALLS), {n for n in dir(ProgressInputs) if not n.startswith("_")})
        for state in PATHS:
            for name, call in CALLS.items():
                pr, r = progressIn(state)
                before = (pr.next, pr.match, pr.epoch)
                call(pr.inputs)
                expected = EXPECTED[state].get(name, ([], state, before))
                self.assertEqual(
                    (r.events, stateOf(pr.inputs), (pr.next, pr.match, pr.epoch)),
                    expected,
                    f"{name} in {state}",
                )

    def test_probeWaitsForItsAnswer(self) -> None:
        """
        One probe at a time: nothing more goes out until it is answered or
        a heartbeat answer finds the follower still behind.
        """
        pr, r = progressIn("ProbeSent")
        pr.inputs.send()
        pr.inputs.send()
        self.assertEqual(r.events, [])
        pr.inputs.heartbeatAnswered()
        self.assertEqual(r.events, ["append 5+1 e0"])
        self.assertEqual(pr.matchAtHeartbeat, 0)

    def test_probeUpToDateStaysPaused(self) -> None:
        """
        A heartbeat answer from a follower that holds the whole log does not
        resume probing.
        """
        pr, r = progressIn("ProbeSent")
        pr.match = 10
        pr.inputs.heartbeatAnswered()
        self.assertEqual((r.events, stateOf(pr.inputs)), ([], "ProbeSent"))

    def test_staleRejectionsIgnored(self) -> None:
        """
        A rejection of anything but the probe in flight, of something already
        matched, or from before the last fall-back changes nothing.
        """
        pr, r = progressIn("ProbeSent")
        for m in (rejection(4, 3), rejection(5, 4, epoch=1)):
            pr.inputs.appendRejected(m)
        self.assertEqual((r.events, stateOf(pr.inputs), pr.next), ([], "ProbeSent", 6))
        pr, r = progressIn("Replicate")
        for m in (rejection(5, 4), rejection(7, 4, epoch=1)):
            pr.inputs.appendRejected(m)
        self.assertEqual((r.events, stateOf(pr.inputs), pr.next), ([], "Replicate", 8))

    def test_rejectionSkipsTheConflictingTerm(self) -> None:
        """
        A follower that names its conflicting term makes the leader probe
        after its own last entry of that term, never below what matched.
        """
        pr, r = progressIn("Replicate")
        pr.inputs.appendRejected(rejection(7, 3, conflictTerm=2))
        self.assertEqual(
            (r.events, stateOf(pr.inputs), pr.next, pr.epoch), (["append 6+1 e1"], "ProbeSent", 7, 1)
        )
        pr, r = progressIn("Replicate")
        pr.inputs.appendRejected(rejection(7, 3, conflictTerm=1))
        self.assertEqual((r.events, pr.next), (["append 5+1 e1"], 6))

    def test_pipelineLimit(self) -> None:
        """
        Replicate keeps at most maxInflight messages unacknowledged; each
        acknowledgement frees what it covers.
        """
        pr, r = progressIn("Replicate")
        pr.inputs.send()
        self.assertEqual(r.events, [])
        pr.inputs.appendAccepted(6)
        self.assertEqual(r.events, ["progressed 6", "append 7+1 e0"])

    def test_lostAppendResentAtHeartbeat(self) -> None:
        """
        With no acknowledgement between two heartbeat answers, an empty
        AppendEntries at the end of what was sent finds out whether a
        message was lost.
        """
        pr, r = progressIn("Replicate")
        pr.inputs.heartbeatAnswered()
        self.assertEqual(r.events, [])
        pr.inputs.heartbeatAnswered()
        self.assertEqual(r.events, ["append 7+0 e0"])

    def test_compactedLogStartsASnapshot(self) -> None:
        """
        When the entries the follower needs are compacted away, Replicate
        sends the snapshot; without a snapshot it stays as it is.
        """
        pr, r = progressIn("Replicate")
        r._log.compact(9, 2)
        pr.inputs.appendAccepted(6)
        self.assertEqual((r.events, stateOf(pr.inputs)), (["progressed 6", "chunk 0"], "Snapshot"))
        pr, r = progressIn("Probe")
        r.snapshot = None
        r._log.compact(9, 2)
        pr.inputs.send()
        self.flushLoggedErrors()
        self.assertEqual((r.events, stateOf(pr.inputs)), ([], "Probe"))

    def test_snapshotChunks(self) -> None:
        """
        Each answered chunk brings the next; a chunk unanswered between two
        heartbeat answers is sent again; answers about another snapshot or
        repeating the offset in flight are ignored.
        """
        pr, r = progressIn("Snapshot")
        pr.inputs.snapshotChunkAnswered(1, 4)
        pr.inputs.heartbeatAnswered()
        self.assertEqual(r.events, [])
        pr.inputs.heartbeatAnswered()
        self.assertEqual(r.events, ["chunk 0"])
        pr.inputs.snapshotChunkAnswered(2, 4)
        pr.inputs.snapshotChunkAnswered(2, 4)
        self.assertEqual(r.events, ["chunk 0", "chunk 4"])
