"""
The re-sync machines alone (L{suite.spacecomms.resync.ResyncMachine}, the
receiving side, and L{suite.spacecomms.resync.SendMachine}, the sending
side): every input in every state, with their timers on a L{task.Clock}.  The inputs
a state does not answer are the ones it cannot receive, and the table says
why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from automat import NoTransition
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms import resync
from suite.spacecomms.config import Config, PeerConfig
from suite.spacecomms.envelope import MAX_SYNC_SUMMARY_ENTRIES, SYNC_SUMMARY_FRAME_BYTES, Envelope
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.resync import (
    ResyncCore,
    ResyncInputs,
    ResyncMachine,
    SendCore,
    SendInputs,
    SendMachine,
    summaryFrames,
)
from suite.spacecomms.store import MemoryStore, Record
from tests.spacecomms.sim import stored


def stateOf(inputs: object) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class FakeLedger:
    def __init__(self) -> None:
        self.rejoins: list[str] = []

    def rejoined(self, peer: str) -> None:
        self.rejoins.append(peer)


class FakeNode:
    def __init__(self) -> None:
        self.clock = Clock()
        self.nodeId = "A"
        self.ledger = FakeLedger()
        self.capable = True

        self.synced: list[str] = []

    def peerCapable(self, peer: str, capability: str) -> bool:
        return self.capable and capability == "restore"

    def peerSynced(self, peer: str) -> None:
        self.synced.append(peer)


class FakeLink:
    peerId = "B"


CALLS: dict[str, Callable[[ResyncInputs], object]] = {
    "started": lambda m: m.started(),
    "summaryDue": lambda m: m.summaryDue(),
    "syncing": lambda m: m.syncing(),
    "restored": lambda m: m.restored(),
    "endOfSync": lambda m: m.endOfSync(),
    "graceExpired": lambda m: m.graceExpired(),
    "sessionLost": lambda m: m.sessionLost(),
}

#: How to reach each state from a new machine.
PATHS: dict[str, tuple[str, ...]] = {
    "New": (),
    "Open": ("started",),
    "Done": ("started", "endOfSync"),
    "Gone": ("started", "sessionLost"),
}

#: (state, input) pairs the machine does not answer, and why they cannot
#: happen: the node feeds C{started} as it makes the machine, before any
#: other input, and never again; C{graceExpired} comes only from the
#: timer of Open, which leaving Open cancels; C{restored} only follows a
#: restore the node took in because C{syncing} answered true;
#: C{summaryDue} comes only from Open (C{started}, then its own timer),
#: which leaving Open cancels.
IMPOSSIBLE = (
    {("New", name) for name in CALLS if name != "started"}
    | {(state, "started") for state in PATHS if state != "New"}
    | {("Done", "graceExpired"), ("Gone", "graceExpired")}
    | {("Done", "restored"), ("Gone", "restored")}
    | {("Done", "summaryDue"), ("Gone", "summaryDue")}
)

#: (state, input) -> (state after, answer, log lines, pending timers).  The
#: grace time is 5; a graceExpired fed by hand cancels the timer.
COMPLETE = "re-sync from {peer} complete ({why})"
RESTORED = "re-sync from {peer} restored {count} entries this node originated"
TABLE: dict[tuple[str, str], tuple[str, object, list[tuple[str, str]], list[float]]] = {
    ("New", "started"): ("Open", None, [], [5.0]),
    ("Open", "syncing"): ("Open", True, [], [5.0]),
    ("Open", "summaryDue"): ("Open", None, [], [5.0]),
    ("Open", "restored"): ("Open", None, [], [5.0]),
    ("Open", "endOfSync"): ("Done", None, [(COMPLETE, "END_OF_SYNC")], []),
    ("Open", "graceExpired"): ("Done", None, [(COMPLETE, "grace time")], []),
    ("Open", "sessionLost"): ("Gone", None, [], []),
    ("Done", "syncing"): ("Done", False, [], []),
    ("Done", "endOfSync"): ("Done", None, [], []),
    ("Done", "sessionLost"): ("Gone", None, [], []),
    ("Gone", "syncing"): ("Gone", False, [], []),
    ("Gone", "endOfSync"): ("Gone", None, [], []),
    ("Gone", "sessionLost"): ("Gone", None, [], []),
}


class ResyncMachineTests(SynchronousTestCase):
    """
    Every input in every state of the re-sync machine.
    """

    def setUp(self) -> None:
        self.lines: list[tuple[str, str]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_format") == COMPLETE:
                self.lines.append((COMPLETE, event["why"]))
            elif event.get("log_format") == RESTORED:
                self.lines.append((RESTORED, str(event["count"])))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def reach(self, state: str) -> tuple[ResyncInputs, Clock]:
        node = FakeNode()
        machine = ResyncMachine(ResyncCore(cast(SpaceNode, node), cast(IPeerLink, FakeLink()), 5.0))
        for step in PATHS[state]:
            CALLS[step](machine)
        self.assertEqual(stateOf(machine), state)
        del self.lines[:]
        return machine, node.clock

    def test_alphabet(self) -> None:
        """
        The calls are the machine's whole input alphabet, and the table
        with the impossible pairs covers every input in every state.
        """
        names = {n for n in vars(ResyncInputs) if not n.startswith("_")}
        self.assertEqual(set(CALLS), names)
        self.assertEqual(set(TABLE) | IMPOSSIBLE, {(s, n) for s in PATHS for n in CALLS})
        self.assertEqual(set(TABLE) & IMPOSSIBLE, set())

    def test_everyInputInEveryState(self) -> None:
        """
        Each answered input: the state after, the answer, the log line, the
        timers left.
        """
        for (state, name), (after, answer, lines, timers) in sorted(TABLE.items()):
            machine, clock = self.reach(state)
            self.assertEqual(CALLS[name](machine), answer, f"{state} + {name}")
            self.assertEqual(
                (stateOf(machine), self.lines, sorted(c.getTime() for c in clock.getDelayedCalls())),
                (after, lines, timers),
                f"{state} + {name}",
            )

    def test_impossibleInputsRefused(self) -> None:
        """
        The inputs a state cannot receive are not answered there: automat
        refuses them and the state stays.
        """
        for state, name in sorted(IMPOSSIBLE):
            machine, clock = self.reach(state)
            self.assertRaises(NoTransition, CALLS[name], machine)
            self.assertEqual((stateOf(machine), self.lines), (state, []), f"{state} + {name}")

    def test_graceTimerFeedsTheMachine(self) -> None:
        """
        The grace timer is the machine's: an open re-sync closes on its own
        after the grace time, and stays closed.
        """
        machine, clock = self.reach("Open")
        clock.advance(4.9)
        self.assertTrue(machine.syncing())
        clock.advance(0.1)
        self.assertEqual((stateOf(machine), self.lines), ("Done", [(COMPLETE, "grace time")]))
        self.assertFalse(machine.syncing())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_endOfSyncRejoins(self) -> None:
        """
        END_OF_SYNC from a peer that restores tells the ledger that peer
        gave back all it held of this node's own entries (the node then
        states all it holds in its next HELLOs to that peer); the grace
        time, or a peer without the capability, does not.
        """
        for capable, ending, rejoins in (
            (True, "endOfSync", ["B"]),
            (True, "graceExpired", []),
            (False, "endOfSync", []),
        ):
            node = FakeNode()
            node.capable = capable
            machine = ResyncMachine(ResyncCore(cast(SpaceNode, node), cast(IPeerLink, FakeLink()), 5.0))
            machine.started()
            CALLS[ending](machine)
            machine.endOfSync()
            self.assertEqual(node.ledger.rejoins, rejoins, (capable, ending))

    def test_overTellsTheSendingSide(self) -> None:
        """
        However the peer's re-sync ends (END_OF_SYNC or the grace time),
        the node is told once, so its own re-sync to that peer drops the
        peer's summary; a session lost meanwhile tells it nothing.
        """
        for ending, synced in (("endOfSync", ["B"]), ("graceExpired", ["B"]), ("sessionLost", [])):
            node = FakeNode()
            machine = ResyncMachine(ResyncCore(cast(SpaceNode, node), cast(IPeerLink, FakeLink()), 5.0))
            machine.started()
            CALLS[ending](machine)
            machine.endOfSync()
            self.assertEqual(node.synced, synced, ending)

    def test_restoredCounted(self) -> None:
        """
        The restores an open re-sync brought are counted, and said once
        when it closes.
        """
        machine, clock = self.reach("Open")
        machine.restored()
        machine.restored()
        machine.endOfSync()
        self.assertEqual(self.lines, [(COMPLETE, "END_OF_SYNC"), (RESTORED, "2")])


class RecordingLink:
    """
    The session to B: records what is sent.
    """

    peerId = "B"

    def __init__(self) -> None:
        self.sent: list[Envelope] = []
        self.closed: list[str] = []

    def sendEnvelope(self, envelope: Envelope) -> None:
        self.sent.append(envelope)

    def close(self, reason: str) -> None:
        self.closed.append(reason)


#: A summary frame from B: it holds A's O-0 in a newer version.
SUMMARY = {"entries": [["object", "O-0", "A", 2**62, True]], "more": False}

SEND_CALLS: dict[str, Callable[[SendInputs], object]] = {
    "awaitSummary": lambda m: m.awaitSummary(),
    "summaryReceived": lambda m: m.summaryReceived(SUMMARY),
    "summaryRefused": lambda m: m.summaryRefused("SYNC_SUMMARY: broken"),
    "summaryOverdue": lambda m: m.summaryOverdue(),
    "begin": lambda m: m.begin(None),
    "batchDue": lambda m: m.batchDue(),
    "finished": lambda m: m.finished(None),
    "sending": lambda m: m.sending(),
    "sessionLost": lambda m: m.sessionLost(),
    "forwarding": lambda m: m.forwarding("object", "O-0", (1, "A")),
    "peerSynced": lambda m: m.peerSynced(),
}

#: How to reach each state from a new machine (250 entries: two batches).
SEND_PATHS: dict[str, tuple[str, ...]] = {
    "Idle": (),
    "Comparing": ("awaitSummary",),
    "Sending": ("begin",),
    "Sent": ("begin", "batchDue"),
    "Abandoned": ("begin", "sessionLost"),
}

#: The node feeds C{begin} or C{awaitSummary} as it makes the machine,
#: before any other input, and never again (C{begin} in Comparing is the
#: machine's own, once the summary is complete); C{summaryRefused} and
#: C{summaryOverdue} come only from Comparing (its checks, its timer),
#: which leaving Comparing cancels; C{batchDue} and C{finished} come only
#: from Sending (its timer, its last batch), which leaving Sending cancels.
SEND_IMPOSSIBLE = (
    {("Idle", name) for name in SEND_CALLS if name not in ("begin", "awaitSummary")}
    | {(state, "begin") for state in ("Sending", "Sent", "Abandoned")}
    | {(state, "awaitSummary") for state in SEND_PATHS if state != "Idle"}
    | {
        (state, name)
        for state in ("Sending", "Sent", "Abandoned")
        for name in ("summaryRefused", "summaryOverdue")
    }
    | {(state, name) for state in ("Comparing", "Sent", "Abandoned") for name in ("batchDue", "finished")}
)

#: (state, input) -> (state after, answer, messages sent, END_OF_SYNC count or None, pending timers).
SEND_TABLE: dict[tuple[str, str], tuple[str, object, int, int | None, int]] = {
    ("Idle", "begin"): ("Sending", None, 200, None, 1),
    ("Idle", "awaitSummary"): ("Comparing", None, 0, None, 1),
    ("Comparing", "summaryReceived"): ("Sending", None, 200, None, 1),
    ("Comparing", "summaryRefused"): ("Abandoned", None, 1, None, 0),
    ("Comparing", "summaryOverdue"): ("Sending", None, 200, None, 1),
    ("Comparing", "begin"): ("Sending", None, 200, None, 1),
    ("Comparing", "sending"): ("Comparing", True, 0, None, 1),
    ("Comparing", "sessionLost"): ("Abandoned", None, 0, None, 0),
    ("Sending", "summaryReceived"): ("Sending", None, 0, None, 1),
    ("Sending", "batchDue"): ("Sent", None, 51, 250, 0),
    ("Sending", "finished"): ("Sent", None, 1, 200, 0),
    ("Sending", "sending"): ("Sending", True, 0, None, 1),
    ("Sending", "sessionLost"): ("Abandoned", None, 0, None, 0),
    ("Sent", "summaryReceived"): ("Sent", None, 0, None, 0),
    ("Sent", "sending"): ("Sent", False, 0, None, 0),
    ("Sent", "sessionLost"): ("Abandoned", None, 0, None, 0),
    ("Abandoned", "summaryReceived"): ("Abandoned", None, 0, None, 0),
    ("Abandoned", "sending"): ("Abandoned", False, 0, None, 0),
    ("Abandoned", "sessionLost"): ("Abandoned", None, 0, None, 0),
    ("Comparing", "forwarding"): ("Comparing", False, 0, None, 1),
    ("Comparing", "peerSynced"): ("Comparing", None, 0, None, 1),
    ("Sending", "forwarding"): ("Sending", True, 0, None, 1),
    ("Sending", "peerSynced"): ("Sending", None, 0, None, 1),
    ("Sent", "forwarding"): ("Sent", True, 0, None, 0),
    ("Sent", "peerSynced"): ("Sent", None, 0, None, 0),
    ("Abandoned", "forwarding"): ("Abandoned", True, 0, None, 0),
    ("Abandoned", "peerSynced"): ("Abandoned", None, 0, None, 0),
}


class SendMachineTests(SynchronousTestCase):
    """
    Every input in every state of the machine that sends this node's
    re-sync to a peer (batches of 200, one per reactor turn).
    """

    def reach(self, state: str, restoreAfter: int | None = None) -> tuple[SendInputs, Clock, RecordingLink]:
        clock = Clock()
        clock.advance(1_700_000_000)
        config = Config(node_id="A", node_name="A", peers=(PeerConfig("B", "https://b:1", "B", 1, "t" * 16),))
        node = SpaceNode(config, MemoryStore(), clock)
        for i in range(240):
            node.announceObject(f"O-{i}", {"i": i})
        for i in range(10):
            node.store.put(Record("object", f"B-{i}", "B", 1_700_000_000_000_000 + i, True, {"i": i}))
        link = RecordingLink()
        machine = SendMachine(SendCore(node, cast(IPeerLink, link), restoreAfter))
        for step in SEND_PATHS[state]:
            SEND_CALLS[step](machine)
        self.assertEqual(stateOf(machine), state)
        del link.sent[:]
        return machine, clock, link

    def test_alphabet(self) -> None:
        """
        The calls are the machine's whole input alphabet, and the table
        with the impossible pairs covers every input in every state.
        """
        names = {n for n in vars(SendInputs) if not n.startswith("_")}
        self.assertEqual(set(SEND_CALLS), names)
        self.assertEqual(set(SEND_TABLE) | SEND_IMPOSSIBLE, {(s, n) for s in SEND_PATHS for n in SEND_CALLS})
        self.assertEqual(set(SEND_TABLE) & SEND_IMPOSSIBLE, set())

    def test_everyInputInEveryState(self) -> None:
        """
        Each answered input: the state after, the answer, what was sent,
        the timers left (the restore of B's own entries is asked for, from
        sequence 0: 250 entries in all).
        """
        for (state, name), (after, answer, count, end, timers) in sorted(SEND_TABLE.items()):
            machine, clock, link = self.reach(state, 0)
            self.assertEqual(SEND_CALLS[name](machine), answer, f"{state} + {name}")
            last = link.sent[-1] if link.sent else None
            self.assertEqual(
                (
                    stateOf(machine),
                    len(link.sent),
                    last.payload["count"]
                    if last is not None and last.message_type == "END_OF_SYNC"
                    else None,
                    len(clock.getDelayedCalls()),
                ),
                (after, count, end, timers),
                f"{state} + {name}",
            )

    def test_impossibleInputsRefused(self) -> None:
        """
        The inputs a state cannot receive are not answered there.
        """
        for state, name in sorted(SEND_IMPOSSIBLE):
            machine, clock, link = self.reach(state, 0)
            self.assertRaises(NoTransition, SEND_CALLS[name], machine)
            self.assertEqual((stateOf(machine), link.sent), (state, []), f"{state} + {name}")

    def test_timerFeedsTheMachine(self) -> None:
        """
        The batch timer is the machine's state data: the next batch goes a
        reactor turn later, then END_OF_SYNC.  B's own entries go only when
        it asked for them (newer than the sequence it stated), marked
        restore.
        """
        for restoreAfter, total, restored in ((None, 240, 0), (1_700_000_000_000_004, 245, 5), (0, 250, 10)):
            machine, clock, link = self.reach("Idle", restoreAfter)
            machine.begin(None)
            self.assertEqual(len(link.sent), 200)
            clock.advance(0)
            self.assertEqual(stateOf(machine), "Sent")
            self.assertEqual(link.sent[-1].payload, {"count": total})
            marked = [e for e in link.sent if e.payload.get("restore")]
            self.assertEqual(len(marked), restored)
            self.assertTrue(all(e.source_node == "B" and e.path == ("B", "A") for e in marked))

    def test_waitsForTheQueue(self) -> None:
        """
        While more than SYNC_QUEUE_BYTES wait in the session's queue (a
        slow peer), no batch goes out: the re-sync looks again every
        SYNC_QUEUE_WAIT seconds and goes on once the queue has drained.
        """
        machine, clock, link = self.reach("Idle")
        queued = [resync.SYNC_QUEUE_BYTES + 1]
        cast(Any, link).queueDepth = lambda: queued[0]
        machine.begin(None)
        self.assertEqual(link.sent, [])
        clock.advance(resync.SYNC_QUEUE_WAIT)
        self.assertEqual(link.sent, [])
        self.assertEqual(stateOf(machine), "Sending")
        queued[0] = 0
        clock.advance(resync.SYNC_QUEUE_WAIT)
        self.assertEqual(stateOf(machine), "Sent")
        self.assertEqual(link.sent[-1].payload, {"count": len(link.sent) - 1})
        self.assertGreater(len(link.sent), resync.SYNC_BATCH)

    def test_summaryLeavesOutWhatThePeerHolds(self) -> None:
        """
        With a summary (here in two frames) only the entries the peer lacks
        or holds in an older version are re-stated: O-0 it holds newer,
        O-1 it holds at the same version, O-2 older, O-3 withdrawn at the
        same version; its own entries still follow the restore rule.
        """
        machine, clock, link = self.reach("Comparing", 0)
        node = cast(SpaceNode, machine.__automat_core__.node)  # type: ignore[attr-defined]
        seq = {i: node.store.get("object", f"O-{i}").sequence for i in range(4)}  # type: ignore[union-attr]
        machine.summaryReceived(
            {
                "entries": [
                    ["object", "O-0", "A", seq[0] + 1, True],
                    ["object", "O-1", "A", seq[1], True],
                    # B's own entries it lists (above the mark it stated)
                    # follow the same rule: B-1 it holds newer, B-2 at the
                    # same version (given back by another peer), B-3 older.
                    ["object", "B-1", "B", 1_700_000_000_000_002, True],
                    ["object", "B-2", "B", 1_700_000_000_000_002, True],
                    ["object", "B-3", "B", 1_700_000_000_000_000, True],
                ],
                "more": True,
            }
        )
        self.assertEqual((stateOf(machine), link.sent), ("Comparing", []))
        machine.summaryReceived(
            {
                "entries": [["object", "O-2", "A", seq[2] - 1, True], ["object", "O-3", "A", seq[3], False]],
                "more": False,
            }
        )
        clock.advance(0)
        self.assertEqual(stateOf(machine), "Sent")
        self.assertEqual(link.sent[-1].payload, {"count": 245})
        keys = {e.payload["object_id"] for e in link.sent[:-1]}
        self.assertIn("O-2", keys)
        self.assertEqual(keys & {"O-0", "O-1", "O-3", "B-1", "B-2"}, set())
        restored = {e.payload["object_id"] for e in link.sent if e.payload.get("restore")}
        self.assertEqual(restored, {f"B-{i}" for i in range(10)} - {"B-1", "B-2"})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_forwardingAfterTheSummary(self) -> None:
        """
        Whether an entry this node applies goes on to the peer: not while
        its summary is awaited; then not if the summary lists that
        version or newer.  What goes on during the re-sync is not
        re-stated by it; once sent, the summary still answers until the
        peer's own re-sync is over, and then everything goes.
        """
        machine, clock, link = self.reach("Comparing", 0)
        node = cast(SpaceNode, machine.__automat_core__.node)  # type: ignore[attr-defined]
        last = stored(node.store, "object", "O-239")
        self.assertFalse(machine.forwarding("object", "O-239", last.version()))
        machine.summaryReceived({"entries": [["object", "O-0", "A", 2**62, True]], "more": False})
        self.assertEqual(stateOf(machine), "Sending")
        self.assertFalse(machine.forwarding("object", "O-0", (2**62, "A")))
        self.assertTrue(machine.forwarding("object", "O-0", (2**62 + 1, "A")))
        # O-239 is not in the first batch: it goes on now, and not again.
        self.assertNotIn("O-239", {e.payload.get("object_id") for e in link.sent})
        self.assertTrue(machine.forwarding("object", "O-239", last.version()))
        clock.advance(0)
        self.assertEqual(stateOf(machine), "Sent")
        self.assertNotIn("O-239", {e.payload.get("object_id") for e in link.sent})
        self.assertEqual(link.sent[-1].payload, {"count": 248})
        self.assertFalse(machine.forwarding("object", "O-0", (5, "A")))
        self.assertTrue(machine.forwarding("object", "O-7", (5, "A")))
        machine.peerSynced()
        self.assertTrue(machine.forwarding("object", "O-0", (5, "A")))

    def test_peerSyncedWhileSending(self) -> None:
        """
        The peer's re-sync over before this one is sent: the summary still
        filters the batches, and is not kept once they are sent.
        """
        machine, clock, link = self.reach("Comparing", 0)
        machine.summaryReceived({"entries": [["object", "O-220", "A", 2**62, True]], "more": False})
        machine.peerSynced()
        clock.advance(0)
        self.assertEqual(stateOf(machine), "Sent")
        self.assertNotIn("O-220", {e.payload.get("object_id") for e in link.sent})
        self.assertTrue(machine.forwarding("object", "O-220", (5, "A")))

    def test_summaryOverdue(self) -> None:
        """
        A summary not complete within half the grace time (15 of 30
        seconds) is given up: every entry is re-stated, as to a peer
        without the capability.
        """
        machine, clock, link = self.reach("Comparing")
        machine.summaryReceived({"entries": [["object", "O-0", "A", 2**62, True]], "more": True})
        clock.advance(14.9)
        self.assertEqual((stateOf(machine), link.sent), ("Comparing", []))
        clock.advance(0.1)
        clock.advance(0)
        self.assertEqual(stateOf(machine), "Sent")
        self.assertEqual(link.sent[-1].payload, {"count": 240})

    def test_badSummaryClosesTheSession(self) -> None:
        """
        A malformed summary frame, or one past the cap, is answered with
        ERROR INVALID_MESSAGE naming the fault and the session is closed
        with that reason; nothing is re-stated.
        """
        good = ["object", "O-0", "A", 1, True]
        for payload, reason in (
            ({"more": False}, "payload must hold entries (a list) and more (a boolean)"),
            ({"entries": [], "more": "no"}, "payload must hold entries (a list) and more (a boolean)"),
            ({"entries": [good, ["object", "O-1"]], "more": False}, "payload.entries[1]: must be"),
            ({"entries": [["node", "O-1", "A", 1, True]], "more": False}, "kind must be cdm or object"),
            ({"entries": [["cdm", "bad key", "A", 1, True]], "more": False}, "key is not a valid"),
            ({"entries": [["cdm", "K", "A", -1, True]], "more": False}, "sequence must be an integer"),
            ({"entries": [["cdm", "K", "A", True, True]], "more": False}, "sequence must be an integer"),
            ({"entries": [["cdm", "K", "A", 1, 1]], "more": False}, "active must be a boolean"),
            ({"entries": [good] * (MAX_SYNC_SUMMARY_ENTRIES + 1), "more": False}, "at most 500000 entries"),
        ):
            machine, clock, link = self.reach("Comparing")
            machine.summaryReceived(payload)
            self.assertEqual(stateOf(machine), "Abandoned")
            [error] = link.sent
            self.assertEqual(error.message_type, "ERROR")
            self.assertEqual(error.payload["code"], "INVALID_MESSAGE")
            self.assertIn(reason, error.payload["message"])
            self.assertEqual(link.closed, [error.payload["message"]])
            self.assertEqual(clock.getDelayedCalls(), [])

    def test_summaryCapOverFrames(self) -> None:
        """
        The cap counts the entries of all the summary's frames.
        """
        machine, clock, link = self.reach("Comparing")
        entry = ["object", "O-0", "A", 1, True]
        machine.summaryReceived({"entries": [entry] * MAX_SYNC_SUMMARY_ENTRIES, "more": True})
        self.assertEqual(stateOf(machine), "Comparing")
        machine.summaryReceived({"entries": [entry], "more": False})
        self.assertEqual(stateOf(machine), "Abandoned")
        self.assertEqual(link.closed, ["SYNC_SUMMARY: a summary lists at most 500000 entries"])


class SummaryTests(SynchronousTestCase):
    """
    The summary a node's receiving machine sends a peer with the
    sync_summary capability.
    """

    def node(self, entries: int, rejoined: bool = True) -> SpaceNode:
        """
        A node holding C{entries} of another origin and one of its own,
        made through its API; C{rejoined}: B has given back all it held of
        A's own entries since A started.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        config = Config(node_id="A", node_name="A", peers=(PeerConfig("B", "https://b:1", "B", 1, "t" * 16),))
        node = SpaceNode(config, MemoryStore(), clock)
        for i in range(entries):
            node.store.put(Record("object", f"K-{i:05d}-{'x' * 100}", "C" * 100, 10 + i, i % 3 != 0, {}))
        node.announceObject("MINE", {"i": 0})
        if rejoined:
            node.ledger.rejoined("B")
        return node

    def test_startedSendsTheSummary(self) -> None:
        """
        The receiving machine opens by telling a capable peer what this
        node holds, except what it originated: frames of at most
        SYNC_SUMMARY_FRAME_BYTES, the last marked more false.
        """
        node = self.node(1000)
        link = RecordingLink()
        machine = ResyncMachine(ResyncCore(node, cast(IPeerLink, link), 5.0))
        machine.started()
        cast(Clock, node.clock).advance(0)
        self.assertGreater(len(link.sent), 10)
        self.assertTrue(all(e.message_type == "SYNC_SUMMARY" for e in link.sent))
        self.assertTrue(all(len(e.encode()) <= SYNC_SUMMARY_FRAME_BYTES for e in link.sent))
        self.assertEqual([e.payload["more"] for e in link.sent], [True] * (len(link.sent) - 1) + [False])
        listed = [entry for e in link.sent for entry in e.payload["entries"]]
        self.assertEqual(len(listed), 1000)
        self.assertEqual(listed[3], ["object", f"K-00003-{'x' * 100}", "C" * 100, 13, False])
        self.assertNotIn("MINE", {k for _, k, *_ in listed})

    def test_emptySummary(self) -> None:
        """
        A node holding nothing to list still sends one (final) frame.
        """
        frames = summaryFrames(self.node(0), "B")
        self.assertEqual([f.payload for f in frames], [{"entries": [], "more": False}])

    def test_ownEntriesAboveTheStatedMark(self) -> None:
        """
        Of its own entries a node lists those above the C{own_sequence} it
        states to the peer: until the peer's restoring re-sync completed,
        those made or given back since it started (not those it loaded
        from its store), then none; and none to a peer that does not
        restore.
        """
        store = MemoryStore()
        store.put(Record("object", "LOADED", "A", 5, True, {}))
        clock = Clock()
        clock.advance(1_700_000_000)
        config = Config(
            node_id="A",
            node_name="A",
            peers=tuple(PeerConfig(p, f"https://{p}:1", p, 1, "t" * 16) for p in "BC"),
        )
        node = SpaceNode(config, store, clock)
        node.ledger.load()
        node.announceObject("MINE", {"i": 0})
        node.store.put(Record("cdm", "GIVEN", "A", 7, False, None, "ERROR", learnedFrom="C"))
        node.store.put(Record("object", "OTHER", "C", 9, True, {}))

        def listed(peer: str) -> list[list[Any]]:
            return [entry for f in summaryFrames(node, peer) for entry in f.payload["entries"]]

        self.assertEqual(node.helloPayload("B")["own_sequence"], 5)
        self.assertEqual(
            listed("B"),
            [
                ["cdm", "GIVEN", "A", 7, False],
                ["object", "MINE", "A", stored(node.store, "object", "MINE").sequence, True],
                ["object", "OTHER", "C", 9, True],
            ],
        )
        node.ledger.rejoined("B")
        self.assertEqual(
            node.helloPayload("B")["own_sequence"], stored(node.store, "object", "MINE").sequence
        )
        self.assertEqual(listed("B"), [["object", "OTHER", "C", 9, True]])
        self.assertEqual(len(listed("C")), 3)
        node.peers.caps["C"] = frozenset({"cdm", "object_state", "resync", "sync_summary"})
        self.assertEqual(listed("C"), [["object", "OTHER", "C", 9, True]])

    def test_notToAnOlderPeer(self) -> None:
        """
        A peer without the capability is sent no summary.
        """
        node = self.node(10)
        node.peers.caps["B"] = frozenset({"cdm", "resync"})
        link = RecordingLink()
        machine = ResyncMachine(ResyncCore(node, cast(IPeerLink, link), 5.0))
        machine.started()
        self.assertEqual(link.sent, [])


