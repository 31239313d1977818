"""
Debug pages under C{/_internal} (behind its credentials):

- C{/_internal/migrator}: what the key migrator is doing, per vnode
  (membership phase, ranges granted to joiners, replica pipes and repair);
- C{/_internal/debug/vars}: a JSON snapshot of every counter and gauge of
  C{/metrics} plus process figures (the Python counterpart of Go's expvar);
- C{/_internal/debug/pprof/profile?seconds=N}: an on-demand CPU profile of
  the reactor thread for N seconds (1 to 60, default 10) with the standard
  library's C{cProfile}, answered as C{pstats} text (top 60 functions by
  cumulative time) or, with C{format=pstats}, as a C{pstats} dump for
  C{python -m pstats} / snakeviz.  One profile at a time (409 otherwise);
- C{/_internal/debug} and C{/_internal/debug/pprof}: a JSON index of the
  pages below them (C{{"endpoints": [{"path", "query", "method", "what"}]}}).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from suite.web.errors import JSONMethodsMixin, JSONNoResource

__all__ = ["mountDebug", "migratorState", "varsSnapshot", "PROFILE_MAX_SECONDS"]

log = Logger()
#: Longest CPU profile one request may ask for.
PROFILE_MAX_SECONDS = 60
PROFILE_DEFAULT_SECONDS = 10
_STARTED = time.time()


def _json(request: Any, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, indent=2, sort_keys=True, default=str).encode() + b"\n"


def _phase(vnode: Any) -> str:
    """
    The membership phase of C{vnode}, as its machine last entered it.
    """
    phase: str = vnode.phase.value
    return _PHASES.get(phase, phase)


#: phases shown under the names the debug page has always used
_PHASES = {"inactive": "joining", "transferring": "active", "withdrawn": "left"}


def migratorState(node: Any) -> dict[str, Any]:
    """
    What moves keys between vnodes, per vnode of C{node}.
    """
    vnodes = []
    for v in node.vnodes:
        replicator = v.replicator
        vnodes.append(
            {
                "index": v.ref.index,
                "id": f"{v.ref.id:016x}",
                "phase": _phase(v),
                "predecessor": v.pred.addr if v.pred is not None else None,
                "successors": [s.addr for s in v.succs],
                "grantedTo": [
                    {"joiner": f"{j.addr}/{j.index}", "previousPredecessor": f"{p.addr}/{p.index}"}
                    for j, p in v.handoff.transferredTo.items()
                ],
                "replicaPipes": [
                    {"replica": f"{t.addr}/{t.index}", "queued": len(p.queue), "busy": p.busy}
                    for t, p in replicator.pipes.items()
                ],
                "replicasInSync": len(replicator.clean),
                "copies": replicator.replicated,
                "copyFailures": replicator.replicaFailures,
                "repairs": replicator.repairs,
            }
        )
    return {
        "addr": node.addr,
        "founding": getattr(node, "founding", False),
        "joinProblem": getattr(node, "joinProblem", None),
        "knownPeers": list(getattr(node, "knownPeers", [])),
        "vnodes": vnodes,
    }


def varsSnapshot(registry: Any) -> dict[str, Any]:
    """
    Every sample of C{registry} (name with its labels -> value), and the
    process's own figures.
    """
    metrics: dict[str, Any] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            key = sample.name
            if sample.labels:
                key += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())) + "}"
            metrics[key] = sample.value
    usage = resource.getrusage(resource.RUSAGE_SELF)
    import gc

    return {
        "metrics": metrics,
        "process": {
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "uptimeSeconds": round(time.time() - _STARTED, 3),
            "cpuUserSeconds": usage.ru_utime,
            "cpuSystemSeconds": usage.ru_stime,
            "maxRSSKiB": usage.ru_maxrss,
            "gcCollections": [g["collections"] for g in gc.get_stats()],
            "gcObjects": len(gc.get_objects()),
        },
    }


class _Migrator(JSONMethodsMixin):
    isLeaf = True

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.node = node

    def render_GET(self, request: Any) -> bytes:
        return _json(request, 200, migratorState(self.node))


class _Vars(JSONMethodsMixin):
    isLeaf = True

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        return _json(request, 200, varsSnapshot(self.registry))


class _Profile(JSONMethodsMixin):
    """
    C{GET ?seconds=N[&format=pstats]}: profile the reactor thread.
    """

    isLeaf = True

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock
        self.running = False

    def render_GET(self, request: Any) -> Any:
        import cProfile

        raw = (request.args.get(b"seconds") or [str(PROFILE_DEFAULT_SECONDS).encode()])[0]
        try:
            seconds = float(raw)
        except ValueError:
            return _json(request, 400, {"error": "seconds: not a number"})
        if not 0 < seconds <= PROFILE_MAX_SECONDS:
            return _json(
                request, 400, {"error": f"seconds: must be more than 0 and at most {PROFILE_MAX_SECONDS}"}
            )
        form = (request.args.get(b"format") or [b"text"])[0]
        if form not in (b"text", b"pstats"):
            return _json(request, 400, {"error": "format: text or pstats"})
        if self.running:
            return _json(request, 409, {"error": "a profile is already running"})
        self.running = True
        profiler = cProfile.Profile()
        log.info("CPU profile for {seconds} s requested", seconds=seconds)
        profiler.enable()
        call = self.clock.callLater(seconds, self._finish, request, profiler, seconds, form)

        def gone(_: Any) -> None:
            if call.active():
                call.cancel()
                profiler.disable()
                self.running = False

        request.notifyFinish().addErrback(gone)
        return NOT_DONE_YET

    def _finish(self, request: Any, profiler: Any, seconds: float, form: bytes) -> None:
        import io
        import marshal
        import pstats

        profiler.disable()
        self.running = False
        if form == b"pstats":
            profiler.create_stats()
            body = marshal.dumps(profiler.stats)
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-disposition", b'attachment; filename="specter.pstats"')
        else:
            out = io.StringIO()
            out.write(f"CPU profile of the reactor thread, {seconds:g} s (cProfile)\n")
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
            body = out.getvalue().encode()
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.write(body)
        request.finish()


#: The debug pages: path, query, method, what it answers.
DEBUG_ENDPOINTS: tuple[tuple[str, str, str, str], ...] = (
    ("/_internal/debug/vars", "", "GET", "JSON snapshot of every /metrics sample plus process figures"),
    (
        "/_internal/debug/pprof/profile",
        "seconds=N[&format=pstats]",
        "GET",
        f"CPU profile of the reactor thread for N seconds (default {PROFILE_DEFAULT_SECONDS},"
        f" at most {PROFILE_MAX_SECONDS}) as pstats text, or a pstats dump with format=pstats",
    ),
)


class _Index(JSONMethodsMixin):
    """
    A JSON index of the debug pages under a prefix (C{/_internal/debug},
    C{/_internal/debug/pprof}), so the directory itself answers.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"":  # the same index with a trailing slash
            return self
        return JSONNoResource(f"no debug page {self.prefix}/{path.decode('utf-8', 'replace')}")

    def render_GET(self, request: Any) -> bytes:
        listed = [
            {"path": path, "query": query, "method": method, "what": what}
            for path, query, method, what in DEBUG_ENDPOINTS
            if path.startswith(self.prefix + "/")
        ]
        return _json(request, 200, {"endpoints": listed})


def mountDebug(internal: Resource, node: Any, registry: Any, clock: Any) -> None:
    """
    Put the debug pages under C{internal} (the C{/_internal} tree).
    """
    internal.putChild(b"migrator", _Migrator(node))
    debug = _Index("/_internal/debug")
    debug.putChild(b"vars", _Vars(registry))
    pprof = _Index("/_internal/debug/pprof")
    pprof.putChild(b"profile", _Profile(clock))
    debug.putChild(b"pprof", pprof)
    internal.putChild(b"debug", debug)
