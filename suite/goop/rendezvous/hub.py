"""
The rendezvous hub service: binds C{127.0.0.1:rendezvous_port} and serves
the dashboard, the peer list, signed publications, SSE events, health and
the template store.

Inputs are bounded: publish bodies at 16 KiB, a per-IP token bucket on
C{/publish}, a cap (429) on SSE clients overall and per IP, eviction of SSE
clients that stop reading.  The client address is the connection's unless it
is one of C{trusted_proxies} (then its forwarding headers count).  Each peer's
publications must carry an increasing C{seq}, so none can be replayed.
Stale peers leave when their TTL runs out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from suite.daemon import barrierFor, watchListening
from suite.goop.fatal import FatalHandler, logOnly
from suite.goop.health import DatabaseHealth, HealthzResource, LoopLag
from suite.goop.logbuffer import LogBuffer
from suite.goop.metrics import HubCollector, addAdminResources
from suite.goop.rendezvous.registry import (
    MAX_PUBLISH_BYTES,
    PeerRegistry,
    PublishError,
    TokenBucket,
    verifyPublication,
)
from suite.goop.rendezvous.templates import TemplateStore
from suite.goop.sse import SSEHub
from suite.goop.webutil import (
    JSONDirectory,
    JSONErrorsSite,
    MountedAt,
    PageRoot,
    clientIP,
    finishRequest,
    header,
    jsonResponse,
    parseNetworks,
    readBody,
)
from suite.netutil import boundPort

if TYPE_CHECKING:
    from suite.goop.rendezvous.peerdb import SharedPeerDB, SyncResult

__all__ = ["RendezvousHub"]

log = Logger()
HERE = os.path.dirname(os.path.abspath(__file__))


class RendezvousHub(Service):
    """Registry + web surface + optional shared peer DB."""

    name = "rendezvous"

    def __init__(
        self,
        reactor: Any,
        port: int = 8787,
        templatesDir: str = "templates",
        peerDbFile: str = "",
        logBuffer: LogBuffer | None = None,
        maxSSEClients: int = 2048,
        maxSSEPerIP: int = 64,
        publishRate: float = 5.0,
        publishBurst: float = 20.0,
        syncInterval: float = 1.0,
        evictInterval: float = 1.0,
        interface: str = "127.0.0.1",
        onFatal: FatalHandler = logOnly,
        trustedProxies: Sequence[str] = (),
        basePath: str = "",
    ) -> None:
        self.reactor = reactor
        #: URL path the hub is served under ("" = the root), e.g. "/rendezvous"
        #: behind a proxy that forwards that prefix unchanged.
        self.basePath = basePath.rstrip("/")
        self.onFatal = onFatal
        self.port = port
        self.interface = interface
        self.registry = PeerRegistry()
        self.templates = TemplateStore(templatesDir)
        self.logBuffer = logBuffer or LogBuffer()
        self.trustedProxies = parseNetworks(trustedProxies)
        self.sse = SSEHub(
            reactor, maxClients=maxSSEClients, maxPerIP=maxSSEPerIP, trustedProxies=trustedProxies
        )
        self.limiter = TokenBucket(publishRate, publishBurst)
        self.peerDb: SharedPeerDB | None = None
        self.peerDbFile = peerDbFile
        if peerDbFile:
            # Imported only with a shared peer DB: a hub without one does not load sqlite3.
            from suite.goop.rendezvous.peerdb import SharedPeerDB

            self.peerDb = SharedPeerDB(reactor, peerDbFile)
        self.syncInterval = syncInterval
        self.lag = LoopLag(reactor)
        self.listening: IListeningPort | None = None
        self.published = 0
        self.refused = 0
        self._evict = LoopingCall(self.evictExpired)
        self._evict.clock = reactor
        self._evictInterval = evictInterval
        self._sync = LoopingCall(self.sync)
        self._sync.clock = reactor
        self._syncing = False
        #: the shared peer DB opened (only then is there anything to sync at stop)
        self._dbReady = False

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.sse.start()
        self.lag.start()
        self._evict.start(self._evictInterval, now=False)
        # The daemon's start-up barrier (when there is one) learns now, before
        # the reactor runs, that the hub's listener is coming.
        bound: Deferred[Any] | None = None
        if barrierFor(self) is not None:
            bound = Deferred()
            watchListening(
                self, "presence.rendezvous_port", f"{self.interface}:{self.port}", bound, self.reactor
            )
        d = self.startDatabase()

        def listen(_: object) -> Deferred[Any]:
            listening = self.listen()
            if bound is None:
                return listening

            def failed(f: Failure) -> None:
                bound.errback(f)

            return listening.addCallbacks(bound.callback, failed)

        d.addCallback(listen)
        d.addErrback(self._fatal)

    def _fatal(self, f: Failure) -> None:
        what = f"rendezvous hub on {self.interface}:{self.port} failed to start"
        barrier = barrierFor(self)
        if barrier is not None:
            barrier.fail(what, f.getErrorMessage() or repr(f.value))
        else:
            self.onFatal(what, f)

    def startDatabase(self) -> Deferred[None]:
        if self.peerDb is None:
            return succeed(None)
        now = self.reactor.seconds()

        def loaded(records: list[dict[str, Any]]) -> None:
            for r in records:
                self.registry.merge(r)
            log.info("shared peer DB: {count} live peers", count=len(records))
            self._dbReady = True
            self._sync.start(self.syncInterval, now=False)

        def failed(f: Failure) -> Failure:
            f.value = RuntimeError(
                f"presence.peer_db_path: cannot open {self.peerDbFile}: {f.getErrorMessage()}"
            )
            return f

        return self.peerDb.start(now).addCallbacks(loaded, failed)

    def listen(self) -> Deferred[IListeningPort]:
        site = JSONErrorsSite(self.resource(), maxBodyBytes=MAX_PUBLISH_BYTES)
        site.displayTracebacks = False
        site.noisy = False
        ep: IStreamServerEndpoint = serverFromString(
            self.reactor, f"tcp:{self.port}:interface={self.interface}"
        )
        d = ep.listen(site)

        def ok(p: IListeningPort) -> IListeningPort:
            self.listening = p
            log.info(
                "rendezvous hub listening on http://{host}:{port}{base}/",
                host=self.interface,
                port=boundPort(p),
                base=self.basePath,
            )
            return p

        return d.addCallback(ok)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.sse.stop()
        self.lag.stop()
        for call in (self._evict, self._sync):
            if call.running:
                call.stop()
        ds: list[Deferred[Any]] = []
        if self.listening is not None:
            ds.append(Deferred.fromCoroutine(_maybe(self.listening.stopListening())))
            self.listening = None
        if self.peerDb is not None:
            db = self.peerDb
            # Write what was accepted since the last sync, then close.
            final = db.sync(self.reactor.seconds()) if self._dbReady else succeed(None)
            final.addErrback(lambda f: log.failure("final peer DB sync failed", f))
            final.addCallback(lambda _: db.stop())
            ds.append(final)
        if not ds:
            return None
        from twisted.internet.defer import gatherResults

        return gatherResults(ds).addCallback(lambda _: None)

    # -- behaviour ---------------------------------------------------------

    def emit(self, kind: str, record: dict[str, Any]) -> None:
        """Fan out one event locally (SSE) and queue it for the shared DB."""
        if kind != "heartbeat":
            log.debug("peer {peer} {kind}", peer=record["peer_id"][:16], kind=kind)
            self.sse.publish(kind, record)
        if self.peerDb is not None:
            self.peerDb.record(kind, record)

    def publish(self, body: bytes, signature: str, ip: str) -> dict[str, Any]:
        """Verify and apply one publication (raises L{PublishError})."""
        now = self.reactor.seconds()
        pub = verifyPublication(body, signature, now, ip)
        change = self.registry.apply(pub, now)
        self.published += 1
        if change is not None:
            self.emit(*change)
        return pub

    def evictExpired(self) -> None:
        for record in self.registry.evict(self.reactor.seconds()):
            log.info("peer {peer} expired", peer=record["peer_id"][:16])
            self.sse.publish("leave", record)

    def sync(self) -> Deferred[Any] | None:
        if self.peerDb is None or self._syncing:
            return None
        self._syncing = True

        def apply(result: SyncResult) -> None:
            peers, events = result
            for r in peers:
                self.registry.merge(r)
            for kind, r in events:
                if kind == "leave":
                    self.registry.remove(r["peer_id"], r)
                self.sse.publish(kind, r)

        def done(result: object) -> object:
            self._syncing = False
            return result

        d = self.peerDb.sync(self.reactor.seconds())
        d.addCallback(apply)
        d.addErrback(lambda f: log.failure("shared peer DB sync failed", f))
        d.addBoth(done)
        return d

    def healthProviders(self) -> list[Any]:
        out: list[Any] = [self.lag]
        if self.peerDb is not None:
            out.append(DatabaseHealth("peer_db", self.peerDb.ping, self.reactor))
        return out

    # -- web ---------------------------------------------------------------

    def resource(self) -> Resource:
        """
        The hub's resource tree, mounted at L{basePath}.
        """
        hub = self._hubResource()
        if not self.basePath:
            return hub
        return MountedAt(self.basePath, hub)

    def _hubResource(self) -> Resource:
        root = PageRoot(os.path.join(HERE, "dashboard.html"), "no such resource")
        root.putChild(b"peers.json", _PeersJSON(self))
        root.putChild(b"logs.json", _LogsJSON(self.logBuffer))
        root.putChild(b"publish", _Publish(self))
        root.putChild(b"events", self.sse.resource())
        root.putChild(b"healthz", HealthzResource(self.healthProviders))
        addAdminResources(root, self.healthProviders, HubCollector(self), self.reactor)
        api = JSONDirectory()
        api.putChild(b"templates", _Templates(self))
        root.putChild(b"api", api)
        return root


async def _maybe(d: Any) -> None:
    if d is not None:
        await d


class _PeersJSON(Resource):
    isLeaf = True

    def __init__(self, hub: RendezvousHub) -> None:
        super().__init__()
        self.hub = hub

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return self.hub.registry.listJSON() + b"\n"


class _LogsJSON(Resource):
    isLeaf = True

    def __init__(self, logs: LogBuffer) -> None:
        super().__init__()
        self.logs = logs

    def render_GET(self, request: Request) -> bytes:
        return jsonResponse(request, 200, self.logs.snapshot())


class _Publish(Resource):
    isLeaf = True

    def __init__(self, hub: RendezvousHub) -> None:
        super().__init__()
        self.hub = hub

    def render_POST(self, request: Request) -> bytes:
        ip = clientIP(request, self.hub.trustedProxies)
        if not self.hub.limiter.allow(ip, self.hub.reactor.seconds()):
            self.hub.refused += 1
            request.setHeader(b"retry-after", b"1")
            return jsonResponse(request, 429, {"error": "publish rate limit exceeded for this address"})
        body = readBody(request, MAX_PUBLISH_BYTES)
        if body is None:
            return jsonResponse(
                request, 413, {"error": f"publish body larger than {MAX_PUBLISH_BYTES} bytes"}
            )
        sig = (header(request, "x-goop-signature") or "").strip()
        try:
            pub = self.hub.publish(body, sig, ip)
        except PublishError as e:
            self.hub.refused += 1
            return jsonResponse(request, 400, {"error": str(e)})
        return jsonResponse(request, 200, {"ok": True, "peer_id": pub["peer_id"], "ttl": pub["ttl"]})


_TPL = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Templates(Resource):
    isLeaf = True
    takesSubpaths = True

    def __init__(self, hub: RendezvousHub) -> None:
        super().__init__()
        self.hub = hub

    def render_GET(self, request: Request) -> bytes | int:
        parts = list(request.postpath or [])
        store = self.hub.templates
        if parts in ([], [b""]):
            return jsonResponse(request, 200, store.list())
        if len(parts) != 2 or not _TPL.match(parts[0]):
            return jsonResponse(request, 404, {"error": "no such template resource"})
        name = parts[0].decode()
        if parts[1] == b"manifest.json":
            m = store.manifest(name)
            if m is None:
                return jsonResponse(request, 404, {"error": f"no template named {name}"})
            return jsonResponse(request, 200, m)
        if parts[1] != b"bundle":
            return jsonResponse(request, 404, {"error": "no such template resource"})

        def send(data: bytes | None) -> None:
            if data is None:
                finishRequest(request, jsonResponse(request, 404, {"error": f"no template named {name}"}))
                return
            request.setHeader(b"content-type", b"application/gzip")
            request.setHeader(b"content-disposition", f'attachment; filename="{name}.tar.gz"'.encode())
            finishRequest(request, data)

        def failed(f: Any) -> None:
            finishRequest(
                request, jsonResponse(request, 500, {"error": f"cannot build bundle: {f.getErrorMessage()}"})
            )

        deferToThread(store.bundle, name).addCallbacks(send, failed)
        return NOT_DONE_YET
