"""
Seeded scenarios on the deterministic gossip simulator.

Each scenario draws its cluster size, loss and timing from its seed and
checks one property: joins converge, a crash is detected by everyone within
the bound, a lossy node is not falsely declared dead, a partition heals, a
graceful leave is seen as left and never as dead, metadata propagates, a
restarted node is taken back.  A failure prints the seed; replay it alone
with C{GOSSIP_SEED=<seed> .venv/bin/python -m pytest -q tests/gossip/test_simulation.py}.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from suite.gossip.settings import GossipSettings
from tests.support.gossipsim import Simulation

SETTINGS = GossipSettings()


def detectionBound(n: int, s: GossipSettings = SETTINGS) -> float:
    """
    How long after a crash every member must have declared it dead: one full
    probe round, the longest suspicion timeout, and time to gossip the verdict.
    """
    low, high, _ = s.suspicionBounds(n)
    return n * s.probeInterval + high + 10 * s.gossipInterval * max(1, n.bit_length())


def joinThirtyTwo(seed: int) -> None:
    """
    32 nodes join through one to three seeds at random times, with a little
    loss; everyone converges to the same all-alive view.
    """
    plan = random.Random(seed)
    sim = Simulation(seed)
    sim.baseLoss = plan.choice([0.0, 0.01, 0.05])
    sim.cluster(32, seeds=plan.randint(1, 3), spread=plan.uniform(0.5, 5.0))
    sim.run(5.0)
    sim.runUntil(lambda: sim.allAlive(), 40.0, "all 32 nodes seeing 32 alive members")
    if any(e[2] == "dead" for e in sim.events):
        sim.fail("a node was declared dead during the joins")
    sim.stopAll()


def crashDetected(seed: int) -> None:
    """
    After a crash every other node marks the node dead within the bound, and
    nobody else is declared dead.
    """
    plan = random.Random(seed)
    sim = Simulation(seed)
    n = plan.randint(5, 16)
    names = sim.cluster(n)
    sim.runUntil(lambda: sim.allAlive(), 40.0, "convergence after joins")
    victim = plan.choice(names)
    sim.crash(victim)
    took = sim.runUntil(
        lambda: sim.allSee(victim, "dead"), detectionBound(n), f"every node seeing {victim} dead"
    )
    others = [e for e in sim.events if e[2] == "dead" and e[3] != victim]
    if others:
        sim.fail(f"false deaths: {others}")
    assert took <= detectionBound(n)
    sim.stopAll()


def lossyNodeSurvives(seed: int) -> None:
    """
    A node losing 10-20% of its packets each way may be suspected but always
    refutes: nobody is declared dead in two simulated minutes.
    """
    plan = random.Random(seed)
    sim = Simulation(seed)
    n = plan.randint(5, 12)
    names = sim.cluster(n)
    sim.runUntil(lambda: sim.allAlive(), 40.0, "convergence after joins")
    lossy = plan.choice(names)
    sim.loss[sim.address(lossy)] = plan.uniform(0.10, 0.20)
    sim.run(120.0)
    dead = [e for e in sim.events if e[2] == "dead"]
    if dead:
        sim.fail(f"{lossy} at {sim.loss[sim.address(lossy)]:.0%} loss: false deaths {dead}")
    sim.loss.clear()
    sim.runUntil(lambda: sim.allAlive(), 30.0, "all alive once the loss stopped")
    sim.stopAll()


def partitionHeals(seed: int) -> None:
    """
    A symmetric split (or one-way cuts) long enough for deaths to be
    declared; after healing, every view converges back to all alive.
    """
    plan = random.Random(seed)
    sim = Simulation(seed)
    n = plan.randint(6, 12)
    names = sim.cluster(n)
    sim.runUntil(lambda: sim.allAlive(), 40.0, "convergence after joins")
    shuffled = names[:]
    plan.shuffle(shuffled)
    cut = plan.randint(1, n // 2)
    left, right = shuffled[:cut], shuffled[cut:]
    if plan.random() < 0.6:
        sim.partition(left, right)
        sim.runUntil(
            lambda: all(sim.view(a)[b] == "dead" for a in right for b in left),
            120.0,
            "the majority side declaring the minority dead",
        )
    else:
        # One-way: the minority cannot reach the majority.
        sim.oneWay(left, right)
        sim.run(plan.uniform(20.0, 60.0))
    sim.heal()
    sim.runUntil(lambda: sim.allAlive(), 120.0, "convergence after the partition healed")
    sim.stopAll()


def gracefulLeave(seed: int) -> None:
    """
    A node that leaves is seen as left by everyone, never as dead.
    """
    plan = random.Random(seed)
    sim = Simulation(seed)
    sim.baseLoss = plan.choice([0.0, 0.02])
    n = plan.randint(5, 12)
    names = sim.cluster(n)
    sim.runUntil(lambda: sim.allAlive(), 40.0, "convergence after joins")
    leaver = plan.choice(names)
    sim.nodes[leaver].leave()
    sim.runUntil(lambda: sim.allSee(leaver, "left"), 30.0, f"every node seeing {leaver} left")
    sim.run(60.0)
    if not sim.allSee(leaver, "left") or sim.eventsAbout(leaver, "dead"):
        sim.fail(f"{leaver} was seen dead after leaving: {sim.eventsAbout(leaver, 'dead')}")
    sim.stopAll()


def metadataPropagates(seed: int) -> None:
    """
    A metadata change reaches every node.
    """
    plan = random.Random(seed)
    sim = Simulation(seed)
    sim.baseLoss = plan.choice([0.0, 0.05])
    n = plan.randint(5, 16)
    names = sim.cluster(n)
    sim.runUntil(lambda: sim.allAlive(), 40.0, "convergence after joins")
    who = plan.choice(names)
    meta = {"services": ["web", f"svc{seed}"], "health": "ok"}
    sim.nodes[who].setMetadata(meta)

    def seen() -> bool:
        return all(
            sim.nodes[o].member(who) is not None and sim.nodes[o].member(who).meta == meta  # type: ignore[union-attr]
            for o in sim.live()
        )

    sim.runUntil(seen, 45.0, f"metadata of {who} reaching everyone")
    sim.stopAll()


def restartRejoins(seed: int) -> None:
    """
    A crashed node restarted (before or after it was declared dead) comes
    back alive in every view, refuting with a higher incarnation.
    """
    plan = random.Random(seed)
    sim = Simulation(seed)
    n = plan.randint(4, 10)
    names = sim.cluster(n)
    sim.runUntil(lambda: sim.allAlive(), 40.0, "convergence after joins")
    victim = plan.choice(names[1:])
    sim.crash(victim)
    sim.run(plan.choice([1.0, 5.0, detectionBound(n)]))
    sim.restart(victim, [plan.choice([x for x in names if x != victim])])
    sim.runUntil(lambda: sim.allAlive(), 60.0, f"{victim} alive again everywhere")
    sim.stopAll()


def fiftyNodes(seed: int) -> None:
    """
    50 nodes with replicated delegate state, 1-3 % loss everywhere and one
    slow node (350 ms each way, beyond the probe timeout): a crash is seen
    dead by everyone within Lifeguard's bound and nobody else is ever
    declared dead; a partition is declared, heals, and membership and the
    state written on both sides during it converge.
    """
    plan = random.Random(seed)
    sim = Simulation(seed)
    sim.withState = True
    sim.baseLoss = plan.uniform(0.01, 0.03)
    n = 50
    names = sim.cluster(n, seeds=3, spread=5.0)
    sim.runUntil(lambda: sim.allAlive(), 60.0, "50 nodes converging")
    slow = plan.choice(names[1:])
    sim.network.slow[sim.address(slow)] = 0.35
    for name in names:
        sim.states[name].set(f"v1-{name}")
    sim.run(20.0)
    victim = plan.choice([x for x in names if x != slow])
    sim.crash(victim)
    bound = detectionBound(n)
    sim.runUntil(lambda: sim.allSee(victim, "dead"), bound, f"every node seeing {victim} dead")
    false = [e for e in sim.events if e[2] == "dead" and e[3] != victim]
    if false:
        sim.fail(f"false deaths (slow node {slow}): {false}")
    live = [x for x in names if x != victim]
    plan.shuffle(live)
    minority, majority = live[:20], live[20:]
    sim.partition(minority, majority)
    sim.runUntil(
        lambda: all(sim.view(a)[b] == "dead" for a in majority[:5] for b in minority[:5]),
        bound,
        "the majority declaring the minority dead",
    )
    for name in (minority[0], majority[0]):
        sim.states[name].set(f"v2-{name}")
    sim.heal()
    sim.runUntil(lambda: sim.allAlive(), 180.0, "membership converging after the partition healed")
    expected = sim.states[majority[1]].entries
    sim.runUntil(
        lambda: (
            all(sim.states[x].entries == expected for x in sim.live())
            and expected[minority[0]][1] == f"v2-{minority[0]}"
        ),
        120.0,
        "delegate state converging after the heal",
    )
    sim.stopAll()


SCENARIOS: dict[str, tuple[Callable[[int], None], int]] = {
    "fifty": (fiftyNodes, 1),
    "join32": (joinThirtyTwo, 10),
    "crash": (crashDetected, 30),
    "lossy": (lossyNodeSurvives, 24),
    "partition": (partitionHeals, 24),
    "leave": (gracefulLeave, 14),
    "metadata": (metadataPropagates, 14),
    "restart": (restartRejoins, 14),
}


class SimulationTests(SynchronousTestCase):
    """
    Generated below: one test per scenario kind and seed.
    """


def _add(kind: str, fn: Callable[[int], None], seed: int) -> None:
    def test(self: SynchronousTestCase) -> None:
        fn(seed)

    test.__doc__ = f"{fn.__doc__.strip().splitlines()[0] if fn.__doc__ else kind} (seed {seed})"
    setattr(SimulationTests, f"test_{kind}_{seed}", test)


_only = os.environ.get("GOSSIP_SEED")
for _kind, (_fn, _count) in SCENARIOS.items():
    for _seed in [int(_only)] if _only else range(1000, 1000 + _count):
        _add(_kind, _fn, _seed)
