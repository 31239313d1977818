"""
C{goop2} with no arguments: a local web page (127.0.0.1) to create, delete,
start and stop the peers in a peers directory.  Rendezvous peers carry a
badge and their button opens their settings page.  Peers run as child
processes (C{goop2 peer|rendezvous DIR}, the console script: twistd with
only the goop plugin and without HTTP/2, docs/performance.md) and are
stopped with the manager.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError, ProcessExitedAlready
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from suite.daemon import ConfigError
from suite.goop.config import defaultDocument, loadConfig, parseHostPort, writeConfig
from suite.goop.webutil import (
    HostGuard,
    JSONErrorsSite,
    PageRoot,
    finishRequest,
    header,
    isLoopback,
    jsonResponse,
    loadSecret,
    readBody,
)

__all__ = ["Manager", "runManager", "managerResource"]

log = Logger()
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
HERE = os.path.dirname(os.path.abspath(__file__))


def _freePort() -> int:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


class _Child(protocol.ProcessProtocol):
    def __init__(self, manager: Manager, name: str) -> None:
        self.manager = manager
        self.name = name

    def processEnded(self, reason: Any) -> None:
        self.manager.running.pop(self.name, None)
        log.info("peer {name} stopped", name=self.name)


class Manager:
    """The peers directory and the child processes running its peers."""

    def __init__(self, reactor: Any, peersDir: str, goop2: str | None = None) -> None:
        self.reactor = reactor
        self.peersDir = os.path.abspath(peersDir)
        self.goop2 = goop2 or os.path.join(os.path.dirname(sys.executable), "goop2")
        self.running: dict[str, Any] = {}
        os.makedirs(self.peersDir, exist_ok=True)
        self.secret = loadSecret(os.path.join(self.peersDir, ".manager.secret"))

    def _dir(self, name: str) -> str:
        if not NAME.match(name):
            raise ValueError("peer names use letters, digits, '-' and '_' (at most 40)")
        return os.path.join(self.peersDir, name)

    def peers(self) -> list[dict[str, Any]]:
        out = []
        for name in sorted(os.listdir(self.peersDir)):
            d = os.path.join(self.peersDir, name)
            if not NAME.match(name) or not os.path.isfile(os.path.join(d, "goop.json")):
                continue
            entry: dict[str, Any] = {"name": name, "running": name in self.running}
            try:
                c = loadConfig(d, create=False)
                entry.update(
                    label=c.displayLabel,
                    peer_name=c.peerName,
                    rendezvous=c.rendezvousOnly or c.rendezvousHost,
                    rendezvous_only=c.rendezvousOnly,
                    viewer=self.viewerURL(c.httpAddr),
                )
            except (ConfigError, ValueError, OSError) as e:
                entry.update(error=str(e))
            out.append(entry)
        return out

    @staticmethod
    def viewerURL(addr: str) -> str:
        if not addr:
            return ""
        host, port = parseHostPort(addr)
        return f"http://{host}:{port}"

    def create(self, name: str, rendezvous: bool = False) -> dict[str, Any]:
        d = self._dir(name)
        if os.path.exists(d):
            raise ValueError(f"peer {name} exists")
        os.makedirs(d)
        doc = defaultDocument()
        doc["profile"]["label"] = name
        doc["viewer"]["http_addr"] = f"127.0.0.1:{_freePort()}"
        doc["p2p"]["mdns_tag"] = ""
        if rendezvous:
            doc["presence"].update(rendezvous_host=True, rendezvous_only=True, rendezvous_port=_freePort())
        writeConfig(d, doc)
        log.info("created peer {name}", name=name)
        return {"name": name}

    def start(self, name: str) -> dict[str, Any]:
        d = self._dir(name)
        if name in self.running:
            return {"name": name, "running": True}
        c = loadConfig(d, create=False)
        mode = "rendezvous" if c.rendezvousOnly else "peer"
        args = [self.goop2, mode, d]
        logf = open(os.path.join(d, "peer.log"), "ab")
        proc = self.reactor.spawnProcess(
            _Child(self, name),
            args[0],
            args,
            env=dict(os.environ),
            childFDs={0: "w", 1: logf.fileno(), 2: logf.fileno()},
        )
        logf.close()
        self.running[name] = proc
        log.info("started peer {name}", name=name)
        return {"name": name, "running": True, "viewer": self.viewerURL(c.httpAddr)}

    def stop(self, name: str) -> dict[str, Any]:
        proc = self.running.get(name)
        if proc is not None:
            try:
                proc.signalProcess("TERM")
            except ProcessExitedAlready:
                pass
        return {"name": name, "running": False}

    def delete(self, name: str) -> Deferred[dict[str, Any]]:
        d = self._dir(name)
        self.stop(name)
        return deferToThread(shutil.rmtree, d, True).addCallback(lambda _: {"name": name, "deleted": True})

    def stopAll(self) -> None:
        for proc in list(self.running.values()):
            try:
                proc.signalProcess("TERM")
            except ProcessExitedAlready:
                pass


class _API(Resource):
    isLeaf = True

    def __init__(self, manager: Manager) -> None:
        super().__init__()
        self.manager = manager

    def render_GET(self, request: Request) -> bytes:
        return jsonResponse(request, 200, self.manager.peers())

    def render_DELETE(self, request: Request) -> bytes | int:
        return self._act(request, "delete")

    def render_POST(self, request: Request) -> bytes | int:
        return self._act(request, None)

    def _act(self, request: Request, verb: str | None) -> bytes | int:
        ctype = (header(request, "content-type") or "").split(";")[0].strip()
        origin = header(request, "origin")
        if ctype != "application/json" or (origin and origin.split("://", 1)[-1] != header(request, "host")):
            return jsonResponse(request, 403, {"error": "JSON requests from this page only"})
        parts = [p.decode("utf-8", "replace") for p in (request.postpath or []) if p]
        raw = readBody(request, 4096)
        if raw is None:
            return jsonResponse(request, 413, {"error": "body too large"})
        try:
            body = json.loads(raw or b"{}")
            if verb == "delete" and len(parts) == 1:
                d = self.manager.delete(parts[0])
                d.addCallback(lambda r: finishRequest(request, jsonResponse(request, 200, r)))
                d.addErrback(
                    lambda f: finishRequest(
                        request, jsonResponse(request, 500, {"error": f.getErrorMessage()})
                    )
                )
                return NOT_DONE_YET
            if not parts:
                result = self.manager.create(str(body.get("name", "")), bool(body.get("rendezvous", False)))
            elif len(parts) == 2 and parts[1] in ("start", "stop"):
                result = getattr(self.manager, parts[1])(parts[0])
            else:
                return jsonResponse(request, 404, {"error": "no such action"})
        except (ValueError, OSError) as e:
            return jsonResponse(request, 400, {"error": str(e)})
        return jsonResponse(request, 200, result)


def managerResource(manager: Manager, bindHost: str = "127.0.0.1") -> HostGuard:
    """The manager's page and API behind its L{HostGuard} (set C{.port} once listening)."""
    root = PageRoot(os.path.join(HERE, "page.html"), "no such page", token=manager.secret)
    api = Resource()
    api.putChild(b"peers", _API(manager))
    root.putChild(b"api", api)
    return HostGuard(root, bindHost, manager.secret)


