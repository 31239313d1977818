"""
One Lua call inside a worker process (see L{suite.goop.lua.worker}).

A fresh lupa runtime per call, inside a sandbox without C{io}, C{os},
C{require}, C{debug}, C{package}, C{load}, C{loadstring}, C{dofile}; Python
objects handed to Lua expose no attributes.  An instruction-count hook stops
Lua code at the deadline (the sandbox's C{pcall} cannot swallow it); lupa's
C{max_memory} allocator caps every allocation of the Lua state, including
those made by C functions (C{string.rep}, table growth, concatenation).
Work that the hook cannot see (a C-level pattern match, a finalizer run at
collection) is bounded by the parent, which kills the worker at the
wall-clock limit.

The API is C{goop.db.query/scalar/exec}, C{goop.json}, C{goop.kv},
C{goop.log} (and C{print}) and C{goop.http} (SSRF-guarded).
C{goop.db.query}/C{scalar} are read-only; C{goop.db.exec} may write only the
tables the script declares with C{-- @writes a, b}; schema changes, ATTACH,
PRAGMA and Goop's own tables are refused by a SQLite authorizer.  Rows a
script inserts are stamped with C{_owner} (the calling peer) and
C{_created}, as rows written over the data protocol are.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

from suite.goop.lua.errors import MEMORY_LIMIT, TIME_LIMIT, LuaError

__all__ = ["Sandbox", "LuaError", "TIME_LIMIT", "MEMORY_LIMIT", "MAX_LOG_LINES"]

MAX_DEPTH = 32
MAX_KV_KEYS = 10000
MAX_LOG_LINES = 100

#: Emits one log line of the running function: C{emit(level, text)}.
LogSink = Callable[[str, str], None]

#: Builds the sandbox in a fresh runtime and returns the function that runs
#: one call in it.  It runs before any job is known (the worker prepares the
#: next call's runtime while it waits), so the call's deadline check and API
#: dispatcher are handed to the returned function, not to this chunk.
#: Nothing here is copied: the runtime is the call's alone, so its C{string},
#: C{table}, C{math} and C{utf8} tables are given to the script as they are
#: (C{string.dump} removed from the real table, hence also from the string
#: metatable's C{__index}).
SETUP = r"""
local dispatch, deadline
local function fn(what) return function(...) return dispatch(what, ...) end end
local api = {
  db = {query = fn("db.query"), scalar = fn("db.scalar"), exec = fn("db.exec")},
  json = {encode = fn("json.encode"), decode = fn("json.decode")},
  kv = {get = fn("kv.get"), set = fn("kv.set"), delete = fn("kv.delete")},
  log = {debug = fn("log.debug"), info = fn("log.info"), warn = fn("log.warn"), error = fn("log.error")},
  http = {get = fn("http.get"), post = fn("http.post")},
}
local sethook, pcall_, xpcall_, error_, pack, unpack_ = debug.sethook, pcall, xpcall, error, table.pack, table.unpack
local load_, type_ = load, type
local dead = false
local function stop() dead = true; error_("time limit exceeded", 0) end
local function hook() if dead or deadline() then stop() end end
string.dump = nil
local env = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, select = select,
  tonumber = tonumber, tostring = tostring, type = type, rawequal = rawequal, rawlen = rawlen,
  rawget = rawget, rawset = rawset, setmetatable = setmetatable, getmetatable = getmetatable,
  string = string, table = table, math = math, utf8 = utf8, unpack = table.unpack,
  goop = api, print = api.log.info,
}
env.pcall = function(...) local r = pack(pcall_(...)); if dead then stop() end; return unpack_(r, 1, r.n) end
env.xpcall = function(...) local r = pack(xpcall_(...)); if dead then stop() end; return unpack_(r, 1, r.n) end
env._G = env
return function(source, name, deadline_, dispatch_, caller, params)
  deadline, dispatch = deadline_, dispatch_
  local request = {caller = caller, ["function"] = name, params = params}
  local chunk, err = load_(source, "=" .. name, "t", env)
  if not chunk then error_(err, 0) end
  sethook(hook, "", 1000)
  chunk()
  if type_(env.call) ~= "function" then error_("the script defines no call(request) function", 0) end
  return env.call(request)
