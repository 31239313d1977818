"""
Rolling back a SQLite transaction after an error without hiding the error.

A failed statement can end the transaction itself (SQLite rolls back on
C{SQLITE_FULL}, C{SQLITE_IOERR}, C{SQLITE_BUSY} and friends, and a failed
C{COMMIT} may leave it open or closed); a blind C{ROLLBACK} then raises
"cannot rollback - no transaction is active", which replaced the error that
mattered.  L{rollbackAfterError} rolls back only a transaction that is
still open and logs (never raises) a rollback that fails, so the caller's
C{raise} re-raises the original error.
"""

from __future__ import annotations

import sqlite3

from twisted.logger import Logger

__all__ = ["rollbackAfterError"]

log = Logger()


def rollbackAfterError(conn: sqlite3.Connection) -> None:
    """
    Roll back C{conn}'s open transaction, if any; call it from an C{except}
    block that re-raises.
    """
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        log.failure("rolling back a failed SQLite transaction failed")
