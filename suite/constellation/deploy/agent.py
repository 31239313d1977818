"""
Cluster-wide deployment inside the agent.

C{constellation deploy} applies a file on its own node, then hands the
declaration to its agent (C{POST /api/deploy}, loopback clients only).
The agent stores it in its entries of the replicated cluster state
(L{suite.constellation.state}) under C{deploy/STACK}: the file's text, the
values of the C{${VAR}}s it uses, the prune flag and the time it was
issued.  Gossip spreads it; every agent's L{DeployReconciler} picks, per
stack, the newest declaration any node holds and applies what its
placement gives to its own node, with the same planner as the command.
Secrets never travel: each node reads its own C{SECRETS_PATH}.

Every agent keeps a copy of the newest declaration in its own entries,
so it outlives the node it was handed to, and on disk
(C{DATA_DIR/deploy/STACK.json}, L{DeclarationStore}), so it outlives a
restart of every agent at once: the cluster state itself lives in memory.  A reconciler re-plans when the
declaration or the set of live nodes changes, and retries after a
failure; otherwise it leaves the engine alone.  C{GET /api/deploy} shows the declarations it knows and its last
result for each.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from suite.constellation.deploy.placement import clusterPlacer
from suite.constellation.deploy.plan import DeployError, applyPlan, makePlan
from suite.constellation.deploy.spec import SpecError, loadYAML, parseStack
from suite.constellation.docker import DockerError
from suite.constellation.interfaces import IContainerEngine, IServiceCatalog
from suite.constellation.state import ClusterState
from suite.web.errors import JSONMethodsMixin, JSONNoResource, jsonError, jsonResponse

__all__ = ["DeclarationResource", "DeclarationStore", "DeployReconciler", "PREFIX", "newestDeclarations"]

log = Logger(namespace="constellation.deploy")

#: Cluster-state key prefix of deployment declarations.
PREFIX = "deploy/"
_MAX_DECLARATION = 1024 * 1024
#: Stack names, as the deployment file's C{name} takes them.
STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _valid(decl: Any) -> bool:
    return (
        isinstance(decl, dict)
        and isinstance(decl.get("file"), str)
        and isinstance(decl.get("env"), dict)
        and isinstance(decl.get("issued"), int | float)
    )


def newestDeclarations(state: ClusterState) -> dict[str, dict[str, Any]]:
    """
    Per stack, the most recently issued declaration held by any node
    (ties broken by the holder's name).
    """
    best: dict[str, tuple[float, str, dict[str, Any]]] = {}
    for origin in state.origins():
        for key, decl in state.entries(origin).items():
            if not key.startswith(PREFIX) or not _valid(decl):
                continue
            stack = key[len(PREFIX) :]
            rank = (float(decl["issued"]), origin)
            if stack not in best or rank > best[stack][:2]:
                best[stack] = (rank[0], origin, dict(decl, origin=origin))
    return {stack: b[2] for stack, b in sorted(best.items())}


def _digest(decl: Mapping[str, Any]) -> str:
    body = json.dumps([decl["file"], decl["env"], bool(decl.get("prune"))], sort_keys=True).encode("utf-8")
    return hashlib.sha256(body).hexdigest()[:16]


class DeclarationStore:
    """
    This node's copy of each stack's newest declaration on disk, one
    C{STACK.json} (mode 0600) per stack in C{directory} (0700), written
    whole (temporary file, fsync, rename) in a thread by C{run}.
    """

    def __init__(self, directory: str, run: Callable[[Callable[[], None]], Deferred[None]]) -> None:
        self.directory, self.run = directory, run
        self._saved: dict[str, str] = {}

    def load(self) -> dict[str, dict[str, Any]]:
        """
        The declarations kept by an earlier run (read at start-up; a file
        that cannot be read or is not a declaration is logged and skipped).

        @raise OSError: when the directory cannot be created.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        out: dict[str, dict[str, Any]] = {}
        for entry in sorted(os.listdir(self.directory)):
            stack, ext = os.path.splitext(entry)
            if ext != ".json" or not STACK_NAME.match(stack):
                continue
            path = os.path.join(self.directory, entry)
            try:
                with open(path, "rb") as f:
                    decl = json.loads(f.read(_MAX_DECLARATION * 2))
            except (OSError, ValueError, RecursionError) as e:
                log.warn("deploy: cannot read the kept declaration {path}: {why}", path=path, why=str(e))
                continue
            if not _valid(decl):
                log.warn("deploy: {path} is not a declaration; ignored", path=path)
                continue
            out[stack] = {k: decl[k] for k in ("file", "env", "prune", "issued") if k in decl}
            self._saved[stack] = _digest(decl) + repr(decl["issued"])
        return out

    def save(self, stack: str, decl: Mapping[str, Any]) -> Deferred[None] | None:
        """
        Keep C{decl} unless it is what was kept last; None when nothing is written.
        """
        key = _digest(decl) + repr(decl["issued"])
        if self._saved.get(stack) == key or not STACK_NAME.match(stack):
            return None
        self._saved[stack] = key
        data = json.dumps({k: decl[k] for k in ("file", "env", "prune", "issued") if k in decl}).encode()
        path = os.path.join(self.directory, stack + ".json")

        def write() -> None:
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dirfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)

        def failed(f: Any) -> None:
            self._saved.pop(stack, None)  # tried again on the next round
            log.warn(
                "deploy: cannot keep the declaration of {stack} in {path}: {why}",
                stack=stack,
                path=path,
                why=f.getErrorMessage(),
            )

        d = self.run(write)
        d.addErrback(failed)
        return d


