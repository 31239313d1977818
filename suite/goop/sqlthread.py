"""
SQLite off the reactor: one dedicated thread owns one connection.

Every statement runs on that thread (C{run} returns a Deferred), so the
reactor never blocks on disk I/O and the connection is never shared between
threads.  Databases are opened in WAL mode.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from suite.sqlitetx import rollbackAfterError

__all__ = ["SQLiteThread"]

T = TypeVar("T")


class SQLiteThread:
    """
    A single worker thread holding a SQLite connection to C{path}.
    """

    def __init__(
        self,
        reactor: Any,
        path: str,
        name: str = "goop-sqlite",
        busyTimeout: float = 5.0,
        createMode: int | None = None,
        durable: bool = False,
    ) -> None:
        self.reactor = reactor
        #: C{synchronous=FULL}: a commit that returned survives a power loss
        #: (C{NORMAL}, the default here, survives a crash of the process only)
        self.durable = durable
        self.path = path
        #: permissions of the database file when this creates it (SQLite
        #: gives its -wal and -shm files the same); None leaves it to the umask
        self.createMode = createMode
        self.busyTimeout = busyTimeout
        self.pool = ThreadPool(1, 1, name=name)
        self.conn: sqlite3.Connection | None = None
        self._started = False

    def start(self) -> Deferred[None]:
        """Start the thread and open the database (WAL)."""
        if not self._started:
            self.pool.start()
            self._started = True
        return self.run(lambda conn: None)

    def _open(self) -> sqlite3.Connection:
        if self.conn is None:
            if self.createMode is not None and not os.path.exists(self.path):
                try:
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.createMode))
                except FileExistsError:
                    pass
            conn = sqlite3.connect(
                self.path, timeout=self.busyTimeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL" if self.durable else "PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self.conn = conn
        return self.conn

    def runSync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run C{fn(conn)} on the calling thread (only from the worker)."""
        return fn(self._open())

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        """Run C{fn(conn)} on the database thread."""
        return deferToThreadPool(self.reactor, self.pool, lambda: fn(self._open()))

    def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        """Run C{fn(conn)} inside BEGIN IMMEDIATE ... COMMIT on the thread."""

        def work(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:  # undone and re-raised
                # Undo and re-raise: the caller's Deferred fails with the
                # error of C{fn} (or of the COMMIT), never with a failing
                # ROLLBACK's, and no transaction is left open.
                rollbackAfterError(conn)
                raise
            return result

        return self.run(work)

    def stop(self) -> Deferred[None]:
        """Close the connection and stop the thread."""

        def close() -> None:
            # Never opens the database just to close it (it may not open).
            if self.conn is not None:
                self.conn.close()
                self.conn = None

        if not self._started:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        d2: Deferred[None] = deferToThreadPool(self.reactor, self.pool, close)

        def stopPool(result: object) -> object:
            self._started = False
            self.pool.stop()
            return result

        d2.addBoth(stopPool)
        return d2
