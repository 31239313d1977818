"""
Lua data functions: C{lua/<name>.lua} defines C{call(request)}.

Each call runs in a fresh lupa runtime on a worker thread (never the
reactor), inside a sandbox without C{io}, C{os}, C{require}, C{debug},
C{package}, C{load}, C{loadstring}, C{dofile}.  Limits: 5 s (an instruction
count hook checks the deadline and the sandbox's C{pcall} cannot swallow the
timeout), 10 MB of Lua memory (lupa C{max_memory}), and rate limits of 30
calls/min per peer, 120/min overall, and C{@rate_limit N} per function per
peer.  The API is C{goop.db.query/scalar/exec}, C{goop.json},
C{goop.kv}, C{goop.log} and C{goop.http} (SSRF-guarded).

C{goop.db.query}/C{scalar} are read-only; C{goop.db.exec} may write only the
tables the script declares with C{-- @writes a, b}; schema changes, ATTACH,
PRAGMA and Goop's own tables are refused by a SQLite authorizer.
"""

from __future__ import annotations

import collections
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from suite.goop.interfaces import ILuaEngine
from suite.goop.lua.ssrf import SSRFError, guardedRequest, systemResolver

__all__ = ["LuaEngine", "LuaError", "RateLimits"]

log = Logger()
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
RATE = re.compile(r"@rate_limit\s+(\d+)")
WRITES = re.compile(r"@writes\s+([A-Za-z0-9_, ]+)")
MAX_SOURCE = 256 * 1024
MAX_DEPTH = 32
MAX_KV_KEYS = 10000

SETUP = r"""
local source, name, deadline, api, request = ...
local sethook, pcall_, xpcall_, error_, pack, unpack_ = debug.sethook, pcall, xpcall, error, table.pack, table.unpack
local dead = false
local function stop() dead = true; error_("timeout: the function ran longer than the limit", 0) end
local function hook() if dead or deadline() then stop() end end
local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end
local env = {}
for _, k in ipairs({"assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
                    "rawequal", "rawlen", "rawget", "rawset", "setmetatable", "getmetatable"}) do
  env[k] = _G[k]
end
env.string = copy(string); env.string.dump = nil
env.table = copy(table); env.math = copy(math); env.utf8 = copy(utf8)
env.unpack = table.unpack
env.pcall = function(...) local r = pack(pcall_(...)); if dead then stop() end; return unpack_(r, 1, r.n) end
env.xpcall = function(...) local r = pack(xpcall_(...)); if dead then stop() end; return unpack_(r, 1, r.n) end
env.goop = api
env.print = api.log.info
env._G = env
local chunk, err = load(source, "=" .. name, "t", env)
if not chunk then error_(err, 0) end
sethook(hook, "", 1000)
chunk()
if type(env.call) ~= "function" then error_("the script defines no call(request) function", 0) end
local result = env.call(request)
sethook()
return result
"""


class LuaError(Exception):
    """A Lua call was refused or failed; the message says why."""


