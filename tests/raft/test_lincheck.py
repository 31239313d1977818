"""
The linearizability checker itself.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.lincheck import Operation, checkHistory, checkKey


def op(client: str, kind: str, value: object, call: float, ret: float, result: object) -> Operation:
    return Operation(client, "k", kind, value, call, ret, result)


class CheckerTests(SynchronousTestCase):
    """
    Known linearizable and non-linearizable histories.
    """

    def test_sequential(self) -> None:
        """
        A read after a write sees it.
        """
        self.assertTrue(checkKey([op("a", "put", "1", 0, 1, None), op("b", "get", None, 2, 3, "1")]))

    def test_staleRead(self) -> None:
        """
        A read that starts after a write completed cannot miss it.
        """
        self.assertFalse(checkKey([op("a", "put", "1", 0, 1, None), op("b", "get", None, 2, 3, None)]))

    def test_concurrentEitherWay(self) -> None:
        """
        A read concurrent with a write may see the old or the new value.
        """
        for seen in (None, "1"):
            self.assertTrue(checkKey([op("a", "put", "1", 0, 5, None), op("b", "get", None, 1, 2, seen)]))

    def test_noTimeTravel(self) -> None:
        """
        Two reads in sequence cannot see new then old.
        """
        h = [
            op("a", "put", "1", 0, 10, None),
            op("b", "get", None, 1, 2, "1"),
            op("c", "get", None, 3, 4, None),
        ]
        self.assertFalse(checkKey(h))

    def test_unknownOutcome(self) -> None:
        """
        A write whose client gave up may or may not have happened.
        """
        pending = Operation("a", "k", "append", "x", 0)
        self.assertTrue(checkKey([pending, op("b", "get", None, 3, 4, "x")]))
        self.assertTrue(checkKey([Operation("a", "k", "append", "x", 0), op("b", "get", None, 3, 4, None)]))
        self.assertFalse(checkKey([Operation("a", "k", "append", "x", 0), op("b", "get", None, 3, 4, "y")]))

    def test_perKey(self) -> None:
        """
        L{checkHistory} names the keys that fail.
        """
        h = [
            Operation("a", "x", "put", "1", 0, 1, None),
            Operation("b", "x", "get", None, 2, 3, "1"),
            Operation("a", "y", "put", "1", 0, 1, None),
            Operation("b", "y", "get", None, 2, 3, "2"),
        ]
        self.assertEqual(checkHistory(h), ["y"])

    def test_delete(self) -> None:
        """
        A delete returns the previous value and leaves the key empty.
        """
        self.assertTrue(
            checkKey(
                [
                    op("a", "put", "1", 0, 1, None),
                    op("a", "delete", None, 2, 3, "1"),
                    op("b", "get", None, 4, 5, None),
                ]
            )
        )
        self.assertFalse(
            checkKey(
                [
                    op("a", "put", "1", 0, 1, None),
                    op("a", "delete", None, 2, 3, "1"),
                    op("b", "get", None, 4, 5, "1"),
                ]
            )
        )
        self.assertFalse(checkKey([op("a", "put", "1", 0, 1, None), op("a", "delete", None, 2, 3, None)]))

    def test_cas(self) -> None:
        """
        A cas succeeds only on the expected value and then installs the new one.
        """
        self.assertTrue(
            checkKey(
                [
                    op("a", "put", "1", 0, 1, None),
                    op("a", "cas", ["1", "2"], 2, 3, True),
                    op("b", "get", None, 4, 5, "2"),
                ]
            )
        )
        # A successful cas on a value that was never there.
        self.assertFalse(checkKey([op("a", "put", "1", 0, 1, None), op("a", "cas", ["0", "2"], 2, 3, True)]))
        # A failed cas changes nothing.
        self.assertFalse(
            checkKey(
                [
                    op("a", "put", "1", 0, 1, None),
                    op("a", "cas", ["0", "2"], 2, 3, False),
                    op("b", "get", None, 4, 5, "2"),
                ]
            )
        )
        # A cas that failed although the value was expected.
        self.assertFalse(checkKey([op("a", "put", "1", 0, 1, None), op("a", "cas", ["1", "2"], 2, 3, False)]))

    def test_concurrentCas(self) -> None:
        """
        Of two concurrent cas on the same value, one wins; both winning is not linearizable.
        """
        first = op("a", "cas", [None, "a"], 0, 5, True)
        loser = op("b", "cas", [None, "b"], 1, 4, False)
        self.assertTrue(checkKey([first, loser, op("c", "get", None, 6, 7, "a")]))
        both = op("b", "cas", [None, "b"], 1, 4, True)
        self.assertFalse(checkKey([first, both]))

    def test_unknownCas(self) -> None:
        """
        A cas whose outcome is unknown may or may not have taken effect.
        """
        pending = Operation("a", "k", "cas", [None, "x"], 0)
        self.assertTrue(checkKey([pending, op("b", "get", None, 3, 4, "x")]))
        self.assertTrue(
            checkKey([Operation("a", "k", "cas", [None, "x"], 0), op("b", "get", None, 3, 4, None)])
        )
