"""
One Lua call's state never reaches the next call, in the same worker.

Each test runs a call that plants state in every place a script can reach
(globals, the standard tables, the string metatable, the C{goop} table,
finalizers, memory held in globals, the time-limit flag), then a second call
on the same L{Sandbox}, as a worker runs them (with the next runtime prepared
in between), that looks for it.  Were a runtime ever reused, these fail.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.goop.lua.engine import LuaEngine
from suite.goop.lua.sandbox import MEMORY_LIMIT, TIME_LIMIT, Sandbox

#: Plants state wherever a script can put it.
PLANT = """
function call(request)
  leaked = "global"
  _G.leaked_g = "via _G"
  rawset(_G, "leaked_raw", "rawset")
  local smt = getmetatable("")
  smt.__index.leaked = function() return "string metatable" end
  smt.__add = function() return "string __add" end
  smt.__leaked = "field"
  string.upper = function() return "replaced" end
  table.insert = function() error("replaced") end
  math.pi = 3
  utf8.leaked = true
  goop.leaked = "goop field"
  goop.log.info = function() error("replaced") end
  goop.kv = nil
  print = nil
  pcall = function() return false, "replaced" end
  setmetatable(_G, {__index = function(_, k) return "from _G metatable: " .. k end})
  -- a finalizer that runs when the runtime is closed, and one that
  -- resurrects its object into a global
  setmetatable({}, {__gc = function() getmetatable("").__index.from_gc = "finalizer"; leaked_gc = true end})
  setmetatable({}, {__gc = function(o) kept = o end})
  return "planted"
end
"""

#: Reports what it finds of it (every field nil/false when nothing leaked).
LOOK = """
local pcall, rawget, getmetatable, select = pcall, rawget, getmetatable, select
local function global(k) return rawget(_G, k) end
function call(request)
  local smt = getmetatable("")
  local ok, added = pcall(function() return "a" + "b" end)
  return {
    leaked = global("leaked"), leaked_g = global("leaked_g"), leaked_raw = global("leaked_raw"),
    leaked_gc = global("leaked_gc"), kept = global("kept") ~= nil,
    string_index = ("x").leaked ~= nil, string_add = ok and added == "string __add",
    string_field = smt.__leaked, from_gc = ("x").from_gc,
    upper = string.upper("a") ~= "A", insert = pcall(table.insert, {}, 1) ~= true,
    pi = math.pi < 3.14, utf8 = utf8.leaked,
    goop_field = goop.leaked, goop_log = pcall(goop.log.info, "x") ~= true,
    goop_kv = goop.kv == nil or goop.kv.set == nil, print = global("print") == nil,
    pcall = select(2, global("pcall")(function() return "fine" end)) ~= "fine",
    g_meta = getmetatable(_G) ~= nil, missing = missing_global ~= nil,
    coroutine = global("coroutine") ~= nil, package = global("package") ~= nil,
    debug = global("debug") ~= nil, dump = string.dump ~= nil or ("x").dump ~= nil,
  }
