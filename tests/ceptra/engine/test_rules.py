"""
The rules document: validation messages, versions in the log, group
cardinality limits, dedup horizon, filters.
"""

from __future__ import annotations

import copy
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.engine import EngineError, PartitionEngine, encodeEvents, encodeRules, validateRules

COUNT: dict[str, Any] = {
    "name": "n",
    "type": "aggregate",
    "group_by": ["key"],
    "window": {"kind": "tumbling", "size_ms": 10},
    "aggregate": {"fn": "count"},
}
PATTERN: dict[str, Any] = {
    "name": "p",
    "type": "pattern",
    "first": {"t": "A"},
    "then": {"t": "B"},
    "within_ms": 5,
}


def doc(*rules: object, version: int = 1, **extra: Any) -> dict[str, Any]:
    return {"version": version, "rules": list(rules), **extra}


def changed(rule: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """
    A copy of C{rule} with the dotted C{path} set to C{value} (or removed
    when C{value} is C{...}).
    """
    out = copy.deepcopy(rule)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def ev(i: int, ts: int, key: str = "k", **fields: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "key": key, "ts": ts, **fields}


class ValidationTests(SynchronousTestCase):
    """
    Each bad document is refused with one line naming the field.
    """

    CASES: list[tuple[Any, str]] = [
        ([], "rules document: must be an object"),
        ({"rules": []}, "rules document.version: required"),
        ({"version": 0, "rules": []}, "rules document.version: must be between 1 and 9007199254740992"),
        ({"version": True, "rules": []}, "rules document.version: must be an integer"),
        ({"version": 1}, "rules: required, a list of rules"),
        ({"version": 1, "rules": [], "extra": 1}, "rules document.extra: unknown field"),
        (doc(settings={"late_events": "keep"}), "settings.late_events: must be drop or retract"),
        (
            doc(settings={"watermark_delay_ms": -1}),
            "settings.watermark_delay_ms: must be between 0 and 31622400000",
        ),
        (doc(settings={"nope": 1}), "settings.nope: unknown field"),
        (doc(5), "rules[0]: must be an object"),
        (
            doc(changed(COUNT, "name", "a b")),
            "rules[0].name: required: 1-128 characters of letters, digits, _ - .",
        ),
        (doc(COUNT, COUNT), "rules[1].name: duplicate rule name 'n'"),
        (doc(changed(COUNT, "type", "sql")), "rules[0].type: must be aggregate or pattern"),
        (doc(changed(COUNT, "window", ...)), "rules[0].window: required"),
        (
            doc(changed(COUNT, "window.kind", "rolling")),
            "rules[0].window.kind: must be one of tumbling, hopping, sliding, session",
        ),
        (
            doc(changed(COUNT, "window.size_ms", 0)),
            "rules[0].window.size_ms: must be between 1 and 31622400000",
        ),
        (doc(changed(COUNT, "window.hop_ms", 5)), "rules[0].window.hop_ms: only for hopping windows"),
        (
            doc(changed(changed(COUNT, "window.kind", "hopping"), "window.hop_ms", 11)),
            "rules[0].window.hop_ms: must be between 1 and 10",
        ),
        (
            doc(changed(changed(COUNT, "window.kind", "hopping"), "window.hop_ms", ...)),
            "rules[0].window.hop_ms: required",
        ),
        (doc(changed(COUNT, "window", {"kind": "session"})), "rules[0].window.gap_ms: required"),
        (
            doc(changed(COUNT, "window", {"kind": "session", "gap_ms": 5, "size_ms": 5})),
            "rules[0].window.size_ms: not used by session windows",
        ),
        (
            doc(changed(COUNT, "aggregate", {"fn": "median"})),
            "rules[0].aggregate.fn: must be one of count, sum, min, max, avg, distinct, quantiles, topk",
        ),
        (doc(changed(COUNT, "aggregate", {"fn": "sum"})), "rules[0].aggregate.field: required for sum"),
        (
            doc(changed(COUNT, "aggregate", {"fn": "sum", "field": "x", "k": 3})),
            "rules[0].aggregate.k: not a parameter of sum",
        ),
        (
            doc(changed(COUNT, "aggregate", {"fn": "quantiles", "field": "x", "q": [1.5]})),
            "rules[0].aggregate.q: must be a non-empty list of numbers between 0 and 1",
        ),
        (
            doc(changed(COUNT, "aggregate", {"fn": "distinct", "field": "x", "precision": 20})),
            "rules[0].aggregate.precision: must be between 4 and 16",
        ),
        (
            doc(changed(COUNT, "aggregate", {"fn": "topk", "field": "x", "k": 5, "capacity": 2})),
            "rules[0].aggregate.capacity: must be between 5 and 100000",
        ),
        (doc(changed(COUNT, "group_by", "key")), "rules[0].group_by: must be a list of field names"),
        (doc(changed(COUNT, "max_groups", 0)), "rules[0].max_groups: must be between 1 and 10000000"),
        (
            doc(changed(COUNT, "where", {"x": {"like": 1}})),
            "rules[0].where.x.like: unknown operator (use eq, ne, lt, le, gt, ge, in, exists)",
        ),
        (
            doc(changed(COUNT, "where", {"x": {"lt": [1]}})),
            "rules[0].where.x.lt: must be a string, number, boolean or null",
        ),
        (
            doc(changed(COUNT, "where", {"x": {"lt": 1, "gt": 0}})),
            "rules[0].where.x: must hold exactly one operator of eq, ne, lt, le, gt, ge, in, exists",
        ),
        (doc(changed(COUNT, "where", {"x": {"in": []}})), "rules[0].where.x.in: must be a non-empty list"),
        (doc(changed(PATTERN, "then", ...)), "rules[0].then: required"),
        (doc(changed(PATTERN, "within_ms", ...)), "rules[0].within_ms: required"),
        (doc(changed(PATTERN, "contiguity", "loose")), "rules[0].contiguity: must be strict or relaxed"),
        (doc(changed(PATTERN, "negate", "yes")), "rules[0].negate: must be a boolean"),
        (doc(changed(PATTERN, "window", {})), "rules[0].window: unknown field"),
    ]

    def test_messages(self) -> None:
        """
        Every case raises L{EngineError} with its one-line message.
        """
        for bad, message in self.CASES:
            with self.assertRaises(EngineError, msg=message) as e:
                validateRules(bad)
            self.assertEqual(str(e.exception), message)
            self.assertNotIn("\n", message)

    def test_encodeRulesValidates(self) -> None:
        """
        C{encodeRules} refuses an invalid document before it reaches the log.
        """
        self.assertRaises(EngineError, encodeRules, {"version": 1})

    def test_good(self) -> None:
        """
        A document using every feature is valid.
        """
        validateRules(
            doc(
                COUNT,
                changed(COUNT, "name", "h") | {"window": {"kind": "hopping", "size_ms": 10, "hop_ms": 2}},
                changed(COUNT, "name", "s") | {"window": {"kind": "session", "gap_ms": 10}},
                changed(COUNT, "name", "q") | {"aggregate": {"fn": "quantiles", "field": "x", "q": [0.5]}},
                PATTERN | {"contiguity": "strict", "negate": True, "where": {"x": {"in": [1, "a"]}}},
                settings={"watermark_delay_ms": 1, "allowed_lateness_ms": 2, "late_events": "retract"},
            )
        )


class VersionTests(SynchronousTestCase):
    """
    Rules documents are versioned in the log.
    """

    def test_versions(self) -> None:
        """
        A newer version keeps the state of unchanged rules, resets changed
        ones and drops removed ones; an older or equal version, or an
        invalid document in the log, is refused with a result and counted.
        """
        eng = PartitionEngine(partition=0)
        other = changed(COUNT, "name", "m")
        eng.apply(1, encodeRules(doc(COUNT, other, PATTERN)))
        eng.apply(2, encodeEvents([ev(1, 1), ev(2, 2)]))
        self.assertEqual(eng.query("n")["groups"]["k"][0]["value"], 2)
        [ack] = eng.apply(3, encodeRules(doc(COUNT, changed(other, "window.size_ms", 20), version=2)))
        self.assertEqual(ack, {"kind": "rules", "accepted": True, "version": 2, "partition": 0, "index": 3})
        status = eng.status()
        self.assertEqual(status["rules_version"], 2)
        self.assertEqual(
            {name: r["since_version"] for name, r in status["rules"].items()},
            {"n": 1, "m": 2},
        )
        self.assertEqual(eng.query("n")["groups"]["k"][0]["value"], 2)
        self.assertEqual(eng.query("m")["groups"], {})
        self.assertRaises(KeyError, eng.query, "p")
        [nack] = eng.apply(4, encodeRules(doc(COUNT, version=2)))
        self.assertEqual(nack["accepted"], False)
        self.assertEqual(nack["error"], "version: must be greater than the current version 2")
        [nack] = eng.apply(5, b'R1{"version": 9}')
        self.assertEqual(nack["error"], "rules: required, a list of rules")
        self.assertEqual(eng.status()["counters"]["rejected_rules"], 2)
        self.assertEqual(eng.status()["rules_version"], 2)


class LimitTests(SynchronousTestCase):
    """
    Group cardinality limits and the dedup horizon.
    """

    def test_maxGroups(self) -> None:
        """
        Events of a new group beyond C{max_groups} are skipped by the rule
        and counted; a group frees its slot once its windows are dropped.
        """
        eng = PartitionEngine(partition=0)
        eng.apply(
            1,
            encodeRules(
                doc(
                    changed(COUNT, "max_groups", 2), changed(PATTERN, "max_groups", 1) | {"group_by": ["key"]}
                )
            ),
        )
        eng.apply(2, encodeEvents([ev(i, 1, key=k, t="A") for i, k in enumerate("abcab")]))
        status = eng.status()["rules"]
        self.assertEqual((status["n"]["groups"], status["n"]["group_overflow"]), (2, 1))
        self.assertEqual(set(eng.query("n")["groups"]), {"a", "b"})
        eng.apply(3, encodeEvents([ev(10, 100, key="a")]))
        eng.apply(4, encodeEvents([ev(11, 101, key="c")]))
        self.assertEqual(set(eng.query("n")["groups"]), {"a", "c"})
        self.assertEqual(eng.status()["rules"]["p"]["group_overflow"], 3)

    def test_dedupHorizon(self) -> None:
        """
        Event ids are remembered while their time is within the dedup
        horizon behind the watermark, and at most C{dedup_max_ids} of them.
        """
        eng = PartitionEngine(partition=0)
        eng.apply(
            1,
            encodeRules(
                doc(
                    settings={
                        "dedup_horizon_ms": 100,
                        "dedup_max_ids": 3,
                        "late_events": "retract",
                        "allowed_lateness_ms": 1000,
                    }
                )
            ),
        )
        eng.apply(2, encodeEvents([ev(1, 0), ev(2, 50)]))
        eng.apply(3, encodeEvents([ev(1, 0)]))
        self.assertEqual(eng.status()["counters"]["duplicates"], 1)
        eng.apply(4, encodeEvents([ev(3, 120)]))
        eng.apply(5, encodeEvents([ev(1, 0), ev(2, 50)]))
        counters = eng.status()["counters"]
        self.assertEqual((counters["duplicates"], counters["late_retracted"]), (2, 1))
        eng.apply(6, encodeEvents([ev(4, 121), ev(5, 122), ev(6, 123)]))
        self.assertEqual(eng.status()["dedup_ids"], 3)


class FilterTests(SynchronousTestCase):
    """
    The C{where} language.
    """

    def test_operators(self) -> None:
        """
        Each operator keeps exactly the events it names; numbers compare by
        value, never against strings or booleans.
        """
        events = [
            ev(0, 1, x=1),
            ev(1, 1, x=1.0),
            ev(2, 1, x=True),
            ev(3, 1, x="1"),
            ev(4, 1, x=5),
            ev(5, 1),
            ev(6, 1, x=None),
            ev(7, 1, x="b"),
        ]
        cases: list[tuple[Any, set[int]]] = [
            (1, {0, 1}),
            ({"eq": "1"}, {3}),
            ({"ne": 1}, {2, 3, 4, 5, 6, 7}),
            ({"lt": 5}, {0, 1}),
            ({"le": 5}, {0, 1, 4}),
            ({"gt": 1}, {4}),
            ({"ge": 1}, {0, 1, 4}),
            ({"gt": "a"}, {7}),
            ({"in": [5, "b", True]}, {2, 4, 7}),
            ({"exists": False}, {5}),
            ({"exists": True}, {0, 1, 2, 3, 4, 6, 7}),
            (None, {6}),
        ]
        for cond, expected in cases:
            eng = PartitionEngine(partition=0)
            rule = changed(COUNT, "where", {"x": cond}) | {"group_by": ["event_id"]}
            eng.apply(1, encodeRules(doc(rule)))
            eng.apply(2, encodeEvents(events))
            self.assertEqual(set(eng.query("n")["groups"]), {f"e{i}" for i in expected}, cond)
