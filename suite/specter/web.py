"""
The loopback helper site: C{/healthz}, C{/readyz}, C{/metrics} always;
C{/_internal} (chord stats for a key, ring graph, KV stats) only when
credentials are configured, behind HTTP basic auth.  Without credentials
the whole C{/_internal} tree answers 404.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import RING_SIZE
from suite.specter.rpc import versionsOut
from suite.web.errors import JSONMethodsMixin
from suite.web.health import HealthReport
from suite.web.interfaces import IHealth

__all__ = ["makeHelperResource", "RingHealth", "RingCollector"]

MAX_KEY = 4096

log = Logger()


def _json(request: Any, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, default=str).encode() + b"\n"


@implementer(IHealth)
class RingHealth:
    """
    Ready when every vnode of this process serves keys.
    """

    name = "chord"

    def __init__(self, node: Any) -> None:
        self.node = node

    def check(self) -> HealthReport:
        waiting = [v.ref.index for v in self.node.vnodes if not v.serving]
        problem = getattr(self.node, "joinProblem", None)
        if waiting and problem:
            return HealthReport(False, (f"not in the ring: {problem}",))
        if waiting:
            return HealthReport(False, (f"vnodes not active yet: {waiting}",))
        return HealthReport(True, (), {"vnodes": len(self.node.vnodes)})


class RingCollector:
    """
    Prometheus metrics of this process's vnodes, read at scrape time.
    """

    def __init__(self, node: Any, rpc: Any = None) -> None:
        self.node = node
        self.rpc = rpc

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        node = self.node
        serving = GaugeMetricFamily("specter_vnodes_serving", "Vnodes of this process serving keys.")
        serving.add_metric([], sum(1 for v in node.vnodes if v.serving))
        yield serving
        records = GaugeMetricFamily(
            "specter_kv_records", "Records held per vnode (owned and replicated).", labels=["vnode"]
        )
        replicated = CounterMetricFamily(
            "specter_replica_copies", "Key copies acknowledged by replicas.", labels=["vnode"]
        )
        failures = CounterMetricFamily(
            "specter_replica_failures", "Key copies replicas did not acknowledge.", labels=["vnode"]
        )
        repairs = CounterMetricFamily(
            "specter_repairs", "Replica repairs that resent records.", labels=["vnode"]
        )
        for v in node.vnodes:
            label = [str(v.ref.index)]
            records.add_metric(label, v.store.stats().get("records", 0))
            replicated.add_metric(label, v.replicator.replicated)
            failures.add_metric(label, v.replicator.replicaFailures)
            repairs.add_metric(label, v.replicator.repairs)
        yield records
        yield replicated
        yield failures
        yield repairs
        for name, doc, value in (
            ("specter_lookups", "Completed ring lookups.", node.lookups),
            ("specter_lookup_hops", "Remote hops taken by those lookups.", node.hops),
            ("specter_kv_retries", "KV calls retried after stale ownership or a busy vnode.", node.retries),
            (
                "specter_lookup_reroutes",
                "Lookup steps routed around a vnode that did not serve (joining, leaving, gone).",
                node.rerouted,
            ),
        ):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], value)
            yield c
        if self.rpc is not None:
            for name, doc, value in (
                ("specter_rpc_requests", "Calls received on --listen-rpc.", self.rpc.requests),
                ("specter_rpc_errors", "Calls on --listen-rpc that failed.", self.rpc.errors),
            ):
                c = CounterMetricFamily(name, doc)
                c.add_metric([], value)
                yield c


class _KeyStats(JSONMethodsMixin):
    isLeaf = True

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.node = node

    def render_GET(self, request: Any) -> Any:
        raw = request.args.get(b"key", [None])[0]
        if raw is None:
            return _json(request, 200, self.node.stats())
        if not raw:
            return _json(request, 400, {"error": "key: must not be empty"})
        if len(raw) > MAX_KEY:
            return _json(request, 400, {"error": f"key longer than {MAX_KEY} bytes"})
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d: Deferred[Any] = self.node.lookupVersions(raw)

        def done(r: Any) -> None:
            if gone:
                return
            owner, replicas, hops, versions = r
            request.write(
                _json(
                    request,
                    200,
                    {
                        "key": raw.decode("utf-8", "replace"),
                        "owner": owner.short(),
                        "replicas": [x.short() for x in replicas],
                        "hops": hops,
                        "versions": versionsOut(versions),
                    },
                )
            )
            request.finish()

        def failed(f: Any) -> None:
            if gone:
                return
            if f.check(RemoteError):
                body = {"error": f.value.code, "reason": f.value.message or f.value.code}
            else:
                log.failure("lookup of a key for /_internal/chord/stats failed", f)
                body = {"error": "internal", "reason": f.getErrorMessage()}
            request.write(_json(request, 503, body))
            request.finish()

        d.addCallbacks(done, failed)
        return NOT_DONE_YET


class _KVStats(JSONMethodsMixin):
    isLeaf = True

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.node = node

    def render_GET(self, request: Any) -> bytes:
        return _json(request, 200, {f"vnode{v.ref.index}": v.store.stats() for v in self.node.vnodes})


def _label(ref: Any) -> str:
    """
    A vnode as the graph names it: address, index and the id's first 8 hex digits.
    """
    return f"{ref.addr}#{ref.index} {ref.id >> 32:08x}"


def _links(v: Any) -> tuple[list[Any], list[Any]]:
    """
    A local vnode's successors and its distinct fingers (in finger order).
    """
    fingers: list[Any] = []
    for f in v.fingers:
        if f is not None and f not in fingers:
            fingers.append(f)
    return list(v.succs), fingers


_GRAPH_STYLE = """
body{font-family:sans-serif;margin:1em}
svg text{font-size:10px;fill:#222}
svg .vnode:hover circle{r:8;stroke:#000}
svg .vnode:hover text{font-weight:bold}
table{border-collapse:collapse;margin-top:1em}
td,th{border:1px solid #bbb;padding:2px 6px;font-size:12px;text-align:left;vertical-align:top}
code{font-size:11px}
"""


class _Graph(JSONMethodsMixin):
    """
    C{/_internal/chord/graph}: the ring as this process sees it.  Every
    vnode is labelled with its address, index and id prefix; hovering one
    lists its successors and fingers (for this process's vnodes), and a
    table below gives the same for each local vnode.
    """

    isLeaf = True

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.node = node

    def render_GET(self, request: Any) -> bytes:
        local = {v.ref: v for v in self.node.vnodes}
        known: dict[Any, Any] = {}
        for v in self.node.vnodes:
            known[v.ref] = v.succs[0] if v.succs else v.ref
            succs, fingers = _links(v)
            for other in [*succs, *fingers, *([v.pred] if v.pred is not None else [])]:
                known.setdefault(other, None)
        # room around the ring for the labels
        width, height, r = 1000, 640, 250
        c, cy = width // 2, height // 2
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
        parts.append(f'<circle cx="{c}" cy="{cy}" r="{r}" fill="none" stroke="#999"/>')

        def xy(vid: int, radius: float = r) -> tuple[float, float]:
            a = 2 * math.pi * vid / RING_SIZE - math.pi / 2
            return c + radius * math.cos(a), cy + radius * math.sin(a)

        for ref, succ in known.items():
            if succ is not None and succ != ref:
                x, y = xy(ref.id)
                x2, y2 = xy(succ.id)
                parts.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#36c"/>')
        for ref in sorted(known, key=lambda k: k.id):
            x, y = xy(ref.id)
            lx, ly = xy(ref.id, r + 14)
            anchor = "start" if lx >= c else "end"
            mine = local.get(ref)
            title = [ref.short()]
            if mine is not None:
                succs, fingers = _links(mine)
                title.append("successors: " + (", ".join(_label(s) for s in succs) or "none"))
                title.append("fingers: " + (", ".join(_label(f) for f in fingers) or "none"))
            colour = "#c33" if mine is not None else "#333"
            parts.append(
                f'<g class="vnode" data-id="{ref.id:016x}"><title>{html.escape(chr(10).join(title))}</title>'
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>'
                f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}">{html.escape(_label(ref))}</text></g>'
            )
        parts.append("</svg>")
        rows = []
        for v in sorted(self.node.vnodes, key=lambda v: v.ref.index):
            succs, fingers = _links(v)
            cells = [
                html.escape(v.ref.addr),
                str(v.ref.index),
                f"<code>{v.ref.id:016x}</code>",
                html.escape(_label(v.pred)) if v.pred is not None else "unknown",
                "<br>".join(html.escape(_label(s)) for s in succs) or "none",
                "<br>".join(html.escape(_label(f)) for f in fingers) or "none",
            ]
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        table = (
            '<table id="vnodes"><tr><th>address</th><th>index</th><th>id</th><th>predecessor</th>'
            "<th>successors</th><th>fingers (distinct)</th></tr>" + "".join(rows) + "</table>"
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        body = (
            "<!doctype html><meta charset=utf-8><title>Specter ring</title><style>{}</style>"
            "<h1>Ring seen from {}</h1><p>Red: this process's vnodes (hover one for its successors "
            "and fingers). Lines join each vnode to its first successor.</p>{}{}"
        ).format(_GRAPH_STYLE, html.escape(self.node.addr), "".join(parts), table)
        return body.encode()


def makeHelperResource(
    node: Any,
    admin: Resource,
    user: str | None,
    password: str | None,
    ldapChecker: Any = None,
    registry: Any = None,
    clock: Any = None,
) -> Resource:
    """
    Mount C{/_internal} on the admin resource when credentials are given
    (a static account, an LDAP bind checker, or both: tried in that order).
    With C{registry} and C{clock}, the debug pages too
    (L{suite.specter.debug}).
    """
    checkers: list[Any] = []
    if user and password:
        from suite.cred.basic import StaticPasswordChecker

        checkers.append(StaticPasswordChecker({user: password}))
    if ldapChecker is not None:
        checkers.append(ldapChecker)
    if checkers:
        from suite.cred.web import requireBasicAuth
        from suite.web.admin import AdminRoot

        # JSON indexes and JSON 404s for the directories (Twisted's default
        # is a deprecated HTML page)
        internal = AdminRoot()
        chord = AdminRoot()
        chord.putChild(b"stats", _KeyStats(node))
        chord.putChild(b"graph", _Graph(node))
        kv = AdminRoot()
        kv.putChild(b"stats", _KVStats(node))
        internal.putChild(b"chord", chord)
        internal.putChild(b"kv", kv)
        if registry is not None and clock is not None:
            from suite.specter.debug import mountDebug

            mountDebug(internal, node, registry, clock)
        admin.putChild(b"_internal", requireBasicAuth(internal, checkers, realm="specter"))
        _internalRoots[admin] = internal
    return admin


#: The C{/_internal} directory (behind its credentials) of each helper
#: resource made by L{makeHelperResource}, so the gateway's pages join it
#: (and its JSON index) rather than sit beside it.
_internalRoots: WeakKeyDictionary[Resource, Resource] = WeakKeyDictionary()


def internalRoot(admin: Resource) -> Resource | None:
    """
    The C{/_internal} directory of C{admin}, already behind the
    C{/_internal} credentials, or L{None} when it has none.
    """
    return _internalRoots.get(admin)
