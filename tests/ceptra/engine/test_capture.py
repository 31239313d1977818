"""
Snapshots captured now and encoded later (L{PartitionEngine.capture},
L{PartitionMachine.captureSnapshot}): the bytes equal what C{snapshot()}
gave at the capture, whatever was applied between the capture and the
encoding; restored and fed the rest of the log, they continue identically.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.ceptra.engine import PartitionEngine, encodeEvents, encodeRules
from suite.ceptra.engine import engine as engineModule
from suite.ceptra.engine.engine import _packPieces
from suite.ceptra.machine import PartitionMachine, eventsEntry, rulesEntry
from suite.raft.interfaces import IRaftSnapshotCapture
from suite.raft.sessions import SessionApplier
from tests.ceptra.engine.test_determinism import logs, replay, rulesDoc
from tests.ceptra.engine.test_oracle import FUNCTIONS


def packed(value: Any) -> bytes:
    out: list[bytes] = []
    _packPieces(value, out)
    return b"".join(out)


class CaptureTests(SynchronousTestCase):
    """
    A capture is the snapshot of its moment.
    """

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(entries=logs(), cut=st.integers(0, 100))
    def test_captureIsTheSnapshotOfItsMoment(self, entries: list[bytes], cut: int) -> None:
        """
        Captured after entry C{cut} and encoded after every other entry was
        applied, the bytes equal C{snapshot()} at C{cut}; restored, they hold
        the state hash at C{cut} (none of the later entries) and, fed the
        later entries, reach the hash of the uninterrupted engine (none
        lost).
        """
        _, hashes = replay(entries)
        cut = cut % (len(entries) + 1)
        eng = PartitionEngine(partition=2)
        for i, entry in enumerate(entries[:cut]):
            eng.apply(i + 1, entry)
        expected = eng.snapshot()
        encode = eng.capture()
        for i in range(cut, len(entries)):
            eng.apply(i + 1, entries[i])
        data = encode()
        self.assertEqual(data, expected)
        restored = PartitionEngine.restore(2, data)
        if cut:
            self.assertEqual(restored.stateHash(), hashes[cut - 1])
        for i in range(cut, len(entries)):
            restored.apply(i + 1, entries[i])
        self.assertEqual(restored.stateHash(), eng.stateHash())
        self.assertEqual(eng.stateHash(), hashes[-1])

    def test_everyWindowKind(self) -> None:
        """
        Seeded streams over each window kind (late events retracting emitted
        windows, purges, sketches): captures taken every few entries and
        encoded only at the end each equal the snapshot of their moment.
        """
        rng = random.Random(11)
        kinds: list[dict[str, Any]] = [
            {"kind": "sliding", "size_ms": 40},
            {"kind": "tumbling", "size_ms": 20},
            {"kind": "hopping", "size_ms": 30, "hop_ms": 10},
            {"kind": "session", "gap_ms": 15},
        ]
        for win in kinds:
            doc = rulesDoc(
                1,
                win,
                {"watermark_delay_ms": 5, "allowed_lateness_ms": 30, "late_events": "retract"},
                FUNCTIONS,
            )
            eng = PartitionEngine(partition=1)
            eng.apply(1, encodeRules(doc))
            pending: list[tuple[bytes, Any]] = []
            for b in range(40):
                batch = [
                    {
                        "event_id": f"e{b}-{i}",
                        "key": rng.choice("abc"),
                        "ts": b * 7 + rng.randrange(-20, 5),
                        "x": rng.randrange(100),
                        "t": rng.choice("AB"),
                        "user": rng.choice("uvw"),
                    }
                    for i in range(rng.randrange(1, 8))
                ]
                eng.apply(b + 2, encodeEvents(batch))
                if b % 3 == 0:
                    pending.append((eng.snapshot(), eng.capture()))
            for expected, encode in pending:
                self.assertEqual(encode(), expected, win)

    def test_machineCapture(self) -> None:
        """
        The partition machine provides L{IRaftSnapshotCapture}; its capture
        equals its snapshot at the capture, with entries applied between.
        """
        m = PartitionMachine("p3")
        verifyObject(IRaftSnapshotCapture, m)
        m.apply(1, rulesEntry(rulesDoc(1, {"kind": "sliding", "size_ms": 40}, {}, FUNCTIONS[:2])))
        m.apply(2, eventsEntry([{"event_id": "a", "key": "k", "ts": 5, "fields": {"x": 1}}]))
        expected = m.snapshot()
        before = m.stateHash()
        encode = m.captureSnapshot()
        m.apply(3, eventsEntry([{"event_id": "b", "key": "k", "ts": 9, "fields": {"x": 2}}]))
        data = encode()
        self.assertEqual(data, expected)
        # The format of one msgpack map, as ever.
        engine = PartitionEngine.restore(m.number, msgpack.unpackb(data)["engine"])
        self.assertEqual(
            data,
            msgpack.packb(
                {
                    "v": 2,
                    "engine": engine.snapshot(),
                    "rulesVersion": 1,
                    "rulesDigest": m.rulesDigest,
                    "lastIndex": 2,
                },
                use_bin_type=True,
            ),
        )
        copy = PartitionMachine("p3")
        copy.restore(data)
        self.assertEqual(copy.stateHash(), before)
        self.assertEqual(copy.events, 1)

    def test_snapshotNeverPaces(self) -> None:
        """
        C{snapshot()} of the machine and of its session applier (the node's
        own snapshot, on the reactor thread) never sleeps; only the
        encoding of a capture (in a thread) paces itself.  The clock of the
        pacer advances a second at each reading: every pause is due.
        """
        slept: list[float] = []
        readings = iter(range(10**9))

        class Clock:
            @staticmethod
            def perf_counter() -> float:
                return float(next(readings))

            @staticmethod
            def sleep(seconds: float) -> None:
                slept.append(seconds)

        self.patch(engineModule, "time", Clock)
        m = PartitionMachine("p3")
        m.apply(1, rulesEntry(rulesDoc(1, {"kind": "sliding", "size_ms": 40}, {}, FUNCTIONS[:2])))
        m.apply(2, eventsEntry([{"event_id": "a", "key": "k", "ts": 5, "fields": {"x": 1}}]))
        applier = SessionApplier(m, 10)
        expected = m.snapshot()
        wrapped = applier.snapshot()
        self.assertEqual(slept, [])
        self.assertEqual(m.captureSnapshot()(), expected)
        self.assertNotEqual(slept, [])
        del slept[:]
        self.assertEqual(applier.captureSnapshot()(), wrapped)
        self.assertNotEqual(slept, [])

    def test_piecesEqualOneCall(self) -> None:
        """
        Packing in pieces gives msgpack's bytes for one call: long lists of
        scalars, pairs and lists (array headers of every width), nested
        dicts, empty containers.
        """
        rng = random.Random(3)
        values: list[Any] = [
            {},
            [],
            list(range(15)),
            list(range(16)),
            list(range(70_000)),
            [(i, f"id{i}") for i in range(9000)],
            [[i, [i] * rng.randrange(40)] for i in range(3000)],
            {"a": [[["x"] * 5000]], "b": {"c": list(range(100)), "d": None}, "e": b"bytes"},
            [{"k": list(range(rng.randrange(3000)))} for _ in range(20)],
        ]
        for value in values:
            self.assertEqual(packed(value), msgpack.packb(value, use_bin_type=True))

    def test_beyondMsgpackCaptured(self) -> None:
        """
        State msgpack cannot carry (an integer past 64 bits) is captured and
        encoded as the zlib canonical JSON C{snapshot()} gives.
        """
        doc = {
            "version": 1,
            "rules": [
                {
                    "name": "p",
                    "type": "pattern",
                    "group_by": ["key"],
                    "first": {"t": "A"},
                    "then": {"t": "B"},
                    "within_ms": 10**6,
                }
            ],
        }
        eng = PartitionEngine(partition=1)
        eng.apply(1, encodeRules(doc))
        eng.apply(2, encodeEvents([{"event_id": "a", "key": "k", "ts": 5, "t": "A", "big": 2**70}]))
        expected = eng.snapshot()
        self.assertNotEqual(expected[:4], b"CEPS")
        encode = eng.capture()
        eng.apply(3, encodeEvents([{"event_id": "b", "key": "k", "ts": 6, "t": "C"}]))
        self.assertEqual(encode(), expected)
