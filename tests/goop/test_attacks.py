"""
The attacks of the Goop2 audit, each against real processes on loopback:
Lua scripts that try to wedge a peer, DNS-rebinding requests to the viewer
and the manager, and abuse of the rendezvous hub.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import treq
from twisted.trial.unittest import TestCase

from suite.goop.identity import loadIdentity
from suite.goop.p2p.discovery import signedPublication
from tests.goop.test_e2e import HubFixture, getJSON, openStream, tokenFor, writeConfig
from tests.support.http import httpHeaders
from tests.support.process import DaemonProcess, freePort, twistdArgs, waitUntil

#: The exact deadline (the limit plus 0.5 s of grace, then the kill) is
#: checked on a fake clock in tests/goop/test_luapool.py.  Here wall-clock
#: time only tells a wedged peer (no answer at all) from a working one, so
#: the bound leaves room for a loaded machine instead of restating it.
WEDGED = 20.0

SCRIPTS = {
    "normal": "function call(request) return {sum = 1 + (request.params.n or 1), n = goop.db.scalar('SELECT 2')} end",
    "finalizer": (
        "function call(request)\n"
        "  for i = 1, 5 do setmetatable({}, {__gc = function() while true do end end}) end\n"
        "  return 'done'\nend"
    ),
    "pattern": 'function call(request) return string.find(string.rep("a", 120), "(.-)(.-)(.-)(.-)(.-)(.-)b") end',
    "loop": "function call(request) while true do end end",
    "memory_rep": 'function call(request) local s = string.rep("x", 1e9) return #s end',
    "memory_table": "function call(request) local t = {} for i = 1, 1e9 do t[i] = i end return #t end",
    "memory_concat": 'function call(request) local s = "x" while true do s = s .. s end end',
    "spawn": (
        "function call(request)\n"
        "  local tries = {\n"
        "    function() return os.execute('touch ' .. request.params.marker) end,\n"
        "    function() return io.popen('touch ' .. request.params.marker) end,\n"
        "    function() return require('os').execute('touch ' .. request.params.marker) end,\n"
        "    function() return package.loadlib('libc.so.6', 'fork') end,\n"
        "    function() return python.eval('__import__(\"os\").fork()') end,\n"
        "    function() return load(string.dump(function() end)) end,\n"
        "    function() return goop.db.query.__globals__ end,\n"
        "  }\n"
        "  local failed = 0\n"
        "  for _, f in ipairs(tries) do if not pcall(f) then failed = failed + 1 end end\n"
        "  error('failed ' .. failed .. ' of ' .. #tries, 0)\n"
        "end"
    ),
    "flood": "function call(request) while true do print(string.rep('x', 1000)) goop.log.error('y') end end",
}


class LuaAttackTests(TestCase):
    async def startPeer(self) -> tuple[DaemonProcess, str, str]:
        vport = freePort()
        d = writeConfig(
            os.path.abspath(self.mktemp()),
            {"p2p": {"listen_port": 0, "mdns_tag": ""}, "viewer": {"http_addr": f"127.0.0.1:{vport}"}},
        )
        os.makedirs(os.path.join(d, "lua"))
        for name, src in SCRIPTS.items():
            with open(os.path.join(d, "lua", name + ".lua"), "w") as f:
                f.write(src + "\n")
        proc = DaemonProcess(self, twistdArgs("goop", "peer", d), name="lua-peer").start()
        viewer = f"http://127.0.0.1:{vport}"
        await proc.waitForHTTP(viewer + "/healthz")
        return proc, viewer, d

    async def call(self, viewer: str, function: str, params: Any = None) -> tuple[dict[str, Any], float]:
        body = {"request": {"op": "lua-call", "function": function, "params": params or {}}}
        headers = {"content-type": "application/json", "x-goop-token": await tokenFor(viewer)}
        started = time.monotonic()
        r = await treq.post(
            viewer + "/api/data",
            data=json.dumps(body).encode(),
            headers=httpHeaders(headers),
            persistent=False,
        )
        result = json.loads(await r.content())
        return result, time.monotonic() - started

    async def healthy(self, viewer: str) -> None:
        started = time.monotonic()
        r = await treq.get(viewer + "/healthz", persistent=False, timeout=WEDGED)
        self.assertEqual(r.code, 200, await r.text())
        self.assertLess(time.monotonic() - started, WEDGED)
        result, _ = await self.call(viewer, "normal", {"n": 41})
        self.assertEqual(result, {"ok": True, "data": {"sum": 42, "n": 2}})

    async def test_luaCannotWedgeThePeer(self) -> None:
        """Finalizer bomb, pattern backtracking, endless loop, memory bombs, fork/exec and output floods: each ends in its limit's error (the deadline itself is checked on a fake clock), the peer answers /healthz while a worker is stuck, and right after."""
        proc, viewer, d = await self.startPeer()
        await self.healthy(viewer)
        marker = os.path.abspath(self.mktemp())
        expected = {
            "finalizer": "time limit exceeded",
            "pattern": "time limit exceeded",
            "loop": "time limit exceeded",
            "memory_rep": "memory limit exceeded",
            "memory_table": "memory limit exceeded",
            "memory_concat": "memory limit exceeded",
            "spawn": "failed 7 of 7",
            "flood": "time limit exceeded",
        }
        for name, error in expected.items():
            if name == "pattern":
                # the peer keeps answering while a worker is stuck in C
                pending = self.call(viewer, name)
                from twisted.internet.defer import Deferred

                running = Deferred.fromCoroutine(pending)
                r = await treq.get(viewer + "/healthz", persistent=False, timeout=WEDGED)
                self.assertEqual(r.code, 200)
                # answered while the worker is still stuck, not after its kill
                self.assertFalse(running.called, "healthz waited for the stuck worker")
                await r.content()
                result, elapsed = await running
            else:
                result, elapsed = await self.call(viewer, name, {"marker": marker})
            self.assertEqual(result, {"ok": False, "error": error}, name)
            self.assertLess(elapsed, WEDGED, name)
            await self.healthy(viewer)
        self.assertFalse(os.path.exists(marker))
        self.assertNotIn("Traceback", proc.output())


