"""
The CEPtra client API on the admin listener (mTLS, SPIFFE allow list):

  - C{POST /ingest}: a batch of events as a JSON array, C{{"events": [...]}},
    or NDJSON (C{Content-Type: application/x-ndjson}); each event is
    C{{"event_id": str, "key": str, "ts": number, "fields": {...}}}.  Events
    are routed by the 64-bit hash of C{key} (L{suite.ceptra.routing}); each
    partition's share becomes one Raft entry, proposed here when this node
    leads the partition and forwarded to its leader otherwise; the shares
    of requests arriving in the same reactor turn (or within
    C{CEPTRA_INGEST_COMBINE_MS}) are combined into one entry
    (L{suite.ceptra.combine}), each answered with its own counts.  C{200}
    means every share is committed (and applied on the leader); on C{503}
    the body says which shares committed, and resending the batch is safe
    (events are deduplicated by C{event_id}).
  - C{POST /rules}: a rules document, validated, then one log entry in
    every partition.
  - C{GET /routing}: the routing table and hash, for clients that go direct.
  - C{GET /results/<rule>[?group=G][&partition=P]}: current window values
    from the partitions hosted here, each tagged with its applied index.
  - C{GET /stream}: results as server-sent events, one per applied entry
    (partitions hosted here).
  - C{GET /partitions}: per-partition Raft and engine status, state hashes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from suite.ceptra.combine import Combiner
from suite.ceptra.machine import rulesDigest, rulesEntry
from suite.ceptra.partitions import NotHosted, PartitionManager
from suite.ceptra.routing import Routing
from suite.raft.multi import DialPolicy
from suite.raft.settings import NotLeader
from suite.serial import SerialJob
from suite.web.client import collectBody
from suite.web.errors import JSONMethodsMixin, jsonError, jsonResponse
from suite.web.sse import SSEHub

__all__ = ["IngestError", "validateEvents", "ClientAPI", "installClientAPI", "MAX_EVENTS", "MAX_FIELD_CHARS"]

log = Logger(namespace="ceptra.ingest")

MAX_EVENTS = 10_000
MAX_FIELD_CHARS = 4096
MAX_FIELDS = 64
MAX_ID = 128
MAX_KEY = 256
MAX_HOPS = 2
PARTITION_HEADER = b"x-ceptra-partition"
HOPS_HEADER = b"x-ceptra-hops"
_EVENT_KEYS = frozenset({"event_id", "key", "ts", "fields"})
_RESERVED = frozenset({"event_id", "key", "ts"})


class IngestError(ValueError):
    """
    A batch that cannot be accepted; the message says why (HTTP 400).
    """


class Unavailable(Exception):
    """
    The node cannot take the request yet (no routing table); retry (HTTP 503).
    """


def _parseBody(body: bytes, contentType: str) -> list[Any]:
    ndjson = "ndjson" in contentType
    if ndjson:
        items = []
        for n, line in enumerate(body.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError:
                raise IngestError(f"line {n} is not JSON") from None
            except RecursionError:
                raise IngestError(f"line {n} is nested too deeply") from None
            if len(items) > MAX_EVENTS:
                raise IngestError(f"more than {MAX_EVENTS} events in one batch")
        return items
    try:
        doc = json.loads(body)
    except RecursionError:
        raise IngestError("body is nested too deeply") from None
    except ValueError:
        raise IngestError('body is not JSON (send a JSON array, {"events": [...]}, or NDJSON)') from None
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        doc = doc["events"]
    if not isinstance(doc, list):
        raise IngestError('body must be a JSON array of events or {"events": [...]}')
    return doc


def validateEvents(body: bytes, contentType: str = "application/json") -> list[dict[str, Any]]:
    """
    Parse and check a batch.

    @raise IngestError: naming the first bad event and why.
    """
    items = _parseBody(body, contentType)
    if not items:
        raise IngestError("empty batch")
    if len(items) > MAX_EVENTS:
        raise IngestError(f"{len(items)} events in one batch; the limit is {MAX_EVENTS}")
    events = []
    isfinite = math.isfinite
    for i, ev in enumerate(items):
        if type(ev) is not dict:
            raise IngestError(f"event {i}: not a JSON object")
        eid, key, ts, fields = ev.get("event_id"), ev.get("key"), ev.get("ts"), ev.get("fields")
        if len(ev) != (3 if fields is None and "fields" not in ev else 4):
            extra = sorted(set(ev) - _EVENT_KEYS)
            missing = sorted({"event_id", "key", "ts"} - set(ev))
            raise IngestError(
                f"event {i}: unknown keys {extra} (allowed: event_id, key, ts, fields)"
                if extra
                else f"event {i}: missing {missing}"
            )
        if type(eid) is not str or not 0 < len(eid) <= MAX_ID:
            raise IngestError(f"event {i}: event_id must be a string of 1-{MAX_ID} characters")
        if type(key) is not str or not 0 < len(key) <= MAX_KEY:
            raise IngestError(f"event {i} ({eid}): key must be a string of 1-{MAX_KEY} characters")
        if type(ts) is not int or not -(2**53) < ts < 2**53:
            raise IngestError(
                f"event {i} ({eid}): ts must be an integer (event time in ms) of at most 2^53-1 in magnitude"
            )
        if fields is None:
            fields = ev["fields"] = {}
        elif type(fields) is not dict or len(fields) > MAX_FIELDS:
            raise IngestError(f"event {i} ({eid}): fields must be an object of at most {MAX_FIELDS} entries")
        for name, value in fields.items():
            kind = type(value)
            if kind is str:
                if len(value) > MAX_FIELD_CHARS:
                    raise IngestError(
                        f"event {i} ({eid}): field {name!r} is longer than {MAX_FIELD_CHARS} characters"
                    )
            elif kind is float:
                if not isfinite(value):
                    raise IngestError(f"event {i} ({eid}): field {name!r} is not finite")
            elif kind is not int and kind is not bool and value is not None:
                raise IngestError(f"event {i} ({eid}): field {name!r} must be a scalar")
            if name in _RESERVED or len(name) > MAX_KEY:
                raise IngestError(f"event {i} ({eid}): field name {name[:40]!r} is reserved or too long")
        events.append(ev)
    return events


MAX_ANSWER_BYTES = 1024 * 1024


class ClientAPI:
    """
    Routing, proposing and forwarding for the HTTP resources.

    @param http: a treq-like client with the node's mTLS identity (for
        forwarding to other nodes' admin listeners).
    @param scheme: C{https} (admin mTLS) or C{http}.
    @param combineDelay: seconds a partition's leader collects concurrent
        requests into one entry (0: the reactor turn they arrive in).
    """

    def __init__(
        self,
        manager: PartitionManager,
        routing: Callable[[], Routing],
        http: Any,
        reactor: Any,
        hub: SSEHub,
        retry: DialPolicy,
        scheme: str = "https",
        combineDelay: float = 0.0,
    ) -> None:
        self.manager = manager
        self.routing = routing
        self.http = http
        self.reactor = reactor
        self.hub = hub
        self.retry = retry
        self.scheme = scheme
        self.forwarded = 0
        self.combiner = Combiner(manager.propose, reactor, combineDelay)

    def publishResults(self, partition: str, index: int, results: list[dict[str, Any]]) -> None:
        """
        One SSE event per applied entry: C{{"partition", "index", "results"}}.
        Nothing is encoded while no client listens (a sliding window yields
        a result per event; encoding them for nobody would cost more than
        applying them).
        """
        if self.hub.clientCount:
            self.hub.publish("results", {"partition": partition, "index": index, "results": results})

    def wantsResults(self) -> bool:
        """
        Whether applied entries' results are read (a C{/stream} client is
        connected); the engines skip building them otherwise.
        """
        return bool(self.hub.clientCount)

    def split(self, routing: Routing, events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        shares: dict[str, list[dict[str, Any]]] = {}
        for ev in events:
            pid = routing.partitionFor(ev["key"])
            if pid is None:
                raise Unavailable("the routing table has no partitions yet")
            shares.setdefault(pid, []).append(ev)
        return shares

    async def submit(
        self,
        pid: str,
        propose: Callable[[], Deferred[Any]],
        path: str,
        body: bytes | Callable[[], bytes],
        hops: int,
    ) -> dict[str, Any]:
        """
        Commit in C{pid}: locally with C{propose()} when leading, else
        forward C{body} (or what C{body()} makes, the first time it is
        needed) to C{path} on the leader's admin listener; retried per the
        Raft client settings.
        """
        last = "no attempt made"
        for attempt in range(self.retry.attempts):
            if attempt:
                await deferLater(self.reactor, self.retry.delay(attempt), lambda: None)
            part = self.manager.partitions.get(pid)
            if part is not None and part.serving() and part.node.leader is not None:
                try:
                    result = await propose()
                except NotLeader as e:
                    last = str(e)
                    continue
                return result if isinstance(result, dict) else {"result": result}
            if hops >= MAX_HOPS:
                raise NotLeader(
                    self.manager.leaderOf(pid), f"partition {pid}: not the leader here after {hops} hops"
                )
            target = self._target(pid, attempt)
            if target is None:
                last = f"partition {pid}: no leader or replica address known"
                continue
            if not isinstance(body, bytes):
                body = body()
            try:
                code, answer = await self._forward(target, path, pid, body, hops + 1)
            except Exception as e:  # next target; the last reason is reported
                last = f"forwarding to {target}: {e}"
                continue
            if code == 200 or (code == 409 and isinstance(answer.get("partitions", {}).get(pid), dict)):
                # (409: committed there, its engine refused the rules; the
                # partition's answer says why)
                return dict(answer.get("partitions", {}).get(pid) or answer)
            last = f"{target} answered {code}: {answer.get('error', answer)}"
            if 400 <= code < 500:
                raise IngestError(last)
        raise NotLeader(self.manager.leaderOf(pid), last)

    def _target(self, pid: str, attempt: int) -> str | None:
        routing = self.routing()
        leader = self.manager.leaderOf(pid)
        if leader is not None and leader != self.manager.spiffe:
            name = routing.nodeBySpiffe(leader)
            if name is not None and routing.nodes[name].admin:
                return routing.nodes[name].admin
        me = routing.nodeBySpiffe(self.manager.spiffe)
        candidates = []
        hint = routing.leaders.get(pid)
        if hint is not None:
            candidates.append(hint)
        candidates += [r for r in routing.partitions.get(pid, ()) if r not in candidates]
        candidates = [c for c in candidates if c != me and c in routing.nodes and routing.nodes[c].admin]
        if not candidates:
            return None
        return routing.nodes[candidates[attempt % len(candidates)]].admin

    async def _forward(self, admin: str, path: str, pid: str, body: bytes, hops: int) -> tuple[int, Any]:
        self.forwarded += 1
        d = self.http.post(
            f"{self.scheme}://{admin}{path}",
            data=body,
            headers={
                b"content-type": [b"application/json"],
                PARTITION_HEADER: [pid.encode()],
                HOPS_HEADER: [str(hops).encode()],
            },
        )
        d.addTimeout(self.retry.timeout, self.reactor)
        response = await d
        raw = await collectBody(response, MAX_ANSWER_BYTES)
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            answer = {"error": raw[:200].decode("utf-8", "replace")}
        return response.code, answer if isinstance(answer, dict) else {"answer": answer}

    async def ingest(
        self, events: list[dict[str, Any]], onlyPartition: str | None, hops: int
    ) -> tuple[int, Any]:
        routing = self.routing()
        shares = self.split(routing, events)
        if onlyPartition is not None and set(shares) != {onlyPartition}:
            raise IngestError(
                f"batch forwarded for partition {onlyPartition} holds events of {sorted(shares)}"
            )

        async def one(pid: str, share: list[dict[str, Any]]) -> dict[str, Any]:
            # The forwarded body is encoded only if the share is forwarded.
            answer = await self.submit(
                pid,
                lambda: self.combiner.submit(pid, share),
                "/ingest",
                lambda: json.dumps({"events": share}).encode(),
                hops,
            )
            if isinstance(answer.get("accepted"), int):
                # Committed, neither accepted nor duplicates: older than the
                # partition's watermark allows (the rules' late_events).
                counted = answer["accepted"] + answer.get("duplicates", 0) + answer.get("rejected", 0)
                answer["late"] = max(0, len(share) - counted)
            return answer

        return await self._all({pid: one(pid, share) for pid, share in shares.items()}, len(events))

    async def rules(self, doc: Any, body: bytes, onlyPartition: str | None, hops: int) -> tuple[int, Any]:
        routing = self.routing()
        pids = [onlyPartition] if onlyPartition is not None else routing.partitionIds
        if not pids:
            raise Unavailable("the routing table has no partitions yet")
        entry = rulesEntry(doc)

        def propose(pid: str) -> Callable[[], Deferred[Any]]:
            return lambda: self.manager.propose(pid, entry)

        code, answer = await self._all(
            {pid: self.submit(pid, propose(pid), "/rules", body, hops) for pid in pids}, None
        )
        refused = {pid: a["error"] for pid, a in answer["partitions"].items() if a.get("error")}
        if code == 200 and refused:
            # Committed, but the partitions' engines refused it (its version
            # is not above theirs): nothing changed there.
            answer["error"] = "; ".join(f"partition {pid}: {why}" for pid, why in sorted(refused.items()))
            return 409, answer
        return code, answer

    async def _all(self, work: dict[str, Any], total: int | None) -> tuple[int, Any]:
        pids = list(work)
        results = await DeferredList([Deferred.fromCoroutine(work[p]) for p in pids], consumeErrors=True)
        out: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for pid, (ok, value) in zip(pids, results, strict=True):
            if ok:
                out[pid] = value
            else:
                if value.check(IngestError):
                    raise value.value
                errors[pid] = value.getErrorMessage()
        body: dict[str, Any] = {"partitions": out}
        if total is not None:
            body["accepted"] = sum(v.get("accepted", 0) for v in out.values())
            body["duplicates"] = sum(v.get("duplicates", 0) for v in out.values())
            body["late"] = sum(v.get("late", 0) for v in out.values())
            body["events"] = total
        if errors:
            body["error"] = "not every partition committed; resending the whole batch is safe"
            body["failed"] = errors
            return 503, body
        return 200, body


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _hops(request: IRequest) -> int:
    try:
        return max(0, int(_header(request, HOPS_HEADER) or 0))
    except ValueError:
        return MAX_HOPS


def _send(request: Any, payload: bytes) -> None:
    # With a length the response leaves in one write: no chunked terminator
    # segment for Nagle and delayed ACKs to hold back.
    request.setHeader(b"Content-Length", str(len(payload)).encode())
    request.write(payload)
    request.finish()


def _finish(request: Any, d: Deferred[tuple[int, Any]]) -> Any:
    def done(result: tuple[int, Any]) -> None:
        code, body = result
        if not request.finished and not getattr(request, "_disconnected", False):
            _send(request, jsonResponse(request, body, code))

    def failed(f: Any) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        if f.check(IngestError):
            _send(request, jsonError(request, 400, f.getErrorMessage()))
        elif f.check(NotLeader, NotHosted, Unavailable):
            _send(request, jsonError(request, 503, f.getErrorMessage()))
        else:
            log.failure("client API request failed", f)
            _send(request, jsonError(request, 500, "internal error"))

    d.addCallbacks(done, failed)
    return NOT_DONE_YET


class _APIResource(JSONMethodsMixin, Resource):
    """
    A leaf admin resource answering from the node's L{ClientAPI}.
    """

    isLeaf = True
    #: whether paths below this one are this resource's (C{/results/RULE})
    subpaths = False

    def __init__(self, api: ClientAPI) -> None:
        super().__init__()
        self.api = api

    def render(self, request: Any) -> Any:
        if not self.subpaths and [p for p in request.postpath if p]:
            # /partitions/x is no resource: not /partitions (nor an ingest)
            path = (request.path or b"").decode("utf-8", "replace")[:200]
            return jsonError(request, 404, f"no admin resource {path}")
        return super().render(request)


class IngestResource(_APIResource):
    def render_POST(self, request: Any) -> Any:
        body = request.content.read()
        try:
            events = validateEvents(body, _header(request, b"content-type") or "")
        except IngestError as e:
            return jsonError(request, 400, str(e))
        only = _header(request, PARTITION_HEADER)
        return _finish(request, Deferred.fromCoroutine(self.api.ingest(events, only, _hops(request))))


class RulesResource(_APIResource):
    def render_POST(self, request: Any) -> Any:
        from suite.ceptra.engine import EngineError, validateRules

        body = request.content.read()
        try:
            doc = json.loads(body)
        except ValueError:
            return jsonError(request, 400, "rules document is not JSON")
        except RecursionError:
            return jsonError(request, 400, "rules document is nested too deeply")
        try:
            validateRules(doc)
        except EngineError as e:
            return jsonError(request, 400, f"invalid rules: {e}")
        only = _header(request, PARTITION_HEADER)
        return _finish(request, Deferred.fromCoroutine(self.api.rules(doc, body, only, _hops(request))))

    def render_GET(self, request: Any) -> bytes:
        out = {}
        for pid, part in sorted(self.api.manager.partitions.items()):
            if part.serving():
                out[pid] = {
                    "rulesVersion": part.machine.rulesVersion,
                    "rulesDigest": part.machine.rulesDigest,
                }
        return jsonResponse(request, {"partitions": out})


class RoutingResource(_APIResource):
    def render_GET(self, request: Any) -> bytes:
        routing = self.api.routing()
        doc = routing.toJSON()
        for entry in doc["partitions"]:
            leader = self.api.manager.leaderOf(entry["id"])
            name = routing.nodeBySpiffe(leader) if leader else None
            if name is not None:
                entry["leader"] = name
        return jsonResponse(request, doc)


class ResultsResource(_APIResource):
    subpaths = True

    def render_GET(self, request: Any) -> bytes:
        from suite.ceptra.engine import EngineError

        if len(request.postpath) != 1 or not request.postpath[0]:
            return jsonError(request, 404, "use /results/<rule>[?group=G][&partition=P]")
        rule = request.postpath[0].decode("utf-8", "replace")
        args = request.args
        group = args.get(b"group", [None])[0]
        group = group.decode("utf-8", "replace") if group is not None else None
        only = args.get(b"partition", [None])[0]
        only = only.decode("utf-8", "replace") if only is not None else None
        routing = self.api.routing()
        if only is not None and only not in routing.partitionIds:
            return jsonError(request, 404, f"no partition {only!r} in the routing table")
        out: dict[str, Any] = {}
        elsewhere: dict[str, list[str]] = {}
        for pid in routing.partitionIds:
            if only is not None and pid != only:
                continue
            part = self.api.manager.partitions.get(pid)
            if part is None or not part.serving():
                elsewhere[pid] = [
                    routing.nodes[n].admin for n in routing.partitions[pid] if n in routing.nodes
                ]
                continue
            try:
                value = part.machine.engine.query(rule, group)
            except (KeyError, EngineError):
                return jsonError(request, 404, f"no rule {rule!r} in partition {pid}")
            out[pid] = {
                "index": part.node.lastApplied,
                "leader": part.node.leader is not None,
                "value": value,
            }
        return jsonResponse(
            request, {"rule": rule, "group": group, "partitions": out, "elsewhere": elsewhere}
        )


class PartitionsResource(_APIResource):
    def render_GET(self, request: Any) -> bytes:
        manager = self.api.manager
        return jsonResponse(
            request,
            {
                "node": manager.spiffe,
                "partitions": {
                    p: manager.partitionStatus(p, withHash=True) for p in sorted(manager.partitions)
                },
                "placement": manager.ledger.toJSON(),
                **manager.diskStatuses(),
            },
        )


def installClientAPI(root: Resource, api: ClientAPI) -> None:
    """
    Mount the client API under the admin root.
    """
    root.putChild(b"ingest", IngestResource(api))
    root.putChild(b"rules", RulesResource(api))
    root.putChild(b"routing", RoutingResource(api))
    root.putChild(b"results", ResultsResource(api))
    root.putChild(b"stream", api.hub.resource())
    root.putChild(b"partitions", PartitionsResource(api))


class FeatureRules:
    """
    Rules from the features feed: when the feed's flags carry a rules
    document under C{ceptra.rules} (a JSON string, as flags are scalars), the
    leader of each hosted partition proposes it
    once (compared by digest with the partition's current rules).
    """

    KEY = "ceptra.rules"

    def __init__(self, api: ClientAPI, features: Callable[[], Any]) -> None:
        self.api = api
        self.features = features
        self.rejected: str | None = None
        #: partition -> digest of the document its engine refused (its
        #: version not above the partition's): not proposed again there
        self.refusedIn: dict[str, str] = {}
        # One proposal in flight per partition; a check meanwhile proposes nothing more.
        self._proposals: dict[str, SerialJob] = {}
        self._rules: Any = None

    def check(self) -> None:
        from suite.ceptra.engine import EngineError, validateRules

        doc = self.features()
        flags = doc.get("features") if isinstance(doc, dict) else None
        rules = flags.get(self.KEY) if isinstance(flags, dict) else None
        if rules is None:
            return
        if isinstance(rules, str):
            try:
                rules = json.loads(rules)
            except (ValueError, RecursionError):
                rules = {"invalid": "not JSON"}
        digest = rulesDigest(rules)
        if digest == self.rejected:
            return
        try:
            validateRules(rules)
        except EngineError as e:
            self.rejected = digest
            log.warn("features feed {key} holds invalid rules, not applied: {why}", key=self.KEY, why=str(e))
            return
        for pid, part in sorted(self.api.manager.partitions.items()):
            if not part.serving() or part.node.leader is None:
                continue
            if part.machine.rulesDigest == digest or self.refusedIn.get(pid) == digest:
                continue
            self._rules = rules
            proposal = self._proposals.get(pid)
            if proposal is None:
                proposal = self._proposals[pid] = SerialJob(
                    partial(self._propose, pid), f"proposing rules for {pid}", log=log
                )
            proposal.poll()

    def _propose(self, pid: str) -> Deferred[Any]:
        rules = self._rules
        d = self.api.manager.propose(pid, rulesEntry(rules))
        d.addCallbacks(
            self._answered, self._failed, callbackArgs=(pid, rulesDigest(rules)), errbackArgs=(pid,)
        )
        return d

    def _answered(self, answer: Any, pid: str, digest: str) -> None:
        why = answer.get("error") if isinstance(answer, dict) else None
        if why:
            # Committed and refused by the engine: proposing it again would
            # only be refused again (an entry in the log each time).
            self.refusedIn[pid] = digest
            log.warn(
                "features feed {key}: not applied to partition {pid}: {why}; it is not proposed again "
                "until the flag changes",
                key=self.KEY,
                pid=pid,
                why=why,
            )

    def _failed(self, f: Any, pid: str) -> None:
        log.info("rules for {pid} not applied yet: {why}", pid=pid, why=f.getErrorMessage())
