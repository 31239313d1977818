"""
Cluster-wide deployment in the agent: declarations in the replicated state,
C{/api/deploy}, and the reconciler on a fake clock and an in-memory engine.
"""

from __future__ import annotations

import io
import json
import os
import stat
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from suite.constellation.catalog import NodeEntry
from suite.constellation.deploy.agent import (
    PREFIX,
    DeclarationResource,
    DeclarationStore,
    DeployReconciler,
    newestDeclarations,
)
from suite.constellation.interfaces import IServiceCatalog
from suite.constellation.state import ClusterState
from tests.clustor.helpers import captureLogs
from tests.constellation.test_deploy_plan import FakeEngine

FILE = """\
name: st
services:
  here: {image: img, command: [ok, "${ARG}"], placement: {nodes: [a]}}
  there: {image: img, placement: {nodes: [b]}}
"""


@implementer(IServiceCatalog)
class _Catalog:
    nodeName = "a"

    def __init__(self) -> None:
        self.alive = ["a", "b"]

    def services(self) -> list[Any]:
        return []

    def nodes(self) -> list[NodeEntry]:
        return [NodeEntry(n, 50) for n in self.alive]


def post(resource: DeclarationResource, body: bytes, host: str = "127.0.0.1") -> tuple[int, Any]:
    # Any: DummyRequest stands in for an IRequest without declaring it.
    request: Any = DummyRequest([b""])
    request.method = b"POST"
    request.client = IPv4Address("TCP", host, 5555)
    request.content = io.BytesIO(body)
    out = resource.render(request)
    return request.responseCode or 200, json.loads(out)


