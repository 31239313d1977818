"""
The columnar event batch entry (C{E2}): round trips, size-limited and
shape-checked decoding of hostile bytes, and the engine applying it exactly
as it applies the same events in a JSON (C{E1}) entry.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.engine import EngineError, PartitionEngine, encodeEvents, encodeRules
from suite.ceptra.engine.codec import (
    BATCH_TAG,
    EVENTS_TAG,
    MAX_BATCH_EVENTS,
    MAX_STRING_BYTES,
    decodeBatch,
    encodeBatch,
)
from suite.ceptra.engine.context import MISSING
from tests.ceptra.engine.test_oracle import FUNCTIONS, streams, timeSettings, windows

scalars = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)
fieldNames = st.text(min_size=1, max_size=8).filter(lambda n: n not in ("event_id", "key", "ts"))
events = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=10),
        "key": st.text(min_size=1, max_size=10),
        "ts": st.integers(-(2**53), 2**53),
        "fields": st.dictionaries(fieldNames, scalars, max_size=5),
    }
)


def flat(ev: dict[str, Any]) -> dict[str, Any]:
    """
    The engine's view of an ingest event.
    """
    return {**ev["fields"], "event_id": ev["event_id"], "key": ev["key"], "ts": ev["ts"]}


class CodecTests(SynchronousTestCase):
    """
    Encoding and decoding of C{E2} entries.
    """

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.lists(events, max_size=6), min_size=1, max_size=4))
    def test_roundTrip(self, segments: list[list[dict[str, Any]]]) -> None:
        """
        Every event comes back with its fields (absent ones absent), in
        order, with each request's count.
        """
        payload = encodeBatch(segments)
        self.assertEqual(payload[:2], BATCH_TAG)
        batch = decodeBatch(payload)
        self.assertEqual(batch.segments, [len(s) for s in segments])
        everything = [ev for s in segments for ev in s]
        self.assertEqual(len(batch), len(everything))
        for i, ev in enumerate(everything):
            self.assertEqual(batch.event(i), flat(ev))
            for name in batch.names:
                column = batch.column(name)
                assert column is not None
                self.assertEqual(column[i], ev["fields"].get(name, MISSING))

    def test_fallback(self) -> None:
        """
        Values msgpack cannot carry (integers past 64 bits, strings that are
        not Unicode) make a JSON entry instead, applied as before.
        """
        for value in (10**30, "\ud800"):
            ev = {"event_id": "e", "key": "k", "ts": 1, "fields": {"x": value}}
            payload = encodeBatch([[ev]])
            self.assertEqual(payload[:2], EVENTS_TAG)
            eng = PartitionEngine(1)
            eng.apply(1, payload)
            self.assertEqual(eng.status()["counters"]["events"], 1 if value == 10**30 else 0)

    def bad(self, body: Any, why: str) -> None:
        payload = BATCH_TAG + msgpack.packb(body, use_bin_type=True)
        with self.assertRaises(EngineError) as e:
            decodeBatch(payload)
        self.assertIn(why, str(e.exception))
        eng = PartitionEngine(1)
        self.assertEqual(eng.apply(1, payload), [])
        self.assertEqual(eng.status()["counters"]["rejected_entries"], 1)

    def test_shapeChecks(self) -> None:
        """
        Each malformed shape is refused with its reason and the entry is
        counted as rejected, never raised from C{apply}.
        """
        ok = [1, [1], ["e"], ["k"], [1], ["x"], [[2]]]
        decodeBatch(BATCH_TAG + msgpack.packb(ok))
        self.bad([1, 2], "7-item")
        self.bad([2, *ok[1:]], "unknown version")
        self.bad([1, [2], *ok[2:]], "add up")
        self.bad([1, [-1, 2], *ok[2:]], "add up")
        self.bad([1, [1], ["e", "f"], *ok[3:]], "differ in length")
        self.bad([*ok[:5], ["x", "y"], [[2]]], "do not match")
        self.bad([*ok[:5], ["x", "x"], [[1], [2]]], "distinct")
        self.bad([*ok[:5], ["key"], [[1]]], "event_id, key or ts")
        self.bad([*ok[:6], [[2, 3]]], "length differs")
        self.bad([*ok[:6], [[[1, 2]]]], "not a scalar")
        self.bad([*ok[:6], [[float("nan")]]], "finite")
        self.bad([*ok[:6], [[{"a": 1}]]], "undecodable")
        self.bad([1, "x", *ok[2:]], "not an array")

    def test_limits(self) -> None:
        """
        Decoding refuses arrays and strings past the limits before building
        them, and extension types other than the absent marker.
        """
        n = MAX_BATCH_EVENTS + 1
        with self.assertRaises(EngineError):
            decodeBatch(BATCH_TAG + msgpack.packb([1, [n], ["e"] * n, ["k"] * n, [1] * n, [], []]))
        long = "x" * (MAX_STRING_BYTES + 1)
        with self.assertRaises(EngineError):
            decodeBatch(BATCH_TAG + msgpack.packb([1, [1], [long], ["k"], [1], [], []]))
        with self.assertRaises(EngineError):
            decodeBatch(
                BATCH_TAG + msgpack.packb([1, [1], ["e"], ["k"], [1], ["x"], [[msgpack.ExtType(9, b"")]]])
            )

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200), st.integers(0, 10**6))
    def test_fuzz(self, noise: bytes, seed: int) -> None:
        """
        Random bytes, and valid entries with bytes flipped, cut or appended,
        decode to a batch or raise L{EngineError}; nothing else escapes, and
        the engine applies whatever decodes without raising.
        """
        rng = random.Random(seed)
        valid = bytearray(
            encodeBatch(
                [[{"event_id": f"e{i}", "key": "k", "ts": i, "fields": {"x": i, "s": "v"}} for i in range(5)]]
            )
        )
        candidates = [BATCH_TAG + noise, bytes(valid[: rng.randrange(len(valid))]), bytes(valid) + noise]
        flipped = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(2, len(flipped))] = rng.randrange(256)
        candidates.append(bytes(flipped))
        for payload in candidates:
            try:
                decodeBatch(payload)
            except EngineError:
                pass
            eng = PartitionEngine(1)
            eng.apply(1, encodeRules(RULES))
            eng.apply(2, payload)
            eng.stateHash()


RULES = {
    "version": 1,
    "rules": [
        {
            "name": "s",
            "type": "aggregate",
            "group_by": ["key"],
            "window": {"kind": "sliding", "size_ms": 10},
            "aggregate": {"fn": "sum", "field": "x"},
        }
    ],
}


def ingestShape(ev: dict[str, Any]) -> dict[str, Any]:
    """
    An oracle-stream event as the ingest API hands it over.
    """
    fields = {k: v for k, v in ev.items() if k not in ("event_id", "key", "ts")}
    return {"event_id": ev["event_id"], "key": ev["key"], "ts": ev["ts"], "fields": fields}


class ApplyEquivalenceTests(SynchronousTestCase):
    """
    An C{E2} entry changes the engine exactly as the same events in a JSON
    entry do: same results in the same order, same counters, same state
    hash; each combined request's counts are what applying it alone gives.
    """

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        win=windows(),
        agg=st.sampled_from(FUNCTIONS),
        groupBy=st.sampled_from([[], ["key"], ["key", "t"], ["x"], ["missing"]]),
        where=st.sampled_from([None, {"t": {"ne": "C"}}]),
        pattern=st.booleans(),
        time=timeSettings(),
        batches=streams(),
        seed=st.integers(0, 1000),
    )
    def test_sameAsJSON(
        self,
        win: dict[str, Any],
        agg: dict[str, Any],
        groupBy: list[str],
        where: dict[str, Any] | None,
        pattern: bool,
        time: dict[str, Any],
        batches: list[list[dict[str, Any]]],
        seed: int,
    ) -> None:
        """
        Results, counters, queries and state hashes agree between C{E1} and
        C{E2}, for rules read from columns and rules that need whole events.
        """
        rule: dict[str, Any] = {
            "name": "r",
            "type": "aggregate",
            "group_by": groupBy,
            "window": win,
            "aggregate": agg,
        }
        if where is not None:
            rule["where"] = where
        rules = [rule]
        if pattern:
            rules.append(
                {
                    "name": "p",
                    "type": "pattern",
                    "group_by": ["key"],
                    "first": {"t": "A"},
                    "then": {"t": "B"},
                    "within_ms": 10,
                }
            )
        doc = {"version": 1, "settings": time, "rules": rules}
        rng = random.Random(seed)
        one, two = PartitionEngine(3), PartitionEngine(3)
        self.assertEqual(one.apply(1, encodeRules(doc)), two.apply(1, encodeRules(doc)))
        for i, batch in enumerate(batches):
            shaped = [ingestShape(ev) for ev in batch]
            cuts = sorted(rng.sample(range(len(shaped) + 1), min(2, len(shaped) + 1)))
            requests = [shaped[: cuts[0]], shaped[cuts[0] : cuts[-1]], shaped[cuts[-1] :]]
            requests = [r for r in requests if r] or [[]]
            before = dict(one.status()["counters"])
            r1 = one.apply(2 + i, encodeEvents([flat(ev) for ev in shaped]))
            r2 = two.apply(2 + i, encodeBatch(requests))
            self.assertEqual(r1, r2)
            after = one.status()["counters"]
            self.assertEqual(after, two.status()["counters"])
            segments = two.lastSegments
            self.assertEqual(len(segments), len(requests))
            self.assertEqual(
                [sum(s[k] for s in segments) for k in range(3)],
                [after[c] - before[c] for c in ("events", "duplicates", "rejected")],
            )
        self.assertEqual(one.stateHash(), two.stateHash())
        for name in [r["name"] for r in rules]:
            self.assertEqual(one.query(name), two.query(name))

    def test_segmentCounts(self) -> None:
        """
        A request's duplicates include events repeated from an earlier
        request of the same entry.
        """
        eng = PartitionEngine(1)
        ev = {"event_id": "a", "key": "k", "ts": 1, "fields": {}}
        other = {"event_id": "b", "key": "k", "ts": 2, "fields": {}}
        bad = {"event_id": "", "key": "k", "ts": 3, "fields": {}}
        eng.apply(1, encodeBatch([[ev], [ev, other], [bad]]))
        self.assertEqual(eng.lastSegments, [(1, 0, 0), (1, 1, 0), (0, 0, 1)])
        eng.apply(2, encodeEvents([flat(other)]))
        self.assertEqual(eng.lastSegments, [])
