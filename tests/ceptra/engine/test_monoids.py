"""
Monoid laws of every aggregation and the documented error of the sketches.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.engine.monoids import Aggregation, makeAggregation

PARAMS: dict[str, dict[str, Any]] = {
    "count": {},
    "sum": {},
    "min": {},
    "max": {},
    "avg": {},
    "distinct": {"precision": 8},
    "quantiles": {"q": (0.0, 0.25, 0.5, 0.99, 1.0), "bins_per_octave": 32},
    "topk": {"k": 3, "capacity": 8},
}
numbers = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False))


def canonical(agg: Aggregation, acc: Any) -> str:
    return json.dumps(agg.dump(acc))


class MonoidLawTests(SynchronousTestCase):
    """
    Identity, associativity and order-independence of merge.
    """

    @settings(max_examples=60, deadline=None)
    @given(
        fn=st.sampled_from(sorted(PARAMS)),
        parts=st.lists(st.lists(st.integers(-50, 50), max_size=20), min_size=3, max_size=3),
    )
    def test_laws(self, fn: str, parts: list[list[int]]) -> None:
        """
        merge(new, a) == a; merge(merge(a, b), c) == merge(a, merge(b, c));
        merging parts equals folding the whole (exact summaries: same state;
        top-k: same values while under capacity).
        """
        agg = makeAggregation(fn, PARAMS[fn])
        a, b, c = (agg.fold(p) for p in parts)
        self.assertEqual(canonical(agg, agg.merge(agg.new(), agg.fold(parts[0]))), canonical(agg, a))
        left = agg.merge(agg.merge(agg.fold(parts[0]), agg.fold(parts[1])), agg.fold(parts[2]))
        right = agg.merge(agg.fold(parts[0]), agg.merge(agg.fold(parts[1]), agg.fold(parts[2])))
        whole = agg.fold(parts[0] + parts[1] + parts[2])
        if fn == "topk" and len(set(parts[0] + parts[1] + parts[2])) > PARAMS[fn]["capacity"]:
            return
        if fn in ("sum", "avg"):
            self.assertEqual(agg.value(left), agg.value(whole))
        else:
            self.assertEqual(canonical(agg, left), canonical(agg, whole))
            self.assertEqual(canonical(agg, right), canonical(agg, whole))
        self.assertEqual(agg.value(agg.load(json.loads(json.dumps(agg.dump(whole))))), agg.value(whole))
        del a, b, c


class SketchErrorTests(SynchronousTestCase):
    """
    Sketches stay within the error docs/ceptra.md promises.
    """

    def test_distinctLarge(self) -> None:
        """
        HyperLogLog at precision 12 over 50,000 distinct values is within
        four standard errors (1.04/sqrt(4096)), merged or not.
        """
        agg = makeAggregation("distinct", {"precision": 12})
        values = [f"user-{i}" for i in range(50_000)]
        est = agg.value(agg.fold(values))
        self.assertLess(abs(est - 50_000), 4 * 1.04 / 64 * 50_000)
        merged = agg.merge(agg.fold(values[:20_000]), agg.fold(values[15_000:]))
        self.assertEqual(agg.value(merged), est)

    @settings(max_examples=60, deadline=None)
    @given(values=st.lists(numbers, min_size=1, max_size=200), q=st.floats(0, 1))
    def test_quantileRelativeError(self, values: list[float], q: float) -> None:
        """
        A quantile is within 1/(2*bins_per_octave) relative error of the
        exact element of rank floor(q*(n-1)).
        """
        agg = makeAggregation("quantiles", {"q": (q,), "bins_per_octave": 32})
        [(_, got)] = agg.value(agg.fold(values)).items()
        exact = sorted(values)[math.floor(q * (len(values) - 1))]
        self.assertLessEqual(abs(got - exact), abs(exact) / 64 * (1 + 1e-12))

    def test_topkBounds(self) -> None:
        """
        Misra-Gries over a skewed stream with more distinct items than
        counters: every reported count is at most the true count and at
        least the true count minus n/(capacity+1); heavy hitters appear.
        """
        rng = random.Random(3)
        agg = makeAggregation("topk", {"k": 5, "capacity": 20})
        values = [int(rng.paretovariate(1.2)) for _ in range(5000)]
        true = Counter(values)
        half = len(values) // 2
        for acc in (agg.fold(values), agg.merge(agg.fold(values[:half]), agg.fold(values[half:]))):
            top = agg.value(acc)
            self.assertEqual(len(top), 5)
            slack = len(values) / 21
            for item, count in top:
                self.assertLessEqual(count, true[item])
                self.assertGreaterEqual(count, true[item] - slack)
            heavy = {item for item, c in true.items() if c > slack}
            self.assertLessEqual(heavy, set(acc_items(acc)))

    def test_nonNumbersRefused(self) -> None:
        """
        Numeric aggregations refuse booleans, strings and non-finite floats;
        distinct and top-k take any JSON scalar.
        """
        for fn in ("sum", "min", "max", "avg", "quantiles"):
            agg = makeAggregation(fn, PARAMS[fn])
            self.assertEqual(
                [agg.accepts(v) for v in (1, 1.5, True, "1", None, math.inf, 2**63)],
                [True, True] + [False] * 5,
            )
        for fn in ("distinct", "topk"):
            agg = makeAggregation(fn, PARAMS[fn])
            self.assertEqual([agg.accepts(v) for v in (1, "a", True, None, [1])], [True] * 4 + [False])


def acc_items(acc: dict[str, int]) -> list[Any]:
    return [json.loads(k) for k in acc]