class DeclarationTests(SynchronousTestCase):
    """
    C{POST /api/deploy} stores a declaration in this node's state entries;
    the newest declaration of a stack wins cluster-wide.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.state = ClusterState("a", 1, self.clock)
        self.now = [100.0]
        self.resource = DeclarationResource(self.state, lambda: {"st": {"ok": True}}, lambda: self.now[0])

    def test_post(self) -> None:
        """
        A loopback client's declaration is stored under C{deploy/STACK}
        with its variables, prune flag and issue time; C{GET} shows it.
        """
        code, answer = post(
            self.resource,
            json.dumps({"stack": "st", "file": FILE, "env": {"ARG": "1"}, "prune": True}).encode(),
        )
        self.assertEqual(code, 202)
        entry = self.state.entries("a")[PREFIX + "st"]
        self.assertEqual(entry, {"file": FILE, "env": {"ARG": "1"}, "prune": True, "issued": 100.0})
        request: Any = DummyRequest([b""])
        body = json.loads(self.resource.render(request))
        self.assertEqual(body["declarations"]["st"]["digest"], answer["digest"])
        self.assertEqual(body["results"], {"st": {"ok": True}})

    def test_refused(self) -> None:
        """
        A remote client gets 403; a body that is not a declaration, or a
        file that is not a YAML mapping, gets 400 with a reason.
        """
        ok = json.dumps({"stack": "st", "file": FILE}).encode()
        self.assertEqual(post(self.resource, ok, "192.0.2.1")[0], 403)
        code, answer = post(self.resource, b"{")
        self.assertEqual(code, 400)
        self.assertIn("expected", answer["error"])
        self.assertEqual(post(self.resource, json.dumps({"stack": "st", "file": "[1"}).encode())[0], 400)
        self.assertEqual(post(self.resource, json.dumps({"stack": "st", "file": "- 1"}).encode())[0], 400)
        self.assertEqual(
            post(self.resource, json.dumps({"stack": "st", "file": FILE, "env": {"A": 1}}).encode())[0], 400
        )
        self.assertEqual(self.state.entries("a"), {})

    def test_badStackName(self) -> None:
        """
        A stack name that a deployment file could not carry is refused.
        """
        for name in ("../x", "", ".hidden", "a b"):
            code, answer = post(self.resource, json.dumps({"stack": name, "file": FILE}).encode())
            self.assertEqual(code, 400, name)
            self.assertIn("is not a valid stack name", answer["error"])
        self.assertEqual(self.state.entries("a"), {})

    def test_nestedTooDeeply(self) -> None:
        """
        A body or a file nested past what the parsers take gets a 400 with a
        reason, not a server error.
        """
        code, answer = post(self.resource, b"[" * 100_000)
        self.assertEqual((code, answer["error"]), (400, "declaration is nested too deeply"))
        deep = json.dumps({"stack": "st", "file": "a: " + "[" * 50_000}).encode()
        code, answer = post(self.resource, deep)
        self.assertEqual(code, 400)
        self.assertIn("not a deployment file", answer["error"])
        self.assertEqual(self.state.entries("a"), {})

    def test_newest(self) -> None:
        """
        Of declarations held by several nodes, the most recently issued wins.
        """
        other = ClusterState("b", 1, self.clock, broadcast=self.state.notifyMsg)
        other.update({PREFIX + "st": {"file": "new", "env": {}, "issued": 200.0}})
        self.state.update({PREFIX + "st": {"file": "old", "env": {}, "issued": 150.0}})
        self.state.update({PREFIX + "x": "garbage"})
        decls = newestDeclarations(self.state)
        self.assertEqual(list(decls), ["st"])
        self.assertEqual((decls["st"]["file"], decls["st"]["origin"]), ("new", "b"))


class ReconcilerTests(SynchronousTestCase):
    """
    L{DeployReconciler} applies this node's part of the newest declaration.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.state = ClusterState("a", 1, self.clock)
        self.engine = FakeEngine()
        self.catalog = _Catalog()
        self.reconciler = DeployReconciler(
            self.engine, self.state, self.catalog, self.clock, "/nonexistent", "/v", None, interval=5
        )
        self.reconciler.startService()
        self.addCleanup(self.reconciler.stopService)

    def declare(self, text: str, **env: str) -> None:
        self.state.update({PREFIX + "st": {"file": text, "env": env, "issued": self.clock.seconds()}})

    def names(self) -> list[str]:
        return sorted(c["Name"] for c in self.engine.containers_.values())

    def tick(self) -> None:
        for _ in range(10):
            self.clock.advance(1)

    def test_applies(self) -> None:
        """
        Only this node's service is created, with the declared variables;
        an unchanged declaration is not planned again; a change is applied;
        when a node leaves, placement is recomputed.
        """
        self.declare(FILE, ARG="7")
        self.tick()
        self.assertEqual(self.names(), ["here"])
        self.assertEqual(self.reconciler.results["st"]["ok"], True)
        self.assertIn("service here: created", self.reconciler.results["st"]["lines"])
        calls = len(self.engine.calls)
        self.tick()
        self.assertEqual(len(self.engine.calls), calls)
        self.declare(FILE.replace("nodes: [b]", "nodes: [b, a]"), ARG="7")
        self.tick()
        self.assertEqual(self.names(), ["here"])
        self.catalog.alive = ["a"]
        self.tick()
        self.assertEqual(self.names(), ["here", "there"])

    def test_copyKept(self) -> None:
        """
        A declaration received from another node is copied into this
        node's entries, so it survives that node's departure.
        """
        other = ClusterState("b", 1, self.clock, broadcast=self.state.notifyMsg)
        other.update({PREFIX + "st": {"file": FILE, "env": {"ARG": "2"}, "prune": False, "issued": 5.0}})
        self.tick()
        self.assertEqual(self.names(), ["here"])
        self.state.forget("b")
        self.assertEqual(
            newestDeclarations(self.state)["st"],
            {"file": FILE, "env": {"ARG": "2"}, "prune": False, "issued": 5.0, "origin": "a"},
        )
        calls = len(self.engine.calls)
        self.tick()
        self.assertEqual(len(self.engine.calls), calls)

    def test_failureRetried(self) -> None:
        """
        A declaration that fails here (an unset variable) is reported and
        tried again on the next round; once fixed it is applied.
        """
        self.declare(FILE)
        self.tick()
        result = self.reconciler.results["st"]
        self.assertEqual(result["ok"], False)
        self.assertEqual(
            result["failures"], ["service here: command[1]: ${ARG} is not set in the environment"]
        )
        self.declare(FILE, ARG="1")
        self.tick()
        self.assertEqual(self.names(), ["here"])
        self.reconciler.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StoreTests(SynchronousTestCase):
    """
    Declarations are kept in DATA_DIR/deploy and come back after a restart
    of every agent (the cluster state lives in memory only).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = os.path.join(self.mktemp(), "deploy")
        self.writes: list[str] = []

    def inThread(self, f: Any) -> Any:
        self.writes.append("write")
        f()
        return succeed(None)

    def reconciler(self, node: str = "a") -> tuple[ClusterState, FakeEngine, DeployReconciler]:
        state = ClusterState(node, len(self.writes) + 1, self.clock)
        engine = FakeEngine()
        catalog = _Catalog()
        catalog.nodeName = node
        reconciler = DeployReconciler(
            engine,
            state,
            catalog,
            self.clock,
            "/nonexistent",
            "/v",
            None,
            interval=5,
            store=DeclarationStore(self.directory, self.inThread),
        )
        reconciler.startService()
        self.addCleanup(reconciler.stopService)
        return state, engine, reconciler

    def tick(self) -> None:
        for _ in range(10):
            self.clock.advance(1)

    def test_keptAcrossRestart(self) -> None:
        """
        The newest declaration (received from another node here) is written
        once, 0600, and a new agent on the same directory starts with it in
        its own entries and applies it; a newer one replaces the file.
        """
        state, engine, reconciler = self.reconciler()
        other = ClusterState("b", 1, self.clock, broadcast=state.notifyMsg)
        other.update({PREFIX + "st": {"file": FILE, "env": {"ARG": "2"}, "prune": True, "issued": 5.0}})
        self.tick()
        self.tick()
        self.assertEqual(self.writes, ["write"])
        path = os.path.join(self.directory, "st.json")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)
        reconciler.stopService()

        events = captureLogs(self)
        state2, engine2, _ = self.reconciler()
        self.assertEqual(
            state2.entries("a")[PREFIX + "st"],
            {"file": FILE, "env": {"ARG": "2"}, "prune": True, "issued": 5.0},
        )
        self.assertIn(
            "deploy: 1 declaration(s) kept from the last run (st)", [formatEvent(e) for e in events]
        )
        self.tick()
        self.assertEqual(sorted(c["Name"] for c in engine2.containers_.values()), ["here"])
        self.assertEqual(self.writes, ["write"])  # what was read back is not written again
        state2.update({PREFIX + "st": {"file": FILE, "env": {"ARG": "3"}, "issued": 9.0}})
        self.tick()
        self.assertEqual(len(self.writes), 2)
        with open(path) as f:
            self.assertEqual(json.load(f)["env"], {"ARG": "3"})

    def test_keptWhenHanded(self) -> None:
        """
        A declaration handed over by POST is written at once, not at the
        next round.
        """
        state, _, reconciler = self.reconciler()
        resource = DeclarationResource(state, lambda: reconciler.results, lambda: 7.0, stored=reconciler.keep)
        code, _ = post(resource, json.dumps({"stack": "st", "file": FILE, "env": {"ARG": "1"}}).encode())
        self.assertEqual((code, self.writes), (202, ["write"]))
        with open(os.path.join(self.directory, "st.json")) as f:
            self.assertEqual(json.load(f), {"file": FILE, "env": {"ARG": "1"}, "prune": False, "issued": 7.0})
        self.tick()
        self.assertEqual(self.writes, ["write"])

    def test_unreadableSkipped(self) -> None:
        """
        A kept file that is not a declaration is logged and left out; other
        files are not read.
        """
        os.makedirs(self.directory)
        for name, body in (("bad.json", "{"), ("odd.json", "[1]"), ("notes.txt", "x"), ("..json", "{}")):
            with open(os.path.join(self.directory, name), "w") as f:
                f.write(body)
        events = captureLogs(self)
        state, _, _ = self.reconciler()
        self.assertEqual(state.entries("a"), {})
        lines = [formatEvent(e) for e in events if e.get("log_level") is not None]
        warned = [line for line in lines if line.startswith("deploy: ")]
        self.assertEqual(len(warned), 2, warned)
        self.assertIn("bad.json", warned[0])
        self.assertIn("odd.json is not a declaration", warned[1])
