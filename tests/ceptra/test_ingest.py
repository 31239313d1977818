"""
The client API: batch validation, ingest and rules through a simulated
cluster, results, routing, and rules from the features feed.
"""

from __future__ import annotations

import io
import json
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from suite.ceptra.ingest import (
    MAX_EVENTS,
    ClientAPI,
    FeatureRules,
    IngestError,
    IngestResource,
    PartitionsResource,
    ResultsResource,
    RoutingResource,
    RulesResource,
    validateEvents,
)
from suite.raft.multi import DialPolicy
from suite.web.sse import SSEHub
from tests.ceptra.test_partitions import RULES, Cluster, events, spiffe


def body(items: Any) -> bytes:
    return json.dumps(items).encode()


class ValidationTests(SynchronousTestCase):
    def test_formats(self) -> None:
        evs = events(3)
        self.assertEqual(validateEvents(body(evs)), evs)
        self.assertEqual(validateEvents(body({"events": evs})), evs)
        ndjson = b"\n".join(json.dumps(e).encode() for e in evs) + b"\n\n"
        self.assertEqual(validateEvents(ndjson, "application/x-ndjson"), evs)
        self.assertEqual(validateEvents(body([{"event_id": "x", "key": "k", "ts": 1}]))[0]["fields"], {})

    def test_refusals(self) -> None:
        good = {"event_id": "x", "key": "k", "ts": 1, "fields": {}}
        cases: list[tuple[bytes, str]] = [
            (b"{", "not JSON"),
            (body({"x": 1}), "JSON array"),
            (body([]), "empty batch"),
            (body([1]), "not a JSON object"),
            (body([{**good, "extra": 1}]), "unknown keys"),
            (body([{"event_id": "x", "key": "k"}]), "missing ['ts']"),
            (body([{**good, "event_id": ""}]), "event_id"),
            (body([{**good, "key": 5}]), "key must be"),
            (body([{**good, "ts": 1.5}]), "ts must be an integer"),
            (body([{**good, "ts": True}]), "ts must be an integer"),
            (body([{**good, "ts": 2**53}]), "at most 2^53-1 in magnitude"),
            (body([{**good, "fields": {"a": [1]}}]), "must be a scalar"),
            (body([{**good, "fields": {"ts": 1}}]), "reserved"),
            (body([{**good, "fields": {"a": "x" * 5000}}]), "longer than"),
            (body([{**good, "fields": {str(i): i for i in range(65)}}]), "at most 64"),
            (body([good] * (MAX_EVENTS + 1)), "limit is"),
            (b"{\n", "line 1 is not JSON"),
            (b"[" * 100_000, "body is nested too deeply"),
            (b"[]\n" + b"[" * 100_000 + b"\n", "line 2 is nested too deeply"),
        ]
        for raw, why in cases:
            kind = "application/x-ndjson" if raw.startswith((b"{\n", b"[]\n")) else "application/json"
            with self.assertRaises(IngestError, msg=why) as cm:
                validateEvents(raw, kind)
            self.assertIn(why, str(cm.exception))


class BodyRequest(DummyRequest):
    """
    A L{DummyRequest} with a body, as a server request has.
    """

    content: IO[bytes]


def request(method: bytes, path: list[bytes], payload: bytes = b"", **args: str) -> BodyRequest:
    req = BodyRequest(path)
    req.method = method
    req.content = io.BytesIO(payload)
    req.postpath = list(path)
    req.args = {k.encode(): [v.encode()] for k, v in args.items()}
    return req


def answer(req: DummyRequest) -> tuple[int, Any]:
    return req.responseCode or 200, json.loads(b"".join(req.written))


class ListeningHub(SSEHub):
    """
    A hub with one listening client (as far as publishers can tell).
    """

    clientCount = 1