class RebindingTests(TestCase):
    async def test_viewerRefusesRebinding(self) -> None:
        """A page on evil.example resolving to 127.0.0.1 gets 421 on every path; without the install's token, changes get 403."""
        vport = freePort()
        d = writeConfig(
            os.path.abspath(self.mktemp()),
            {
                "p2p": {"listen_port": 0, "mdns_tag": ""},
                "viewer": {"http_addr": f"127.0.0.1:{vport}", "allowed_hosts": ["peer.lan"]},
            },
        )
        proc = DaemonProcess(self, twistdArgs("goop", "peer", d), name="viewer").start()
        viewer = f"http://127.0.0.1:{vport}"
        await proc.waitForHTTP(viewer + "/healthz")
        with open(os.path.join(d, "goop.json"), "rb") as f:
            before = f.read()
        evil = {"host": f"evil.example:{vport}", "origin": f"http://evil.example:{vport}"}
        attacks: list[tuple[str, str, bytes | None]] = [
            ("GET", "/", None),
            ("GET", "/self", None),
            ("GET", "/logs", None),
            ("GET", "/peers", None),
            ("GET", "/api/logs", None),
            ("GET", "/healthz", None),
            ("GET", "/site/", None),
            ("POST", "/api/data", b'{"request": {"op": "query", "table": "private"}}'),
            ("POST", "/api/data", b'{"request": {"op": "delete-table", "table": "private"}}'),
            ("POST", "/self", b'{"config": {"viewer": {"http_addr": "0.0.0.0:%d"}}}' % vport),
            ("POST", "/api/groups", b'{"action": "create", "group": "g"}'),
        ]
        token = await tokenFor(viewer)
        for method, path, body in attacks:
            for headers in (evil, {**evil, "x-goop-token": token}):
                r = await treq.request(
                    method,
                    viewer + path,
                    data=body,
                    headers=httpHeaders({**headers, "content-type": "application/json"}),
                    persistent=False,
                )
                self.assertEqual(r.code, 421, (method, path))
                self.assertIn("Host", (await r.json())["error"])
        for host in (
            f"evil.example:{vport}",
            f"127.0.0.1.evil.example:{vport}",
            f"127.0.0.1:{vport + 1}",
            "",
        ):
            r = await treq.get(viewer + "/self", headers=httpHeaders({"host": host}), persistent=False)
            self.assertEqual(r.code, 421, host)
            await r.content()
        for host in (f"localhost:{vport}", f"127.0.0.1:{vport}", f"[::1]:{vport}", f"peer.lan:{vport}"):
            r = await treq.get(viewer + "/self", headers=httpHeaders({"host": host}), persistent=False)
            self.assertEqual(r.code, 200, host)
            await r.content()
        # the right Host without the token: 403; with it: accepted
        good = {"content-type": "application/json", "host": f"localhost:{vport}"}
        post = b'{"config": {"viewer": {"http_addr": "0.0.0.0:%d"}}}' % vport
        r = await treq.post(viewer + "/self", data=post, headers=httpHeaders(good), persistent=False)
        self.assertEqual(r.code, 403)
        self.assertIn("x-goop-token", (await r.json())["error"])
        r = await treq.post(
            viewer + "/self",
            data=post,
            headers=httpHeaders({**good, "x-goop-token": "wrong" * 10}),
            persistent=False,
        )
        self.assertEqual(r.code, 403)
        await r.content()
        with open(os.path.join(d, "goop.json"), "rb") as f:
            self.assertEqual(f.read(), before)
        r = await treq.post(
            viewer + "/self",
            data=b'{"label": "renamed"}',
            headers=httpHeaders({**good, "x-goop-token": token}),
            persistent=False,
        )
        self.assertEqual(r.code, 200)
        self.assertEqual((await r.json())["label"], "renamed")
        self.assertEqual(os.stat(os.path.join(d, "viewer.secret")).st_mode & 0o777, 0o600)

    async def test_managerRefusesRebinding(self) -> None:
        """The manager answers 421 to a rebinding Host and 403 to a change without its token; no peer is created."""
        from tests.support.process import scriptArgs

        peersDir = os.path.abspath(self.mktemp())
        os.makedirs(peersDir)
        mgr = DaemonProcess(self, scriptArgs("goop2"), cwd=peersDir, name="manager").start()
        m = await mgr.waitForLog(r"goop2 manager: (http://127\.0\.0\.1:(\d+))/")
        url, port = m.group(1), int(m.group(2))
        evil = {
            "host": f"evil.example:{port}",
            "origin": f"http://evil.example:{port}",
            "content-type": "application/json",
        }
        for method, path in (("GET", "/"), ("GET", "/api/peers"), ("POST", "/api/peers")):
            r = await treq.request(
                method, url + path, data=b'{"name": "evil"}', headers=httpHeaders(evil), persistent=False
            )
            self.assertEqual(r.code, 421, (method, path))
            await r.content()
        r = await treq.post(
            url + "/api/peers",
            data=b'{"name": "evil"}',
            headers=httpHeaders({"content-type": "application/json"}),
            persistent=False,
        )
        self.assertEqual(r.code, 403)
        await r.content()
        self.assertFalse(os.path.exists(os.path.join(peersDir, "peers", "evil")))
        token = await tokenFor(url)
        r = await treq.post(
            url + "/api/peers",
            data=b'{"name": "good"}',
            headers=httpHeaders({"content-type": "application/json", "x-goop-token": token}),
            persistent=False,
        )
        self.assertEqual(r.code, 200)
        await r.content()
        self.assertTrue(os.path.isdir(os.path.join(peersDir, "peers", "good")))


