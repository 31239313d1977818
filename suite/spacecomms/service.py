"""
The SpaceComms root service: store, node, peer manager and API site, plus
SIGHUP reload of peers, policies and tokens (atomic; an invalid file leaves
the running configuration untouched and says why).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from suite.daemon import ConfigError, watchListening
from suite.netutil import isLoopbackHost
from suite.spacecomms.api import makeAPIResource, makeTokenChecker
from suite.spacecomms.apibase import APISite
from suite.spacecomms.apipeers import PeerFile
from suite.spacecomms.config import Config, ConfigInvalid, PeerConfig, loadConfig
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.peers import PeerManager
from suite.spacecomms.signing import Signer
from suite.spacecomms.store import FileStore, MemoryStore
from suite.web.limits import LimitedRequest

__all__ = ["SpaceCommsService", "TLSContexts", "startupChecks"]

ALPN = b"spacecomms/1.0"
#: Settings a reload cannot change, by the configuration key they come from.
RESTART_ONLY_KEYS = {
    "node_id": "node.id",
    "host": "server.host",
    "port": "server.port",
    "peer_host": "server.peer_host",
    "peer_port": "server.peer_port",
    "tls_enabled": "server.tls.enabled",
    "cert_path": "server.tls.cert_path",
    "key_path": "server.tls.key_path",
    "ca_path": "server.tls.ca_path",
    "ca_source": "server.tls.ca_path",
    "tls_min_version": "server.tls.min_version",
    "api_tls": "server.tls.api",
    "max_body_bytes": "server.max_body_bytes",
    "storage_type": "storage.type",
    "file_path": "storage.file_path",
    "log_format": "logging.format",
    "log_output": "logging.output",
}
RESTART_ONLY = tuple(RESTART_ONLY_KEYS)


class TLSContexts:
    """
    The node's mTLS identity (server.tls cert_path, key_path, ca_path) and
    the context factories built from it.
    """

    def __init__(self, config: Config) -> None:
        from suite.pki.load import loadIdentity

        assert config.cert_path and config.key_path
        self.tls13Only = config.tls_min_version == "1.3"
        self.bundle = loadIdentity(
            config.cert_path,
            config.key_path,
            config.ca_path,
            certLabel="server.tls.cert_path",
            keyLabel="server.tls.key_path",
            trustLabel="server.tls.ca_path",
        )
        self._clients: dict[str, Any] = {}
        self._server: Any = None

    def server(self, requireClientCert: bool = True) -> Any:
        from suite.pki.tls import serverContextFactory

        if not requireClientCert:
            return serverContextFactory(self.bundle, requireClientCert=False, tls13Only=self.tls13Only)
        if self._server is None:
            # ALPN: peers ask for the SpaceComms protocol; http/1.1 lets curl
            # reach the GET /health probe on the same port.
            self._server = serverContextFactory(
                self.bundle, acceptableProtocols=[ALPN, b"http/1.1"], tls13Only=self.tls13Only
            )
        return self._server

    def client(self, host: str) -> Any:
        from suite.pki.tls import clientContextFactory

        if host not in self._clients:
            self._clients[host] = clientContextFactory(
                self.bundle, hostname=host, acceptableProtocols=[ALPN], tls13Only=self.tls13Only
            )
        return self._clients[host]


def startupChecks(config: Config) -> TLSContexts | None:
    """
    The checks start-up makes beyond the configuration file itself: the
    TLS identity loads, its key matches its certificate, the certificate
    chains to C{ca_path}; the store and log files can be written; the
    peers kept from C{POST /peers} can be read back.
    C{validate-config} runs the same.

    @raise suite.daemon.ConfigError: naming the key and the problem.
    """
    for key, path in (
        ("storage.file_path", config.file_path if config.storage_type == "file" else None),
        ("logging.output", None if config.log_output in ("stdout", "stderr") else config.log_output),
    ):
        if path is None:
            continue
        if os.path.isdir(path):
            raise ConfigError(f"{key}: {path} is a directory, not a file")
        target = path if os.path.exists(path) else os.path.dirname(os.path.abspath(path))
        if not os.access(target, os.W_OK):
            raise ConfigError(f"{key}: cannot write {target}")
    if config.storage_type == "file" and config.file_path:
        PeerFile(config.file_path + ".peers").load()
    return TLSContexts(config) if config.tls_enabled else None


def exposureWarnings(config: Config) -> list[str]:
    """
    What in a valid configuration leaves the node open or its data
    unkept, one line each (logged at warn on start-up): an API without
    tokens, bearer tokens sent in clear text beyond loopback, a memory
    store beside a configured file path, peers without a shared token.
    """
    out = []
    api = f"{config.host}:{config.port}"
    if not config.auth_enabled:
        out.append(
            f"api.auth.enabled is false: anyone who reaches the API on {api} can add or remove peers "
            "and submit or withdraw CDMs and object states"
        )
    elif not config.api_tls and not isLoopbackHost(config.host):
        out.append(
            f"server.tls.api is false: API bearer tokens cross the network in clear text to {api}; "
            "set server.tls.api: true or bind server.host to loopback behind a TLS proxy"
        )
    if config.storage_type == "memory" and config.file_path:
        out.append(
            f"storage.type is memory: everything this node holds is lost when it stops "
            f"(storage.file_path {config.file_path} is not used; set storage.type: file to keep it)"
        )
    for i, peer in enumerate(config.peers):
        if not peer.auth_token:
            out.append(
                f"peers[{i}].auth_token is empty: any node that "
                + ("holds a certificate naming" if config.tls_enabled else "claims to be")
                + f" {peer.id} is accepted as that peer"
            )
    return out


class _APIRequest(LimitedRequest):
    """
    The API takes JSON, KVN and XML bodies, never HTML form posts: skip
    Twisted's form-body parsing (an e-mail-header parse of Content-Type on
    every POST).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)


