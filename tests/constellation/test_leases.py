"""
The lease state machine, the keeper, and the seeded simulation: never two
nodes acting under one lease at once, tokens strictly increasing.

Replay a failing seed with C{LEASE_SEED=<seed>}.
"""

from __future__ import annotations

import os

import msgpack
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.constellation.leases import (
    DNS_WRITER,
    LB_LEADER,
    LeaseKeeper,
    LeaseSettings,
    LeaseStateMachine,
    candidateOrder,
    encodeLeaseCommand,
)
from suite.raft.interfaces import IRaftStateMachine
from suite.raft.settings import NotLeader
from tests.support.leasesim import LeaseSimulation, LeaseViolation

SEEDS = [int(os.environ["LEASE_SEED"])] if os.environ.get("LEASE_SEED") else list(range(1, 9))


class StateMachineTests(SynchronousTestCase):
    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IRaftStateMachine, LeaseStateMachine()))

    def test_grantRenewRelease(self) -> None:
        """
        Grants are compare-and-set on the token; every grant raises it;
        renew and release need holder and token; a snapshot round-trips.
        """
        m = LeaseStateMachine()
        self.assertEqual(m.apply(1, encodeLeaseCommand("grant", DNS_WRITER, "a", 0, 5)), [True, 1, "a", ""])
        self.assertEqual(m.apply(2, encodeLeaseCommand("grant", DNS_WRITER, "b", 0, 5))[0], False)
        self.assertEqual(m.apply(3, encodeLeaseCommand("renew", DNS_WRITER, "b", 1))[0], False)
        self.assertEqual(m.apply(4, encodeLeaseCommand("renew", DNS_WRITER, "a", 1))[0], True)
        self.assertEqual(m.apply(5, encodeLeaseCommand("grant", DNS_WRITER, "b", 1, 5)), [True, 2, "b", ""])
        self.assertEqual(m.apply(6, encodeLeaseCommand("release", DNS_WRITER, "a", 1))[0], False)
        self.assertEqual(m.apply(7, encodeLeaseCommand("release", DNS_WRITER, "b", 2)), [True, 2, None, ""])
        self.assertEqual(m.apply(8, encodeLeaseCommand("grant", DNS_WRITER, "a", 2, 5)), [True, 3, "a", ""])
        self.assertEqual(m.apply(9, b"\x01garbage")[0], False)
        self.assertEqual(m.apply(10, msgpack.packb(["grant", "", "a", 0, 1]))[0], False)
        copy = LeaseStateMachine()
        copy.restore(m.snapshot())
        self.assertEqual(copy.leases, m.leases)

    def test_priority(self) -> None:
        self.assertEqual(
            sorted(["edge2", "cloudserver9", "alpha", "cloudserver1"], key=candidateOrder),
            ["cloudserver1", "cloudserver9", "alpha", "edge2"],
        )


class _FakeRaft:
    def __init__(self, machine: LeaseStateMachine) -> None:
        self.id = "n1"
        self.term = 1
        self.leader: object | None = object()
        self.machine = machine
        self.index = 0
        self.fail = False
        self.transfers: list[str | None] = []

    def propose(self, command: bytes) -> object:
        if self.fail or self.leader is None:
            return fail(NotLeader(None, "no"))
        self.index += 1
        return succeed(self.machine.apply(self.index, command))

    def transferLeadership(self, target: str | None) -> object:
        self.transfers.append(target)
        self.leader = None
        return succeed(target)


class KeeperTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.machine = LeaseStateMachine()
        self.raft = _FakeRaft(self.machine)
        self.candidates: list[str] = []
        self.settings = LeaseSettings(
            duration=5.0, renewInterval=1.0, drift=0.02, margin=0.2, handoverAfter=3.0
        )
        self.keeper = LeaseKeeper(
            self.raft, self.machine, self.clock, self.clock.seconds, self.settings, lambda: self.candidates
        )

    def test_acquireRenewExpire(self) -> None:
        """
        The leader grants itself free leases, renews them, and stops acting
        C{duration * (1 - drift)} after the last successful renewal.
        """
        self.keeper.start()
        self.clock.advance(1.0)
        self.assertEqual(self.keeper.acting(DNS_WRITER), 1)
        self.assertEqual(self.keeper.acting(LB_LEADER), 1)
        self.clock.advance(1.0)
        self.raft.fail = True
        renewedAt = 2.0
        self.clock.advance(self.settings.holderValidity() - 0.01)
        self.assertEqual(self.keeper.acting(DNS_WRITER), 1)
        self.clock.pump([0.02])
        self.assertIsNone(self.keeper.acting(DNS_WRITER))
        self.assertAlmostEqual(renewedAt + self.settings.holderValidity(), 6.9)

    def test_waitsBeforeTakingOver(self) -> None:
        """
        A lease held by another node is granted only after the takeover
        wait from this node's election.
        """
        self.machine.apply(1, encodeLeaseCommand("grant", DNS_WRITER, "n2", 0, 5))
        self.keeper.start()
        self.clock.advance(1.0)
        self.assertIsNone(self.keeper.acting(DNS_WRITER))
        for _ in range(5):
            self.clock.advance(1.0)
        self.assertIsNone(self.keeper.acting(DNS_WRITER))
        self.clock.advance(1.0)
        self.assertEqual(self.keeper.acting(DNS_WRITER), 2)

    def test_handoverAndStop(self) -> None:
        """
        A better node alive long enough: release and transfer; stop: stop
        acting at once and release.
        """
        self.keeper.start()
        self.clock.advance(1.0)
        self.candidates = ["cloudserver1"]
        self.clock.advance(1.0)
        self.assertIsNotNone(self.keeper.acting(DNS_WRITER))
        for _ in range(3):
            self.clock.advance(1.0)
        self.assertEqual(self.raft.transfers, ["cloudserver1"])
        self.assertIsNone(self.keeper.acting(DNS_WRITER))
        self.assertIsNone(self.machine.get(DNS_WRITER).holder)
        self.raft.leader = object()
        self.candidates = []
        self.clock.advance(1.0)
        self.assertEqual(self.keeper.acting(DNS_WRITER), 2)
        self.keeper.stop()
        self.assertIsNone(self.keeper.acting(DNS_WRITER))
        self.assertIsNone(self.machine.get(DNS_WRITER).holder)


class SimulationTests(SynchronousTestCase):
    def test_neverTwoHolders(self) -> None:
        """
        Partitions, pauses, wall-clock jumps and crashes: never two nodes
        acting under one lease; tokens only increase; after healing, the
        preferred node holds both leases.
        """
        for seed in SEEDS:
            sim = LeaseSimulation(seed)
            sim.run(3.0)
            sim.chaos(40.0)
            sim.run(10.0)
            for lease in (LB_LEADER, DNS_WRITER):
                self.assertGreater(sim.actingTime[lease], 10.0, f"seed {seed}: {lease} rarely held")
                self.assertEqual(
                    sim.nodes["cloudserver1"].keeper.acting(lease) is not None, True, f"seed {seed}"
                )

    def test_checkerCatchesOverlap(self) -> None:
        """
        With a holder validity longer than the takeover wait (a broken
        setting) the checker reports the overlap: the checker can fail.
        """
        broken = LeaseSettings(duration=1.0, renewInterval=0.2, drift=-1.0, margin=0.0, handoverAfter=0.5)
        caught = 0
        for seed in SEEDS:
            sim = LeaseSimulation(seed, settings=broken)
            try:
                sim.run(3.0)
                sim.chaos(40.0)
            except LeaseViolation:
                caught += 1
        self.assertGreater(caught, 0)