end
"""


#: Rows one goop.db.query may return.
MAX_QUERY_ROWS = 1000


def _denied(e: sqlite3.Error, rule: str) -> str:
    """SQLite's error, with the rule spelled out when the authorizer refused."""
    text = str(e)
    return f"{text} ({rule})" if text == "not authorized" else text


def _denyAttributes(obj: Any, name: Any, setting: bool) -> Any:
    raise AttributeError("attribute access is not allowed in the sandbox")


class Sandbox:
    """
    Runs every call in a runtime of its own, never used before or after: the
    setup chunk is compiled once (as Lua bytecode) and each runtime is built,
    with its sandbox, by L{prepare} (the worker calls it while it waits for
    the next job) or at the start of L{run}.
    """

    def __init__(self, dataPath: str, maxMemory: int) -> None:
        import lupa

        self.dataPath = dataPath
        self.maxMemory = maxMemory
        boot = lupa.LuaRuntime(register_eval=False, register_builtins=False, encoding=None)
        # Stripped of debug information: a quarter smaller and quicker to load.
        self.setupCode: bytes = boot.execute("return string.dump(function(...) " + SETUP + " end, true)")
        self._ro: sqlite3.Connection | None = None
        self._next: tuple[Any, Any] | None = None

    def readConnection(self) -> sqlite3.Connection:
        """The worker's read-only connection to C{data.db} (opened on first use)."""
        if self._ro is None:
            self._ro = sqlite3.connect(f"file:{self.dataPath}?mode=ro", uri=True, timeout=2.0)
        return self._ro

    def _fresh(self) -> tuple[Any, Any]:
        """A new runtime and the function running one call in its sandbox."""
        import lupa

        lua = lupa.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            max_memory=self.maxMemory,
            attribute_filter=_denyAttributes,
        )
        setup = lua.globals().load(self.setupCode, "=setup", "b")
        if lupa.lua_type(setup) != "function":
            raise LuaError(f"sandbox setup: {setup!r}"[:500])
        return lua, setup()

    def prepare(self) -> None:
        """Build the next call's runtime now, so that the call does not wait for it."""
        if self._next is None:
            self._next = self._fresh()

    def run(self, job: dict[str, Any], emit: LogSink) -> dict[str, Any]:
        """
        Run one call described by C{job} (C{caller}, C{function}, C{source},
        C{params}, C{writes}, C{timeout}); return C{{"ok": True, "result": ...}}
        or C{{"ok": False, "error": reason}}.  The runtime is closed (and its
        finalizers run) before this returns, so all of the call's work happens
        while the parent's wall-clock timer is running; it is never used again.
        """
        import lupa

        deadline = time.monotonic() + float(job["timeout"])
        api: _Api | None = None
        lua = call = result = None
        try:
            # Taken out of the sandbox before anything runs in it: whatever
            # happens next, no other call gets this runtime.
            (lua, call), self._next = self._next or self._fresh(), None
            api = _Api(
                lua,
                self.dataPath,
                str(job["caller"]),
                str(job["function"]),
                set(job.get("writes") or ()),
                deadline,
                emit,
                self.readConnection,
            )
            result = call(
                job["source"],
                job["function"],
                lambda: time.monotonic() > deadline,
                api.dispatch,
                job["caller"],
                api.toLua(job["params"]),
            )
            return {"ok": True, "result": api.fromLua(result)}
        except lupa.LuaMemoryError:
            return {"ok": False, "error": MEMORY_LIMIT}
        except lupa.LuaError as e:
            msg = str(e)
            if "not enough memory" in msg:
                return {"ok": False, "error": MEMORY_LIMIT}
            return {"ok": False, "error": msg.split("\nstack traceback:")[0][:500]}
        except LuaError as e:
            return {"ok": False, "error": str(e)[:500]}
        except MemoryError:
            return {"ok": False, "error": MEMORY_LIMIT}
        except Exception as e:
            # The user-script boundary: whatever the call raised, the worker
            # answers and serves the next call.  An error that is no Lua
            # error is ours (or a value we cannot convert): its traceback goes
            # to stderr, which the parent logs, as well as to the caller.
            import traceback

            sys.stderr.write(
                f"Lua call {str(job['function'])[:100]!r} failed in Python:\n{traceback.format_exc()}"
            )
            return {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
        finally:
            if api is not None:
                api.close()
                # Drop every reference so lua_close (and any __gc finalizer) runs now.
                api.lua = None
            call = result = None
            del lua


class _Api:
    """The C{goop} table of one call."""

    def __init__(
        self,
        lua: Any,
        dataPath: str,
        caller: str,
        function: str,
        writes: set[str],
        deadline: float,
        emit: LogSink,
        readConnection: Callable[[], sqlite3.Connection],
    ) -> None:
        self.readConnection = readConnection
        self.lua = lua
        self.dataPath = dataPath
        self.caller = caller
        self.function = function
        self.writes = writes
        self.deadline = deadline
        self.emit = emit
        self.logged = 0
        self._ro: sqlite3.Connection | None = None
        self._rw: sqlite3.Connection | None = None

    def close(self) -> None:
        if self._ro is not None:
            self._ro.set_authorizer(None)
            self._ro.set_progress_handler(None, 0)
        if self._rw is not None:
            self._rw.close()
        self._ro = self._rw = None

    # conversions
    def toLua(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise LuaError("value nested too deeply")
        if isinstance(value, dict):
            return self.lua.table_from({str(k): self.toLua(v, depth + 1) for k, v in value.items()})
        if isinstance(value, (list, tuple)):
            return self.lua.table_from([self.toLua(v, depth + 1) for v in value])
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value

    def fromLua(self, value: Any, depth: int = 0) -> Any:
        import lupa

        if depth > MAX_DEPTH:
            raise LuaError("value nested too deeply")
        if lupa.lua_type(value) == "table":
            items = list(value.items())
            keys = [k for k, _ in items]
            if (
                keys
                and all(isinstance(k, int) for k in keys)
                and sorted(keys) == list(range(1, len(keys) + 1))
            ):
                return [self.fromLua(v, depth + 1) for _, v in sorted(items, key=lambda kv: kv[0])]
            return {str(k): self.fromLua(v, depth + 1) for k, v in items}
        if lupa.lua_type(value) is not None:
            return None
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value

    def _args(self, a: tuple[Any, ...]) -> list[Any]:
        out = [self.fromLua(x) for x in a]
        for x in out:
            if not (x is None or isinstance(x, (str, int, float, bool))):
                raise LuaError("SQL arguments must be scalars")
            if isinstance(x, float) and not math.isfinite(x):
                raise LuaError("SQL arguments must be finite numbers (not 1/0 or 0/0)")
        return out

    def dispatch(self, what: str, *a: Any) -> Any:
        """The one Python entry of the C{goop} table (built in Lua by the setup chunk)."""
        if what.startswith("log."):
            self._log(what[4:], a)
            return None
        if what == "db.query":
            return self.toLua(self._query(str(a[0]), self._args(a[1:])))
        if what == "db.scalar":
            return self._scalar(str(a[0]), self._args(a[1:]))
        if what == "db.exec":
            return self.toLua(self._exec(str(a[0]), self._args(a[1:])))
        if what == "json.encode":
            self._dataOnly(what, a[0] if a else None, verb="encode")
            try:
                return json.dumps(self.fromLua(a[0] if a else None), allow_nan=False)
            except ValueError:
                raise LuaError("goop.json.encode: numbers must be finite (not 1/0 or 0/0)") from None
        if what == "json.decode":
            return self.toLua(json.loads(str(a[0] if a else "")))
        if what == "kv.get":
            return self._kvGet(self._kvKey(what, a))
        if what == "kv.set":
            key = self._kvKey(what, a)
            value = a[1] if len(a) > 1 else None
            self._dataOnly(what, value)
            return self._kvSet(key, self.fromLua(value))
        if what == "kv.delete":
            return self._kvSet(self._kvKey(what, a), None)
        if what == "http.get":
            return self._http("GET", str(a[0] if a else ""), None, a[1] if len(a) > 1 else None)
        if what == "http.post":
            return self._http(
                "POST", str(a[0] if a else ""), a[1] if len(a) > 1 else None, a[2] if len(a) > 2 else None
            )
        raise LuaError(f"no such API: {what}")

    # database
    def _conn(self, write: bool) -> sqlite3.Connection:
        if write:
            if self._rw is None:
                self._rw = sqlite3.connect(self.dataPath, timeout=2.0, isolation_level=None)
                self._stampRows(self._rw)
                self._rw.set_authorizer(self._authorize)
                self._rw.set_progress_handler(self._overdue, 10000)
            return self._rw
        if self._ro is None:
            # The read-only connection is the worker's, reused from call to
            # call; this call's authorizer and deadline are set on it here and
            # removed in close().
            self._ro = self.readConnection()
            self._ro.set_authorizer(self._authorizeRead)
            self._ro.set_progress_handler(self._overdue, 10000)
        return self._ro

    def _stampRows(self, conn: sqlite3.Connection) -> None:
        """
        Temporary triggers (this connection only) stamping C{_owner} with the
        calling peer and C{_created} with the time on every row the script
        inserts into a declared table, as the data protocol does.
        """
        caller = self.caller.replace("'", "''")
        for i, table in enumerate(sorted(self.writes)):
            cols = {r[1] for r in conn.execute("SELECT * FROM pragma_table_info(?)", (table,)).fetchall()}
            if not {"_owner", "_created"} <= cols:
                continue
            name = '"' + table.replace('"', '""') + '"'
            conn.execute(
                f'CREATE TEMP TRIGGER "goop_stamp_{i}" AFTER INSERT ON main.{name} BEGIN '
                f"UPDATE {name} SET \"_owner\" = '{caller}', "
                f"\"_created\" = (julianday('now') - 2440587.5) * 86400.0 WHERE rowid = NEW.rowid; END"
            )

    def _overdue(self) -> int:
        # SQLite work does not count Lua instructions; stop a long query at the deadline.
        return 1 if time.monotonic() > self.deadline else 0

    def _authorizeRead(self, action: int, a: Any, b: Any, dbName: Any, trigger: Any) -> int:
        if action in (
            sqlite3.SQLITE_SELECT,
            sqlite3.SQLITE_READ,
            sqlite3.SQLITE_FUNCTION,
            sqlite3.SQLITE_RECURSIVE,
        ):
            if action == sqlite3.SQLITE_READ and str(a).startswith("_goop"):
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    def _authorize(self, action: int, a: Any, b: Any, dbName: Any, trigger: Any) -> int:
        if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE):
            table = str(a)
            allowed = table in self.writes and not table.lower().startswith(("_goop", "sqlite_"))
            return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_TRANSACTION:
            return sqlite3.SQLITE_OK
        return self._authorizeRead(action, a, b, dbName, trigger)

    def _query(self, sql: str, a: list[Any]) -> list[dict[str, Any]]:
        try:
            cur = self._conn(False).execute(sql, a)
            try:
                cols = [d[0] for d in cur.description or ()]
                rows = cur.fetchmany(MAX_QUERY_ROWS + 1)
                if len(rows) > MAX_QUERY_ROWS:
                    # refused rather than cut short: a count or a sum over
                    # the first rows would look like the whole answer
                    raise LuaError(
                        f"goop.db.query: more than {MAX_QUERY_ROWS} rows; add a LIMIT (and OFFSET)"
                    )
                return [dict(zip(cols, row, strict=False)) for row in rows]
            finally:
                cur.close()  # no read snapshot outlives the query
        except sqlite3.Error as e:
            raise LuaError(f"goop.db.query: {_denied(e, 'it only reads')}") from None

    def _scalar(self, sql: str, a: list[Any]) -> Any:
        rows = self._query(sql, a)
        return next(iter(rows[0].values())) if rows else None

    def _exec(self, sql: str, a: list[Any]) -> dict[str, Any]:
        try:
            cur = self._conn(True).execute(sql, a)
            return {"changes": cur.rowcount, "last_id": cur.lastrowid}
        except sqlite3.Error as e:
            raise LuaError(
                f"goop.db.exec: {_denied(e, 'it writes only to the tables of the -- @writes line; no schema changes, ATTACH or PRAGMA')}"
            ) from None

    # kv (namespaced per function, in data.db)
    @staticmethod
    def _kvKey(what: str, a: tuple[Any, ...]) -> str:
        """The key argument: a string or a number, never a table or nil."""
        key = a[0] if a else None
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if isinstance(key, bool) or not isinstance(key, (str, int, float)):
            raise LuaError(f"goop.{what}: the key must be a string")
        return str(key)

    def _dataOnly(self, what: str, value: Any, depth: int = 0, verb: str = "store") -> None:
        """
        Refuse a value holding a function, coroutine or userdata: stored, it
        would silently become nil (and a set a delete).
        """
        import lupa

        kind = lupa.lua_type(value)
        if kind is None:
            return
        if kind != "table":
            raise LuaError(f"goop.{what}: cannot {verb} a {kind}")
        if depth > MAX_DEPTH:
            raise LuaError("value nested too deeply")
        for k, v in value.items():
            self._dataOnly(what, k, depth + 1, verb)
            self._dataOnly(what, v, depth + 1, verb)

    def _kvConn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.dataPath, timeout=2.0, isolation_level=None)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _goop_kv (ns TEXT, key TEXT, value TEXT, PRIMARY KEY (ns, key))"
        )
        return conn

    def _kvGet(self, key: str) -> Any:
        conn = self._kvConn()
        try:
            row = conn.execute(
                "SELECT value FROM _goop_kv WHERE ns = ? AND key = ?", (self.function, key)
            ).fetchone()
        finally:
            conn.close()
        return self.toLua(json.loads(row[0])) if row else None

    def _kvSet(self, key: str, value: Any) -> bool:
        text = json.dumps(value)
        if len(text) > 64 * 1024 or len(key) > 256:
            raise LuaError("goop.kv: key or value too large")
        conn = self._kvConn()
        try:
            if value is None:
                conn.execute("DELETE FROM _goop_kv WHERE ns = ? AND key = ?", (self.function, key))
            else:
                count = conn.execute(
                    "SELECT COUNT(*) FROM _goop_kv WHERE ns = ?", (self.function,)
                ).fetchone()[0]
                exists = conn.execute(
                    "SELECT 1 FROM _goop_kv WHERE ns = ? AND key = ?", (self.function, key)
                ).fetchone()
                if count >= MAX_KV_KEYS and not exists:
                    raise LuaError(f"goop.kv: more than {MAX_KV_KEYS} keys")
                conn.execute("INSERT OR REPLACE INTO _goop_kv VALUES (?, ?, ?)", (self.function, key, text))
        finally:
            conn.close()
        return True

    def _log(self, level: str, parts: tuple[Any, ...]) -> None:
        self.logged += 1
        if self.logged > MAX_LOG_LINES:
            if self.logged == MAX_LOG_LINES + 1:
                self.emit("warn", f"more than {MAX_LOG_LINES} log lines in one call; the rest are dropped")
            return
        text = " ".join(str(self.fromLua(p)) for p in parts)[:2000]
        self.emit(level, text)

    def _http(self, method: str, url: str, body: Any, opts: Any) -> Any:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise LuaError(TIME_LIMIT)
        name = f"goop.http.{method.lower()}"
        options = self.fromLua(opts) if opts is not None else {}
        if not isinstance(options, dict):
            raise LuaError(f"{name}: opts must be a table such as {{headers = {{...}}}}")
        headers = options.get("headers")
        if headers is not None and (
            not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
        ):
            raise LuaError(f"{name}: opts.headers must be a table of name = string value")
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        if body is not None and (isinstance(body, bool) or not isinstance(body, (str, int, float))):
            raise LuaError(f"{name}: the body must be a string (goop.json.encode a table)")
        data = None if body is None else str(body).encode()
        # At the first goop.http call of this worker: most functions never
        # call out, and a worker then loads no socket, address or URL code
        # (docs/performance.md, Goop resident memory).
        from suite.goop.lua.ssrf import SSRFError, guardedRequest, systemResolver

        try:
            status, hdrs, content = guardedRequest(
                method,
                url,
                data,
                headers if isinstance(headers, dict) else None,
                min(5.0, remaining),
                systemResolver,
            )
        except SSRFError as e:
            raise LuaError(f"goop.http: {e}") from None
        except (OSError, ValueError) as e:
            # ValueError: a port out of range, a header value with a newline
            raise LuaError(f"goop.http: {e}") from None
        return self.toLua({"status": status, "headers": hdrs, "body": content.decode("utf-8", "replace")})
