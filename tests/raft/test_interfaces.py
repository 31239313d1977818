"""
Every implementation provides its interface.
"""

from __future__ import annotations

import random

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from suite.raft.interfaces import IRaftLog, IRaftStateMachine, IRaftStorage, IRaftTransport
from suite.raft.kv import KeyValueStateMachine, encodeCommand
from suite.raft.log import RaftLog
from suite.raft.messages import Configuration, Entry
from suite.raft.node import RaftNode
from suite.raft.observe import RaftCollector, RaftHealth
from suite.raft.storage import MemoryStorage
from suite.raft.wal import WALStorage
from suite.web.interfaces import IHealth
from tests.support.raftsim import Disk, Faults, SimNetwork, SimStorage, SimTransport


class VerifyTests(SynchronousTestCase):
    """
    verifyObject for each implementation.
    """

    def test_stateMachine(self) -> None:
        """
        The reference KV is an L{IRaftStateMachine}.
        """
        self.assertTrue(verifyObject(IRaftStateMachine, KeyValueStateMachine()))

    def test_log(self) -> None:
        """
        L{RaftLog} is an L{IRaftLog}.
        """
        self.assertTrue(verifyObject(IRaftLog, RaftLog()))

    def test_storages(self) -> None:
        """
        Memory and simulated storage are L{IRaftStorage}.
        """
        self.assertTrue(verifyObject(IRaftStorage, MemoryStorage()))
        clock = Clock()
        self.assertTrue(verifyObject(IRaftStorage, SimStorage(Disk(), clock, random.Random(1), Faults())))

    def test_simTransport(self) -> None:
        """
        The simulator's transport is an L{IRaftTransport}.
        """
        network = SimNetwork(Clock(), random.Random(1), Faults())
        self.assertTrue(verifyObject(IRaftTransport, SimTransport(network, "a")))

    def test_health(self) -> None:
        """
        L{RaftHealth} is an L{IHealth} that explains why it is not ready.
        """
        node = RaftNode(
            "a",
            Clock(),
            MemoryStorage(),
            SimTransport(SimNetwork(Clock(), random.Random(1), Faults()), "a"),
            KeyValueStateMachine(),
            Configuration(frozenset({"a", "b"})),
        )
        health = RaftHealth(node)
        self.assertTrue(verifyObject(IHealth, health))
        report = health.check()
        self.assertFalse(report.ready)
        self.assertIn("still loading its log", report.reasons[0])
        Deferred.fromCoroutine(node.start())
        self.addCleanup(node.stop)
        report = health.check()
        self.assertFalse(report.ready)
        self.assertIn("no leader is known", report.reasons[0])
        names = [m.name for m in RaftCollector(node).collect()]
        self.assertIn("raft_commit_index", names)
        self.assertFalse([n for n in names if n.endswith("_seconds")])


class WALInterfaceTests(TestCase):
    """
    The file storage.
    """

    async def test_wal(self) -> None:
        """
        L{WALStorage} is an L{IRaftStorage}.
        """
        base = self.mktemp()
        storage = WALStorage(base + "/wal", base + "/snap", reactor)
        await storage.load()
        self.assertTrue(verifyObject(IRaftStorage, storage))
        await storage.close()


class KVTests(SynchronousTestCase):
    """
    The reference state machine.
    """

    def test_operationsAndSnapshot(self) -> None:
        """
        put/append/cas/delete/get give their documented results and a
        snapshot restores the same state.
        """
        kv = KeyValueStateMachine()
        self.assertIsNone(kv.apply(1, encodeCommand("put", "a", "1")))
        self.assertEqual(kv.apply(2, encodeCommand("append", "a", "2")), "12")
        self.assertTrue(kv.apply(3, encodeCommand("cas", "a", ["12", "3"])))
        self.assertFalse(kv.apply(4, encodeCommand("cas", "a", ["12", "4"])))
        self.assertEqual(kv.apply(5, encodeCommand("get", "a")), "3")
        self.assertEqual(kv.apply(6, b"\xc1"), ["error", "malformed command"])
        other = KeyValueStateMachine()
        other.restore(kv.snapshot())
        self.assertEqual(other.data, {"a": "3"})
        self.assertEqual(kv.apply(7, encodeCommand("delete", "a")), "3")

    def test_logCompaction(self) -> None:
        """
        L{RaftLog.compact} keeps the suffix when the snapshot point matches.
        """
        log = RaftLog(0, 0, [Entry(1, i) for i in range(1, 6)])
        log.compact(3, 1)
        self.assertEqual((log.snapshotIndex, log.lastIndex(), log.term(3), log.term(2)), (3, 5, 1, None))
        log.compact(9, 4)
        self.assertEqual((log.lastIndex(), log.lastTerm()), (9, 4))
