"""
Commit queries (L{suite.raft.commitproof}): a member's answer, its wire
format, and how the multi-Raft transport and a node treat them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.raft.commitproof import answerCommitQuery, knownMember, proves
from suite.raft.log import RaftLog
from suite.raft.membership import ConfigurationHistory
from suite.raft.messages import (
    CONFIG,
    NORMAL,
    CommitAnswer,
    CommitQuery,
    Configuration,
    Entry,
    MalformedMessage,
    decodeMessage,
    encodeMessage,
)
from suite.raft.multi import MultiRaftTransport
from tests.raft.test_groups import G1, G2, startedNode
from tests.raft.test_multi import Network

AB = Configuration(frozenset({"a", "b", "c"}))
AC = Configuration(frozenset({"a", "c"}))


def entries(terms: list[int], start: int = 1) -> list[Entry]:
    return [
        Entry(t, start + i, CONFIG if start + i == 5 else NORMAL, b"", "", 0) for i, t in enumerate(terms)
    ]


@dataclass
class Member:
    """
    A member of group G1 holding entries 1..8 (terms 1,1,2,2,3,3,3,3), the
    configuration without b at index 5, committed up to C{commitIndex}.
    """

    id: str = "c"
    groupId: int = G1
    loading: bool = False
    commitIndex: int = 6
    log: RaftLog = field(default_factory=lambda: RaftLog(0, 0, entries([1, 1, 2, 2, 3, 3, 3, 3])))
    configs: ConfigurationHistory = field(default_factory=lambda: ConfigurationHistory(AB))

    def __post_init__(self) -> None:
        self.configs.append(5, AC)


def query(index: int = 5, term: int = 3, group: int = G1, src: str = "b", dst: str = "c") -> CommitQuery:
    return CommitQuery(src, dst, 0, index, term, group=group)


class AnswerTests(SynchronousTestCase):
    def test_committed(self) -> None:
        """
        A member whose log holds the entry (same index, same term) and whose
        commit index covers it answers committed, with its group id and
        term 0.
        """
        answer = answerCommitQuery(Member(), query())
        self.assertEqual(answer, CommitAnswer("c", "b", 0, 5, 3, True, group=G1))
        assert answer is not None
        self.assertTrue(proves(answer, 5, 3, G1))

    def test_notCommittedOrOtherEntry(self) -> None:
        """
        Not committed yet, another term at that index (a stale entry the
        asker holds), an index beyond the member's log, an index compacted
        into a snapshot (its term unknown), index 0: answered, not proof.
        """
        cases: list[tuple[Member, CommitQuery]] = [
            (Member(commitIndex=4), query()),
            (Member(), query(term=2)),
            (Member(), query(term=4)),
            (Member(commitIndex=8), query(index=9)),
            (Member(), query(index=0, term=0)),
        ]
        compacted = Member(commitIndex=8)
        compacted.log = RaftLog(7, 3, entries([3], start=8))
        cases.append((compacted, query()))
        for member, asked in cases:
            answer = answerCommitQuery(member, asked)
            assert answer is not None, asked
            self.assertFalse(answer.committed, asked)
            self.assertFalse(proves(answer, asked.index, asked.entryTerm, G1), asked)

    def test_silent(self) -> None:
        """
        No answer to another group, to a node without a group id, from a
        member without one or still loading, to a node no configuration it
        holds names, or to a query addressed to another node.
        """
        for member, asked in (
            (Member(), query(group=G2)),
            (Member(), query(group=0)),
            (Member(groupId=0), query(group=0)),
            (Member(loading=True), query()),
            (Member(), query(src="d")),
            (Member(), query(dst="a")),
        ):
            self.assertIsNone(answerCommitQuery(member, asked), (member, asked))

    def test_knownMember(self) -> None:
        """
        The asker must be a member of a configuration the member holds: the
        base one (at the snapshot point) or a later one.
        """
        configs = ConfigurationHistory(AC, 10)
        self.assertFalse(knownMember(configs, "b"))
        configs.append(12, AB)
        self.assertTrue(knownMember(configs, "b"))
        configs.compact(12, AB)
        self.assertTrue(knownMember(configs, "b"))

    def test_proves(self) -> None:
        """
        Only a committed answer about the same index and term, of the same
        (non-zero) group, proves anything.
        """
        good = CommitAnswer("c", "b", 0, 5, 3, True, group=G1)
        self.assertTrue(proves(good, 5, 3, G1))
        self.assertFalse(proves(good, 5, 3, G2))
        self.assertFalse(proves(good, 5, 2, G1))
        self.assertFalse(proves(good, 6, 3, G1))
        self.assertFalse(proves(CommitAnswer("c", "b", 0, 5, 3, True), 5, 3, 0))
        self.assertFalse(proves(CommitAnswer("c", "b", 0, 5, 3, False, group=G1), 5, 3, G1))


class WireTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        for message in (
            query(),
            CommitQuery("b", "c", 0, 5, 3),
            CommitAnswer("c", "b", 0, 5, 3, True, group=G1),
            CommitAnswer("c", "b", 0, 5, 3, False),
        ):
            self.assertEqual(decodeMessage(encodeMessage(message)), message)

    def test_malformed(self) -> None:
        import msgpack

        for raw in (
            [11, "b", "c", 0, 5],
            [11, "b", "c", 0, "5", 3],
            [12, "c", "b", 0, 5, 3, 1],
            [11, "b", "c", 0, True, 3],
        ):
            self.assertRaises(MalformedMessage, decodeMessage, msgpack.packb(raw))


class NodeTests(SynchronousTestCase):
    def test_nodeIgnoresQueries(self) -> None:
        """
        A Raft node handed a commit query or answer (whatever its term)
        ignores it: no term taken, nothing sent.
        """
        node, transport, _, _ = startedNode(G1)
        term = node.term
        node.receive(CommitQuery("n2", "n1", term + 5, 1, 1, group=G1))
        node.receive(CommitAnswer("n2", "n1", term + 5, 1, 1, True, group=G1))
        self.assertEqual((node.term, transport.sent), (term, []))


class TransportTests(SynchronousTestCase):
    """
    The multi-Raft transport hands commit queries and answers to its
    C{onQuery}, for any group id (the asker's replica is stopped: it hosts
    no group any more), once the link's peer is their C{src}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = Network(self.clock, random.Random(3))
        self.nodes: dict[str, MultiRaftTransport] = {}
        for name in ("a", "b", "c"):
            peers = {n: f"addr-{n}" for n in ("a", "b", "c") if n != name}
            multi = MultiRaftTransport(name, self.clock, self.net.connector(name), peers, secure=False)
            self.net.listeners[f"addr-{name}"] = (name, multi)
            self.nodes[name] = multi
        self.heard: list[tuple[str, Any]] = []
        self.nodes["c"].onQuery = lambda group, message: self.heard.append((group, message))

    def deliver(self, src: str, message: Any) -> None:
        multi = self.nodes[src]
        multi.send("p2", message)  # (dials)
        self.clock.advance(0.1)
        multi.send("p2", message)
        self.clock.advance(0.1)

    def test_anyGroup(self) -> None:
        self.deliver("b", query())
        self.assertEqual(self.heard, [("p2", query())])
        self.assertEqual(self.nodes["c"].unknownGroup, 0)

    def test_withoutHandler(self) -> None:
        """
        Without a handler, they count as frames of a group not hosted.
        """
        self.nodes["c"].onQuery = None
        self.deliver("b", query())
        self.assertEqual((self.heard, self.nodes["c"].unknownGroup), ([], 1))

    def test_impersonation(self) -> None:
        """
        A query claiming another sender than the link's peer is rejected.
        """
        self.deliver("b", query(src="a"))
        self.assertEqual((self.heard, self.nodes["c"].rejected), ([], 1))
