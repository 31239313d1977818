"""
A runnable replicated KV node: options, and the service tree (WAL storage,
Raft node, mTLS Raft listener, client API listener, admin site).

    python -m suite.raft --id n1 --raft-listen tcp:7001:interface=127.0.0.1 \\
        --peer n2=127.0.0.1:7002 --peer n3=127.0.0.1:7003 \\
        --client-listen tcp:7101:interface=127.0.0.1 --admin tcp:7201 \\
        --cert-dir certs/n1 --data-dir data/n1
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.logger import Logger
from twisted.python import usage

from suite.daemon import ConfigError
from suite.raft.api import clientAPIFactory
from suite.raft.kv import KeyValueStateMachine
from suite.raft.messages import Configuration
from suite.raft.node import RaftNode, RaftSettings
from suite.raft.observe import RaftHealth, makeRegistry
from suite.raft.transport import RaftTransport
from suite.raft.wal import WALStorage

log = Logger()


class Options(usage.Options):
    optParameters = [
        ["id", None, None, "This node's id (the common name of its certificate)."],
        ["raft-listen", None, None, "Endpoint string for the Raft listener."],
        ["client-listen", None, None, "Endpoint string for the client API."],
        ["admin", None, None, "Endpoint string for /healthz, /readyz, /metrics (loopback)."],
        ["cert-dir", None, None, "Bundle directory (ca.crt, node.crt, node.key, client-ca.crt)."],
        ["data-dir", None, "raft-data", "Root for the WAL and snapshot directories."],
        ["wal-dir", None, None, "WAL directory (default DATA_DIR/wal)."],
        ["snapshot-dir", None, None, "Snapshot directory (default DATA_DIR/snapshots)."],
        ["election-timeout-ms", None, "150", "Election timeout floor (randomised up to twice it)."],
        ["heartbeat-ms", None, "50", "Heartbeat interval."],
        ["snapshot-threshold", None, "10000", "Applied entries between snapshots."],
    ]
    optFlags = [["insecure", None, "Plain TCP between nodes and clients (development only)."]]

    def __init__(self) -> None:
        super().__init__()
        self["peer"] = {}

    def opt_peer(self, value: str) -> None:
        """
        A peer as ID=HOST:PORT (repeat).
        """
        name, sep, address = value.partition("=")
        if not sep or ":" not in address:
            raise usage.UsageError(f"--peer {value!r}: expected ID=HOST:PORT")
        self["peer"][name] = address

    def postOptions(self) -> None:
        for flag in ("id", "raft-listen", "client-listen"):
            if not self[flag]:
                raise usage.UsageError(f"--{flag} is required")
        if not self["insecure"] and not self["cert-dir"]:
            raise usage.UsageError("--cert-dir is required (or --insecure for development)")
        for flag in ("election-timeout-ms", "heartbeat-ms", "snapshot-threshold"):
            try:
                self[flag] = int(self[flag])
                if self[flag] <= 0:
                    raise ValueError
            except ValueError:
                raise usage.UsageError(f"--{flag} must be a positive integer, not {self[flag]!r}")
        if self["heartbeat-ms"] * 2 > self["election-timeout-ms"]:
            raise usage.UsageError("--heartbeat-ms must be at most half of --election-timeout-ms")
        self["wal-dir"] = self["wal-dir"] or os.path.join(self["data-dir"], "wal")
        self["snapshot-dir"] = self["snapshot-dir"] or os.path.join(self["data-dir"], "snapshots")


class RaftKVService(MultiService):
    """
    Owns the node; starts it after storage is loaded.
    """

    def __init__(self, node: RaftNode, storage: WALStorage, transport: RaftTransport) -> None:
        super().__init__()
        self.node, self.storage, self.transport = node, storage, transport
        self.started: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.started = Deferred.fromCoroutine(self.node.start())
        self.started.addErrback(self._failed)

    def _failed(self, failure: Any) -> None:
        log.failure("raft node failed to start", failure)
        from twisted.internet import reactor

        reactor.stop()  # type: ignore[attr-defined]

    def stopService(self) -> Deferred[None]:
        self.node.stop()
        self.transport.close()
        d = super().stopService()

        async def closing() -> None:
            if d is not None:
                await d
            await self.storage.close()

        return Deferred.fromCoroutine(closing())


def makeService(options: Options, reactor: Any) -> RaftKVService:
    """
    Build the node's service tree from parsed options.
    """
    nodeId = options["id"]
    peers = dict(options["peer"])
    storage = WALStorage(options["wal-dir"], options["snapshot-dir"], reactor)
    secure = not options["insecure"]
    serverCreator: Any = None
    if secure:
        from suite.pki.bundle import loadBundle
        from suite.pki.tls import clientContextFactory, serverContextFactory

        bundle = loadBundle(options["cert-dir"])
        serverCreator = serverContextFactory(bundle, trustClientCA=True)

        def clientCreatorFor(address: str) -> Any:
            return clientContextFactory(bundle, ipAddress=address.rsplit(":", 1)[0])

    def connect(address: str, factory: Any) -> Deferred[Any]:
        host, port = address.rsplit(":", 1)
        endpoint = clientFromString(reactor, f"tcp:host={host}:port={port}:timeout=2")
        if secure:
            from twisted.internet.endpoints import wrapClientTLS

            endpoint = wrapClientTLS(clientCreatorFor(address), endpoint)
        return endpoint.connect(factory)  # type: ignore[no-any-return]

    transport = RaftTransport(nodeId, reactor, connect, peers, secure=secure)
    kv = KeyValueStateMachine()
    settings = RaftSettings(
        electionTimeoutMin=options["election-timeout-ms"] / 1000.0,
        electionTimeoutMax=2 * options["election-timeout-ms"] / 1000.0,
        heartbeatInterval=options["heartbeat-ms"] / 1000.0,
        snapshotThreshold=options["snapshot-threshold"],
    )
    bootstrap = Configuration(frozenset(peers) | {nodeId}, frozenset(), tuple(sorted(peers.items())))
    node = RaftNode(nodeId, reactor, storage, transport, kv, bootstrap, settings)
    root = RaftKVService(node, storage, transport)
    registry, latency = makeRegistry(node)

    def listen(description: str, factory: Any, name: str) -> None:
        try:
            endpoint = serverFromString(reactor, description)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"--{name} {description!r}: {e}")
        if secure:
            from suite.pki.tls import TLSServerEndpoint

            endpoint = TLSServerEndpoint(endpoint, serverCreator, reactor)
        svc = StreamServerEndpointService(endpoint, factory)
        svc.setName(name)
        svc.setServiceParent(root)

    listen(options["raft-listen"], transport.serverFactory(), "raft-listen")
    listen(options["client-listen"], clientAPIFactory(node, kv, latency.observe), "client-listen")
    if options["admin"]:
        from suite.web.admin import makeAdminResource, makeAdminService

        resource = makeAdminResource([RaftHealth(node)], registry, forbidSecondsSuffix=True)
        makeAdminService(options["admin"], resource, reactor, flag="--admin").setServiceParent(root)
    return root
