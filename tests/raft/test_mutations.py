"""
The simulation and the linearizability checker catch every planted Raft
bug (L{tests.raft.mutations}) in the scenarios CI runs: each mutation is
planted in a copy of C{suite/raft} and the scenario families expected to
catch it are run, in seed order, until one fails.  Unmutated code passes
every one of those scenarios (tests/raft/test_simulation.py).
"""

from __future__ import annotations

import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.raft.mutations import MUTATIONS, byName, plant, run
from tests.raft.scenarios import FAMILIES


class MutationTests(SynchronousTestCase):
    """
    One test per planted bug.
    """

    def caught(self, name: str) -> None:
        mutation = byName(name)
        scenarios = [(f, seed) for f in mutation.families for seed in range(FAMILIES[f].ci)]
        outcomes = run(mutation, scenarios, stopAtFirst=True)
        self.assertTrue(
            outcomes and outcomes[-1].caught,
            f"{name} ({mutation.bug}) survived {len(outcomes)} scenarios of {', '.join(mutation.families)}",
        )

    def test_patchesApply(self) -> None:
        """
        Every mutation's patches match the current code exactly once, and
        the catalogue names the classic bugs.
        """
        for m in MUTATIONS:
            with tempfile.TemporaryDirectory() as root:
                plant(m, root)
            for family in m.families:
                self.assertIn(family, FAMILIES)
        self.assertGreaterEqual(len(MUTATIONS), 10)

    def test_readUnconfirmed(self) -> None:
        """
        Reads served without confirming leadership are caught.
        """
        self.caught("read-unconfirmed")

    def test_leaseUnbounded(self) -> None:
        """
        Lease reads without the clock bound are caught.
        """
        self.caught("lease-unbounded")

    def test_leaseFromAck(self) -> None:
        """
        A lease measured from the acknowledgements' arrival is caught (pauses).
        """
        self.caught("lease-from-ack")

    def test_commitPreviousTerm(self) -> None:
        """
        Committing an earlier term's entry by counting replicas is caught.
        """
        self.caught("commit-previous-term")

    def test_voteAnyLog(self) -> None:
        """
        Votes granted without the log up-to-date check are caught.
        """
        self.caught("vote-any-log")

    def test_ackBeforeFsync(self) -> None:
        """
        Acknowledging appends before they are durable is caught.
        """
        self.caught("ack-before-fsync")

    def test_staleTermAppend(self) -> None:
        """
        Accepting AppendEntries with a stale term is caught.
        """
        self.caught("stale-term-append")

    def test_keepConflictingSuffix(self) -> None:
        """
        Not truncating a conflicting suffix is caught.
        """
        self.caught("keep-conflicting-suffix")

    def test_applyBeforeCommit(self) -> None:
        """
        Applying entries before they are committed is caught.
        """
        self.caught("apply-before-commit")

    def test_forgetVote(self) -> None:
        """
        Forgetting the vote across a restart is caught.
        """
        self.caught("forget-vote")

    def test_twoConfigChanges(self) -> None:
        """
        Two membership changes in flight are caught.
        """
        self.caught("two-config-changes")

    def test_emptyStorageVotes(self) -> None:
        """
        A member restarted on empty storage whose vote counts is caught.
        """
        self.caught("empty-storage-votes")

    def test_staleIncarnationProgress(self) -> None:
        """
        A leader that keeps a lost copy's acknowledgements is caught.
        """
        self.caught("stale-incarnation-progress")

    def test_serveWhileLoading(self) -> None:
        """
        A node that answers peers before it has loaded its log is caught.
        """
        self.caught("serve-while-loading")

    def test_foreignGroupAccepted(self) -> None:
        """
        A node that takes another group's messages as its own is caught.
        """
        self.caught("foreign-group-accepted")
