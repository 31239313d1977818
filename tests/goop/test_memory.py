"""
A Goop2 process loads what its configuration uses (docs/performance.md,
resident memory): a rendezvous hub never imports the peer's data store, Lua
pool, P2P streams, groups, mDNS or HTTP client; nobody imports
prometheus_client before the first scrape of C{/metrics}, nor tarfile before
the first template bundle; a console script does not import every twistd
plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from suite.goop.rendezvous.hub import RendezvousHub
from suite.goop.rendezvous.templates import TemplateStore

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


class OnFirstUseTests(SynchronousTestCase):
    def render(self, hub: RendezvousHub, method: bytes, *path: bytes) -> DummyRequest:
        request = DummyRequest(list(path))
        request.method = method
        resource = hub.resource()
        for segment in path:
            resource = resource.getChildWithDefault(segment, request)
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
