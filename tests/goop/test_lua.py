"""
The Lua sandbox: escapes, runaway scripts, limits and the SSRF guard.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.goop.lua.engine import LuaEngine, LuaError, RateLimits
from suite.goop.lua.ssrf import SSRFError, checkAddress, guardedRequest
from suite.goop.peer.store import addStampDefaults
from tests.support.http import serveLoopback


class SandboxTests(TestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(os.path.join(self.dir, "lua"))
        sqlite3.connect(os.path.join(self.dir, "data.db")).close()
        self.engine = LuaEngine(
            reactor,
            os.path.join(self.dir, "lua"),
            os.path.join(self.dir, "data.db"),
            timeout=1.0,
        )
        self.addCleanup(self.engine.stop)
        self.n = 0

    def script(self, body: str, header: str = "") -> str:
        self.n += 1
        name = f"f{self.n}"
        with open(os.path.join(self.dir, "lua", name + ".lua"), "w") as f:
            f.write(header + "\nfunction call(request)\n" + body + "\nend\n")
        return name

    async def refused(self, body: str, caller: str = "peer") -> str:
        try:
            result = await self.engine.call(caller, self.script(body), None)
        except LuaError as e:
            return str(e)
        self.fail(f"not refused: {result!r}")

    async def test_callAndApi(self) -> None:
        """call(request) sees the caller and params and can use json, kv and db."""
        name = self.script(
            'goop.kv.set("n", (goop.kv.get("n") or 0) + 1)\n'
            'return {who = request.caller, x = request.params.x, n = goop.kv.get("n"),'
            ' j = goop.json.encode({1, 2}), s = goop.db.scalar("SELECT 40 + ?", 2)}'
        )
        r = await self.engine.call("peer-a", name, {"x": 5})
        self.assertEqual(r, {"who": "peer-a", "x": 5, "n": 1, "j": "[1, 2]", "s": 42})
        self.assertIn(name, self.engine.list())

    async def test_kvRefusesWhatItCannotStore(self) -> None:
        """
        goop.kv keys are strings (or numbers); a table or nil key, or a
        value holding a function, is an error naming the call, and the
        stored value is untouched (a function never turns a set into a
        delete).
        """
        name = self.script('goop.kv.set("k", {a = 1})')
        await self.engine.call("peer", name, None)
        for body, reason in (
            ('goop.kv.set("k", print)', "goop.kv.set: cannot store a function"),
            ('goop.kv.set("k", {f = print})', "goop.kv.set: cannot store a function"),
            ('goop.kv.set("k", {1, {2, goop.log.info}})', "goop.kv.set: cannot store a function"),
            ("goop.kv.set({}, 1)", "goop.kv.set: the key must be a string"),
            ("goop.kv.set(nil, 1)", "goop.kv.set: the key must be a string"),
            ("return goop.kv.get({})", "goop.kv.get: the key must be a string"),
            ("goop.kv.delete(true)", "goop.kv.delete: the key must be a string"),
        ):
            msg = await self.refused(body)
            self.assertIn(reason, msg, body)
        # each script has its own namespace: read the first one's key back
        with open(os.path.join(self.dir, "lua", name + ".lua"), "w") as f:
            f.write(
                'function call(request)\ngoop.kv.set(7, "seven")\n'
                'return {k = goop.kv.get("k"), seven = goop.kv.get("7")}\nend\n'
            )
        self.assertEqual(await self.engine.call("peer", name, None), {"k": {"a": 1}, "seven": "seven"})

    async def test_httpArgumentsChecked(self) -> None:
        """
        goop.http: a body that is not a string, opts that are not a table,
        header values that are not strings, a port out of range, a
        loopback address: an error naming the call, before any connection
        (a table body was sent as its Python text).
        """
        for body, reason in (
            ('goop.http.post("http://192.0.2.1/", {a = 1})', "goop.http.post: the body must be a string"),
            ('goop.http.post("http://192.0.2.1/", true)', "goop.http.post: the body must be a string"),
            ('goop.http.get("http://192.0.2.1/", "x")', "goop.http.get: opts must be a table"),
            ('goop.http.get("http://192.0.2.1/", {headers = "x"})', "goop.http.get: opts.headers must be"),
            (
                'goop.http.get("http://192.0.2.1/", {headers = {a = {1}}})',
                "goop.http.get: opts.headers must be",
            ),
            ('goop.http.get("http://example.com:99999/")', "goop.http: Port out of range"),
            # The SSRF guard, which a worker loads at its first goop.http call.
            ('goop.http.get("http://127.0.0.1:1/")', "goop.http: refused: 127.0.0.1 is not a public address"),
        ):
            msg = await self.refused(body)
            self.assertIn(reason, msg, body)

    async def test_sqlArgumentsFinite(self) -> None:
        """1/0 and 0/0 as SQL arguments are refused (stored, they read back as "Inf" or null)."""
        for body in ('return goop.db.scalar("SELECT ?", 1/0)', 'return goop.db.query("SELECT ?", 0/0)'):
            self.assertIn("SQL arguments must be finite numbers", await self.refused(body), body)
        self.assertEqual(
            await self.engine.call("peer", self.script('return goop.db.scalar("SELECT ?", 2.5)'), None), 2.5
        )

    async def test_queryRowsNotCutShort(self) -> None:
        """
        goop.db.query answering more than 1000 rows is an error asking for
        a LIMIT (it returned the first 1000 as if they were all); a refused
        write names the rule.
        """
        body = (
            'return goop.db.query("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)'
            ' SELECT i FROM n")'
        )
        msg = await self.refused(body % 1001)
        self.assertIn("goop.db.query: more than 1000 rows; add a LIMIT", msg)
        rows = await self.engine.call("peer", self.script(body % 1000), None)
        self.assertEqual(len(rows), 1000)
        msg = await self.refused('goop.db.exec("CREATE TABLE x (a)")')
        self.assertIn("not authorized (it writes only to the tables of the -- @writes line", msg)

    async def test_resultsAreStrictJSON(self) -> None:
        """
        A result or a goop.json.encode holding 1/0 or 0/0 is an error: it
        was answered as C{Infinity}/C{NaN}, which no JSON client parses.
        """
        msg = await self.refused("return {a = 1/0}")
        self.assertIn("result is not JSON", msg)
        msg = await self.refused("return {b = 0/0}")
        self.assertIn("result is not JSON", msg)
        msg = await self.refused("return goop.json.encode({a = -1/0})")
        self.assertIn("goop.json.encode: numbers must be finite", msg)
        msg = await self.refused("return goop.json.encode({f = print})")
        self.assertIn("goop.json.encode: cannot encode a function", msg)

    async def test_logLinesNameTheFunction(self) -> None:
        """Each line a function logs leads with its name: C{lua <function>: <text>}."""
        from twisted.logger import globalLogPublisher

        seen: list[str] = []

        def collect(event: dict) -> None:
            if event.get("log_namespace") == "suite.goop.lua.pool" and "text" in event:
                seen.append(str(event["text"]))

        observe: Any = collect
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        name = self.script('goop.log.warn("disk", 3)\nprint("printed")')
        await self.engine.call("peer", name, None)
        self.assertEqual(seen, [f"{name}: disk 3", f"{name}: printed"])

    async def test_noEscapes(self) -> None:
        """os.execute, io.open, require, load, dofile, debug and package are absent."""
        for body in (
            'os.execute("id")',
            'io.open("/etc/passwd")',
            'require("os")',
            'return load("return 1")()',
            'dofile("/etc/passwd")',
            "debug.getinfo(1)",
            "return package.loaded",
            'return loadstring("x")',
        ):
            msg = await self.refused(body)
            self.assertIn("nil value", msg, body)

    async def test_noPythonAttributes(self) -> None:
        """No Python object is reachable from the sandbox (the goop API is Lua functions)."""
        msg = await self.refused("return goop.db.query.__globals__")
        self.assertIn("attempt to index", msg)
        msg = await self.refused("return python.builtins")
        self.assertIn("nil value", msg)

    async def test_infiniteLoop(self) -> None:
        """A busy loop is stopped at the deadline, even inside pcall."""
        self.assertIn("time limit exceeded", await self.refused("while true do end"))
        self.assertIn(
            "time limit exceeded",
            await self.refused("while true do pcall(function() while true do end end) end"),
        )

    async def test_reactorNotStalled(self) -> None:
        """A busy script runs on a worker thread: the reactor keeps running timers meanwhile."""
        from twisted.internet.task import deferLater

        busy = self.engine.call("peer", self.script("while true do end"), None)
        busy.addErrback(lambda f: f.trap(LuaError))
        ticks = []
        for _ in range(3):
            await deferLater(reactor, 0.05, lambda: None)
            ticks.append(busy.called)
        self.assertEqual(ticks, [False, False, False])
        await busy

    async def test_memoryBomb(self) -> None:
        """Allocating without bound hits the memory cap."""
        msg = await self.refused('local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end')
        self.assertIn("memory", msg)

    async def test_resultTooLarge(self) -> None:
        """A result over 1 MiB is refused with a reason; the worker goes on serving."""
        self.assertIn("larger than 1 MiB", await self.refused('return string.rep("x", 2 * 1024 * 1024)'))
        self.assertEqual(await self.engine.call("p", self.script("return 7"), None), 7)

    async def test_jobLargerThanThePipe(self) -> None:
        """A job larger than the worker's pipe (a 200 KiB script and 300 KiB of params) arrives whole."""
        name = self.script(
            "return #request.params.blob .. ':' .. #padding", "padding = [[" + "x" * 200_000 + "]]"
        )
        blob = "y" * 300_000
        self.assertEqual(await self.engine.call("p", name, {"blob": blob}), "300000:200000")
        self.assertEqual(await self.engine.call("p", name, {"blob": "z"}), "1:200000")

    async def test_dbWritesDeclaredOnly(self) -> None:
        """goop.db.exec writes only the tables named by @writes; query is read-only."""
        name = self.script('return goop.db.exec("CREATE TABLE evil (a)")', "-- @writes notes")
        with self.assertRaises(LuaError):
            await self.engine.call("p", name, None)
        msg = await self.refused('return goop.db.query("DELETE FROM notes")')
        self.assertIn("goop.db.query", msg)

    async def test_luaInsertStamped(self) -> None:
        """An INSERT from Lua gets _owner (the calling peer) and _created, also in a table made before the stamp defaults."""
        path = os.path.join(self.dir, "data.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(
            'CREATE TABLE visits ("_id" INTEGER PRIMARY KEY AUTOINCREMENT, "_owner" TEXT NOT NULL, '
            '"_created" REAL NOT NULL, "who" TEXT)'
        )
        self.assertEqual(addStampDefaults(conn), 1)
        self.assertEqual(addStampDefaults(conn), 0)
        self.assertEqual(conn.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        conn.close()
        name = self.script(
            'local r = goop.db.exec("INSERT INTO visits (who) VALUES (?)", request.params.who)\n'
            "return r.changes",
            "-- @writes visits",
        )
        before = time.time()
        self.assertEqual(await self.engine.call("peer-x", name, {"who": "ann"}), 1)
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        owner, created, who = conn.execute('SELECT "_owner", "_created", who FROM visits').fetchone()
        self.assertEqual((owner, who), ("peer-x", "ann"))
        self.assertGreaterEqual(created, before - 1)
        self.assertLessEqual(created, time.time() + 1)

    async def test_runawayQueryStopped(self) -> None:
        """A runaway SQL query (recursive CTE) is interrupted at the deadline."""
        msg = await self.refused(
            'return goop.db.scalar("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c")'
        )
        self.assertIn("interrupted", msg)

    async def test_goopTablesNeverWritable(self) -> None:
        """Even when declared with @writes, Goop's own tables cannot be written."""
        name = self.script('return goop.db.exec("DELETE FROM _goop_tables")', "-- @writes _goop_tables")
        with self.assertRaises(LuaError):
            await self.engine.call("p", name, None)

    async def test_ssrf(self) -> None:
        """goop.http refuses loopback and names resolving to private addresses."""
        for url in (
            "http://127.0.0.1:1/",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://10.1.2.3/",
            "http://[fd00::1]/",
            "file:///etc/passwd",
            "http://user:pw@93.184.216.34/",
        ):
            msg = await self.refused(f'return goop.http.get("{url}")')
            self.assertIn("goop.http", msg, url)

    async def test_rateLimitAnnotation(self) -> None:
        """@rate_limit N refuses the N+1th call in a minute from one peer."""
        name = self.script("return 1", "-- @rate_limit 2")
        self.assertEqual(await self.engine.call("p", name, None), 1)
        self.assertEqual(await self.engine.call("p", name, None), 1)
        with self.assertRaises(LuaError) as cm:
            await self.engine.call("p", name, None)
        self.assertIn("@rate_limit", str(cm.exception))
        self.assertEqual(await self.engine.call("q", name, None), 1)


class RateLimitTests(SynchronousTestCase):
    def test_perPeerAndGlobal(self) -> None:
        """30 calls/min per peer and 120/min overall, recovering after the window."""
        clock = Clock()
        limits = RateLimits(clock)
        for _ in range(30):
            self.assertIsNone(limits.check("a", "f", None))
        self.assertIn("per peer", limits.check("a", "f", None) or "")
        for peer in "bcd":
            for _ in range(30):
                self.assertIsNone(limits.check(peer, "f", None))
        self.assertIn("overall", limits.check("e", "f", None) or "")
        clock.advance(61)
        self.assertIsNone(limits.check("a", "f", None))


class RebindingTests(TestCase):
    async def test_connectsToCheckedAddress(self) -> None:
        """The connection goes to the address that was checked, even if DNS now answers differently."""
        import socket

        from twisted.internet.threads import deferToThread
        from twisted.web.resource import Resource
        from twisted.web.server import Site
        from twisted.web.static import Data

        root = Resource()
        root.putChild(b"x", Data(b"public content", "text/plain"))
        portNumber = await serveLoopback(self, Site(root))
        answers = [["93.184.216.34"], ["127.0.0.1"]]
        resolved: list[str] = []
        connected: list[tuple[str, int]] = []

        def resolver(host: str, p: int) -> list[str]:
            resolved.append(host)
            return answers[min(len(resolved) - 1, 1)]

        def connect(address: tuple[str, int], timeout: float) -> socket.socket:
            connected.append(address)
            # stand-in for the public host: the test server on loopback
            return socket.create_connection(("127.0.0.1", portNumber), timeout=timeout)

        status, headers, body = await deferToThread(
            guardedRequest, "GET", "http://news.example:8080/x", None, None, 5.0, resolver, connect
        )
        self.assertEqual((status, body), (200, b"public content"))
        self.assertEqual(resolved, ["news.example"])
        self.assertEqual(connected, [("93.184.216.34", 8080)])


class SSRFTests(SynchronousTestCase):
    def test_addresses(self) -> None:
        """Private, loopback, link-local, CGNAT and mapped addresses are refused; public ones pass."""
        for bad in (
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
        ):
            self.assertRaises(SSRFError, checkAddress, bad)
        checkAddress("93.184.216.34")

    def test_resolvedOnceAndChecked(self) -> None:
        """The resolver is asked once and a private answer stops the request before connecting."""
        calls: list[str] = []

        def resolver(host: str, port: int) -> list[str]:
            calls.append(host)
            return ["192.168.1.10"]

        self.assertRaises(SSRFError, guardedRequest, "GET", "http://evil.example/", resolver=resolver)
        self.assertEqual(calls, ["evil.example"])


class SandboxBoundaryTests(SynchronousTestCase):
    """
    L{suite.goop.lua.sandbox.Sandbox.run} is the user-script boundary: any
    error becomes an answer, and one that is not a Lua error is reported on
    stderr (which the parent logs) rather than swallowed.
    """

    def test_pythonErrorReported(self) -> None:
        """
        A Python error raised under a call answers C{ok: False} naming it
        and writes its traceback to stderr.
        """
        import io
        import sys

        from suite.goop.lua import sandbox

        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "data.db")
        sqlite3.connect(path).close()

        def broken(self: object, value: object, depth: int = 0) -> object:
            raise RuntimeError("conversion bug")

        self.patch(sandbox._Api, "fromLua", broken)
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        box = sandbox.Sandbox(path, 64 * 1024 * 1024)
        job = {
            "caller": "peer",
            "function": "f",
            "source": "function call(request) return 1 end",
            "params": None,
            "timeout": 5.0,
        }
        answer = box.run(job, lambda level, text: None)
        self.assertEqual(answer, {"ok": False, "error": "RuntimeError: conversion bug"})
        self.assertIn("Lua call 'f' failed in Python", stderr.getvalue())
        self.assertIn("RuntimeError: conversion bug", stderr.getvalue())


class CpuBudgetTests(SynchronousTestCase):
    """The worker's CPU-time limit before each job: at least the job's seconds, at most one more."""

    def test_limitMovedOnlyWhenShort(self) -> None:
        import resource
        from types import SimpleNamespace

        from suite.goop.lua import worker

        used = [10.25]
        limits: list[tuple[int, int]] = []
        self.patch(
            resource,
            "getrusage",
            lambda who: SimpleNamespace(ru_utime=used[0], ru_stime=0.0),
        )
        self.patch(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, 3600))
        self.patch(resource, "setrlimit", lambda which, pair: limits.append(pair))
        budget = worker.CpuBudget()
        budget.allow(6.0)
        self.assertEqual(limits, [(17, 3600)])
        for spent, settings in ((0.5, 1), (0.24, 1), (0.02, 2), (0.0, 2)):
            used[0] += spent
            budget.allow(6.0)
            left = limits[-1][0] - used[0]
            self.assertTrue(6.0 <= left <= 7.0, (used[0], limits))
            self.assertEqual(len(limits), settings)
        self.assertEqual(limits, [(17, 3600), (18, 3600)])
        used[0] = 3599.5
        budget.allow(6.0)
        self.assertEqual(limits[-1], (3600, 3600))