end
"""


def _job(function: str, source: str, timeout: float = 2.0) -> dict[str, Any]:
    return {
        "caller": "peer-" + function,
        "function": function,
        "source": source,
        "params": None,
        "writes": [],
        "timeout": timeout,
    }


def _nothingLeaked(result: Any) -> bool:
    return isinstance(result, dict) and not any(result.values())


class SandboxIsolationTests(SynchronousTestCase):
    """Two calls in a row on one sandbox, as one worker runs them."""

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "data.db")
        sqlite3.connect(self.path).close()
        self.sandbox = Sandbox(self.path, 10 * 1024 * 1024)
        self.logged: list[tuple[str, str]] = []

    def run_(self, function: str, source: str, timeout: float = 2.0, prepare: bool = True) -> Any:
        if prepare:
            self.sandbox.prepare()
        return self.sandbox.run(_job(function, source, timeout), lambda *line: self.logged.append(line))

    def test_lookerSeesCleanRuntime(self) -> None:
        """The looking script reports nothing when it runs first (it can tell a leak from a clean runtime)."""
        answer = self.run_("look", LOOK)
        self.assertTrue(answer["ok"], answer)
        self.assertTrue(_nothingLeaked(answer["result"]), answer["result"])

    def test_lookerDetectsPlantedState(self) -> None:
        """Planting and looking in one call sees every planted item: the look is not blind."""
        both = PLANT.replace('return "planted"', "return call_look()").replace(
            "function call(request)", "function plant(request)", 1
        )
        # The planting part first, so that its assignments are to globals,
        # not to the looking part's locals.
        source = both + LOOK.replace("function call(request)", "function call_look()", 1)
        source += "\nfunction call(request) return plant(request) end\n"
        self.assertIn("call_look", source)
        answer = self.run_("both", source)
        self.assertTrue(answer["ok"], answer)
        found = {k for k, v in answer["result"].items() if v}
        # Everything but the finalizers' work (they run when the runtime closes)
        # and the looks at what the sandbox never offers.
        self.assertEqual(
            found,
            {
                "leaked",
                "leaked_g",
                "leaked_raw",
                "string_index",
                "string_add",
                "string_field",
                "upper",
                "insert",
                "pi",
                "utf8",
                "goop_field",
                "goop_log",
                "goop_kv",
                "print",
                "pcall",
                "g_meta",
                "missing",
            },
        )

    def test_nothingReachesTheNextCall(self) -> None:
        """Globals, standard tables, the string metatable, the goop table and finalizers of one call are gone in the next."""
        for prepare in (True, False):
            self.assertEqual(self.run_("plant", PLANT, prepare=prepare), {"ok": True, "result": "planted"})
            answer = self.run_("look", LOOK, prepare=prepare)
            self.assertTrue(answer["ok"], answer)
            self.assertTrue(_nothingLeaked(answer["result"]), answer["result"])

    def test_finalizersRunBeforeTheAnswer(self) -> None:
        """A __gc finalizer of a call runs before run() returns, still as that call."""
        source = """
        function call(request)
          keep = setmetatable({}, {__gc = function() goop.log.info("finalized " .. request.caller) end})
          return 1
        end
        """
        self.assertEqual(self.run_("fin", source), {"ok": True, "result": 1})
        self.assertEqual(self.logged, [("info", "finalized peer-fin")])

    def test_apiBoundToItsCall(self) -> None:
        """goop.kv of the next call is that call's (its function's namespace), not the one before it."""
        self.assertEqual(
            self.run_("writer", 'function call(r) goop.kv.set("k", "writer") return goop.kv.get("k") end'),
            {"ok": True, "result": "writer"},
        )
        self.assertEqual(
            self.run_("reader", 'function call(r) return goop.kv.get("k") or "nothing" end'),
            {"ok": True, "result": "nothing"},
        )

    def test_memoryHeldIsReleased(self) -> None:
        """Memory a call keeps in globals does not count against the next call's limit."""
        hold = 'function call(r) held = string.rep("x", 6 * 1024 * 1024) return #held end'
        self.assertEqual(self.run_("hold1", hold), {"ok": True, "result": 6 * 1024 * 1024})
        self.assertEqual(self.run_("hold2", hold), {"ok": True, "result": 6 * 1024 * 1024})
        over = 'function call(r) a = string.rep("x", 6 * 1024 * 1024) b = a .. "y" return 1 end'
        self.assertEqual(self.run_("over", over), {"ok": False, "error": MEMORY_LIMIT})
        self.assertEqual(self.run_("hold3", hold), {"ok": True, "result": 6 * 1024 * 1024})

    def test_timeLimitDoesNotCarryOver(self) -> None:
        """A call stopped at its deadline leaves no stop flag or hook behind for the next one."""
        self.assertEqual(
            self.run_("spin", "function call(r) while true do end end", timeout=0.05),
            {"ok": False, "error": TIME_LIMIT},
        )
        self.assertEqual(
            self.run_(
                "after", "function call(r) local n = 0 for i = 1, 200000 do n = n + 1 end return n end"
            ),
            {"ok": True, "result": 200000},
        )

    def test_errorsDoNotCarryOver(self) -> None:
        """A call whose script fails to compile or raises leaves the next call a clean runtime."""
        self.assertFalse(self.run_("bad", "leaked = 1 function call(")["ok"])
        self.assertFalse(self.run_("raise", 'leaked = 1 function call(r) error("no") end')["ok"])
        self.assertEqual(
            self.run_("look", "function call(r) return leaked == nil end"), {"ok": True, "result": True}
        )

    def test_preparedRuntimeUsedOnce(self) -> None:
        """A prepared runtime serves exactly one call; preparing twice does not build a second."""
        self.sandbox.prepare()
        first = self.sandbox._next
        self.sandbox.prepare()
        self.assertIs(self.sandbox._next, first)
        self.run_("one", "function call(r) return 1 end", prepare=False)
        self.assertIsNone(self.sandbox._next)
        self.sandbox.prepare()
        self.assertIsNot(self.sandbox._next, first)


class WorkerIsolationTests(TestCase):
    """The same through the peer's pool, with one worker process serving both calls."""

    async def test_nothingReachesTheNextCall(self) -> None:
        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "lua"))
        sqlite3.connect(os.path.join(directory, "data.db")).close()
        for name, source in (("plant", PLANT), ("look", LOOK)):
            with open(os.path.join(directory, "lua", name + ".lua"), "w") as f:
                f.write(source)
        engine = LuaEngine(
            reactor, os.path.join(directory, "lua"), os.path.join(directory, "data.db"), workers=1
        )
        self.addCleanup(engine.stop)
        for _ in range(2):
            self.assertEqual(await engine.call("a", "plant", None), "planted")
            self.assertTrue(_nothingLeaked(await engine.call("b", "look", None)))
        self.assertEqual(engine.pool.replaced, 0)
