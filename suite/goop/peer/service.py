"""
Wiring of a peer: identity, data.db, site, Lua, P2P streams, discovery,
viewer, and (when configured) the rendezvous hub.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.daemon import ConfigError, barrierFor, watchListening
from suite.goop.config import (
    CONFIG_NAME,
    GoopConfig,
    parseHostPort,
    readDocument,
    validateDocument,
    writeConfig,
)
from suite.goop.fatal import FatalHandler, failStartup, logOnly
from suite.goop.health import DatabaseHealth, LoopLag
from suite.goop.identity import Identity, loadIdentity
from suite.goop.logbuffer import LogBuffer
from suite.goop.peer.errors import SettingsError
from suite.goop.peer.viewer import makeViewer
from suite.goop.webutil import JSONErrorsSite, httpURL, loadSecret, tcpServerEndpoint

# What only some peers run is imported where it starts, so a process loads
# only what its configuration uses (docs/performance.md, resident memory):
# the hub (rendezvous_host), and for a full peer (not rendezvous-only) its
# data store and Lua pool, P2P streams, groups and discovery.
if TYPE_CHECKING:
    from suite.goop.groups import GroupService
    from suite.goop.p2p.discovery import HubClient, MdnsDiscovery, PeerDirectory
    from suite.goop.peer.store import DataStore
    from suite.goop.rendezvous.hub import RendezvousHub

__all__ = ["PeerService", "SettingsError", "makePeerService", "makeRendezvousOnly"]


#: How long a site or data request to another peer may wait for its answer:
#: a Lua call may queue behind 64 others on that peer's two workers.
REMOTE_ANSWER_TIMEOUT = 60.0


class _Reported(Exception):
    """A listener's failure already reported to the start-up barrier."""


log = Logger()

DEFAULT_INDEX = b"""<!doctype html><html><head><meta charset=utf-8><title>Goop2 site</title></head>
<body><h1>It works</h1><p>Put your site in this peer's site/ folder.</p></body></html>
"""


