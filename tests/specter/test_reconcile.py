"""
The pieces of reconciliation by version: what to send and ask for, chunks,
and paging through a range's entries.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.kv.memory import MemoryStore
from suite.kv.records import RING_SIZE, Record, recordHash, ringId
from suite.specter.chord import reconcile
from suite.specter.chord.reconcile import RecordServer, chunked, compare, entry


class CompareTests(SynchronousTestCase):
    """
    L{compare} decides, per record, which end holds the copy that wins.
    """

    def test_sendAndWant(self) -> None:
        """
        Ours newer or missing there: sent; theirs newer or missing here:
        asked for; equal: neither; equal versions with different contents:
        both ways.
        """
        mine: dict[tuple[str, bytes], Record] = {
            ("v", b"newer-here"): ("v", b"newer-here", b"a", 9, 1),
            ("v", b"only-here"): ("v", b"only-here", b"a", 1, 1),
            ("v", b"same"): ("v", b"same", b"a", 5, 1),
            ("v", b"older-here"): ("v", b"older-here", b"a", 2, 1),
            ("v", b"tie"): ("v", b"tie", b"a", 0, 0),
        }
        theirs = {
            ("v", b"newer-here"): (8, 1, 0),
            ("v", b"same"): (5, 1, recordHash("v", b"same", b"a", 5, 1)),
            ("v", b"older-here"): (3, 0, 0),
            ("v", b"only-there"): (1, 1, 0),
            ("v", b"tie"): (0, 0, recordHash("v", b"tie", b"b", 0, 0)),
        }
        send, want = compare(mine, theirs)
        self.assertEqual(sorted(r[1] for r in send), [b"newer-here", b"only-here", b"tie"])
        self.assertEqual(sorted(k for _, k in want), [b"older-here", b"only-there", b"tie"])


class ChunkTests(SynchronousTestCase):
    """
    L{chunked} keeps calls under a count and a byte budget.
    """

    def test_budgets(self) -> None:
        """
        Chunks hold at most C{most} records and about C{budget} bytes, a
        record larger than the budget travels alone, and nothing is lost.
        """
        recs = [("v", b"k%d" % i, b"x" * (100 if i != 7 else 5000), 1, 1) for i in range(20)]
        chunks = list(chunked(recs, 1000, 4))
        self.assertEqual([r for c in chunks for r in c], recs)
        self.assertTrue(all(len(c) <= 4 for c in chunks))
        self.assertIn([recs[7]], chunks)


class VersionsPagingTests(SynchronousTestCase):
    """
    C{versions} answers a range's entries in pages that end between ring
    positions.
    """

    def test_pages(self) -> None:
        """
        With a small budget the pages, followed from each C{next}, list
        every record of the range exactly once, in ring order, for a plain
        and a wrapping range; the kinds of one key stay on one page.
        """
        store = MemoryStore(Clock())
        for i in range(300):
            key = b"key-%d" % i
            store.put(key, b"v")
            if i % 3 == 0:
                store.prefixAppend(key, b"child")
        holder = RecordServer(store)
        self.patch(reconcile, "ENTRY_BUDGET", 400)
        for low, high in ((RING_SIZE // 4, RING_SIZE // 4 * 3), (RING_SIZE // 4 * 3, RING_SIZE // 4), (5, 5)):
            want = sorted(
                (entry(r) for r in self.successResultOf(store.exportRange(low, high))),
                key=lambda e: (e[0], e[1]),
            )
            got: list[Any] = []
            start = None
            pages = 0
            while True:
                entries, nxt = self.successResultOf(
                    Deferred.fromCoroutine(holder.remote_versions(low, high, start))
                )
                pages += 1
                if entries and nxt is not None:
                    self.assertEqual(ringId(entries[-1][1]), nxt)
                got.extend(entries)
                if nxt is None:
                    break
                start = nxt
            self.assertGreater(pages, 3)
            self.assertEqual(sorted(got, key=lambda e: (e[0], e[1])), want)
            offsets = [(ringId(e[1]) - low - 1) % RING_SIZE for e in got]
            self.assertEqual(offsets, sorted(offsets))