def runManager(options: Any) -> int:
    """Serve the manager page until interrupted; print its URL."""
    from twisted.internet import task

    from suite import logging as suitelogging

    try:
        host, port = parseHostPort(options["listen"])
    except ValueError as e:
        sys.stderr.write(f"goop2: error: --listen: {e}\n")
        return 2
    if not isLoopback(host):
        sys.stderr.write("goop2: error: --listen: the manager binds loopback only\n")
        return 2
    peersDir = os.path.abspath(options["peers-dir"])
    try:
        os.makedirs(peersDir, exist_ok=True)
    except OSError as e:
        sys.stderr.write(f"goop2: error: --peers-dir: cannot create {peersDir}: {e.strerror}\n")
        return 2
    if not os.access(peersDir, os.W_OK):
        sys.stderr.write(f"goop2: error: --peers-dir: cannot write {peersDir}\n")
        return 2
    failed: list[str] = []

    async def main(r: Any) -> None:
        manager = Manager(r, peersDir)
        guarded = managerResource(manager, host)
        site = JSONErrorsSite(guarded, maxBodyBytes=16 * 1024)
        site.noisy = False
        try:
            p = await serverFromString(r, f"tcp:{port}:interface={host}").listen(site)
        except CannotListenError as e:
            reason = e.socketError.strerror if isinstance(e.socketError, OSError) else str(e.socketError)
            failed.append(f"goop2: error: --listen: cannot listen on {host}:{port}: {str(reason).lower()}\n")
            return
        # Logging starts once the page is up, so a failure above is one line.
        suitelogging.startLogging(verbose=False)
        guarded.port = p.getHost().port
        sys.stdout.write(f"goop2 manager: http://{host}:{p.getHost().port}/ (peers in {manager.peersDir})\n")
        sys.stdout.flush()
        done: Deferred[None] = Deferred()
        r.addSystemEventTrigger("before", "shutdown", manager.stopAll)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: r.callFromThread(done.callback, None) if not done.called else None)
        await done
        manager.stopAll()

    try:
        task.react(lambda r: Deferred.fromCoroutine(main(r)))
    except SystemExit as e:
        if failed:
            sys.stderr.write(failed[0])
            return 1
        return int(e.code or 0)
    if failed:
        sys.stderr.write(failed[0])
        return 1
    return 0