class RateLimits:
    """Sliding one-minute windows keyed by peer, globally, and per function."""

    def __init__(self, clock: Any, perPeer: int = 30, overall: int = 120, window: float = 60.0) -> None:
        self.clock = clock
        self.perPeer = perPeer
        self.overall = overall
        self.window = window
        self.hits: dict[str, collections.deque[float]] = {}

    def _count(self, key: str, now: float) -> collections.deque[float]:
        q = self.hits.setdefault(key, collections.deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def check(self, peer: str, function: str, functionLimit: int | None) -> str | None:
        """Record a call, or return why it is refused."""
        now = self.clock.seconds()
        checks = [("*", self.overall, "overall"), (f"peer:{peer}", self.perPeer, "per peer")]
        if functionLimit is not None:
            checks.append((f"fn:{function}:{peer}", functionLimit, f"{function} @rate_limit"))
        queues = []
        for key, limit, what in checks:
            q = self._count(key, now)
            if len(q) >= limit:
                return f"rate limit exceeded ({what}: {limit}/min)"
            queues.append(q)
        for q in queues:
            q.append(now)
        if len(self.hits) > 10000:
            for k in [k for k, q in self.hits.items() if not q]:
                del self.hits[k]
        return None


def _denyAttributes(obj: Any, name: Any, setting: bool) -> Any:
    raise AttributeError("attribute access is not allowed in the sandbox")


@implementer(ILuaEngine)
class LuaEngine:
    """Runs the peer's Lua functions."""

    def __init__(
        self,
        reactor: Any,
        luaDir: str,
        dataPath: str,
        timeout: float = 5.0,
        maxMemory: int = 10 * 1024 * 1024,
        limits: RateLimits | None = None,
        resolver: Callable[[str, int], list[str]] = systemResolver,
        threads: int = 4,
    ) -> None:
        self.reactor = reactor
        self.luaDir = luaDir
        self.dataPath = dataPath
        self.timeout = timeout
        self.maxMemory = maxMemory
        self.limits = limits or RateLimits(reactor)
        self.resolver = resolver
        self.pool = ThreadPool(0, threads, name="goop-lua")
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.pool.start()
            self.started = True

    def stop(self) -> None:
        if self.started:
            self.pool.stop()
            self.started = False

    def list(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.luaDir))
        except OSError:
            return []
        return [n[:-4] for n in names if n.endswith(".lua") and NAME.match(n[:-4])]

    def _source(self, function: str) -> str:
        if not isinstance(function, str) or not NAME.match(function):
            raise LuaError("invalid function name")
        path = os.path.join(self.luaDir, function + ".lua")
        try:
            with open(path, encoding="utf-8") as f:
                src = f.read(MAX_SOURCE + 1)
        except OSError:
            raise LuaError(f"no such function: {function}") from None
        if len(src) > MAX_SOURCE:
            raise LuaError("script too large")
        return src

    def call(self, caller: str, function: str, params: Any) -> Deferred[Any]:
        """Run C{function} for C{caller}; fires with the result or fails with L{LuaError}."""
        try:
            src = self._source(function)
        except LuaError as e:
            return fail(e)
        m = RATE.search(src)
        refused = self.limits.check(caller, function, int(m.group(1)) if m else None)
        if refused:
            return fail(LuaError(refused))
        writes = set()
        w = WRITES.search(src)
        if w:
            writes = {t.strip() for t in w.group(1).split(",") if t.strip()}
        self.start()
        return deferToThreadPool(
            self.reactor, self.pool, self.runBlocking, caller, function, src, params, writes
        )

    # -- on the worker thread ----------------------------------------------

    def runBlocking(self, caller: str, function: str, src: str, params: Any, writes: set[str]) -> Any:
        import lupa

        lua = lupa.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            max_memory=self.maxMemory,
            attribute_filter=_denyAttributes,
        )
        deadline = time.monotonic() + self.timeout
        api = _Api(self, lua, caller, function, writes, deadline)
        try:
            setup = lua.execute("return function(...) " + SETUP + " end")
            request = api.toLua({"caller": caller, "function": function, "params": params})
            result = setup(src, function, lambda: time.monotonic() > deadline, api.table(), request)
            return api.fromLua(result)
        except lupa.LuaMemoryError:
            raise LuaError("memory limit exceeded") from None
        except lupa.LuaError as e:
            msg = str(e)
            if "not enough memory" in msg:
                raise LuaError("memory limit exceeded") from None
            raise LuaError(msg.split("\nstack traceback:")[0][:500]) from None
        except LuaError:
            raise
        except Exception as e:
            raise LuaError(f"{type(e).__name__}: {e}"[:500]) from None
        finally:
            api.close()