class HubAbuseTests(TestCase, HubFixture):
    async def test_forwardedForAndReplay(self) -> None:
        """Rotating X-Forwarded-For gets past neither the /publish rate limit nor the SSE cap; a replayed online record after offline is refused."""
        # Every address's bucket starts with BURST tokens and gains RATE a
        # second: however slowly a loaded machine sends the 40 requests,
        # no more than BURST + RATE * elapsed of them can pass if they all
        # count against the one real address (the sender's, 127.0.0.1).
        rate, burst = 1.0, 20
        hub, url = await self.startHub(self, "--publish-rate", str(rate), "--publish-burst", str(burst))
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        who = loadIdentity(d)
        codes = []
        started = time.monotonic()
        for i in range(40):
            body, sig = signedPublication(who, "flood", 4001, 60)
            r = await treq.post(
                url + "/publish",
                data=body,
                headers=httpHeaders({"x-goop-signature": sig, "x-forwarded-for": f"198.51.100.{i + 1}"}),
                persistent=False,
            )
            codes.append(r.code)
            await r.content()
        elapsed = time.monotonic() - started
        self.assertEqual(codes[:burst], [200] * burst)
        self.assertLessEqual(set(codes), {200, 429})
        self.assertLessEqual(codes.count(200), burst + int(rate * elapsed) + 1, f"{elapsed:.1f} s: {codes}")
        # SSE: 64 clients per address whatever they claim to forward
        port = int(url.rsplit(":", 1)[1])
        streams = [openStream(port, "/events", f"198.51.100.{i + 1}") for i in range(65)]
        try:
            self.assertEqual([code for code, _ in streams], [200] * 64 + [429])
        finally:
            for _, sock in streams:
                sock.close()
        # replay: online, offline, then the old online record again
        os.makedirs(os.path.join(d, "other"))
        other = loadIdentity(os.path.join(d, "other"))
        online = signedPublication(other, "replayed", 4002, 60)
        offline = signedPublication(other, "replayed", 4002, 60, "offline")
        for (body, sig), code in ((online, 200), (offline, 200), (online, 400)):

            async def notLimited(body: bytes = body, sig: str = sig) -> Any:
                r = await treq.post(
                    url + "/publish",
                    data=body,
                    headers=httpHeaders({"x-goop-signature": sig}),
                    persistent=False,
                )
                if r.code != 429:
                    return r
                await r.content()
                return None

            r = await waitUntil(notLimited, "a publication past the rate limit", 25, 0.5)
            self.assertEqual(r.code, code)
            text = await r.text()
            if code == 400:
                self.assertIn("replayed", text)
        self.assertNotIn(other.peerId, [p["peer_id"] for p in await getJSON(url + "/peers.json")])
