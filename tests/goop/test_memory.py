"""
A Goop2 process loads what its configuration uses (docs/performance.md,
resident memory): a rendezvous hub never imports the peer's data store, Lua
pool, P2P streams, groups, mDNS or HTTP client; nobody imports
prometheus_client before the first scrape of C{/metrics}, nor tarfile before
the first template bundle; a console script does not import every twistd
plugin, nor (C{goop2}) Twisted's HTTP/2 support with hyper-h2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from suite.goop.cli import M_ARENA_MAX, MALLOC_ARENAS, fewerMallocArenas
from suite.goop.rendezvous.hub import RendezvousHub
from suite.goop.rendezvous.templates import TemplateStore
from tests.support.process import freePort

#: Run in a fresh interpreter (this test process has imported everything):
#: build and start the service of C{sys.argv[1:]} under a memory reactor and
#: print which of the watched modules it loaded.
PROBE = """
import json, sys
from twisted.internet.testing import MemoryReactorClock
from suite.goop.tap import Options, makeService
options = Options()
options.parseOptions(sys.argv[1:])
service = makeService(options, MemoryReactorClock())
service.startService()
watched = json.loads(sys.stdin.read())
print(json.dumps(sorted(m for m in watched if m in sys.modules)), flush=True)
import os
os._exit(0)  # the peer's SQLite thread is left waiting on the memory reactor
"""

#: Modules only a full peer needs, and those nobody needs at start.
PEER_ONLY = [
    "suite.goop.groups",
    "suite.goop.lua.engine",
    "suite.goop.lua.pool",
    "suite.goop.p2p.discovery",
    "suite.goop.p2p.streams",
    "suite.goop.peer.store",
    "sqlite3",
    "treq",
    "zeroconf",
]
ON_DEMAND = ["prometheus_client", "tarfile", "suite.web.metrics", "suite.goop.rendezvous.peerdb"]
#: What the goop2 console script keeps out of its process (cleartext HTTP
#: only, so HTTP/2 is never negotiated).
HTTP2 = ["h2", "h2.connection", "hpack", "hyperframe", "priority", "twisted.web._http2", "suite.web.http2"]
#: What a running peer imports only at first use, or never: the Lua
#: sandbox, its SSRF-guarded HTTP client and lupa run in the worker
#: processes alone; zeroconf only with mDNS on (off here).
LAZY = [
    "lupa",
    "suite.goop.lua.sandbox",
    "suite.goop.lua.ssrf",
    "suite.goop.lua.worker",
    "zeroconf",
    *ON_DEMAND,
]

#: Run C{goop2 ARGS} (the console script's C{main}) in a fresh interpreter;
#: once the viewer at C{sys.argv[1]} accepts connections (the last listener
#: a peer starts), print which watched modules are loaded, then ask the
#: viewer for C{/healthz} through the same reactor and print the status.
CLI_PROBE = """
import json, os, socket, sys
from twisted.internet import reactor
watched = json.loads(sys.stdin.read())
host, port = sys.argv[1].rsplit(":", 1)
deadline = reactor.seconds() + 60

def report(**out):
    # twistd sends sys.stdout to the log; the pipe is still file 1.
    os.write(1, json.dumps(out).encode() + b"\\n")
    os._exit(0)

def poll():
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        if reactor.seconds() > deadline:
            report(error="the viewer never listened")
        reactor.callLater(0.05, poll)
        return
    # A module kept out is None in sys.modules: count only loaded ones.
    loaded = sorted(m for m in watched if sys.modules.get(m) is not None)
    from twisted.internet.protocol import Protocol
    from twisted.web.client import Agent

    class Body(Protocol):
        def __init__(self, response):
            self.response, self.data = response, b""
        def dataReceived(self, data):
            self.data += data
        def connectionLost(self, reason):
            report(loaded=loaded, code=self.response.code, body=self.data.decode())

    def done(response):
        response.deliverBody(Body(response))
    d = Agent(reactor).request(b"GET", f"http://{host}:{port}/healthz".encode())
    d.addCallback(done).addErrback(lambda f: report(loaded=loaded, error=f.getErrorMessage()))

