"""
The partition lifecycle machine: every input in every state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.backoff import Backoff
from suite.ceptra.partitions.lifecycle import (
    DESCRIBED_STATES,
    ExclusionQuery,
    LifecycleCore,
    PartitionLifecycle,
)
from suite.raft.messages import CommitAnswer

STATES = (
    "Starting",
    "Running",
    "Retiring",
    "Leaving",
    "Dropped",
    "Failed",
    "Retired",
    "Confirming",
    "Stopped",
)

G1, G2 = 0x1111, 0x2222
#: the configuration entry excluding the replica: index 40, term 3, group
#: G1, placement epoch 6
QUERY = ExclusionQuery(40, 3, G1, 6)


def answer(
    src: str = "c", index: int = 40, term: int = 3, committed: bool = True, group: int = G1
) -> CommitAnswer:
    return CommitAnswer(src, "b", 0, index, term, committed, group=group)


class Replica:
    pid = "p0"

    def __init__(self) -> None:
        self.calls: list[str] = []
        #: whether its log holds an entry or a snapshot
        self.entries = True
        self.clock = Clock()
        #: the entry excluding it, if its members could prove it committed
        self.query: ExclusionQuery | None = QUERY
        #: the partition's current members (by the routing table)
        self.members = {"a", "c"}
        #: how many of them have no link (their question only dials)
        self.unlinked = 0

    def exclusion(self) -> ExclusionQuery | None:
        return self.query

    def ask(self, query: ExclusionQuery) -> tuple[int, int]:
        self.calls.append("ask")
        return len(self.members), self.unlinked

    def linkWait(self) -> float:
        return 4.0

    def askBackoff(self) -> Backoff:
        return Backoff(30.0, 300.0, jitter=False)

    def later(self, delay: float, call: Callable[[], None]) -> IDelayedCall:
        return self.clock.callLater(delay, call)

    def currentMember(self, peer: str) -> bool:
        return peer in self.members

    def retireStopped(self, epoch: int) -> None:
        self.calls.append(f"retire stopped {epoch}")

    def stopAsking(self) -> None:
        self.calls.append("stop asking")

    def holdsEntries(self) -> bool:
        return self.entries

    def configEpoch(self) -> int:
        return 7

    def abandon(self) -> None:
        self.calls.append("abandon")

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def retire(self, epoch: int) -> None:
        self.calls.append(f"retire {epoch}")


def machine(state: str) -> tuple[Any, Replica]:
    replica = Replica()
    m = PartitionLifecycle(LifecycleCore(replica))
    if state in ("Running", "Retiring", "Leaving", "Dropped"):
        m.loaded()
    if state == "Retiring":
        m.unplaced(10.0)
    if state == "Leaving":
        m.excluded(10.0, 30.0)
    if state == "Dropped":
        m.dropped(10.0, 30.0)
    if state == "Failed":
        m.loadFailed("bad snapshot")
    if state == "Retired":
        m.loaded()
        m.removed(2)
    if state == "Confirming":
        m.loaded()
        m.excluded(10.0, 30.0)
        m.excluded(40.5, 30.0)
        replica.clock.advance(0)  # (the first round)
    if state == "Stopped":
        m.stop()
    replica.calls.clear()
    return m, replica


#: input -> the arguments it is given in the table
INPUTS: dict[str, tuple[Any, ...]] = {
    "loaded": (),
    "loadFailed": ("late",),
    "placed": (),
    "unplaced": (20.0,),
    "excluded": (20.0, 30.0),
    "removed": (3,),
    "dropped": (20.0, 30.0),
    "stop": (),
    "leftEmpty": (5,),
    "askMembers": (QUERY,),
    "retry": (),
    "answered": (answer(),),
    "confirmed": (4,),
}

#: (state, input) -> (state described after it, replica calls); inputs at
#: t=20 s, within the 30 s grace period of a machine retiring since t=10 s.
TABLE: dict[tuple[str, str], tuple[str, list[str]]] = {
    ("Starting", "loaded"): ("running", []),
    ("Starting", "loadFailed"): ("failed", ["abandon"]),
    ("Starting", "placed"): ("starting", []),
    ("Starting", "unplaced"): ("starting", []),
    ("Starting", "excluded"): ("starting", []),
    ("Starting", "removed"): ("starting", []),
    ("Starting", "dropped"): ("starting", []),
    ("Starting", "stop"): ("stopped", ["shutdown"]),
    ("Starting", "leftEmpty"): ("starting", []),
    ("Running", "loaded"): ("running", []),
    ("Running", "loadFailed"): ("running", []),
    ("Running", "placed"): ("running", []),
    ("Running", "unplaced"): ("retiring", []),
    ("Running", "excluded"): ("leaving", []),
    ("Running", "removed"): ("retired", ["retire 3"]),
    ("Running", "dropped"): ("dropped", []),
    ("Running", "stop"): ("stopped", ["shutdown"]),
    ("Running", "leftEmpty"): ("running", []),
    ("Retiring", "loaded"): ("retiring", []),
    ("Retiring", "loadFailed"): ("retiring", []),
    ("Retiring", "placed"): ("running", []),
    ("Retiring", "unplaced"): ("retiring", []),
    ("Retiring", "excluded"): ("leaving", []),
    ("Retiring", "removed"): ("retired", ["retire 3"]),
    ("Retiring", "dropped"): ("dropped", []),
    ("Retiring", "stop"): ("stopped", ["shutdown"]),
    ("Retiring", "leftEmpty"): ("retiring", []),
    ("Leaving", "loaded"): ("leaving", []),
    ("Leaving", "loadFailed"): ("leaving", []),
    ("Leaving", "placed"): ("running", []),
    ("Leaving", "unplaced"): ("retiring", []),
    ("Leaving", "excluded"): ("leaving", []),
    ("Leaving", "removed"): ("retired", ["retire 3"]),
    ("Leaving", "dropped"): ("leaving", []),
    ("Leaving", "stop"): ("stopped", ["shutdown"]),
    ("Leaving", "leftEmpty"): ("retired", ["retire 5"]),
    ("Dropped", "loaded"): ("dropped", []),
    ("Dropped", "loadFailed"): ("dropped", []),
    ("Dropped", "placed"): ("running", []),
    ("Dropped", "unplaced"): ("retiring", []),
    ("Dropped", "excluded"): ("leaving", []),
    ("Dropped", "removed"): ("retired", ["retire 3"]),
    ("Dropped", "dropped"): ("dropped", []),
    ("Dropped", "stop"): ("stopped", ["shutdown"]),
    ("Dropped", "leftEmpty"): ("retired", ["retire 5"]),
    ("Leaving", "askMembers"): ("stopped, asking", ["shutdown"]),
    ("Failed", "stop"): ("stopped", ["shutdown"]),
    ("Confirming", "placed"): ("stopped", ["stop asking"]),
    ("Confirming", "dropped"): ("stopped", ["stop asking"]),
    ("Confirming", "stop"): ("stopped", ["stop asking"]),
    ("Confirming", "retry"): ("stopped, asking", ["ask"]),
    ("Confirming", "answered"): ("retired", ["stop asking", "retire stopped 6"]),
    ("Confirming", "confirmed"): ("retired", ["stop asking", "retire stopped 4"]),
    ("Stopped", "stop"): ("stopped", []),
}
for _state in ("Starting", "Running", "Retiring", "Leaving", "Dropped"):
    for _name in ("askMembers", "retry", "answered", "confirmed"):
        TABLE.setdefault((_state, _name), (_state.lower(), []))
for _name in INPUTS:
    TABLE.setdefault(("Confirming", _name), ("stopped, asking", []))
for _name in INPUTS:
    TABLE.setdefault(("Failed", _name), ("failed", []))
    TABLE.setdefault(("Retired", _name), ("retired", []))
    TABLE.setdefault(("Stopped", _name), ("stopped", []))


class LifecycleTests(SynchronousTestCase):
    def test_everyInputEveryState(self) -> None:
        """
        Every input in every state: the state it leads to and what it does
        to the replica; the queries answer in every state.
        """
        self.assertEqual(len(TABLE), len(STATES) * len(INPUTS))
        serving = {"running": True, "retiring": True, "leaving": True, "dropped": True}
        for (state, name), (after, calls) in sorted(TABLE.items()):
            m, r = machine(state)
            getattr(m, name)(*INPUTS[name])
            described = m.describe()
            label = described["state"] + (", asking" if "asking" in described else "")
            self.assertEqual((label, r.calls), (after, calls), (state, name))
            self.assertEqual(m.serving(), serving.get(after, False), (state, name))

    def test_describedStates(self) -> None:
        """
        C{DESCRIBED_STATES} lists the state each of the machine's states
        describes itself as, in order (the metric's label values).
        """
        described = [machine(s)[0].describe()["state"] for s in STATES]
        self.assertEqual(tuple(dict.fromkeys(described)), DESCRIBED_STATES)

    def test_describe(self) -> None:
        self.assertEqual(machine("Starting")[0].describe(), {"state": "starting"})
        self.assertEqual(machine("Running")[0].describe(), {"state": "running"})
        self.assertEqual(machine("Retiring")[0].describe(), {"state": "retiring", "since": 10.0})
        self.assertEqual(machine("Leaving")[0].describe(), {"state": "leaving", "since": 10.0})
        self.assertEqual(machine("Dropped")[0].describe(), {"state": "dropped", "since": 10.0})
        self.assertEqual(machine("Failed")[0].describe(), {"state": "failed", "error": "bad snapshot"})
        self.assertEqual(machine("Retired")[0].describe(), {"state": "retired", "epoch": 2})
        self.assertEqual(machine("Stopped")[0].describe(), {"state": "stopped"})
        self.assertEqual(
            machine("Confirming")[0].describe(),
            {"state": "stopped", "asking": {"index": 40, "term": 3, "rounds": 1}},
        )

    def test_retiringMemberIgnoresGrace(self) -> None:
        """
        A replica its group still counts as a member keeps running however
        long it retires: no grace period ends it (the group may need its
        vote); only a committed configuration without it does.
        """
        m, r = machine("Retiring")
        m.unplaced(10_000.0)
        self.assertEqual((r.calls, m.serving()), ([], True))
        self.assertEqual(m.describe(), {"state": "retiring", "since": 10.0})
        m.removed(4)
        self.assertEqual((r.calls, m.describe()), (["retire 4"], {"state": "retired", "epoch": 4}))

    def test_leavingGrace(self) -> None:
        """
        A replica whose own latest configuration excludes it stops once it
        learns that configuration committed, or after the grace period
        counted from when it was first excluded.
        """
        m, r = machine("Retiring")
        m.excluded(35.0, 30.0)
        self.assertEqual(m.describe(), {"state": "leaving", "since": 35.0})
        m.excluded(65.0, 30.0)
        self.assertEqual(r.calls, [])
        m.excluded(65.5, 30.0)
        r.clock.advance(0)
        self.assertEqual((r.calls, m.describe()["state"]), (["shutdown", "ask"], "stopped"))
        m, r = machine("Leaving")
        m.unplaced(12.0)  # the excluding configuration was truncated
        m.excluded(50.0, 30.0)
        m.excluded(79.0, 30.0)
        self.assertEqual((r.calls, m.describe()), ([], {"state": "leaving", "since": 50.0}))

    def test_droppedGrace(self) -> None:
        """
        A partition dropped from the routing table retires every replica
        after the grace period.
        """
        m, r = machine("Retiring")
        m.dropped(5.0, 30.0)  # counted from the drop, not from the retiring
        m.dropped(35.0, 30.0)
        self.assertEqual((r.calls, m.describe()), ([], {"state": "dropped", "since": 5.0}))
        m.dropped(35.5, 30.0)
        self.assertEqual((r.calls, m.describe()), (["shutdown"], {"state": "stopped"}))
        m, r = machine("Leaving")
        m.dropped(40.5, 30.0)
        self.assertEqual(r.calls, ["shutdown"])

    def test_emptyLogRetiredAtGrace(self) -> None:
        """
        A replica whose log holds nothing (no entry, no snapshot) when the
        grace period ends is retired, not stopped: nothing of its group's
        is here to keep (under its configuration's placement epoch); one
        that got an entry meanwhile is stopped as before.
        """
        for state, late in (("Leaving", "excluded"), ("Leaving", "dropped"), ("Dropped", "dropped")):
            m, r = machine(state)
            r.entries = False
            getattr(m, late)(40.5, 30.0)
            self.assertEqual((r.calls, m.describe()), (["retire 7"], {"state": "retired", "epoch": 7}), state)
            self.assertFalse(m.serving())
        m, r = machine("Leaving")
        r.entries = False
        m.excluded(39.0, 30.0)  # within the grace period: nothing yet
        self.assertEqual((r.calls, m.describe()), ([], {"state": "leaving", "since": 10.0}))
        r.entries = True  # the leader sent it entries meanwhile
        m.excluded(40.5, 30.0)
        r.clock.advance(0)
        self.assertEqual((r.calls, m.describe()["state"]), (["shutdown", "ask"], "stopped"))


class AskingTests(SynchronousTestCase):
    """
    A replica stopped by the grace period while it holds the configuration
    entry excluding it asks its partition's current members whether that
    entry is committed, again and again at a bounded rate, and retires only
    on a proof from one of them.
    """

    def asking(self) -> tuple[Any, Replica]:
        m, r = machine("Leaving")
        m.excluded(40.5, 30.0)
        self.assertEqual(r.calls, ["shutdown"])
        r.clock.advance(0)
        self.assertEqual(r.calls, ["shutdown", "ask"])
        r.calls.clear()
        return m, r

    def test_noQuestionWithoutEntry(self) -> None:
        """
        A replica whose excluding configuration is not an entry of its log
        (or that has no group id) has nothing to ask: it stops, data in
        place, as before.
        """
        m, r = machine("Leaving")
        r.query = None
        m.excluded(40.5, 30.0)
        self.assertEqual((r.calls, m.describe()), (["shutdown"], {"state": "stopped"}))
        self.assertEqual(r.clock.getDelayedCalls(), [])

    def test_asksAgainWithBackoff(self) -> None:
        """
        Without a proof it stays stopped and asks again: after 30 s, then
        doubling up to every 300 s (bounded rate).
        """
        m, r = self.asking()
        times = []
        for _ in range(3600):
            r.clock.advance(1.0)
            if r.calls:
                times.append(r.clock.seconds())
                r.calls.clear()
        self.assertEqual(times[:6], [30.0, 90.0, 210.0, 450.0, 750.0, 1050.0])
        self.assertEqual(len(times), 14)
        self.assertEqual(m.describe(), {"state": "stopped", "asking": {"index": 40, "term": 3, "rounds": 15}})
        self.assertFalse(m.serving())

    def test_quickRoundAfterDial(self) -> None:
        """
        A round that found members without a link (its questions to them
        only dialled) is followed by one more once a dial has had time to
        succeed, then the backoff goes on: at most two rounds per delay.
        """
        m, r = machine("Leaving")
        r.unlinked = 2
        m.excluded(40.5, 30.0)
        times = []
        for _ in range(400):
            r.clock.advance(1.0)
            if "ask" in r.calls:
                times.append(r.clock.seconds())
                r.calls.clear()
        self.assertEqual(times, [1.0, 5.0, 35.0, 39.0, 99.0, 103.0, 223.0, 227.0])
        r.unlinked = 0  # linked now: the backoff alone
        for _ in range(480):
            r.clock.advance(1.0)
        self.assertEqual(m.describe()["asking"]["rounds"], 10)  # (at 467 s and 767 s)

    def test_notProof(self) -> None:
        """
        Negative answers, answers about another entry (a stale term at that
        index, another index), answers from another group or without one,
        and answers from a node that is not a current member prove nothing.
        """
        m, r = self.asking()
        for wrong in (
            answer(committed=False),
            answer(term=2),
            answer(index=39),
            answer(group=G2),
            answer(group=0),
            answer(src="b"),
            answer(src="d"),
        ):
            m.answered(wrong)
            self.assertEqual((r.calls, m.describe()["state"]), ([], "stopped"), wrong)
            self.assertIn("asking", m.describe())
        self.assertEqual(len(r.clock.getDelayedCalls()), 1)

    def test_proofRetires(self) -> None:
        """
        One positive answer of a current member of the same group retires
        the replica under the excluding configuration's placement epoch; it
        asks no more.
        """
        m, r = self.asking()
        r.clock.advance(30.0)
        m.answered(answer(committed=False, src="a"))
        m.answered(answer(src="c"))
        self.assertEqual(r.calls, ["ask", "stop asking", "retire stopped 6"])
        self.assertEqual(m.describe(), {"state": "retired", "epoch": 6})
        self.assertEqual(r.clock.getDelayedCalls(), [])
        m.answered(answer(src="a"))
        self.assertEqual(r.calls, ["ask", "stop asking", "retire stopped 6"])

    def test_leavesOffAsking(self) -> None:
        """
        Placed here again, its partition gone from the routing table, or the
        node stopping: it asks no more, stopped (its timer cancelled).
        """
        for name in ("placed", "dropped", "stop"):
            m, r = self.asking()
            getattr(m, name)(*INPUTS[name])
            self.assertEqual((r.calls, m.describe()), (["stop asking"], {"state": "stopped"}), name)
            self.assertEqual(r.clock.getDelayedCalls(), [])
            m.answered(answer())
            self.assertEqual(m.describe(), {"state": "stopped"})
