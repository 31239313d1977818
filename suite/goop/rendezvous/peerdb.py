"""
The shared peer database (C{presence.peer_db_path}).

Several hub instances point at one SQLite file (WAL mode).  Every second
each instance, in one transaction on its database thread, writes the peers
and events it accepted since the last sync and reads back what the other
instances wrote: peers updated since its previous read and events it has not
seen.  Expired rows are deleted on the way.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

from twisted.internet.defer import Deferred

from suite.goop.sqlthread import SQLiteThread
from suite.sqlitetx import rollbackAfterError

__all__ = ["SharedPeerDB", "SyncResult"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
  peer_id TEXT PRIMARY KEY, record TEXT NOT NULL, ts REAL NOT NULL,
  expires REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS peers_updated ON peers(updated);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, instance TEXT NOT NULL, kind TEXT NOT NULL,
  record TEXT NOT NULL, created REAL NOT NULL);
"""

EVENT_RETENTION_SECONDS = 600.0

SyncResult = tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]


class SharedPeerDB:
    """One instance's connection to the shared peer DB."""

    def __init__(self, reactor: Any, path: str) -> None:
        self.db = SQLiteThread(reactor, path, name="goop-peerdb")
        self.instance = uuid.uuid4().hex
        self.pendingPeers: dict[str, dict[str, Any]] = {}
        self.pendingLeaves: set[str] = set()
        self.pendingEvents: list[tuple[str, dict[str, Any]]] = []
        self.lastEventId = 0
        self.lastRead = 0.0

    def start(self, now: float) -> Deferred[list[dict[str, Any]]]:
        """Create the schema; return the live peers already in the file."""

        def init(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
            self.lastEventId = int(row[0])
            self.lastRead = now
            rows = conn.execute("SELECT record FROM peers WHERE expires > ?", (now,)).fetchall()
            return [json.loads(r[0]) for r in rows]

        d = self.db.start()
        return d.addCallback(lambda _: self.db.run(init))

    def stop(self) -> Deferred[None]:
        return self.db.stop()

    def record(self, kind: str, record: dict[str, Any]) -> None:
        """Queue a local change for the next sync."""
        pid = record["peer_id"]
        if kind == "leave":
            self.pendingPeers.pop(pid, None)
            self.pendingLeaves.add(pid)
        else:
            self.pendingLeaves.discard(pid)
            self.pendingPeers[pid] = record
        if kind in ("join", "update", "leave"):
            self.pendingEvents.append((kind, record))

    def ping(self) -> Deferred[bool]:
        """A health probe: one trivial query on the database thread."""
        return self.db.run(lambda conn: conn.execute("SELECT 1").fetchone()[0] == 1)

    def sync(self, now: float) -> Deferred[SyncResult]:
        """Write pending changes and read the other instances' changes."""
        peers, self.pendingPeers = self.pendingPeers, {}
        leaves, self.pendingLeaves = self.pendingLeaves, set()
        events, self.pendingEvents = self.pendingEvents, []
        since = self.lastRead - 5.0

        def work(conn: sqlite3.Connection) -> SyncResult:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO peers(peer_id, record, ts, expires, updated) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(peer_id) DO UPDATE SET record=excluded.record, ts=excluded.ts, "
                    "expires=excluded.expires, updated=excluded.updated WHERE excluded.ts >= peers.ts",
                    [(pid, json.dumps(r), r["ts"], r["expires"], now) for pid, r in peers.items()],
                )
                conn.executemany("DELETE FROM peers WHERE peer_id = ?", [(pid,) for pid in leaves])
                conn.executemany(
                    "INSERT INTO events(instance, kind, record, created) VALUES (?,?,?,?)",
                    [(self.instance, k, json.dumps(r), now) for k, r in events],
                )
                conn.execute("DELETE FROM peers WHERE expires <= ?", (now,))
                conn.execute("DELETE FROM events WHERE created < ?", (now - EVENT_RETENTION_SECONDS,))
                rows = conn.execute(
                    "SELECT record FROM peers WHERE updated > ? AND expires > ?", (since, now)
                ).fetchall()
                evrows = conn.execute(
                    "SELECT id, instance, kind, record FROM events WHERE id > ? ORDER BY id",
                    (self.lastEventId,),
                ).fetchall()
                conn.execute("COMMIT")
            except BaseException:  # undone and re-raised
                rollbackAfterError(conn)
                raise
            if evrows:
                self.lastEventId = int(evrows[-1][0])
            self.lastRead = now
            remote = [(r[2], json.loads(r[3])) for r in evrows if r[1] != self.instance]
            return [json.loads(r[0]) for r in rows], remote

        return self.db.run(work)
