"""
Parsing and validation of the control plane's state file.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from suite.clustor.state import FEEDS, MAX_STATE_BYTES, StateError, loadStateFile, parseState
from tests.clustor.helpers import STATE_YAML, writeState


class ParseStateTests(SynchronousTestCase):
    """
    L{parseState} accepts the documented shape and names the key of any error.
    """

    def test_valid(self) -> None:
        """
        The example state parses into partitions, features, warmup and barriers.
        """
        state = parseState(STATE_YAML, "s.yaml")
        self.assertEqual([p["id"] for p in state.partitions], ["p0", "p1"])
        self.assertEqual(state.partitions[0]["leader"], "ceptra-a")
        self.assertEqual(state.features["cep.max_window_ms"], 60000)
        self.assertEqual(state.warmup["p1"], {"ready": False})
        self.assertEqual(state.barriers[0]["note"], "rolling upgrade")

    def test_jsonAccepted(self) -> None:
        """
        A JSON state file is accepted too.
        """
        state = parseState(json.dumps({"partitions": [{"id": "p", "replicas": ["n"]}]}))
        self.assertEqual(state.partitions[0]["replicas"], ["n"])

    def test_documents(self) -> None:
        """
        Every feed renders as JSON carrying its name, the revision and an etag
        that depends only on the content.
        """
        state = parseState(STATE_YAML)
        one = state.documents(1)
        two = state.documents(2)
        self.assertEqual(sorted(one), sorted(FEEDS))
        routing = json.loads(one["routing"].body)
        self.assertEqual(routing["feed"], "routing")
        self.assertEqual(routing["revision"], 1)
        self.assertEqual(routing["partitions"][1], {"id": "p1", "replicas": ["ceptra-b"], "epoch": 1})
        self.assertEqual(one["features"].etag, two["features"].etag)
        self.assertNotEqual(one["features"].etag, one["warmup"].etag)

    def assertRejected(self, text: str, *fragments: str) -> None:
        with self.assertRaises(StateError) as cm:
            parseState(text, "cp.yaml")
        message = str(cm.exception)
        self.assertTrue(message.startswith("cp.yaml: "), message)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_errors(self) -> None:
        """
        Each kind of mistake is one line naming the file, the key and the reason.
        """
        self.assertRejected("partitions: [", "line")
        self.assertRejected("- a\n- b\n", "mapping")
        self.assertRejected("features: {}\n", "partitions", "required")
        self.assertRejected("partitions: []\nbogus: 1\n", "bogus", "unknown key")
        self.assertRejected("partitions: [{id: p0, replicas: []}]", "partitions[0].replicas", "at least one")
        self.assertRejected("partitions: [{id: p0, replicas: [a, a]}]", "partitions[0].replicas", "twice")
        self.assertRejected(
            "partitions: [{id: p0, replicas: [a]}, {id: p0, replicas: [b]}]", "partitions[1].id", "duplicate"
        )
        self.assertRejected(
            "partitions: [{id: 'bad id', replicas: [a]}]", "partitions[0].id", "not a valid id"
        )
        self.assertRejected("partitions: [{id: p0, replicas: [a], leader: b}]", "partitions[0].leader")
        for bad in ("0", "true", "1.5", "'2'"):
            self.assertRejected(
                f"partitions: [{{id: p0, replicas: [a], epoch: {bad}}}]", "partitions[0].epoch", "integer"
            )
        self.assertEqual(
            parseState("partitions: [{id: p0, replicas: [a], epoch: 9}]").partitions[0]["epoch"], 9
        )
        self.assertRejected(
            "nodes: {a: {}}\npartitions: [{id: p0, replicas: [b]}]",
            "partitions[0].replicas",
            "unknown node 'b'",
        )
        self.assertRejected("nodes: {a: {spiffe: 'http://x'}}\npartitions: []", "nodes.a.spiffe")
        self.assertRejected("nodes: {a: {port: 'x'}}\npartitions: []", "nodes.a.port")
        self.assertRejected("partitions: []\nfeatures: {x: [1]}", "features.x")
        self.assertRejected("partitions: []\nfeatures: {x: .nan}", "features.x", "finite")
        self.assertRejected("partitions: []\nfeatures: {x: 2024-01-01}", "features.x")
        self.assertRejected("partitions: []\nwarmup: {p9: {ready: true}}", "warmup.p9", "unknown partition")
        self.assertRejected(
            "partitions: [{id: p0, replicas: [a]}]\nwarmup: {p0: {ready: 'yes'}}", "warmup.p0.ready"
        )
        self.assertRejected(
            "partitions: [{id: p0, replicas: [a]}]\nwarmup: {p0: {ready: true, progress: 2}}",
            "warmup.p0.progress",
        )
        self.assertRejected(
            "partitions: []\nactivation: {barriers: [{id: b, partitions: [p7]}]}",
            "activation.barriers[0].partitions",
        )
        self.assertRejected("partitions: []\nactivation: {gates: []}", "activation.gates")

    def test_nodeAddresses(self) -> None:
        """
        A node's C{raft} and C{admin} addresses are C{HOST:PORT} with a port
        from 1 to 65535; its C{spiffe} names a workload.
        """
        for bad, why in (
            ("x", "not HOST:PORT"),
            ("10.0.0.1:99999", "out of range"),
            ("10.0.0.1:0", "port 0"),
            ("10.0.0.1:http", "not a number"),
            (":26021", "no host"),
        ):
            self.assertRejected(f"nodes: {{a: {{raft: '{bad}'}}}}\npartitions: []", "nodes.a.raft", why)
            self.assertRejected(f"nodes: {{a: {{admin: '{bad}'}}}}\npartitions: []", "nodes.a.admin", why)
        self.assertRejected("nodes: {a: {spiffe: 'spiffe://example.org'}}\npartitions: []", "nodes.a.spiffe")
        self.assertRejected("nodes: {a: {spiffe: 'spiffe://Ex/a'}}\npartitions: []", "nodes.a.spiffe")
        nodes = parseState(
            "nodes: {a: {raft: '[::1]:26021', admin: 'a.example:26020'}}\npartitions: []"
        ).nodes
        self.assertEqual(nodes["a"], {"raft": "[::1]:26021", "admin": "a.example:26020"})

    def test_nodeIdentitiesUnique(self) -> None:
        """
        Two nodes may not share a SPIFFE ID or a Raft address: CEPtra nodes
        find themselves and their peers by them.
        """
        self.assertRejected(
            "nodes: {a: {spiffe: 'spiffe://x/n'}, b: {spiffe: 'spiffe://x/n'}}\npartitions: []",
            "nodes.b.spiffe",
            "already used by node 'a'",
        )
        self.assertRejected(
            "nodes: {a: {raft: 'h:1'}, b: {raft: 'h:1'}}\npartitions: []", "nodes.b.raft", "node 'a'"
        )
        # one node's admin and Raft listeners may share a host
        parseState("nodes: {a: {raft: 'h:1', admin: 'h:2'}, b: {raft: 'h:2'}}\npartitions: []")

    def test_replicaNodesComplete(self) -> None:
        """
        With C{nodes}, a node holding a replica has a Raft address and a
        SPIFFE ID: without them the nodes would run its groups without it.
        """
        self.assertRejected(
            "nodes: {a: {raft: 'h:1'}}\npartitions: [{id: p0, replicas: [a]}]",
            "partitions[0].replicas",
            "node 'a' holds a replica but has no spiffe (nodes.a)",
        )
        self.assertRejected(
            "nodes: {a: {admin: 'h:2'}}\npartitions: [{id: p0, replicas: [a]}]",
            "has no raft and no spiffe",
        )
        # a node holding no replica may lack them
        parseState(
            "nodes: {a: {raft: 'h:1', spiffe: 'spiffe://x/a'}, b: {}}\npartitions: [{id: p, replicas: [a]}]"
        )

    def test_duplicateKeys(self) -> None:
        """
        A key given twice in one mapping (YAML or JSON) is refused rather
        than the last one silently winning.
        """
        self.assertRejected(
            "partitions:\n  - id: p0\n    replicas: [a]\n    replicas: [b]\n",
            "line 4",
            "'replicas' given twice",
        )
        self.assertRejected('{"partitions": [], "partitions": [{"id": "p"}]}', "'partitions' given twice")
        self.assertRejected("partitions: []\nfeatures: {x: 1, x: 2}", "'x' given twice")

    def test_barrierPartitions(self) -> None:
        """
        A barrier names at least one partition: one without any would hold
        back nothing.
        """
        for barrier in ("{id: b}", "{id: b, partitions: []}"):
            self.assertRejected(
                f"partitions: [{{id: p0, replicas: [a]}}]\nactivation: {{barriers: [{barrier}]}}",
                "activation.barriers[0].partitions",
                "at least one partition",
            )


class LoadStateFileTests(SynchronousTestCase):
    """
    L{loadStateFile} names the file when it cannot be used.
    """

    def test_missing(self) -> None:
        """
        A missing file is an error naming it.
        """
        path = os.path.join(self.mktemp(), "nope.yaml")
        with self.assertRaises(StateError) as cm:
            loadStateFile(path)
        self.assertIn(path, str(cm.exception))
        self.assertIn("cannot read", str(cm.exception))

    def test_tooLarge(self) -> None:
        """
        A file over the size limit is refused before parsing.
        """
        path = writeState(self.mktemp(), "#" * (MAX_STATE_BYTES + 10))
        with self.assertRaises(StateError) as cm:
            loadStateFile(path)
        self.assertIn("larger than", str(cm.exception))

    def test_ok(self) -> None:
        """
        A valid file loads.
        """
        state = loadStateFile(writeState(self.mktemp()))
        self.assertEqual(len(state.partitions), 2)