class APIFixture(SynchronousTestCase):
    """
    Three nodes, two partitions led by C{a}, and C{a}'s client API.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(["a", "b", "c"], {"p0": ["a", "b", "c"], "p1": ["a", "b", "c"]})
        self.cluster.run(2.0)
        self.hub = ListeningHub(self.cluster.clock)
        self.published: list[tuple[str | None, Any]] = []

        def publish(event: str | None, data: Any, id: str | int | None = None) -> str:
            self.published.append((event, data))
            return "1"

        self.patch(self.hub, "publish", publish)
        manager = self.cluster.managers["a"]
        self.api = ClientAPI(
            manager, lambda: self.cluster.routing, None, self.cluster.clock, self.hub, DialPolicy(1, 3, 0.05)
        )
        manager.onResults = self.api.publishResults
        # a leads both partitions: transfer leadership where needed.
        for pid in ("p0", "p1"):
            leader = self.cluster.leader(pid)
            assert leader is not None
            if leader is not manager:
                leader.partitions[pid].node.transferLeadership(spiffe("a"))
        self.cluster.run(1.0)

    def render(self, resource: Any, req: DummyRequest) -> tuple[int, Any]:
        method = req.method.decode()
        result = getattr(resource, f"render_{method}")(req)
        if result is NOT_DONE_YET:
            self.cluster.run(0.5)
        else:
            req.write(result)
        return answer(req)


class APITests(APIFixture):
    def test_ingestRulesResults(self) -> None:
        """
        Rules go to every partition; a batch is split by key and each share
        committed; results are queryable and streamed; a resent batch is not
        counted twice.
        """
        code, out = self.render(RulesResource(self.api), request(b"POST", [], body(RULES)))
        self.assertEqual(code, 200, out)
        self.assertEqual(sorted(out["partitions"]), ["p0", "p1"])
        code, out = self.render(IngestResource(self.api), request(b"POST", [], body(events(40))))
        self.assertEqual(code, 200, out)
        self.assertEqual((out["events"], out["accepted"], out["duplicates"]), (40, 40, 0))
        self.assertEqual(sorted(out["partitions"]), ["p0", "p1"])
        kinds = {event for event, _ in self.published}
        self.assertEqual(kinds, {"results"})
        self.assertTrue(all({"partition", "index", "results"} <= set(data) for _, data in self.published))
        self.assertEqual({data["partition"] for _, data in self.published}, {"p0", "p1"})
        code, out = self.render(IngestResource(self.api), request(b"POST", [], body(events(40))))
        self.assertEqual((out["accepted"], out["duplicates"], out["late"]), (0, 40, 0))
        # Events older than the watermark are committed and dropped as late:
        # counted as such, per partition and in all.
        old = [{**e, "event_id": f"old-{i}", "ts": 0} for i, e in enumerate(events(10))]
        code, out = self.render(
            IngestResource(self.api), request(b"POST", [], body(old + events(1, start=100, prefix="new")))
        )
        self.assertEqual(code, 200, out)
        self.assertEqual((out["events"], out["accepted"], out["duplicates"], out["late"]), (11, 1, 0, 10))
        self.assertEqual(sum(p["late"] for p in out["partitions"].values()), 10)
        code, out = self.render(ResultsResource(self.api), request(b"GET", [b"per_key"]))
        self.assertEqual(code, 200)
        self.assertEqual(sorted(out["partitions"]), ["p0", "p1"])
        self.assertTrue(all(v["index"] > 0 for v in out["partitions"].values()))
        code, out = self.render(ResultsResource(self.api), request(b"GET", [b"nope"]))
        self.assertEqual(code, 404)
        code, out = self.render(ResultsResource(self.api), request(b"GET", [b"per_key"], partition="p1"))
        self.assertEqual((code, sorted(out["partitions"])), (200, ["p1"]))
        self.assertTrue(out["partitions"]["p1"]["leader"])
        follower = ClientAPI(
            self.cluster.managers["b"],
            lambda: self.cluster.routing,
            None,
            self.cluster.clock,
            self.hub,
            DialPolicy(1, 3, 0.05),
        )
        code, out = self.render(ResultsResource(follower), request(b"GET", [b"per_key"], partition="p1"))
        self.assertEqual((code, out["partitions"]["p1"]["leader"]), (200, False))
        code, out = self.render(ResultsResource(self.api), request(b"GET", [b"per_key"], partition="zz"))
        self.assertEqual((code, out["error"]), (404, "no partition 'zz' in the routing table"))
        code, out = self.render(RoutingResource(self.api), request(b"GET", []))
        self.assertEqual([p["leader"] for p in out["partitions"]], ["a", "a"])
        code, out = self.render(PartitionsResource(self.api), request(b"GET", []))
        self.assertEqual(
            out["partitions"]["p0"]["cep"]["events"] + out["partitions"]["p1"]["cep"]["events"], 41
        )
        code, out = self.render(RulesResource(self.api), request(b"GET", []))
        self.assertEqual(out["partitions"]["p0"]["rulesVersion"], 1)

    def test_noListenerNoEncoding(self) -> None:
        """
        Without stream clients, results are not published at all.
        """
        self.api.hub = SSEHub(self.cluster.clock)
        self.api.hub.publish = lambda *a, **k: self.fail("published with no listener")  # type: ignore[method-assign]
        self.render(RulesResource(self.api), request(b"POST", [], body(RULES)))
        code, out = self.render(IngestResource(self.api), request(b"POST", [], body(events(40))))
        self.assertEqual(code, 200)

    def test_noSubpaths(self) -> None:
        """
        A path below an API resource is a JSON 404, not that resource
        (C{POST /ingest/x} ingests nothing); C{/results/RULE} is the one
        resource with paths below it.
        """
        for resource, method, payload in (
            (IngestResource(self.api), b"POST", body(events(3, prefix="sub"))),
            (RulesResource(self.api), b"POST", body(RULES)),
            (RulesResource(self.api), b"GET", b""),
            (RoutingResource(self.api), b"GET", b""),
            (PartitionsResource(self.api), b"GET", b""),
        ):
            req = request(method, [b"x"], payload)
            req.path = b"/api/x"  # type: ignore[attr-defined]
            req.write(resource.render(req))
            self.cluster.run(0.5)
            code, out = answer(req)
            self.assertEqual((code, out["error"]), (404, "no admin resource /api/x"))
        for part in self.cluster.managers["a"].partitions.values():
            self.assertFalse(any(e.startswith("sub") for e in part.machine.engine._seen))
        req = request(b"GET", [b""])
        req.write(RoutingResource(self.api).render(req))
        self.assertEqual(answer(req)[0], 200)

    def test_badRequests(self) -> None:
        code, out = self.render(IngestResource(self.api), request(b"POST", [], b"[]"))
        self.assertEqual((code, out["error"]), (400, "empty batch"))
        code, out = self.render(RulesResource(self.api), request(b"POST", [], body({"rules": 1})))
        self.assertEqual(code, 400)
        self.assertIn("invalid rules", out["error"])
        code, out = self.render(RulesResource(self.api), request(b"POST", [], b"[" * 100_000))
        self.assertEqual((code, out["error"]), (400, "rules document is nested too deeply"))
        req = request(b"POST", [], body(events(40)))
        req.requestHeaders.setRawHeaders(b"x-ceptra-partition", [b"p0"])
        code, out = self.render(IngestResource(self.api), req)
        self.assertEqual(code, 400)
        self.assertIn("holds events of", out["error"])

    def test_featureRules(self) -> None:
        """
        A rules document in the features feed is proposed once by each
        partition's leader; an invalid one is refused once.
        """
        features: dict[str, Any] = {"features": {"ceptra.rules": json.dumps(RULES)}}
        rules = FeatureRules(self.api, lambda: features)
        rules.check()
        self.cluster.run(0.5)
        rules.check()
        self.cluster.run(0.5)
        for m in self.cluster.managers.values():
            for part in m.partitions.values():
                self.assertEqual(part.machine.rulesVersion, 1)
        features["features"]["ceptra.rules"] = "{broken"
        rules.check()
        self.assertIsNotNone(rules.rejected)

    def test_rulesRefusedInTheLog(self) -> None:
        """
        A valid document whose version is not above the partitions' current
        one is committed but refused by every engine: C{409} with the
        engine's reason per partition, and the rules are unchanged.
        """
        code, out = self.render(RulesResource(self.api), request(b"POST", [], body(RULES)))
        self.assertEqual(code, 200, out)
        changed = {**RULES, "rules": [{**RULES["rules"][0], "name": "renamed"}]}  # type: ignore[index]
        code, out = self.render(RulesResource(self.api), request(b"POST", [], body(changed)))
        self.assertEqual(code, 409, out)
        for pid in ("p0", "p1"):
            self.assertIn(f"partition {pid}: rules document refused: version: must be greater", out["error"])
            self.assertIn("current version 1", out["partitions"][pid]["error"])
        for part in self.cluster.managers["a"].partitions.values():
            self.assertEqual(part.machine.rulesVersion, 1)
            self.assertIn("per_key", part.machine.engine.status()["rules"])
        code, out = self.render(
            RulesResource(self.api), request(b"POST", [], body({**changed, "version": 2}))
        )
        self.assertEqual(code, 200, out)

    def test_featureRulesRefusedOnce(self) -> None:
        """
        A document in the features feed that the engines refuse (its version
        not above theirs) is proposed once per partition, with one warning
        each, and not again until the flag changes: the log does not grow
        with refused copies of it.
        """
        self.render(RulesResource(self.api), request(b"POST", [], body({**RULES, "version": 5})))
        features: dict[str, Any] = {"features": {"ceptra.rules": json.dumps({**RULES, "version": 3})}}
        rules = FeatureRules(self.api, lambda: features)
        manager = self.cluster.managers["a"]
        with capturedLogs() as logs:
            for _ in range(6):
                rules.check()
                self.cluster.run(0.5)
        warnings = [
            e["log_format"].format(**e) for e in logs if "not applied to partition" in e.get("log_format", "")
        ]
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn("must be greater than the current version 5", warnings[0])
        indexes = {pid: part.node.commitIndex for pid, part in manager.partitions.items()}
        for _ in range(4):
            rules.check()
            self.cluster.run(0.5)
        self.assertEqual({pid: part.node.commitIndex for pid, part in manager.partitions.items()}, indexes)
        # A new document in the flag is proposed (and applied).
        features["features"]["ceptra.rules"] = json.dumps({**RULES, "version": 6})
        rules.check()
        self.cluster.run(0.5)
        for part in manager.partitions.values():
            self.assertEqual(part.machine.engine.status()["rules_version"], 6)

    def test_featureRulesOneProposalAtATime(self) -> None:
        """
        While a partition's rules proposal is in flight, further checks
        propose nothing for it; a failed proposal is tried again by the next check.
        """
        proposals: list[tuple[str, Deferred[Any]]] = []

        def propose(pid: str, entry: bytes) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            proposals.append((pid, d))
            return d

        features: dict[str, Any] = {"features": {"ceptra.rules": json.dumps(RULES)}}
        rules = FeatureRules(self.api, lambda: features)
        self.api.manager.propose = propose  # type: ignore[method-assign]
        rules.check()
        first = sorted(pid for pid, _ in proposals)
        self.assertTrue(first)
        rules.check()
        rules.check()
        self.assertEqual(sorted(pid for pid, _ in proposals), first)
        for _, d in proposals:
            d.errback(RuntimeError("no quorum"))
        rules.check()
        self.assertEqual(len(proposals), 2 * len(first))