class DeployReconciler(Service):
    """
    Apply the cluster's newest declarations to this node, every C{interval}
    seconds when something changed (the declaration, the live nodes) or the
    last attempt failed.
    """

    name = "deploy"

    def __init__(
        self,
        engine: IContainerEngine,
        state: ClusterState,
        catalog: IServiceCatalog,
        clock: IReactorTime,
        secretsPath: str,
        configPath: str,
        domain: str | None,
        interval: float = 10.0,
        store: DeclarationStore | None = None,
    ) -> None:
        self.engine, self.state, self.catalog, self.clock = engine, state, catalog, clock
        self.secretsPath, self.configPath, self.domain = secretsPath, configPath, domain
        self.interval = interval
        self.store = store
        if store is not None:
            kept = store.load()
            if kept:
                self.state.update({PREFIX + stack: decl for stack, decl in kept.items()})
                log.info(
                    "deploy: {n} declaration(s) kept from the last run ({stacks})",
                    n=len(kept),
                    stacks=", ".join(sorted(kept)),
                )
        #: stack -> {"digest", "ok", "lines", "failures", "at"} of the last attempt.
        self.results: dict[str, dict[str, Any]] = {}
        self._done: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._loop: LoopingCall | None = None
        self._running: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: log.failure("deployment reconciler stopped", f)
        )

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def keep(self, stack: str, decl: dict[str, Any]) -> None:
        """
        A declaration was handed to this agent: keep it on disk now (not at
        the next round, which a restart could come before).
        """
        if self.store is not None:
            self.store.save(stack, decl)

    def _nodes(self) -> list[dict[str, Any]]:
        return [n.toJSON() for n in self.catalog.nodes()]

    def check(self) -> Deferred[None] | None:
        """
        Start one reconciliation unless one is running; its Deferred (None when skipped).
        """
        if self._running is not None:
            return None
        self._running = Deferred.fromCoroutine(self._reconcile())
        self._running.addErrback(lambda f: log.failure("deployment reconciliation failed", f))

        def done(_: object) -> None:
            self._running = None

        self._running.addBoth(done)
        return self._running

    async def _reconcile(self) -> None:
        nodes = self._nodes()
        alive = tuple(sorted(str(n["name"]) for n in nodes if n.get("status") == "alive"))
        for stackName, decl in newestDeclarations(self.state).items():
            digest = _digest(decl)
            copy: dict[str, Any] = {k: decl[k] for k in ("file", "env", "prune", "issued") if k in decl}
            if decl["origin"] != self.state.node:
                # Hold a copy, so the declaration outlives the node it was handed to.
                self.state.update({PREFIX + stackName: copy})
            if self.store is not None:
                # ... and a copy on disk, so it outlives a restart of every agent.
                self.store.save(stackName, copy)
            if self._done.get(stackName) == (digest, alive):
                continue
            result: dict[str, Any] = {"digest": digest, "from": decl["origin"], "at": time.time()}
            lines: list[str] = []
            try:
                document = loadYAML(decl["file"])
                stack = parseStack(
                    document, stackName, decl["env"], self.secretsPath, self.configPath, self.domain
                )
                node = self.catalog.nodeName
                plan = await makePlan(
                    self.engine, stack, node, clusterPlacer(nodes, node), bool(decl.get("prune"))
                )
                failures = await applyPlan(self.engine, plan, self.clock, lines.append)
            except (yaml.YAMLError, SpecError, DeployError, DockerError) as e:
                failures = [str(e).splitlines()[0] if str(e) else type(e).__name__]
            result.update(ok=not failures, lines=lines, failures=failures)
            self.results[stackName] = result
            for line in lines:
                log.info("deploy {stack}: {line}", stack=stackName, line=line)
            for failure in failures:
                log.error("deploy {stack}: {reason}", stack=stackName, reason=failure)
            if not failures:
                self._done[stackName] = (digest, alive)