reactor.callWhenRunning(poll)
from suite.goop.cli import main
main(sys.argv[2:])
"""


#: Run the Lua worker's C{main} in a fresh interpreter with one job on
#: stdin (the peer's pipe), then write to stderr which watched modules the
#: worker loaded serving it.
WORKER_PROBE = """
import json, sys
from suite.goop.lua import worker
watched = json.loads(sys.argv[2])
code = worker.main(["worker", sys.argv[1]])
loaded = sorted(m for m in watched if sys.modules.get(m) is not None)
sys.stderr.write(json.dumps({"code": code, "loaded": loaded}) + "\\n")
"""
#: What a Lua worker never loads (Twisted, TLS, the peer's modules) or
#: loads only at a function's first C{goop.http} call (the SSRF guard with
#: C{http.client} and C{ssl}).
WORKER_NEVER = [
    "twisted",
    "twisted.internet",
    "zope.interface",
    "OpenSSL",
    "cryptography",
    "suite.goop.lua.pool",
    "suite.goop.lua.engine",
]
WORKER_LAZY = ["suite.goop.lua.ssrf", "http.client", "ssl", "socket", "urllib.parse"]


def writeConfig(d: str, doc: dict[str, Any]) -> str:
    os.makedirs(d)
    with open(os.path.join(d, "goop.json"), "w") as f:
        json.dump(doc, f)
    return d


def loadedBy(argv: list[str], watched: list[str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        input=json.dumps(watched),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


class LazyImportTests(SynchronousTestCase):
    def test_hubLoadsNoPeer(self) -> None:
        """
        C{goop2 rendezvous DIR} started: the hub is imported; none of the
        peer's modules, nor prometheus_client, tarfile or the shared peer
        DB, are.
        """
        d = writeConfig(
            os.path.abspath(self.mktemp()),
            {"presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": 8787}},
        )
        loaded = loadedBy(["rendezvous", d], PEER_ONLY + ON_DEMAND + ["suite.goop.rendezvous.hub"])
        self.assertEqual(loaded, ["suite.goop.rendezvous.hub"])

    def test_peerLoadsItsOwn(self) -> None:
        """
        C{goop2 peer DIR} (not hosting a hub) started: its own modules are
        imported (so the probe can fail), the hub's and the on-demand ones
        are not.
        """
        d = writeConfig(
            os.path.abspath(self.mktemp()),
            {"p2p": {"listen_port": 4001}, "viewer": {"http_addr": "127.0.0.1:8080"}},
        )
        loaded = loadedBy(["peer", d], PEER_ONLY + ON_DEMAND + ["suite.goop.rendezvous.hub"])
        self.assertEqual(loaded, sorted(set(PEER_ONLY) - {"zeroconf", "treq"}))


class ConsoleScriptTests(SynchronousTestCase):
    def test_peerWithoutHTTP2(self) -> None:
        """
        C{goop2 peer DIR} with a rendezvous hub configured, running: its
        hub client and Lua pool are loaded; neither hyper-h2, hpack,
        hyperframe nor Twisted's or the suite's HTTP/2 module is imported,
        though C{twisted.web.http} is, nor any of L{LAZY} (the Lua sandbox,
        lupa, zeroconf, the on-demand modules); the viewer answers
        C{/healthz} over HTTP/1.1.
        """
        viewer = f"127.0.0.1:{freePort()}"
        d = writeConfig(
            os.path.abspath(self.mktemp()),
            {
                "p2p": {"listen_port": freePort(), "listen_addr": "127.0.0.1", "mdns_tag": ""},
                "presence": {"rendezvous_wan": f"http://127.0.0.1:{freePort()}"},
                "viewer": {"http_addr": viewer},
            },
        )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
        result = subprocess.run(
            [sys.executable, "-c", CLI_PROBE, viewer, "peer", d],
            input=json.dumps(
                [
                    *HTTP2,
                    *LAZY,
                    "twisted.web.client",
                    "twisted.web.http",
                    "suite.web.limits",
                    "suite.goop.lua.pool",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            raise AssertionError(result.stderr[-3000:])
        out = json.loads(lines[-1])
        self.assertEqual(
            out.get("loaded"),
            ["suite.goop.lua.pool", "suite.web.limits", "twisted.web.client", "twisted.web.http"],
            out,
        )
        self.assertEqual(out.get("code"), 200, out)
        self.assertEqual(json.loads(out["body"]).get("status"), "ok", out)


class WorkerImportTests(SynchronousTestCase):
    def test_workerLoadsNoTwisted(self) -> None:
        """
        A Lua worker process (C{python -m suite.goop.lua.worker}) serving a
        function that queries C{data.db}: it answers, has loaded lupa and
        the sandbox, and neither Twisted, zope.interface, pyOpenSSL,
        cryptography, the peer's pool, nor (no C{goop.http} call) the SSRF
        guard, C{http.client}, C{ssl}, C{socket} or C{urllib.parse}.
        """
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        path = os.path.join(d, "data.db")
        import sqlite3

        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
            conn.execute("INSERT INTO notes VALUES ('a')")
        conn.close()
        job = {
            "caller": "peer",
            "function": "count",
            "source": "function call(request) return goop.db.scalar('SELECT COUNT(*) FROM notes') end",
            "params": None,
            "timeout": 5.0,
        }
        watched = [*WORKER_NEVER, *WORKER_LAZY, "lupa", "suite.goop.lua.sandbox"]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
        result = subprocess.run(
            [sys.executable, "-c", WORKER_PROBE, json.dumps({"data_path": path}), json.dumps(watched)],
            input=json.dumps(job) + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        answers = [json.loads(line) for line in result.stdout.splitlines()]
        self.assertEqual(answers, [{"ready": True}, {"ok": True, "result": 1}], result.stderr[-2000:])
        report = json.loads(result.stderr.strip().splitlines()[-1])
        self.assertEqual(report, {"code": 0, "loaded": ["lupa", "suite.goop.lua.sandbox"]})


class _FakeLibc:
    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


class MallocArenaTests(SynchronousTestCase):
    def test_limitSet(self) -> None:
        """
        Without C{MALLOC_ARENA_MAX} in the environment, glibc's
        C{mallopt(M_ARENA_MAX, 2)} is called and reported.
        """
        libc = _FakeLibc()
        self.assertTrue(fewerMallocArenas({}, libc))
        self.assertEqual(libc.calls, [(M_ARENA_MAX, MALLOC_ARENAS)])
        self.assertEqual((M_ARENA_MAX, MALLOC_ARENAS), (-8, 2))

    def test_operatorWins(self) -> None:
        """An operator's C{MALLOC_ARENA_MAX} (even empty) is left alone."""
        libc = _FakeLibc()
        self.assertFalse(fewerMallocArenas({"MALLOC_ARENA_MAX": "4"}, libc))
        self.assertFalse(fewerMallocArenas({"MALLOC_ARENA_MAX": ""}, libc))
        self.assertEqual(libc.calls, [])

    def test_noGlibc(self) -> None:
        """
        A C library without C{mallopt}, or one refusing the setting, leaves
        the process as it is and says so.
        """
        self.assertFalse(fewerMallocArenas({}, object()))
        refusing = _FakeLibc(result=0)
        self.assertFalse(fewerMallocArenas({}, refusing))
        self.assertEqual(refusing.calls, [(M_ARENA_MAX, MALLOC_ARENAS)])

    def test_realLibc(self) -> None:
        """
        On this (glibc) host the real call succeeds; the limit only
        applies to arenas made later, so setting it again is harmless.
        """
        self.assertTrue(fewerMallocArenas({}))