class PeerService(MultiService):
    """One peer (or, with C{minimal}, a rendezvous-only settings viewer)."""

    def __init__(
        self,
        config: GoopConfig,
        reactor: Any,
        logs: LogBuffer,
        hubKwargs: dict[str, Any] | None = None,
        minimal: bool = False,
        onFatal: FatalHandler = logOnly,
    ) -> None:
        super().__init__()
        self.onFatal = onFatal
        self.config = config
        self.reactor = reactor
        self.logs = logs
        self.minimal = minimal
        self.identity: Identity = loadIdentity(config.directory)
        self.viewerSecret = loadSecret(config.path("viewer.secret"))
        self.lag = LoopLag(reactor)
        self.hub: RendezvousHub | None = None
        if config.rendezvousHost:
            from suite.goop.rendezvous.hub import RendezvousHub

            self.hub = RendezvousHub(
                reactor,
                config.rendezvousPort,
                config.templatesPath,
                config.peerDbFile,
                logs,
                onFatal=onFatal,
                trustedProxies=config.trustedProxies,
                basePath=config.rendezvousBasePath,
                **(hubKwargs or {}),
            )
            self.hub.setServiceParent(self)
        self.hubURL = config.rendezvousWan or (
            f"http://127.0.0.1:{config.rendezvousPort}{config.rendezvousBasePath}"
            if config.rendezvousHost
            else ""
        )
        self.p2pPort = 0
        self.viewerPort = 0
        self.directory: PeerDirectory | None = None
        self.store: DataStore | None = None
        self.hubClient: HubClient | None = None
        self.mdns: MdnsDiscovery | None = None
        self.groups: GroupService | None = None
        self._listeners: list[Any] = []
        self._extra: list[Any] = []
        if not minimal:
            from suite.goop.groups import GroupService
            from suite.goop.lua.engine import LuaEngine
            from suite.goop.p2p.discovery import PeerDirectory
            from suite.goop.p2p.streams import (
                DATA_PROTOCOL,
                GROUP_PROTOCOL,
                SITE_PROTOCOL,
                StreamServerFactory,
            )
            from suite.goop.p2p.tls import PeerTLS
            from suite.goop.peer.site import SiteFiles
            from suite.goop.peer.store import DataStore

            self._prepareDirectory()
            self.directory = PeerDirectory(self.identity.peerId)
            self.lua = LuaEngine(reactor, config.path("lua"), config.path("data.db"))
            self.store = DataStore(reactor, config.path("data.db"), self.identity.peerId, lua=self.lua)
            self.site = SiteFiles(reactor, config.path("site"))
            self.tls = PeerTLS(self.identity)
            self.groups = GroupService(
                reactor, self.identity.peerId, self.openGroupStream, identity=self.identity
            )
            self.streams = StreamServerFactory()
            self.streams.addRequestHandler(SITE_PROTOCOL, self.site.handle)
            self.streams.addRequestHandler(DATA_PROTOCOL, self.store.execute)
            self.streams.addSessionFactory(GROUP_PROTOCOL, self.groups.hostSession)

    def _prepareDirectory(self) -> None:
        site, lua = self.config.path("site"), self.config.path("lua")
        for path in (site, lua):
            if os.path.lexists(path) and not os.path.isdir(path):
                raise ConfigError(f"{path}: exists and is not a directory")
        try:
            if not os.path.isdir(site):
                os.makedirs(site)
                with open(os.path.join(site, "index.html"), "wb") as f:
                    f.write(DEFAULT_INDEX)
            os.makedirs(lua, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{e.filename or self.config.directory}: cannot create: {e.strerror}") from None

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.lag.start()
        # Tell the daemon's start-up barrier (when there is one) now, before
        # the reactor runs, which listeners are coming: the daemon is started
        # only once each binds.
        self._bound: dict[str, Deferred[Any]] = {}
        if barrierFor(self) is not None:
            if not self.minimal:
                from suite.goop.p2p.streams import streamsDescription

                self._expect(
                    "p2p.listen_port", streamsDescription(self.config.listenPort, self.config.listenAddr)
                )
            addr = self._viewerAddress()
            if addr:
                self._expect("viewer.http_addr", addr)
        Deferred.fromCoroutine(self._start()).addErrback(self._fatal)

    def _expect(self, key: str, description: str) -> None:
        d: Deferred[Any] = Deferred()
        self._bound[key] = d
        watchListening(self, key, description, d, self.reactor)

    async def _bind(self, key: str, listen: Deferred[Any], announce: Callable[[Any], None]) -> Any:
        """
        Await the bind C{listen} of the listener C{key}; C{announce} the
        listening port (record and log it), then report it to the barrier,
        whose C{started} line so comes last, naming the port bound; a
        failure reported there is not reported again.
        """
        bound = self._bound.pop(key, None)
        try:
            port = await listen
        except Exception:  # reported to the barrier, re-raised
            if bound is None:
                raise
            bound.errback(Failure())
            raise _Reported() from None
        self._listeners.append(port)
        announce(port)
        if bound is not None:
            bound.callback(port)
        return port

    def _viewerAddress(self) -> str:
        # Rendezvous-only mode always gets its minimal settings viewer; without
        # viewer.http_addr it takes a free loopback port (logged on start).
        return self.config.httpAddr or ("127.0.0.1:0" if self.minimal else "")

    def _fatal(self, f: Failure) -> None:
        if f.check(_Reported):
            return
        what = f"peer {self.config.directory} failed to start"
        barrier = barrierFor(self)
        if barrier is not None:
            barrier.fail(what, f.getErrorMessage() or repr(f.value))
        else:
            self.onFatal(what, f)

    async def _start(self) -> None:
        if not self.minimal:
            import sqlite3  # a full peer's only (the hub-only process never loads it)

            from suite.goop.p2p.discovery import HubClient, MdnsDiscovery
            from suite.goop.p2p.streams import listenStreams

            assert self.store is not None and self.directory is not None
            try:
                await self.store.start()
            except sqlite3.Error as e:
                raise RuntimeError(f"{self.config.path('data.db')}: cannot open: {e}") from None
            await self._bind(
                "p2p.listen_port",
                listenStreams(
                    self.reactor, self.tls, self.config.listenPort, self.streams, self.config.listenAddr
                ),
                self._streamsListening,
            )
            if self.hubURL:
                self.hubClient = HubClient(
                    self.reactor,
                    self.identity,
                    self.hubURL,
                    self.directory,
                    lambda: self.config.displayLabel,
                    lambda: self.p2pPort,
                    self.config.ttlSeconds,
                    self.config.heartbeatSeconds,
                    rendezvous=self.config.rendezvousHost,
                    name=lambda: self.config.peerName,
                )
                self.hubClient.start()
            if self.config.mdnsTag:
                self.mdns = MdnsDiscovery(
                    self.reactor,
                    self.identity,
                    self.config.mdnsTag,
                    lambda: self.p2pPort,
                    self.config.displayLabel,
                    self.directory,
                    self.config.mdnsInterfaces,
                    name=self.config.peerName,
                )
                await self.mdns.start()
        addr = self._viewerAddress()
        if addr:
            host, port = parseHostPort(addr)
            resource, tail = makeViewer(
                self, self.reactor, minimal=self.minimal, bindHost=host, names=self.config.allowedHosts
            )
            tail.start()
            self._extra.append(tail)
            site = JSONErrorsSite(resource, maxBodyBytes=256 * 1024)
            site.displayTracebacks = False
            site.noisy = False

            def viewerListening(listening: Any) -> None:
                self.viewerPort = listening.getHost().port
                resource.port = self.viewerPort
                log.info(
                    "viewer on {url}/", url=httpURL(host, self.viewerPort), host=host, port=self.viewerPort
                )

            await self._bind(
                "viewer.http_addr",
                tcpServerEndpoint(self.reactor, host, port).listen(site),
                viewerListening,
            )

    def _streamsListening(self, port: Any) -> None:
        self.p2pPort = port.getHost().port
        log.info(
            "peer {peer} P2P streams on {host} port {port}",
            peer=self.identity.peerId[:16],
            host=port.getHost().host,
            port=self.p2pPort,
        )

    async def _stop(self) -> None:
        if self.hubClient is not None:
            await self.hubClient.stop()
        if self.mdns is not None:
            await self.mdns.stop()
        if self.groups is not None:
            self.groups.stop()
        for tail in self._extra:
            tail.stop()
        for listener in self._listeners:
            await listener.stopListening()
        self._listeners = []
        if self.store is not None:
            await self.store.stop()
            await self.lua.stop()

    def stopService(self) -> Deferred[None]:
        self.lag.stop()
        d = Deferred.fromCoroutine(self._stop())
        d.addErrback(lambda f: log.failure("peer stop", f))
        d.addCallback(lambda _: MultiService.stopService(self))
        return d

    # -- behaviour ---------------------------------------------------------

    def healthProviders(self) -> list[Any]:
        out: list[Any] = [self.lag]
        if self.store is not None:
            out.append(DatabaseHealth("data_db", self.store.ping, self.reactor))
        return out

    def settings(self) -> dict[str, Any]:
        return {
            "peer_id": self.identity.peerId,
            "label": self.config.label,
            "name": self.config.peerName,
            "email": self.config.email,
            "config": readDocument(self.config.directory),
        }

    def updateProfile(self, doc: dict[str, Any]) -> None:
        """
        Change C{goop.json} from the settings page: C{label}/C{name}/C{email}
        (live; the next publication carries them),
        or a whole C{config} document (validated; other keys apply at restart).
        """
        if "config" in doc:
            # A whole document replaces the file, so it also repairs one
            # that no longer reads.
            if not isinstance(doc["config"], dict):
                raise ValueError("config must be a JSON object")
            current = doc["config"]
        else:
            try:
                current = readDocument(self.config.directory)
            except ConfigError as e:
                raise SettingsError(f"{e}; save a whole goop.json to replace it") from None
        section = current.get("profile", {})
        if not isinstance(section, dict):
            raise ValueError(f"{CONFIG_NAME}: profile: must be an object")
        profile = dict(section)
        for key in ("label", "name", "email"):
            if key in doc:
                profile[key] = doc[key]
        current["profile"] = profile
        try:
            checked = validateDocument(self.config.directory, current)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if (self.minimal or checked.rendezvousOnly) and not checked.rendezvousHost:
            # the start-up check of rendezvous mode: saved, the peer would not start again
            raise ValueError(
                f"{CONFIG_NAME}: presence.rendezvous_host: must be true for rendezvous mode "
                "(with it false this peer would not start again)"
            )
        try:
            writeConfig(self.config.directory, current)
        except OSError as e:
            raise SettingsError(f"{CONFIG_NAME}: cannot write: {e.strerror or e}") from None
        self.config = dataclasses.replace(
            self.config, label=checked.label, peerName=checked.peerName, email=checked.email
        )

    def addressOf(self, peerId: str) -> str | None:
        rec = self.directory.get(peerId) if self.directory else None
        if rec is None or not rec.get("addrs"):
            return None
        return str(rec["addrs"][0])

    def remoteRequest(self, peerId: str, kind: str, request: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """One request over a fresh stream to C{peerId} (site or data)."""
        from suite.goop.p2p.streams import DATA_PROTOCOL, SITE_PROTOCOL, openStream

        proto = SITE_PROTOCOL if kind == "site" else DATA_PROTOCOL

        async def run() -> dict[str, Any]:
            addr = self.addressOf(peerId)
            if addr is None:
                return {"ok": False, "error": "unknown peer"}
            stream = await openStream(self.reactor, self.tls, addr, peerId, proto)
            answer = stream.request(request)
            # A peer that accepts the stream but never answers must not hold
            # the viewer's request (and the connection) for ever.
            answer.addTimeout(REMOTE_ANSWER_TIMEOUT, self.reactor)
            try:
                return await answer
            except defer.TimeoutError:
                return {"ok": False, "error": f"the peer did not answer within {REMOTE_ANSWER_TIMEOUT:g} s"}
            finally:
                stream.close()

        return Deferred.fromCoroutine(run())

    def openGroupStream(self, peerId: str) -> Deferred[Any]:
        from suite.goop.p2p.streams import GROUP_PROTOCOL, openStream

        addr = self.addressOf(peerId)
        if addr is None:
            from twisted.internet.defer import fail

            return fail(ConnectionError("unknown peer"))
        return openStream(self.reactor, self.tls, addr, peerId, GROUP_PROTOCOL)


def makePeerService(config: GoopConfig, reactor: Any, logs: LogBuffer, **hubKwargs: Any) -> Service:
    """A full peer (with its hub when C{rendezvous_host} is true)."""
    return PeerService(
        config, reactor, logs, hubKwargs, onFatal=lambda what, f: failStartup(reactor, what, f)
    )


def makeRendezvousOnly(config: GoopConfig, reactor: Any, logs: LogBuffer, **hubKwargs: Any) -> Service:
    """The hub plus the minimal settings viewer (no P2P node)."""
    return PeerService(
        config, reactor, logs, hubKwargs, minimal=True, onFatal=lambda what, f: failStartup(reactor, what, f)
    )
