"""
Seeded nemesis scenarios on the deterministic simulator.

Each scenario draws its cluster size, fault rates and a schedule of faults
(partitions, one-way links, crashes with lost unsynced writes, slow disks,
leadership transfers, membership changes) from its seed, runs clients
against the reference KV, checks the Raft invariants after every step, then
heals everything and requires progress, convergence and a linearizable
history.  Replay one: C{RAFT_SEED=1234 pytest tests/raft/test_simulation.py}.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from suite.raft.node import RaftSettings
from tests.support.lincheck import checkHistory
from tests.support.raftsim import Faults, SimClient, Simulation

SCENARIOS = int(os.environ.get("RAFT_SCENARIOS", "480"))
BATCHES = 8


def scenario(seed: int) -> Simulation:
    """
    Run one seeded scenario to completion (raises on any violation).
    """
    import random

    plan = random.Random(seed * 7919 + 17)
    faults = Faults(
        drop=plan.choice([0.0, 0.01, 0.05, 0.15]),
        duplicate=plan.choice([0.0, 0.02, 0.1]),
        minDelay=0.0005,
        maxDelay=plan.choice([0.002, 0.01, 0.03]),
        diskDelay=(0.0002, plan.choice([0.001, 0.005, 0.02])),
        wire=plan.random() < 0.15,
    )
    settings = RaftSettings(
        snapshotThreshold=plan.choice([15, 40, 1000]),
        snapshotChunkBytes=plan.choice([64, 1024, 65536]),
        maxInflight=plan.choice([2, 16, 64]),
        maxAppendBytes=plan.choice([100, 4096, 262144]),
        leaseReads=plan.random() < 0.2,
    )
    sim = Simulation(seed, plan.choice([3, 3, 5]), faults, settings)
    clients = [
        SimClient(sim, f"c{i}", ["x", "y", "z"][: plan.choice([1, 2, 3])]) for i in range(plan.choice([2, 4]))
    ]
    sim.clients = clients
    for c in clients:
        c.start()
    extra = 0
    for _ in range(plan.randint(4, 10)):
        sim.run(plan.uniform(0.1, 0.9))
        what = plan.choice(
            [
                "partition",
                "isolateLeader",
                "oneWay",
                "crash",
                "crashLeader",
                "restart",
                "slowDisk",
                "heal",
                "transfer",
                "membership",
            ]
        )
        members = sorted(sim.nodes)
        leader = sim.leader()
        if what == "partition":
            plan.shuffle(members)
            cut = plan.randint(1, len(members) - 1)
            sim.network.partition(set(members[:cut]), set(members[cut:]))
        elif what == "isolateLeader" and leader is not None:
            sim.network.partition({leader.id}, set(members) - {leader.id})
        elif what == "oneWay":
            a, b = plan.sample(members, 2)
            sim.network.oneWay(a, b)
        elif what == "crash":
            sim.crash(plan.choice(members))
        elif what == "crashLeader" and leader is not None:
            sim.crash(leader.id)
        elif what == "restart":
            for m in members:
                sim.restart(m)
        elif what == "slowDisk":
            holder = sim.nodes[plan.choice(members)]
            if holder.storage is not None:
                holder.storage.slow = plan.choice([1.0, 20.0])
        elif what == "heal":
            sim.network.heal()
        elif what == "transfer" and leader is not None:
            leader.transferLeadership().addErrback(lambda f: None)
        elif what == "membership" and leader is not None:
            voters = sorted(leader.configs.latest().voters)
            if plan.random() < 0.5 and len(voters) > 3:
                leader.changeMembership("remove", plan.choice(voters)).addErrback(lambda f: None)
            else:
                extra += 1
                new = f"m{extra}"
                sim.addNode(new)
                leader.changeMembership("addVoter", new).addErrback(lambda f: None)
    # Heal and recover.
    sim.network.heal()
    for m in sorted(sim.nodes):
        sim.restart(m)
        holder = sim.nodes[m]
        if holder.storage is not None:
            holder.storage.slow = 1.0
    sim.faults.drop = min(sim.faults.drop, 0.01)
    before = sum(c.done for c in clients)
    if not sim.runUntil(lambda: sum(c.done for c in clients) > before + 5, 8.0):
        sim.fail(f"no progress after healing (leader: {sim.leader() and sim.leader().id})")  # type: ignore[union-attr]
    for c in clients:
        c.running = False
    sim.run(1.5)
    leader = sim.leader()
    if leader is None:
        sim.fail("no leader after healing")
    assert leader is not None
    final = leader.configs.latest().members()
    if not sim.runUntil(
        lambda: all(n.lastApplied == leader.commitIndex for n in sim.live() if n.id in final),
        5.0,
    ):
        sim.fail("replicas did not converge: " + str({n.id: n.lastApplied for n in sim.live()}))
    states = {n.id: n.applier.stateMachine.data for n in sim.live() if n.id in final}  # type: ignore[attr-defined]
    if len({repr(sorted(s.items())) for s in states.values()}) != 1:
        sim.fail(f"replica states differ: {states}")
    bad = checkHistory(sim.history)
    if bad:
        sim.fail(f"history not linearizable for keys {bad}")
    return sim


def _seeds(batch: int) -> list[int]:
    if "RAFT_SEED" in os.environ:
        return [int(os.environ["RAFT_SEED"])] if batch == 0 else []
    return [s for s in range(SCENARIOS) if s % BATCHES == batch]


class SimulationTests(SynchronousTestCase):
    """
    Nemesis scenarios, in batches so xdist can spread them.
    """

    def runBatch(self, batch: int) -> None:
        seeds = _seeds(batch)
        for seed in seeds:
            scenario(seed)
        self.assertTrue(seeds or "RAFT_SEED" in os.environ)

    def test_batch0(self) -> None:
        """
        Scenarios with seed = 0 (mod 8) keep every invariant and are linearizable.
        """
        self.runBatch(0)

    def test_batch1(self) -> None:
        """
        Scenarios with seed = 1 (mod 8).
        """
        self.runBatch(1)

    def test_batch2(self) -> None:
        """
        Scenarios with seed = 2 (mod 8).
        """
        self.runBatch(2)

    def test_batch3(self) -> None:
        """
        Scenarios with seed = 3 (mod 8).
        """
        self.runBatch(3)

    def test_batch4(self) -> None:
        """
        Scenarios with seed = 4 (mod 8).
        """
        self.runBatch(4)

    def test_batch5(self) -> None:
        """
        Scenarios with seed = 5 (mod 8).
        """
        self.runBatch(5)

    def test_batch6(self) -> None:
        """
        Scenarios with seed = 6 (mod 8).
        """
        self.runBatch(6)

    def test_batch7(self) -> None:
        """
        Scenarios with seed = 7 (mod 8).
        """
        self.runBatch(7)
