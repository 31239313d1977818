"""
Engine semantics against the brute-force model in L{oracle}: random streams
(out of order, duplicated, late within and beyond the allowed lateness),
every window kind and aggregation, patterns with and without negation.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.engine import PartitionEngine, encodeEvents, encodeRules
from tests.ceptra.engine import oracle

NOT_TICK = {oracle.TICK: {"exists": False}}
FUNCTIONS: list[dict[str, Any]] = [
    {"fn": "count"},
    {"fn": "sum", "field": "x"},
    {"fn": "min", "field": "x"},
    {"fn": "max", "field": "x"},
    {"fn": "avg", "field": "x"},
    {"fn": "distinct", "field": "x", "precision": 6},
    {"fn": "quantiles", "field": "x", "q": [0, 0.5, 0.9, 1], "bins_per_octave": 16},
    {"fn": "topk", "field": "x", "k": 3},
]


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["tumbling", "hopping", "sliding", "session"]))
    if kind == "session":
        return {"kind": kind, "gap_ms": draw(st.integers(1, 15))}
    size = draw(st.integers(1, 30))
    if kind == "hopping":
        return {"kind": kind, "size_ms": size, "hop_ms": draw(st.integers(1, size))}
    return {"kind": kind, "size_ms": size}


@st.composite
def streams(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """
    Batches of events whose times drift forward with jitter behind the
    front; some events are re-sent (same id and content).
    """
    n = draw(st.integers(0, 40))
    events: list[dict[str, Any]] = []
    front = 0
    for i in range(n):
        if events and draw(st.integers(0, 9)) == 0:
            events.append(dict(draw(st.sampled_from(events))))
            continue
        front += draw(st.integers(0, 4))
        ev: dict[str, Any] = {
            "event_id": f"e{i}",
            "key": draw(st.sampled_from(["a", "b", "c"])),
            "ts": max(0, front - draw(st.integers(0, 25))),
            "t": draw(st.sampled_from(["A", "B", "C"])),
        }
        x = draw(st.one_of(st.integers(-5, 40), st.none()))
        if x is not None:
            ev["x"] = x
        events.append(ev)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    batches, last = [], 0
    for c in [*cuts, n]:
        batches.append(events[last:c])
        last = c
    return batches


def timeSettings() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "watermark_delay_ms": st.integers(0, 10),
            "allowed_lateness_ms": st.integers(0, 20),
            "late_events": st.sampled_from(["drop", "retract"]),
        }
    )


def run(
    doc: dict[str, Any], batches: list[list[dict[str, Any]]]
) -> tuple[PartitionEngine, list[dict[str, Any]]]:
    """
    Apply C{doc}, the batches and a far-future tick that flushes everything.
    """
    eng = PartitionEngine(partition=7)
    results: list[dict[str, Any]] = []
    [ack] = eng.apply(1, encodeRules(doc))
    assert ack["accepted"], ack
    for i, batch in enumerate(batches):
        results += eng.apply(2 + i, encodeEvents(batch))
    tick = {"event_id": "tick", "key": "zz", "ts": 10**7, oracle.TICK: True}
    results += eng.apply(2 + len(batches), encodeEvents([tick]))
    return eng, results


def liveWindows(
    test: SynchronousTestCase, results: list[dict[str, Any]], rule: str
) -> dict[tuple[str, int, int], Any]:
    """
    Fold the update/retract stream of C{rule}: an update opens a window that
    is not open, a retract closes an open window with exactly its value.
    """
    live: dict[tuple[str, int, int], Any] = {}
    for r in results:
        if r.get("rule") != rule:
            continue
        k = (r["group"], r["window"]["start"], r["window"]["end"])
        if r["kind"] == "update":
            test.assertNotIn(k, live, r)
            live[k] = r["value"]
        else:
            test.assertEqual(r["kind"], "retract")
            test.assertEqual(live.pop(k), r["value"], r)
    return live


class AggregateOracleTests(SynchronousTestCase):
    """
    Every window kind with every aggregation equals the oracle.
    """

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        win=windows(),
        groupBy=st.sampled_from([[], ["key"], ["key", "t"]]),
        time=timeSettings(),
        batches=streams(),
    )
    def test_windows(
        self,
        win: dict[str, Any],
        groupBy: list[str],
        time: dict[str, Any],
        batches: list[list[dict[str, Any]]],
    ) -> None:
        """
        The windows left open by the result stream are exactly the oracle's,
        with exact values for exact aggregations and sketches within their
        error; counters match; drop mode never retracts.
        """
        rules = [
            {
                "name": agg["fn"],
                "type": "aggregate",
                "where": NOT_TICK,
                "group_by": groupBy,
                "window": win,
                "aggregate": agg,
            }
            for agg in FUNCTIONS
        ]
        doc = {"version": 1, "settings": time, "rules": rules}
        eng, results = run(doc, batches)
        accepted = oracle.accept(time, batches)
        counters = eng.status()["counters"]
        self.assertEqual(
            (
                counters["events"] - 1,
                counters["duplicates"],
                counters["late_dropped"],
                counters["late_retracted"],
            ),
            (len(accepted.events), accepted.duplicates, accepted.lateDropped, accepted.lateRetracted),
        )
        if time["late_events"] == "drop":
            self.assertEqual([r for r in results if r["kind"] == "retract"], [])
        for rule in rules:
            live = liveWindows(self, results, rule["name"])
            expected = oracle.aggregateWindows(rule, accepted.events)
            self.assertEqual(set(live), set(expected), rule["name"])
            for k, values in expected.items():
                exact = oracle.exactValue(rule, values)
                self.assertTrue(oracle.withinError(rule, live[k], exact), (rule["name"], k, live[k], exact))


class PatternOracleTests(SynchronousTestCase):
    """
    Patterns, strict and relaxed, with and without negation, equal the oracle.
    """

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        within=st.integers(0, 20),
        groupBy=st.sampled_from([[], ["key"]]),
        thenFilter=st.sampled_from([{"t": "B"}, {"t": "B", "x": {"gt": 10}}, {"t": "A"}]),
        time=timeSettings(),
        batches=streams(),
    )
    def test_patterns(
        self,
        within: int,
        groupBy: list[str],
        thenFilter: dict[str, Any],
        time: dict[str, Any],
        batches: list[list[dict[str, Any]]],
    ) -> None:
        """
        The match results of each variant are the oracle's, as a multiset.
        """
        rules = [
            {
                "name": f"p_{contiguity}_{negate}",
                "type": "pattern",
                "where": NOT_TICK,
                "group_by": groupBy,
                "first": {"t": "A"},
                "then": thenFilter,
                "within_ms": within,
                "contiguity": contiguity,
                "negate": negate,
            }
            for contiguity in ("strict", "relaxed")
            for negate in (False, True)
        ]
        doc = {"version": 1, "settings": time, "rules": rules}
        eng, results = run(doc, batches)
        accepted = oracle.accept(time, batches)
        for rule in rules:
            got: Counter[tuple[Any, ...]] = Counter()
            for r in results:
                if r.get("rule") == rule["name"]:
                    self.assertEqual(r["kind"], "match")
                    got[
                        (
                            r["group"],
                            r["window"]["start"],
                            r["window"]["end"],
                            r["value"]["first"],
                            r["value"].get("then"),
                        )
                    ] += 1
            self.assertEqual(got, oracle.patternMatches(rule, accepted), rule["name"])
