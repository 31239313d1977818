"""
The public API of L{suite.ceptra.engine}: entries in, results out, snapshots,
state hashes, status and queries.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.ceptra.engine import EngineError, PartitionEngine, encodeEvents, encodeRules, validateRules
from suite.ceptra.engine.interfaces import IPartitionEngine

RULES = {
    "version": 1,
    "settings": {"watermark_delay_ms": 10, "allowed_lateness_ms": 100, "late_events": "retract"},
    "rules": [
        {
            "name": "per_key",
            "type": "aggregate",
            "group_by": ["key"],
            "window": {"kind": "tumbling", "size_ms": 100},
            "aggregate": {"fn": "count"},
        },
        {
            "name": "spend",
            "type": "aggregate",
            "window": {"kind": "sliding", "size_ms": 50},
            "aggregate": {"fn": "sum", "field": "amount"},
        },
    ],
}


def events(n: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {"event_id": f"e{i}", "key": f"k{i % 2}", "ts": i * 20, "amount": i} for i in range(start, start + n)
    ]


class APITests(SynchronousTestCase):
    """
    The engine as the node drives it.
    """

    def test_interface(self) -> None:
        """
        L{PartitionEngine} provides L{IPartitionEngine}, restored ones too.
        """
        eng = PartitionEngine(partition=3)
        self.assertTrue(verifyObject(IPartitionEngine, eng))
        self.assertTrue(verifyObject(IPartitionEngine, PartitionEngine.restore(3, eng.snapshot())))

    def test_emptyEngine(self) -> None:
        """
        A new engine has no rules, no watermark and an index of 0; events
        are still counted and deduplicated.
        """
        eng = PartitionEngine(partition=3)
        status = eng.status()
        self.assertEqual(status["last_applied_index"], 0)
        self.assertIsNone(status["rules_version"])
        self.assertIsNone(status["watermark"])
        self.assertEqual(eng.apply(1, encodeEvents(events(3))), [])
        self.assertEqual(eng.apply(2, encodeEvents(events(3))), [])
        counters = eng.status()["counters"]
        self.assertEqual((counters["events"], counters["duplicates"]), (3, 3))
        json.dumps(eng.status())

    def test_results(self) -> None:
        """
        Results carry rule, group, window, value, kind, partition and index.
        """
        eng = PartitionEngine(partition=3)
        [ack] = eng.apply(1, encodeRules(RULES))
        self.assertEqual(ack["accepted"], True)
        out = eng.apply(2, encodeEvents(events(8)))
        first = [r for r in out if r["rule"] == "per_key"][0]
        self.assertEqual(
            first,
            {
                "rule": "per_key",
                "group": "k0",
                "window": {"start": 0, "end": 100},
                "value": 3,
                "kind": "update",
                "partition": 3,
                "index": 2,
            },
        )
        json.dumps(out)

    def test_badEventsCounted(self) -> None:
        """
        Bad events inside a batch are counted as rejected, never raised.
        """
        eng = PartitionEngine(partition=0)
        bad: list[object] = [
            1,
            {"key": "k", "ts": 1},
            {"event_id": "", "key": "k", "ts": 1},
            {"event_id": "a", "key": 5, "ts": 1},
            {"event_id": "a", "key": "k", "ts": 1.5},
            {"event_id": "a", "key": "k", "ts": True},
            {"event_id": "x" * 300, "key": "k", "ts": 1},
            {"event_id": "a", "key": "k", "ts": 2**70},
        ]
        eng.apply(1, encodeEvents(bad))  # type: ignore[arg-type]
        self.assertEqual(eng.status()["counters"]["rejected"], len(bad))
        eng.apply(2, b"E1[not json")
        eng.apply(3, b"zz")
        eng.apply(4, memoryview(b"E1{}"))  # type: ignore[arg-type]
        self.assertEqual(eng.status()["counters"]["rejected_entries"], 3)
        self.assertEqual(eng.apply(5, b""), [])
        self.assertEqual(eng.status()["last_applied_index"], 5)

    def test_oldIndexIgnored(self) -> None:
        """
        An entry at or below the last applied index changes nothing.
        """
        eng = PartitionEngine(partition=0)
        eng.apply(5, encodeEvents(events(2)))
        before = eng.stateHash()
        self.assertEqual(eng.apply(5, encodeEvents(events(2, 10))), [])
        self.assertEqual(eng.apply(4, encodeEvents(events(2, 10))), [])
        self.assertEqual(eng.stateHash(), before)

    def test_snapshotRestore(self) -> None:
        """
        A restored engine has the same hash and gives the same results
        (msgpack snapshots; JSON ones are tested with state msgpack cannot
        carry, below).
        """
        eng = PartitionEngine(partition=1)
        eng.apply(1, encodeRules(RULES))
        eng.apply(2, encodeEvents(events(10)))
        copy = PartitionEngine.restore(1, eng.snapshot())
        self.assertEqual(copy.stateHash(), eng.stateHash())
        self.assertEqual(copy.status(), eng.status())
        self.assertEqual(
            copy.apply(3, encodeEvents(events(10, 10))), eng.apply(3, encodeEvents(events(10, 10)))
        )
        self.assertEqual(copy.stateHash(), eng.stateHash())

    def test_snapshotBeyondMsgpack(self) -> None:
        """
        State msgpack cannot carry (an integer past 64 bits held by a
        pattern until the watermark passes it) is snapshotted as JSON and
        restored to the same hash.
        """
        eng = PartitionEngine(partition=1)
        rules = {
            "version": 1,
            "settings": {"watermark_delay_ms": 1_000_000},
            "rules": [
                {"name": "p", "type": "pattern", "first": {"t": "A"}, "then": {"t": "B"}, "within_ms": 9}
            ],
        }
        eng.apply(1, encodeRules(rules))
        eng.apply(2, encodeEvents([{"event_id": "huge", "key": "k", "ts": 3, "x": 10**400, "t": "A"}]))
        snapshot = eng.snapshot()
        self.assertNotEqual(snapshot[:4], b"CEPS")
        copy = PartitionEngine.restore(1, snapshot)
        self.assertEqual(copy.stateHash(), eng.stateHash())
        self.assertEqual(PartitionEngine.restore(1, eng.snapshot()).stateHash(), eng.stateHash())

    def test_restoreGarbage(self) -> None:
        """
        Bytes that are not a snapshot raise L{EngineError}.
        """
        for data in (
            b"nope",
            zlib.compress(b"[1]"),
            zlib.compress(b'{"format": 1}'),
            zlib.compress(b"\xff"),
            b"CEPS\x02\xc1",
            b"CEPS\x02\x91\x01",
            b"CEPS\x02\x81\xa6format\x01",
        ):
            self.assertRaises(EngineError, PartitionEngine.restore, 0, data)

    def test_query(self) -> None:
        """
        C{query} returns the current windows; an unknown rule is a C{KeyError}.
        """
        eng = PartitionEngine(partition=1)
        eng.apply(1, encodeRules(RULES))
        eng.apply(2, encodeEvents(events(4)))
        q = eng.query("per_key", "k1")
        self.assertEqual(
            q["groups"]["k1"], [{"window": {"start": 0, "end": 100}, "value": 2, "final": False}]
        )
        self.assertEqual(set(eng.query("per_key")["groups"]), {"k0", "k1"})
        self.assertRaises(KeyError, eng.query, "nope")
        json.dumps(eng.query("spend"))

    def test_validateRules(self) -> None:
        """
        C{validateRules} accepts a good document and names the bad field.
        """
        validateRules(RULES)
        with self.assertRaises(EngineError) as e:
            validateRules({"version": 1, "rules": [{"name": "x", "type": "aggregate"}]})
        self.assertEqual(str(e.exception), "rules[0].window: required")


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
loose_events = st.lists(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "event_id": st.one_of(st.text(max_size=3), json_values),
                "key": st.one_of(st.text(max_size=2), json_values),
            },
            optional={
                "ts": st.one_of(st.integers(-(2**64), 2**64), json_values),
                "x": json_values,
                "t": json_values,
            },
        ),
    ),
    max_size=10,
)


class RobustnessTests(SynchronousTestCase):
    """
    C{apply} never raises, whatever the entry holds.
    """

    @settings(max_examples=80, deadline=None)
    @given(batches=st.lists(st.one_of(loose_events, st.binary(max_size=20)), max_size=5))
    def test_neverRaises(self, batches: list[Any]) -> None:
        """
        Random JSON batches and random bytes are applied without raising,
        with every aggregation and a pattern active; the state stays
        snapshot-able, hashable and JSON-reportable.
        """
        eng = PartitionEngine(partition=0)
        rules: list[dict[str, object]] = [
            {
                "name": fn,
                "type": "aggregate",
                "group_by": ["key", "t"],
                "window": {"kind": "session", "gap_ms": 5},
                "aggregate": {"fn": fn} if fn == "count" else {"fn": fn, "field": "x"},
            }
            for fn in ("count", "sum", "min", "max", "avg", "distinct", "quantiles", "topk")
        ]
        rules.append(
            {"name": "p", "type": "pattern", "first": {"t": {"gt": 0}}, "then": {"x": None}, "within_ms": 9}
        )
        eng.apply(1, encodeRules({"version": 1, "rules": rules}))
        for i, batch in enumerate(batches):
            payload = batch if isinstance(batch, bytes) else encodeEvents(batch)
            json.dumps(eng.apply(i + 2, payload))
        json.dumps(eng.status())
        for rule in ("sum", "topk", "p"):
            json.dumps(eng.query(rule))
        eng.apply(99, b'E1[{"event_id":"\\ud800","key":"\\udc00","ts":1,"x":"\\ud800","t":1}]')
        eng.apply(100, b'E1[{"event_id":"big","key":"k","ts":2,"x":1e999,"t":1}]')
        eng.apply(101, encodeEvents([{"event_id": "huge", "key": "k", "ts": 3, "x": 10**400, "t": 1}]))
        deep = b'{"event_id":"deep","key":"k","ts":4,"t":1,"x":' + b"[" * 900 + b"]" * 900 + b"}"
        eng.apply(102, b"E1[" + deep + b"]")
        eng.apply(103, b"E1" + b"[" * 100_000 + b"]" * 100_000)
        eng.apply(104, b'R1{"version":5,"rules":[],"description":' + b"[" * 900 + b"]" * 900 + b"}")
        copy = PartitionEngine.restore(0, eng.snapshot())
        self.assertEqual(copy.stateHash(), eng.stateHash())