class _Api:
    """The C{goop} table of one call (lives on the worker thread)."""

    def __init__(
        self, engine: LuaEngine, lua: Any, caller: str, function: str, writes: set[str], deadline: float
    ) -> None:
        self.engine = engine
        self.lua = lua
        self.caller = caller
        self.function = function
        self.writes = writes
        self.deadline = deadline
        self._ro: sqlite3.Connection | None = None
        self._rw: sqlite3.Connection | None = None

    def close(self) -> None:
        for c in (self._ro, self._rw):
            if c is not None:
                c.close()

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

    def table(self) -> Any:
        def args(*a: Any) -> list[Any]:
            out = [self.fromLua(x) for x in a]
            for x in out:
                if not (x is None or isinstance(x, (str, int, float, bool))):
                    raise LuaError("SQL arguments must be scalars")
            return out

        db = self.lua.table_from(
            {
                "query": lambda sql, *a: self.toLua(self._query(str(sql), args(*a))),
                "scalar": lambda sql, *a: self._scalar(str(sql), args(*a)),
                "exec": lambda sql, *a: self.toLua(self._exec(str(sql), args(*a))),
            }
        )
        js = self.lua.table_from(
            {
                "encode": lambda v: json.dumps(self.fromLua(v)),
                "decode": lambda s: self.toLua(json.loads(str(s))),
            }
        )
        kv = self.lua.table_from(
            {
                "get": lambda k: self._kvGet(str(k)),
                "set": lambda k, v: self._kvSet(str(k), self.fromLua(v)),
                "delete": lambda k: self._kvSet(str(k), None),
            }
        )
        lg = self.lua.table_from({lvl: self._logger(lvl) for lvl in ("debug", "info", "warn", "error")})
        http = self.lua.table_from(
            {
                "get": lambda url, opts=None: self._http("GET", str(url), None, opts),
                "post": lambda url, body=None, opts=None: self._http("POST", str(url), body, opts),
            }
        )
        return self.lua.table_from({"db": db, "json": js, "kv": kv, "log": lg, "http": http})

    # database
    def _conn(self, write: bool) -> sqlite3.Connection:
        if write:
            if self._rw is None:
                self._rw = sqlite3.connect(self.engine.dataPath, timeout=2.0, isolation_level=None)
                self._rw.set_authorizer(self._authorize)
                self._rw.set_progress_handler(self._overdue, 10000)
            return self._rw
        if self._ro is None:
            self._ro = sqlite3.connect(f"file:{self.engine.dataPath}?mode=ro", uri=True, timeout=2.0)
            self._ro.set_authorizer(self._authorizeRead)
            self._ro.set_progress_handler(self._overdue, 10000)
        return self._ro

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
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, row, strict=False)) for row in cur.fetchmany(1000)]
        except sqlite3.Error as e:
            raise LuaError(f"goop.db.query: {e}") from None

    def _scalar(self, sql: str, a: list[Any]) -> Any:
        rows = self._query(sql, a)
        return next(iter(rows[0].values())) if rows else None

    def _exec(self, sql: str, a: list[Any]) -> dict[str, Any]:
        try:
            cur = self._conn(True).execute(sql, a)
            return {"changes": cur.rowcount, "last_id": cur.lastrowid}
        except sqlite3.Error as e:
            raise LuaError(f"goop.db.exec: {e}") from None

    # kv (namespaced per function, in data.db)
    def _kvConn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.engine.dataPath, timeout=2.0, isolation_level=None)
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

    def _logger(self, level: str) -> Callable[..., None]:
        def emit(*parts: Any) -> None:
            text = " ".join(str(self.fromLua(p)) for p in parts)[:2000]
            getattr(log, level)("lua {function}: {text}", function=self.function, text=text)

        return emit

    def _http(self, method: str, url: str, body: Any, opts: Any) -> Any:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise LuaError("timeout")
        options = self.fromLua(opts) if opts is not None else {}
        headers = options.get("headers") if isinstance(options, dict) else None
        data = None if body is None else str(self.fromLua(body)).encode()
        try:
            status, hdrs, content = guardedRequest(
                method,
                url,
                data,
                headers if isinstance(headers, dict) else None,
                min(5.0, remaining),
                self.engine.resolver,
            )
        except SSRFError as e:
            raise LuaError(f"goop.http: {e}") from None
        except OSError as e:
            raise LuaError(f"goop.http: {e}") from None
        return self.toLua({"status": status, "headers": hdrs, "body": content.decode("utf-8", "replace")})
