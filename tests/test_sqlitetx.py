"""
Tests for L{suite.sqlitetx} and the transactions built on it
(L{suite.goop.sqlthread.SQLiteThread.transaction}).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from suite.goop.sqlthread import SQLiteThread
from suite.sqlitetx import rollbackAfterError


def _connect() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER"
        " REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
    )
    return conn


class _FailingRollback:
    """A connection whose open transaction cannot be rolled back."""

    in_transaction = True

    def execute(self, sql: str) -> None:
        raise sqlite3.OperationalError(f"{sql}: disk I/O error")


class RollbackAfterErrorTests(SynchronousTestCase):
    """
    L{rollbackAfterError} undoes an open transaction and never replaces the
    error being handled.
    """

    def test_rollsBackOpenTransaction(self) -> None:
        """
        An open transaction is rolled back: its writes are gone.
        """
        conn = _connect()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO parent VALUES (1)")
        rollbackAfterError(conn)
        self.assertFalse(conn.in_transaction)
        self.assertEqual(conn.execute("SELECT count(*) FROM parent").fetchone()[0], 0)

    def test_noTransactionNoError(self) -> None:
        """
        With no open transaction (SQLite ended it, or it committed) nothing
        is run and nothing raised, so the original error is what escapes.
        """
        conn = _connect()
        with capturedLogs() as events:
            with self.assertRaises(ValueError):
                try:
                    conn.execute("BEGIN")
                    conn.execute("COMMIT")
                    raise ValueError("the error that matters")
                except BaseException:
                    rollbackAfterError(conn)
                    raise
        self.assertEqual(events, [])

    def test_failedCommitLeavesNoTransaction(self) -> None:
        """
        A COMMIT refused by a deferred foreign key leaves the transaction
        open; after L{rollbackAfterError} it is closed and the next
        transaction can begin.
        """
        conn = _connect()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO child VALUES (1, 42)")
        with self.assertRaises(sqlite3.IntegrityError):
            try:
                conn.execute("COMMIT")
            except BaseException:
                rollbackAfterError(conn)
                raise
        self.assertFalse(conn.in_transaction)
        conn.execute("BEGIN")
        conn.execute("COMMIT")

    def test_failingRollbackIsLogged(self) -> None:
        """
        A rollback that fails is logged as a failure, not raised.
        """
        with capturedLogs() as events:
            rollbackAfterError(_FailingRollback())  # type: ignore[arg-type]
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.critical)
        self.assertIn("disk I/O error", events[0]["log_failure"].getErrorMessage())
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)


class _InlinePool:
    """A thread pool that runs work at once on the calling thread."""

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], None], fn: Callable[[], Any]) -> None:
        try:
            result = fn()
        except BaseException:
            from twisted.python.failure import Failure

            onResult(False, Failure())
        else:
            onResult(True, result)


class _InlineReactor:
    def callFromThread(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)


class SQLiteThreadTransactionTests(SynchronousTestCase):
    """
    L{SQLiteThread.transaction} fails with the error of the work (or of the
    COMMIT), rolls back, and leaves no transaction open.
    """

    def setUp(self) -> None:
        self.db = SQLiteThread(_InlineReactor(), ":memory:")
        self.db.pool = _InlinePool()  # type: ignore[assignment]
        self.db.runSync(
            lambda conn: conn.executescript(
                "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER"
                " REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
            )
        )

    def count(self) -> int:
        return int(self.db.runSync(lambda conn: conn.execute("SELECT count(*) FROM parent").fetchone()[0]))

    def test_errorRollsBack(self) -> None:
        """
        The work's error fails the Deferred and its writes are undone.
        """

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO parent VALUES (1)")
            raise ValueError("bad row")

        self.failureResultOf(self.db.transaction(work), ValueError)
        self.assertEqual(self.count(), 0)

    def test_errorAfterTransactionEnded(self) -> None:
        """
        Work that fails after its transaction already ended fails with its
        own error, not "cannot rollback - no transaction is active".
        """

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("COMMIT")
            raise ValueError("the error that matters")

        failure = self.failureResultOf(self.db.transaction(work), ValueError)
        self.assertEqual(failure.getErrorMessage(), "the error that matters")

    def test_failedCommit(self) -> None:
        """
        A refused COMMIT fails the Deferred and leaves no transaction open:
        the next transaction succeeds.
        """
        self.failureResultOf(
            self.db.transaction(lambda conn: conn.execute("INSERT INTO child VALUES (1, 42)")),
            sqlite3.IntegrityError,
        )
        self.successResultOf(self.db.transaction(lambda conn: conn.execute("INSERT INTO parent VALUES (1)")))
        self.assertEqual(self.count(), 1)
