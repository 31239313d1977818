"""
Seeded nemesis scenarios on the deterministic simulator.

The scenario families are in L{tests.raft.scenarios}: each scenario draws
its cluster, fault rates and a schedule of faults from its seed, runs
clients against the reference KV, checks the Raft invariants after every
step, then heals everything and requires progress, convergence and a
linearizable history.  Replay one: C{RAFT_FAMILY=staleRead RAFT_SEED=12
pytest tests/raft/test_simulation.py} (the family defaults to C{nemesis});
C{RAFT_SCENARIOS=N} runs N seeds of every family.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.raft.scenarios import FAMILIES

BATCHES = 8


def _seeds(batch: int) -> list[tuple[str, int]]:
    if "RAFT_SEED" in os.environ:
        family = os.environ.get("RAFT_FAMILY", "nemesis")
        return [(family, int(os.environ["RAFT_SEED"]))] if batch == 0 else []
    scale = os.environ.get("RAFT_SCENARIOS")
    every = [
        (name, seed)
        for name, family in sorted(FAMILIES.items())
        for seed in range(int(scale) if scale else family.ci)
    ]
    return every[batch::BATCHES]


class SimulationTests(SynchronousTestCase):
    """
    Nemesis scenarios, in batches so xdist can spread them.
    """

    def runBatch(self, batch: int) -> None:
        seeds = _seeds(batch)
        for family, seed in seeds:
            FAMILIES[family].run(seed)
        self.assertTrue(seeds or "RAFT_SEED" in os.environ)

    def test_batch0(self) -> None:
        """
        Every eighth scenario (from the first) keeps every invariant and is linearizable.
        """
        self.runBatch(0)

    def test_batch1(self) -> None:
        """
        Every eighth scenario, from scenario 1.
        """
        self.runBatch(1)

    def test_batch2(self) -> None:
        """
        Every eighth scenario, from scenario 2.
        """
        self.runBatch(2)

    def test_batch3(self) -> None:
        """
        Every eighth scenario, from scenario 3.
        """
        self.runBatch(3)

    def test_batch4(self) -> None:
        """
        Every eighth scenario, from scenario 4.
        """
        self.runBatch(4)

    def test_batch5(self) -> None:
        """
        Every eighth scenario, from scenario 5.
        """
        self.runBatch(5)

    def test_batch6(self) -> None:
        """
        Every eighth scenario, from scenario 6.
        """
        self.runBatch(6)

    def test_batch7(self) -> None:
        """
        Every eighth scenario, from scenario 7.
        """
        self.runBatch(7)
