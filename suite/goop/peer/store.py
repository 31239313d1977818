"""
C{data.db}: a peer's SQLite database and the operations of the data
protocol (C{/goop/data/1.0.0}).

Every table carries C{_id}, C{_owner} (the peer id that wrote the row) and
C{_created}.  A table's permission decides what other peers may do:

  - C{owner-only}: nothing (the default);
  - C{peers-read}: tables, describe, query;
  - C{peers-write}: also insert, and update/delete of the rows they own.

Other peers are rate-limited (20 operations/s, bursts of 100, per peer).
Schema operations (create-table, add-column, drop-column, rename-table,
delete-table) are for the owner only.  SQL text is built only from validated
identifiers and fixed keywords; every value is a bound parameter.  All
statements run on the database thread.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from suite.goop.limits import TokenBucket
from suite.goop.lua.engine import LuaEngine
from suite.goop.sqlthread import SQLiteThread
from suite.sqlitetx import rollbackAfterError

__all__ = ["DataStore", "DataError", "PERMISSIONS", "validIdentifier", "OPS"]

IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
TYPES = {"TEXT", "INTEGER", "REAL", "BLOB", "NUMERIC"}
PERMISSIONS = ("owner-only", "peers-read", "peers-write")
RESERVED = {"_id", "_owner", "_created"}
#: The stamp columns; their defaults let a Lua INSERT that names neither
#: pass the NOT NULL checks, and the Lua worker's triggers then stamp them.
OWNER_COLUMNS = '"_owner" TEXT NOT NULL DEFAULT \'\', "_created" REAL NOT NULL DEFAULT 0'
_OLD_OWNER_COLUMNS = '"_owner" TEXT NOT NULL, "_created" REAL NOT NULL'


def addStampDefaults(conn: sqlite3.Connection) -> int:
    """
    Give tables created before the stamp columns had defaults those defaults
    (an edit of the stored schema that changes no row); return how many.
    """
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql LIKE ?",
        (f"%{_OLD_OWNER_COLUMNS}%",),
    ).fetchall()
    if not rows:
        return 0
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.execute("BEGIN")
    try:
        conn.execute("PRAGMA writable_schema = ON")
        for name, sql in rows:
            conn.execute(
                "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
                (sql.replace(_OLD_OWNER_COLUMNS, OWNER_COLUMNS, 1), name),
            )
        conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
        conn.execute("PRAGMA writable_schema = OFF")
        conn.execute("COMMIT")
    except BaseException:  # undone and re-raised
        rollbackAfterError(conn)
        raise
    return len(rows)


MAX_LIMIT = 1000
MAX_VALUE_CHARS = 1024 * 1024
META = "_goop_tables"
OPS = (
    "tables",
    "describe",
    "query",
    "insert",
    "update",
    "delete",
    "create-table",
    "add-column",
    "drop-column",
    "rename-table",
    "delete-table",
    "lua-call",
    "lua-list",
)


class DataError(Exception):
    """A request was refused; the message says why."""


def validIdentifier(name: Any) -> str:
    if not isinstance(name, str) or not IDENT.match(name) or name.lower().startswith("sqlite"):
        raise DataError(f"invalid identifier: {str(name)[:70]!r}")
    return name


def q(name: str) -> str:
    if name in RESERVED:
        return '"' + name + '"'
    return '"' + validIdentifier(name) + '"'


def _value(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
        raise DataError("integers must fit in 64 bits")
    if isinstance(v, str) and len(v) > MAX_VALUE_CHARS:
        raise DataError(f"strings are limited to {MAX_VALUE_CHARS} characters")
    if isinstance(v, float) and not math.isfinite(v):
        # 1e400, NaN, Infinity parse in Python; stored, they read back as
        # "Inf" text or as JSON no other client can parse
        raise DataError("numbers must be finite")
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    raise DataError("values must be strings, numbers, booleans or null")


class DataStore:
    """The data operations over one C{data.db}."""

    def __init__(
        self,
        reactor: Any,
        path: str,
        ownerId: str,
        lua: LuaEngine | None = None,
        opsPerSecond: float = 20.0,
        burst: float = 100.0,
    ) -> None:
        self.reactor = reactor
        # The peer's private tables: readable by its user only.
        # durable: an acknowledged write (a peer's insert, the owner's edit)
        # is on disk, not only in the WAL's page cache
        self.db = SQLiteThread(reactor, path, name="goop-data", createMode=0o600, durable=True)
        self.ownerId = ownerId
        self.lua = lua
        self.limiter = TokenBucket(opsPerSecond, burst)

    def start(self) -> Deferred[None]:
        d = self.db.start()
        d.addCallback(
            lambda _: self.db.run(
                lambda c: c.execute(
                    f"CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, permission TEXT NOT NULL)"
                )
            )
        )
        d.addCallback(lambda _: self.db.run(addStampDefaults))
        d.addCallback(lambda _: None)
        return d

    def stop(self) -> Deferred[None]:
        return self.db.stop()

    def ping(self) -> Deferred[bool]:
        return self.db.run(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)

    def execute(self, caller: str, request: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """Run one request for C{caller}; always fires with {ok, data|error}."""
        op = request.get("op")
        if caller != self.ownerId and not self.limiter.allow(caller, self.reactor.seconds()):
            from twisted.internet.defer import succeed

            return succeed({"ok": False, "error": "rate limit exceeded for this peer"})
        if op in ("lua-call", "lua-list"):
            return self._lua(caller, op, request)

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            try:
                return {"ok": True, "data": runOp(conn, self.ownerId, caller, request)}
            except DataError as e:
                return {"ok": False, "error": str(e)}
            except sqlite3.Error as e:
                return {"ok": False, "error": f"database: {e}"}
            except (ValueError, TypeError, OverflowError) as e:
                return {"ok": False, "error": f"invalid request: {e}"}

        return self.db.run(work)

    def _lua(self, caller: str, op: str, request: dict[str, Any]) -> Deferred[dict[str, Any]]:
        from twisted.internet.defer import succeed

        if self.lua is None:
            return succeed({"ok": False, "error": "no Lua functions on this peer"})
        if op == "lua-list":
            return succeed({"ok": True, "data": self.lua.list()})
        fn = request.get("function")
        if not isinstance(fn, str):
            return succeed({"ok": False, "error": "invalid function name"})
        d = self.lua.call(caller, fn, request.get("params"))
        return d.addCallbacks(
            lambda r: {"ok": True, "data": r}, lambda f: {"ok": False, "error": f.getErrorMessage()}
        )


def _permission(conn: sqlite3.Connection, table: str) -> str:
    row = conn.execute(f"SELECT permission FROM {META} WHERE name = ?", (table,)).fetchone()
    if row is None:
        raise DataError(f"no such table: {table}")
    return str(row[0])


def _columns(conn: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    return [{"name": r[1], "type": r[2]} for r in conn.execute(f"PRAGMA table_info({q(table)})").fetchall()]


def _where(conn: sqlite3.Connection, table: str, request: dict[str, Any]) -> tuple[str, list[Any]]:
    known = {c["name"] for c in _columns(conn, table)}
    clauses: list[str] = []
    args: list[Any] = []
    if request.get("id") is not None:
        rid = request["id"]
        if not isinstance(rid, int) or isinstance(rid, bool):
            raise DataError("id must be an integer")
        clauses.append('"_id" = ?')
        args.append(rid)
    where = request.get("where")
    if where is not None:
        if not isinstance(where, dict):
            raise DataError("where must be an object of column: value (equality)")
        for col, val in where.items():
            if col not in known:
                raise DataError(f"no such column: {str(col)[:70]}")
            clauses.append(f"{q(col)} IS ?")
            args.append(_value(val))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _columnSpecs(columns: Any) -> list[tuple[str, str]]:
    if isinstance(columns, dict):
        items = list(columns.items())
    elif isinstance(columns, list):
        items = []
        for c in columns:
            if isinstance(c, str):
                items.append((c, "TEXT"))
            elif isinstance(c, dict):
                items.append((c.get("name"), c.get("type", "TEXT")))
            else:
                raise DataError("columns must be names or {name, type}")
    else:
        raise DataError("columns are required")
    out = []
    for name, typ in items:
        validIdentifier(name)
        if not isinstance(typ, str) or typ.upper() not in TYPES:
            raise DataError(f"column {name}: type must be one of {', '.join(sorted(TYPES))}")
        out.append((name, typ.upper()))
    if len(out) > 200:
        raise DataError("too many columns")
    return out


def runOp(conn: sqlite3.Connection, ownerId: str, caller: str, request: dict[str, Any]) -> Any:
    """Execute one data operation (on the database thread)."""
    op = request.get("op")
    isOwner = caller == ownerId
    if op == "tables":
        rows = conn.execute(f"SELECT name, permission FROM {META} ORDER BY name").fetchall()
        return [{"name": r[0], "permission": r[1]} for r in rows if isOwner or r[1] != "owner-only"]
    op = str(op)
    handler = _HANDLERS.get(op)
    if handler is None:
        raise DataError(f"unknown op: {str(op)[:40]}")
    table = validIdentifier(request.get("table"))
    if op == "create-table":
        if not isOwner:
            raise DataError("permission denied: only the owner may create tables")
        return handler(conn, table, caller, request)
    perm = _permission(conn, table)
    need = _NEEDS[op]
    if not isOwner:
        if (
            need == "owner"
            or (need == "write" and perm != "peers-write")
            or (need == "read" and perm == "owner-only")
        ):
            raise DataError(f"permission denied: {op} on {table} ({perm})")
    return handler(conn, table, caller, request, isOwner)


def _describe(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any], isOwner: bool) -> Any:
    return {"name": table, "permission": _permission(conn, table), "columns": _columns(conn, table)}


def _query(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any], isOwner: bool) -> Any:
    known = [c["name"] for c in _columns(conn, table)]
    cols = r.get("columns") or known
    if not isinstance(cols, list) or any(c not in known for c in cols):
        raise DataError("columns must name existing columns")
    where, args = _where(conn, table, r)
    limit, offset = r.get("limit", 100), r.get("offset", 0)
    if (
        not isinstance(limit, int)
        or not isinstance(offset, int)
        or isinstance(limit, bool)
        or isinstance(offset, bool)
        or limit < 0
        or offset < 0
    ):
        raise DataError("limit and offset must be non-negative integers")
    if limit > MAX_LIMIT:
        # Refused rather than cut: a caller paging by the rows it got back
        # would take a short page for the end of the table.
        raise DataError(f"limit must be at most {MAX_LIMIT} (page with offset)")
    sql = f'SELECT {", ".join(q(c) for c in cols)} FROM {q(table)}{where} ORDER BY "_id" LIMIT ? OFFSET ?'
    rows = conn.execute(sql, [*args, limit, offset]).fetchall()
    return [dict(zip(cols, row, strict=False)) for row in rows]


def _dataColumns(conn: sqlite3.Connection, table: str, data: Any) -> tuple[list[str], list[Any]]:
    if not isinstance(data, dict) or not data:
        raise DataError("data must be a non-empty object")
    known = {c["name"] for c in _columns(conn, table)}
    cols, vals = [], []
    for k, v in data.items():
        if k in RESERVED:
            raise DataError(f"{k} is set by the peer, not by the caller")
        if k not in known:
            raise DataError(f"no such column: {str(k)[:70]}")
        cols.append(k)
        vals.append(_value(v))
    return cols, vals


def _insert(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any], isOwner: bool) -> Any:
    cols, vals = _dataColumns(conn, table, r.get("data"))
    sql = (
        f'INSERT INTO {q(table)} ("_owner", "_created", {", ".join(q(c) for c in cols)}) '
        f"VALUES (?, ?, {', '.join('?' for _ in cols)})"
    )
    cur = conn.execute(sql, [caller, time.time(), *vals])
    return {"id": cur.lastrowid}


def _mine(where: str, args: list[Any], caller: str, isOwner: bool) -> tuple[str, list[Any]]:
    if isOwner:
        return where, args
    clause = '"_owner" = ?'
    return (where + " AND " + clause if where else " WHERE " + clause), [*args, caller]


def _update(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any], isOwner: bool) -> Any:
    cols, vals = _dataColumns(conn, table, r.get("data"))
    where, args = _where(conn, table, r)
    if not where:
        raise DataError("update needs id or where")
    where, args = _mine(where, args, caller, isOwner)
    cur = conn.execute(
        f"UPDATE {q(table)} SET {', '.join(q(c) + ' = ?' for c in cols)}{where}", [*vals, *args]
    )
    return {"changed": cur.rowcount}


def _delete(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any], isOwner: bool) -> Any:
    where, args = _where(conn, table, r)
    if not where:
        raise DataError("delete needs id or where")
    where, args = _mine(where, args, caller, isOwner)
    cur = conn.execute(f"DELETE FROM {q(table)}{where}", args)
    return {"deleted": cur.rowcount}


def _createTable(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any]) -> Any:
    specs = _columnSpecs(r.get("columns"))
    data = r.get("data") or {}
    perm = data.get("permission", "owner-only") if isinstance(data, dict) else "owner-only"
    if perm not in PERMISSIONS:
        raise DataError(f"permission must be one of {', '.join(PERMISSIONS)}")
    if any(n in RESERVED for n, _ in specs):
        raise DataError("_id, _owner and _created are added by the peer")
    if conn.execute(f"SELECT 1 FROM {META} WHERE name = ?", (table,)).fetchone():
        raise DataError(f"table exists: {table}")
    cols = ", ".join(f"{q(n)} {t}" for n, t in specs)
    conn.execute("BEGIN")
    try:
        conn.execute(
            f'CREATE TABLE {q(table)} ("_id" INTEGER PRIMARY KEY AUTOINCREMENT, {OWNER_COLUMNS}'
            f"{', ' + cols if cols else ''})"
        )
        conn.execute(f"INSERT INTO {META}(name, permission) VALUES (?, ?)", (table, perm))
        conn.execute("COMMIT")
    except BaseException:  # undone and re-raised
        rollbackAfterError(conn)
        raise
    return {"name": table, "permission": perm}


def _addColumn(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any], isOwner: bool) -> Any:
    for n, t in _columnSpecs(r.get("columns")):
        conn.execute(f"ALTER TABLE {q(table)} ADD COLUMN {q(n)} {t}")
    return _columns(conn, table)


def _dropColumn(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any], isOwner: bool) -> Any:
    for n, _ in _columnSpecs(r.get("columns")):
        if n in RESERVED:
            raise DataError(f"{n} cannot be dropped")
        conn.execute(f"ALTER TABLE {q(table)} DROP COLUMN {q(n)}")
    return _columns(conn, table)


def _renameTable(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any], isOwner: bool) -> Any:
    data = r.get("data") or {}
    new = validIdentifier(data.get("name") if isinstance(data, dict) else None)
    conn.execute("BEGIN")
    try:
        conn.execute(f"ALTER TABLE {q(table)} RENAME TO {q(new)}")
        conn.execute(f"UPDATE {META} SET name = ? WHERE name = ?", (new, table))
        conn.execute("COMMIT")
    except BaseException:  # undone and re-raised
        rollbackAfterError(conn)
        raise
    return {"name": new}


def _deleteTable(conn: sqlite3.Connection, table: str, caller: str, r: dict[str, Any], isOwner: bool) -> Any:
    conn.execute("BEGIN")
    try:
        conn.execute(f"DROP TABLE {q(table)}")
        conn.execute(f"DELETE FROM {META} WHERE name = ?", (table,))
        conn.execute("COMMIT")
    except BaseException:  # undone and re-raised
        rollbackAfterError(conn)
        raise
    return {"deleted": table}


_HANDLERS: dict[str, Callable[..., Any]] = {
    "describe": _describe,
    "query": _query,
    "insert": _insert,
    "update": _update,
    "delete": _delete,
    "create-table": _createTable,
    "add-column": _addColumn,
    "drop-column": _dropColumn,
    "rename-table": _renameTable,
    "delete-table": _deleteTable,
}
_NEEDS = {
    "describe": "read",
    "query": "read",
    "insert": "write",
    "update": "write",
    "delete": "write",
    "add-column": "owner",
    "drop-column": "owner",
    "rename-table": "owner",
    "delete-table": "owner",
}