class OnFirstUseTests(SynchronousTestCase):
    def render(self, hub: RendezvousHub, method: bytes, *path: bytes) -> DummyRequest:
        request = DummyRequest(list(path))
        request.method = method
        # (traversed as the site does: each segment moves from postpath to prepath)
        resource = getChildForRequest(hub.resource(), request)
        body = resource.render(request)
        if isinstance(body, bytes):
            request.write(body)
            request.finish()
        return request

    def test_metricsOnFirstScrape(self) -> None:
        """
        The hub's C{/metrics}, made at the first request, is the suite's
        exposition (text format 0.0.4, C{goop_} metrics) and is kept;
        another method is a JSON 405.
        """
        hub = RendezvousHub(MemoryReactorClock(), templatesDir=self.mktemp())
        first = self.render(hub, b"GET", b"metrics")
        self.assertEqual(first.responseCode or 200, 200)
        self.assertEqual(
            first.responseHeaders.getRawHeaders(b"content-type"),
            [b"text/plain; version=0.0.4; charset=utf-8"],
        )
        text = b"".join(first.written).decode()
        self.assertIn("goop_hub_peers 0.0", text)
        self.assertIn("goop_hub_publications_total 0.0", text)
        self.assertIn("goop_event_loop_lag_seconds", text)
        post = self.render(hub, b"POST", b"metrics")
        self.assertEqual(post.responseCode, 405)
        self.assertIn("error", json.loads(b"".join(post.written)))

    def test_bundleImportsTarfile(self) -> None:
        """
        A template bundle (the one user of tarfile) is a gzip'd tar of the
        template's files.
        """
        root = self.mktemp()
        os.makedirs(os.path.join(root, "blog"))
        with open(os.path.join(root, "blog", "manifest.json"), "w") as f:
            json.dump({"title": "Blog"}, f)
        bundle = TemplateStore(root).bundle("blog")
        assert bundle is not None
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            self.assertEqual(tar.getnames(), ["blog/manifest.json"])
