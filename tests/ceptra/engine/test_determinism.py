"""
Replaying a log gives the same state and results; a snapshot taken at any
entry, restored, and fed the rest of the log continues identically.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.engine import PartitionEngine, encodeEvents, encodeRules
from tests.ceptra.engine.test_oracle import FUNCTIONS, streams, timeSettings, windows


def rulesDoc(
    version: int, win: dict[str, Any], time: dict[str, Any], fns: list[dict[str, Any]]
) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {
            "name": f"agg_{agg['fn']}",
            "type": "aggregate",
            "group_by": ["key"],
            "window": win,
            "aggregate": agg,
        }
        for agg in fns
    ]
    rules += [
        {
            "name": f"pat_{strict}_{negate}",
            "type": "pattern",
            "group_by": ["key"],
            "first": {"t": "A"},
            "then": {"t": "B"},
            "within_ms": 15,
            "contiguity": strict,
            "negate": negate,
        }
        for strict in ("strict", "relaxed")
        for negate in (False, True)
    ]
    return {"version": version, "settings": time, "rules": rules}


@st.composite
def logs(draw: st.DrawFn) -> list[bytes]:
    """
    A log: rules, event batches, a second rules version part-way (some rules
    kept, some changed), garbage and no-op entries.
    """
    time = draw(timeSettings())
    batches = draw(streams())
    fns = draw(st.lists(st.sampled_from(FUNCTIONS), min_size=1, max_size=4, unique_by=lambda a: a["fn"]))
    first = rulesDoc(1, draw(windows()), time, fns)
    second = rulesDoc(
        2, draw(windows()) if draw(st.booleans()) else first["rules"][0]["window"], time, fns[:2]
    )
    entries = [encodeRules(first)] + [encodeEvents(b) for b in batches]
    at = draw(st.integers(1, len(entries)))
    entries.insert(at, encodeRules(second))
    entries.insert(draw(st.integers(1, len(entries))), b"")
    entries.insert(draw(st.integers(1, len(entries))), b"E1{broken")
    return entries


def replay(entries: list[bytes], withResults: bool = True) -> tuple[list[list[dict[str, Any]]], list[str]]:
    eng = PartitionEngine(partition=2)
    results, hashes = [], []
    for i, entry in enumerate(entries):
        results.append(eng.apply(i + 1, entry, withResults))
        hashes.append(eng.stateHash())
    return results, hashes


class DeterminismTests(SynchronousTestCase):
    """
    Same log, same state.
    """

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(entries=logs(), cut=st.integers(0, 100))
    def test_replayAndRestore(self, entries: list[bytes], cut: int) -> None:
        """
        Two replays agree on every result and every state hash; an engine
        restored from a snapshot after entry C{cut} then fed the rest gives
        the same results and hashes as the one that never stopped.
        """
        results, hashes = replay(entries)
        self.assertEqual(replay(entries), (results, hashes))
        # Without results built the state is the same; only rules results remain.
        quiet, quietHashes = replay(entries, withResults=False)
        self.assertEqual(quietHashes, hashes)
        self.assertEqual(quiet, [[r for r in rs if r.get("kind") == "rules"] for rs in results])
        cut = cut % (len(entries) + 1)
        eng = PartitionEngine(partition=2)
        for i, entry in enumerate(entries[:cut]):
            eng.apply(i + 1, entry)
        eng = PartitionEngine.restore(2, eng.snapshot())
        if cut:
            self.assertEqual(eng.stateHash(), hashes[cut - 1])
        for i in range(cut, len(entries)):
            self.assertEqual(eng.apply(i + 1, entries[i]), results[i], i)
            self.assertEqual(eng.stateHash(), hashes[i], i)

    def test_hashIgnoresNothing(self) -> None:
        """
        The hash changes with every kind of state: events, dedup memory,
        counters, rules.
        """
        eng = PartitionEngine(partition=0)
        seen = {eng.stateHash()}
        eng.apply(1, encodeRules(rulesDoc(1, {"kind": "tumbling", "size_ms": 10}, {}, FUNCTIONS)))
        seen.add(eng.stateHash())
        eng.apply(2, encodeEvents([{"event_id": "a", "key": "k", "ts": 5, "x": 1, "t": "A"}]))
        seen.add(eng.stateHash())
        eng.apply(3, encodeEvents([{"event_id": "a", "key": "k", "ts": 5, "x": 1, "t": "A"}]))
        seen.add(eng.stateHash())
        eng.apply(4, b"")
        seen.add(eng.stateHash())
        self.assertEqual(len(seen), 5)

    def test_restoreThenManyEntries(self) -> None:
        """
        A long seeded stream with snapshots every 10 entries (each restored
        into a fresh engine) ends in the same state as an uninterrupted run.
        """
        rng = random.Random(5)
        doc = rulesDoc(
            1,
            {"kind": "sliding", "size_ms": 40},
            {"watermark_delay_ms": 5, "allowed_lateness_ms": 30, "late_events": "retract"},
            FUNCTIONS,
        )
        entries = [encodeRules(doc)]
        for b in range(60):
            entries.append(
                encodeEvents(
                    [
                        {
                            "event_id": f"{b}-{i}",
                            "key": rng.choice("abcd"),
                            "ts": b * 10 + i - rng.randrange(40),
                            "x": rng.randrange(100),
                            "t": rng.choice("ABC"),
                        }
                        for i in range(10)
                    ]
                )
            )
        straight = PartitionEngine(partition=4)
        hopping = PartitionEngine(partition=4)
        for i, entry in enumerate(entries):
            self.assertEqual(hopping.apply(i + 1, entry), straight.apply(i + 1, entry))
            if i % 10 == 9:
                hopping = PartitionEngine.restore(4, hopping.snapshot())
        self.assertEqual(hopping.stateHash(), straight.stateHash())
        self.assertEqual(hopping.status(), straight.status())
        self.assertGreater(straight.status()["counters"]["late_retracted"], 0)