def oneTurn(clock: Clock) -> None:
    """
    One reactor turn: run the calls due now, but not those they schedule
    (L{Clock.advance} would run those too, in the same call).
    """
    due = [c for c in clock.calls if c.getTime() <= clock.seconds()]
    for call in due:
        if call.active():
            clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


class BatchingTests(SynchronousTestCase):
    """
    A large re-sync never holds the reactor for the whole store: the
    summary and the re-stated entries go out in bounded batches, one per
    reactor turn, and stop when the session is gone.
    """

    ENTRIES = 20_000

    def node(self) -> SpaceNode:
        clock = Clock()
        clock.advance(1_700_000_000)
        config = Config(node_id="A", node_name="A", peers=(PeerConfig("B", "https://b:1", "B", 1, "t" * 16),))
        node = SpaceNode(config, MemoryStore(), clock)
        self.clock = clock
        for i in range(self.ENTRIES):
            node.store.put(Record("object", f"K-{i:05d}", "C", 10 + i, True, {}))
        return node

    def turns(self, clock: Clock, link: RecordingLink, limit: int = 10_000) -> list[int]:
        """
        Run the reactor turn by turn while there is a timer due now: how
        many messages each turn sent.
        """
        counts: list[int] = []
        while any(c.getTime() <= clock.seconds() for c in clock.getDelayedCalls()) and len(counts) < limit:
            before = len(link.sent)
            oneTurn(clock)
            counts.append(len(link.sent) - before)
        return counts

    def test_summaryOverManyTurns(self) -> None:
        """
        A summary of 20,000 entries goes out over many turns, at most
        SUMMARY_FRAMES_PER_TURN frames each, in order (every entry once,
        the last frame alone marked more false).
        """
        node = self.node()
        link = RecordingLink()
        machine = ResyncMachine(ResyncCore(node, cast(IPeerLink, link), 30.0))
        machine.started()
        first = len(link.sent)
        counts = [first, *self.turns(self.clock, link)]
        self.assertEqual(first, resync.SUMMARY_FRAMES_PER_TURN)
        self.assertGreater(len(counts), 5)
        self.assertLessEqual(max(counts), resync.SUMMARY_FRAMES_PER_TURN)
        listed = [entry[1] for e in link.sent for entry in e.payload["entries"]]
        self.assertEqual(listed, [f"K-{i:05d}" for i in range(self.ENTRIES)])
        self.assertEqual([e.payload["more"] for e in link.sent], [True] * (len(link.sent) - 1) + [False])
        # Only the grace timer is left; the re-sync is still open.
        self.assertEqual([c.getTime() - self.clock.seconds() for c in self.clock.getDelayedCalls()], [30.0])
        self.assertTrue(machine.syncing())

    def test_sessionLostMidSummary(self) -> None:
        """
        The session lost (or the peer's re-sync ended) half-way through the
        summary: no more frames are sent and no timer is left.
        """
        for ending in ("sessionLost", "endOfSync", "graceExpired"):
            node = self.node()
            link = RecordingLink()
            machine = ResyncMachine(ResyncCore(node, cast(IPeerLink, link), 30.0))
            machine.started()
            oneTurn(self.clock)
            oneTurn(self.clock)
            sent = len(link.sent)
            self.assertEqual(sent, 3 * resync.SUMMARY_FRAMES_PER_TURN)
            CALLS[ending](machine)
            self.assertEqual(self.clock.getDelayedCalls(), [], ending)
            self.clock.advance(60)
            self.assertEqual(len(link.sent), sent, ending)
            self.assertTrue(link.sent[-1].payload["more"])

    def test_restatedOverManyTurns(self) -> None:
        """
        Re-stating 20,000 entries, of which the peer's summary shows it
        holds all but every tenth: each turn looks at no more than
        SYNC_SCAN entries of the store and sends no more than SYNC_BATCH;
        the 2,000 it lacks go, then END_OF_SYNC.
        """
        node = self.node()
        looked: list[int] = [0]
        get = node.store.get

        def counting(kind: str, key: str) -> Record | None:
            looked[0] += 1
            return get(kind, key)

        node.store.get = counting  # type: ignore[method-assign]
        link = RecordingLink()
        machine = SendMachine(SendCore(node, cast(IPeerLink, link)))
        machine.awaitSummary()
        held = [["object", f"K-{i:05d}", "C", 10 + i, True] for i in range(self.ENTRIES) if i % 10]
        for start in range(0, len(held), 100):
            machine.summaryReceived({"entries": held[start : start + 100], "more": True})
        machine.summaryReceived({"entries": [], "more": False})
        perTurn = [(len(link.sent), looked[0])]
        while stateOf(machine) == "Sending":
            before = (len(link.sent), looked[0])
            oneTurn(self.clock)
            perTurn.append((len(link.sent) - before[0], looked[0] - before[1]))
        self.assertEqual(stateOf(machine), "Sent")
        self.assertGreaterEqual(len(perTurn), self.ENTRIES // resync.SYNC_SCAN)
        self.assertLessEqual(max(sent for sent, _ in perTurn), resync.SYNC_BATCH + 1)
        self.assertLessEqual(max(n for _, n in perTurn), resync.SYNC_SCAN)
        self.assertEqual(link.sent[-1].payload, {"count": self.ENTRIES // 10})
        keys = [e.payload["object_id"] for e in link.sent[:-1]]
        self.assertEqual(keys, [f"K-{i:05d}" for i in range(0, self.ENTRIES, 10)])

    def test_sessionLostMidRestating(self) -> None:
        """
        The session lost half-way through re-stating: no more entries and
        no END_OF_SYNC are sent, and no timer is left.
        """
        node = self.node()
        link = RecordingLink()
        machine = SendMachine(SendCore(node, cast(IPeerLink, link)))
        machine.begin(None)
        oneTurn(self.clock)
        self.assertEqual(len(link.sent), 2 * resync.SYNC_BATCH)
        machine.sessionLost()
        self.assertEqual((stateOf(machine), self.clock.getDelayedCalls()), ("Abandoned", []))
        self.clock.advance(60)
        self.assertEqual(len(link.sent), 2 * resync.SYNC_BATCH)