def _endpoint(host: str, port: int) -> str:
    iface = host.replace(":", "\\:")
    return f"tcp:{port}:interface={iface}"


class SpaceCommsService(MultiService):
    """
    Everything one node runs.
    """

    log = Logger(namespace="spacecomms")

    def __init__(
        self,
        config: Config,
        reactor: Any,
        environ: Mapping[str, str] | None = None,
        installSignals: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.environ = environ
        self.installSignals = installSignals
        store: MemoryStore = MemoryStore()
        if config.storage_type == "file" and config.file_path:
            store = FileStore(config.file_path, reactor)
            try:
                store.lock()
            except OSError as e:
                raise ConfigError(f"storage.file_path: {e}") from None
            try:
                # Here, not at startService, so that a store that cannot be
                # replayed and rewritten (a full disk, a directory not
                # writable) stops start-up with one line naming the key.
                store.load()
            except OSError as e:
                store.close()
                where = f" ({e.filename})" if e.filename else ""
                raise ConfigError(
                    f"storage.file_path: cannot load {config.file_path}: {e.strerror or e}{where}"
                ) from None
        self.node = SpaceNode(config, store, reactor)
        #: Peers added with POST /peers (kept beside a file store).
        self.apiPeers: dict[str, PeerConfig] = {}
        self.peerFile: PeerFile | None = None
        if config.storage_type == "file" and config.file_path:
            self.peerFile = PeerFile(config.file_path + ".peers", reactor)
            try:
                kept = self.peerFile.load()
            except ConfigError:
                store.close()
                raise
            configured = {p.id for p in config.peers}
            self.apiPeers = {p.id: p for p in kept if p.id not in configured and p.id != config.node_id}
            if self.apiPeers:
                self.node.setPeers([*config.peers, *self.apiPeers.values()])
        self.tls = startupChecks(config)
        if self.tls is not None:
            self.node.signer = Signer.fromBundle(self.tls.bundle)
        self.peers = PeerManager(self.node, reactor, self.tls)
        self.peers.setServiceParent(self)
        self.checker = makeTokenChecker(config.tokens) if config.auth_enabled else None
        resource = makeAPIResource(self.node, self.checker, self.peers.status, self.addPeer, self.removePeer)
        # localHostsOnly: on a loopback connection, a page in a browser on
        # this host is refused (421 for a rebound Host, 403 for a cross-site
        # POST/DELETE); with api.auth.enabled false nothing else would stop
        # it.  Connections to other addresses are not affected.
        self.site = APISite(resource, maxBodyBytes=config.max_body_bytes, localHostsOnly=True)
        self.site.requestFactory = _APIRequest
        self.site.displayTracebacks = False
        factory: Any = self.site
        if config.api_tls and self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls.server(requireClientCert=False), False, self.site)
        self.apiFactory = factory
        self.apiPort: Any = None

    def startService(self) -> None:
        self.node.start()
        super().startService()
        if self.tls is not None:
            self.log.info(
                "peer TLS: trusting {source}; TLS {version} or newer",
                source=self.config.ca_source,
                version=self.config.tls_min_version,
            )
        desc = _endpoint(self.config.host, self.config.port)
        d = serverFromString(self.reactor, desc).listen(self.apiFactory)

        def listening(port: Any) -> None:
            self.apiPort = port
            addr = port.getHost()
            self.log.info("API listening on {address}", address=f"{addr.host}:{addr.port}")

        d.addCallback(listening)
        watchListening(self, "server.port", desc, d, self.reactor)
        self.log.info(
            "spacecomms node {node_id} starting: API on {host}:{port}, peers on {peer_host}:{peer_port}, {count} peers configured",
            node_id=self.config.node_id,
            host=self.config.host,
            port=self.config.port,
            peer_host=self.config.peer_host,
            peer_port=self.config.peer_port,
            count=len(self.config.peers),
        )
        if self.tls is None:
            self.log.warn(
                "server.tls.enabled is false: peer sessions run over plain TCP without TLS; use this for development only"
            )
        for warning in exposureWarnings(self.config):
            self.log.warn("{warning}", warning=warning)
        if self.installSignals:
            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))

    def stopService(self) -> Any:
        if self.apiPort is not None:
            port, self.apiPort = self.apiPort, None
            port.stopListening()
        d = super().stopService()

        def closeStore(result: Any) -> Any:
            self.node.stop()
            return result

        if d is None:
            self.node.stop()
            return None
        return d.addBoth(closeStore)

    # -- peers through the API -----------------------------------------

    def addPeer(self, peer: PeerConfig) -> None:
        """
        A peer from C{POST /peers}: kept in C{PATH.peers} (with a file
        store) before it is used, so it comes back after a restart.

        @raise OSError: when it cannot be kept (nothing changes).
        """
        self._keep({**self.apiPeers, peer.id: peer})
        self.apiPeers[peer.id] = peer
        self.node.setPeers([*self.node.peerConfigs.values(), peer])

    def removePeer(self, peerId: str) -> bool:
        """
        C{DELETE /peers/{id}}: forget the peer (one from the configuration
        file comes back at the next reload or restart).

        @raise OSError: when the peer file cannot be rewritten (nothing changes).
        """
        if peerId not in self.node.peerConfigs:
            return False
        if peerId in self.apiPeers:
            self._keep({k: v for k, v in self.apiPeers.items() if k != peerId})
            del self.apiPeers[peerId]
        self.node.setPeers([p for p in self.node.peerConfigs.values() if p.id != peerId])
        return True

    def _keep(self, peers: dict[str, PeerConfig]) -> None:
        if self.peerFile is not None:
            self.peerFile.save(sorted(peers.values(), key=lambda p: p.id))

    # -- SIGHUP ----------------------------------------------------------

    def reload(self) -> bool:
        """
        Reopen the log file (after a rotation), re-read the configuration
        file and apply peers, policies, tokens, protocol timings and the log
        level at once, or nothing.  Returns whether it applied.
        """
        path = self.config.path
        from suite.spacecomms.logsetup import reopen

        try:
            reopen()
        except OSError as e:
            self.log.error(
                "cannot reopen the log file {output}: {reason}; still writing to the old one",
                output=self.config.log_output,
                reason=e.strerror or str(e),
            )
        try:
            new = loadConfig(path, self.environ)
        except ConfigInvalid as e:
            self.log.error(
                "config reload failed, keeping the old configuration: {path}: {reasons}",
                reasons="; ".join(e.reasons),
                path=path,
            )
            return False
        if new.node_id != self.config.node_id:
            self.log.error(
                "config reload failed, keeping the old configuration: node.id cannot change without a restart"
            )
            return False
        checker = None
        if self.checker is not None and new.auth_enabled:
            try:
                checker = makeTokenChecker(new.tokens)
            except ValueError as e:
                self.log.error(
                    "config reload failed, keeping the old configuration: api.auth.tokens: {reason}",
                    reason=str(e),
                )
                return False
        ignored = sorted(
            {RESTART_ONLY_KEYS[k] for k in RESTART_ONLY if getattr(new, k) != getattr(self.config, k)}
        )
        if new.auth_enabled != self.config.auth_enabled:
            ignored.append("api.auth.enabled")
        if ignored:
            self.log.warn(
                "config reload: changes to {keys} need a restart and were not applied",
                keys=", ".join(ignored),
            )
            new = dataclasses.replace(new, **{k: getattr(self.config, k) for k in RESTART_ONLY})
        peers = list(new.peers) + [
            p for pid, p in self.apiPeers.items() if all(q.id != pid for q in new.peers)
        ]
        # Apply: nothing above has changed running state.
        if checker is not None and self.checker is not None:
            self.checker.setTokens({t.id: (t.secret, t.permissions) for t in new.tokens})
        levelChanged = new.log_level != self.config.log_level
        self.config = new
        self.node.config = new
        self.node.router.maxHops = new.max_hop_count
        self.node.setPeers(peers)
        for pid in list(self.node.buckets):
            pol = self.node.policies(pid)
            bucket = self.node.buckets[pid]
            bucket.rate, bucket.burst = pol.rate_limit_per_second, pol.rate_limit_burst
        if levelChanged:
            from suite.spacecomms.logsetup import setLevel

            setLevel(new.log_level)
        self.log.info(
            "configuration reloaded from {path}: {count} peers, logging level {logging_level}",
            path=path,
            count=len(peers),
            logging_level=new.log_level,
        )
        return True