class DeclarationResource(JSONMethodsMixin, Resource):
    """
    C{/api/deploy}: C{GET} the known declarations and this node's results;
    C{POST} a declaration (from a loopback client only).
    """

    def __init__(
        self,
        state: ClusterState,
        results: Callable[[], Mapping[str, Any]],
        clock: Callable[[], float] = time.time,
        stored: Callable[[str, dict[str, Any]], object] | None = None,
    ) -> None:
        super().__init__()
        self.state, self.results, self.clock, self.stored = state, results, clock, stored

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return JSONNoResource(f"no resource {request.path.decode('utf-8', 'replace')}")

    def render_GET(self, request: IRequest) -> bytes:
        decls = newestDeclarations(self.state)
        return jsonResponse(
            request,
            {
                "declarations": {
                    s: {
                        "from": d["origin"],
                        "issued": d["issued"],
                        "digest": _digest(d),
                        "prune": bool(d.get("prune")),
                    }
                    for s, d in decls.items()
                },
                "results": dict(self.results()),
            },
        )

    def render_POST(self, request: IRequest) -> bytes:
        address = request.getClientAddress()
        host = getattr(address, "host", None)
        if host is not None:
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                return jsonError(request, 403, "declarations are accepted from loopback clients only")
        body = request.content.read(_MAX_DECLARATION + 1) if request.content is not None else b""
        if len(body) > _MAX_DECLARATION:
            return jsonError(request, 413, f"declaration larger than {_MAX_DECLARATION} bytes")
        try:
            decl = json.loads(body)
            stack, text, env = decl["stack"], decl["file"], decl.get("env") or {}
            if not isinstance(stack, str) or not isinstance(text, str) or not isinstance(env, dict):
                raise TypeError()
            if not STACK_NAME.match(stack):
                return jsonError(request, 400, f"stack: {stack[:80]!r} is not a valid stack name")
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
                raise TypeError()
        except RecursionError:
            return jsonError(request, 400, "declaration is nested too deeply")
        except (ValueError, KeyError, TypeError):
            return jsonError(request, 400, 'expected {"stack": NAME, "file": YAML, "env": {VAR: VALUE}}')
        try:
            if not isinstance(loadYAML(text), dict):
                raise SpecError("file: not a mapping")
        except (yaml.YAMLError, SpecError) as e:
            return jsonError(request, 400, f"not a deployment file: {str(e).splitlines()[0]}")
        entry = {"file": text, "env": env, "prune": bool(decl.get("prune")), "issued": self.clock()}
        self.state.update({PREFIX + stack: entry})
        if self.stored is not None:
            self.stored(stack, entry)
        log.info("deployment declaration {stack} stored ({n} bytes)", stack=stack, n=len(text))
        return jsonResponse(request, {"stack": stack, "digest": _digest(entry)}, 202)
