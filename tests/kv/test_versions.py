"""
Record versions: the hybrid logical clock and the merge order.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.kv.memory import MemoryStore
from suite.kv.versions import (
    COUNTER_BITS,
    ZERO,
    HybridClock,
    Version,
    describe,
    mergeRecords,
    newer,
    versionAt,
)

versions = st.builds(
    Version,
    st.integers(0, 6).map(lambda ms: ms << COUNTER_BITS) | st.integers(0, 1 << 20),
    st.integers(0, 3),
)
payloads = st.none() | st.sampled_from([b"", b"a", b"b", b"ab"])
records = st.lists(
    st.builds(
        lambda kind, key, payload, v: (kind, key, payload, v.hlc, v.origin),
        st.sampled_from(["v", "s", "l"]),
        st.sampled_from([b"x", b"y", b"z"]),
        payloads,
        versions,
    ),
    max_size=12,
)


class HybridClockTests(SynchronousTestCase):
    """
    L{HybridClock} stamps strictly growing versions.
    """

    def test_wallClock(self) -> None:
        """
        A stamp is the wall clock in milliseconds (counter 0) when the clock
        moved on, with the clock's origin.
        """
        clock = Clock()
        clock.advance(12.345)
        hlc = HybridClock(clock.seconds, origin=9)
        v = hlc.stamp()
        self.assertEqual((v.wallMs, v.counter, v.origin), (12345, 0, 9))
        self.assertEqual(v, versionAt(12.345, 9))
        clock.advance(0.001)
        self.assertEqual(hlc.stamp().wallMs, 12346)

    def test_stillAndBackwards(self) -> None:
        """
        When the clock stands still or goes back, the counter grows; when
        it overflows the stamp runs a millisecond ahead; stamps never repeat.
        """
        clock = Clock()
        clock.advance(100)
        hlc = HybridClock(clock.seconds)
        first = hlc.stamp()
        second = hlc.stamp()
        self.assertEqual((second.wallMs, second.counter), (first.wallMs, 1))
        hlc.seconds = lambda: 50.0
        third = hlc.stamp()
        self.assertEqual((third.wallMs, third.counter), (first.wallMs, 2))
        hlc.last = (first.wallMs << COUNTER_BITS) | ((1 << COUNTER_BITS) - 1)
        over = hlc.stamp()
        self.assertEqual((over.wallMs, over.counter), (first.wallMs + 1, 0))

    def test_observe(self) -> None:
        """
        After observing a version from a clock ahead, stamps are newer than it.
        """
        hlc = HybridClock(lambda: 10.0, origin=1)
        ahead = versionAt(3600.0, 2)
        hlc.observe(ahead.hlc)
        hlc.observe(versionAt(1.0, 3).hlc)
        self.assertGreater(hlc.stamp(), ahead)

    def test_describe(self) -> None:
        """
        describe() shows the stamp, its UTC time, counter and origin in hex.
        """
        self.assertEqual(
            describe(Version((1_700_000_000_123 << COUNTER_BITS) | 5, 0xAB)),
            {
                "hlc": (1_700_000_000_123 << COUNTER_BITS) | 5,
                "time": "2023-11-14T22:13:20.123Z",
                "counter": 5,
                "origin": "00000000000000ab",
            },
        )


class MergeTests(SynchronousTestCase):
    """
    Merging copies of records keeps, per record, the greatest copy: a
    commutative, associative and idempotent operation, which the stores'
    imports follow.
    """

    def test_order(self) -> None:
        """
        A newer version wins whatever the payload; at equal versions (only
        records from before versions) a live record beats a tombstone and
        then the greater payload wins.
        """
        old, new = Version(1, 1), Version(2, 0)
        self.assertTrue(newer(None, new, b"x", old))
        self.assertFalse(newer(b"x", old, None, new))
        self.assertTrue(newer(b"a", ZERO, None, ZERO))
        self.assertTrue(newer(b"b", ZERO, b"a", ZERO))
        self.assertFalse(newer(b"a", ZERO, b"a", ZERO))

    @given(records, records)
    def test_commutative(self, a: Any, b: Any) -> None:
        """
        merge(a, b) == merge(b, a).
        """
        self.assertEqual(mergeRecords(a, b), mergeRecords(b, a))

    @given(records, records, records)
    def test_associative(self, a: Any, b: Any, c: Any) -> None:
        """
        merge(merge(a, b), c) == merge(a, merge(b, c)).
        """

        def flat(merged: Any) -> list[Any]:
            return [(k, key, p, v.hlc, v.origin) for (k, key), (p, v) in merged.items()]

        self.assertEqual(mergeRecords(flat(mergeRecords(a, b)), c), mergeRecords(a, flat(mergeRecords(b, c))))

    @given(records)
    def test_idempotent(self, a: Any) -> None:
        """
        merge(a, a) == merge(a).
        """
        self.assertEqual(mergeRecords(a, a), mergeRecords(a))

    @settings(max_examples=60)
    @given(records, records, st.randoms(use_true_random=False))
    def test_storesFollow(self, a: Any, b: Any, rnd: Any) -> None:
        """
        A store importing both collections, in any order and interleaving,
        holds exactly their merge (tombstones included).
        """
        want = mergeRecords(a, b)
        mixed = list(a) + list(b)
        rnd.shuffle(mixed)
        store = MemoryStore(Clock())
        store.importRecords(mixed[: len(mixed) // 2])
        store.importRecords(mixed)
        got = {
            (k, key): (p, Version(h, o)) for k, key, p, h, o in self.successResultOf(store.exportRange(0, 0))
        }
        self.assertEqual(got, want)
