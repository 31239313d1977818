"""
A node's placement computed from the feeds.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from suite.clustor.placement import NodePlacement, placementFor
from suite.clustor.state import parseState
from tests.clustor.helpers import STATE_YAML

A = "spiffe://example.org/ceptra/a"


def feeds() -> dict[str, dict[str, object]]:
    docs = parseState(STATE_YAML).documents(1)
    return {name: json.loads(doc.body) for name, doc in docs.items()}


class PlacementTests(SynchronousTestCase):
    """
    L{placementFor} finds the node by SPIFFE ID and reads the other feeds.
    """

    def test_hosted(self) -> None:
        """
        ceptra-a hosts p0, warm, held by the pending barrier epoch-1.
        """
        f = feeds()
        placement = placementFor(A, f["routing"], f["warmup"], f["activation"])
        self.assertEqual(placement, NodePlacement("ceptra-a", ("p0",), {"p0": True}, ("epoch-1",)))
        self.assertEqual(placement.toJSON()["partitions"], ["p0"])

    def test_unknownNode(self) -> None:
        """
        A node the routing table does not name hosts nothing.
        """
        self.assertEqual(placementFor("spiffe://example.org/x", feeds()["routing"]), NodePlacement())
        self.assertEqual(placementFor(A, None), NodePlacement())

    def test_missingFeeds(self) -> None:
        """
        Without warmup and activation documents partitions count as cold and
        no barrier is pending.
        """
        placement = placementFor(A, feeds()["routing"])
        self.assertEqual((placement.warm, placement.pendingBarriers), ({"p0": False}, ()))

    def test_malformed(self) -> None:
        """
        Malformed documents from the network are ignored, never trusted.
        """
        routing = {
            "nodes": {"n": {"spiffe": A}},
            "partitions": [1, {"id": 2}, {"id": "p", "replicas": "n"}, {"id": "q", "replicas": ["n"]}],
        }
        warmup = {"partitions": {"q": "yes"}}
        activation = {
            "barriers": [
                "b",
                {"id": "b2", "partitions": "q"},
                {"id": "b3", "partitions": ["q"], "ready": "no"},
            ]
        }
        self.assertEqual(
            placementFor(A, routing, warmup, activation), NodePlacement("n", ("q",), {"q": False}, ("b3",))
        )
        self.assertEqual(placementFor(A, {"nodes": []}), NodePlacement())
