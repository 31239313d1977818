"""
Embed a Raft node in a daemon: one call builds the WAL storage, the mTLS
transport, the node and a service that owns them.

    service = makeRaftNodeService(
        "n1", reactor, MyStateMachine(),
        peers={"n2": "10.0.0.2:26021", "n3": "10.0.0.3:26021"},
        raftListen="tcp:26021:interface=10.0.0.1",
        walDir=walDir, snapshotDir=snapshotDir, bundle=bundle,
    )
    service.setServiceParent(root)
    await service.node.propose(b"...")

The node id must be the common name of the node certificate in C{bundle}
(peers are verified by IP address and by that name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString, wrapClientTLS
from twisted.logger import Logger

from suite.daemon import ConfigError, GuardedEndpointService
from suite.raft.groupid import threadedGroupStore
from suite.raft.interfaces import IRaftStateMachine
from suite.raft.messages import Configuration
from suite.raft.node import RaftNode
from suite.raft.settings import RaftSettings
from suite.raft.transport import RaftTransport
from suite.raft.wal import WALStorage

log = Logger()


class RaftNodeService(MultiService):
    """
    Owns a node, its storage and transport; starts the node once loaded
    and closes the storage on stop.
    """

    def __init__(
        self, node: RaftNode, storage: WALStorage, transport: RaftTransport, reactor: Any, bundle: Any = None
    ) -> None:
        super().__init__()
        self.node, self.storage, self.transport = node, storage, transport
        self.reactor = reactor
        self.bundle = bundle
        self.started: Deferred[None] | None = None
        self.failure: str | None = None

    def listen(self, description: str, factory: Any, name: str) -> None:
        """
        Serve C{factory} on endpoint C{description} (wrapped in mTLS when the
        node has a bundle) as a child service called C{name}.
        """
        try:
            endpoint: Any = serverFromString(self.reactor, description)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{name} {description!r}: {e}")
        if self.bundle is not None:
            from suite.pki.endpoints import TLSServerEndpoint
            from suite.pki.tls import serverContextFactory

            endpoint = TLSServerEndpoint(
                endpoint, serverContextFactory(self.bundle, trustClientCA=True), self.reactor
            )
        svc = GuardedEndpointService(endpoint, factory, name, description, self.reactor)
        svc.setName(name.lstrip("-"))
        svc.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.started = Deferred.fromCoroutine(self.node.start())
        self.started.addErrback(self._failed)

    def _failed(self, failure: Any) -> None:
        self.failure = failure.getErrorMessage()
        log.critical("raft node failed to start: {why}", why=self.failure)
        self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        self.node.stop()
        self.transport.close()
        d = super().stopService()

        async def closing() -> None:
            if d is not None:
                await d
            await self.storage.close()

        return Deferred.fromCoroutine(closing())


def makeRaftNodeService(
    nodeId: str,
    reactor: Any,
    stateMachine: IRaftStateMachine,
    *,
    peers: Mapping[str, str],
    raftListen: str,
    walDir: str,
    snapshotDir: str,
    bundle: Any = None,
    settings: RaftSettings | None = None,
    listenFlag: str = "--raft-listen",
    join: bool = False,
    address: str = "",
    coalesce: bool = False,
    groupDir: str | None = None,
) -> RaftNodeService:
    """
    Build a node of a static group of C{nodeId} and C{peers} (id ->
    host:port).  Without C{bundle} the transport is plain TCP (tests and
    development only).  With C{join} the node starts outside the group (an
    empty configuration; C{peers} only give addresses) and waits for the
    leader to add it (C{RaftNode.changeMembership("addVoter", ...)} there),
    or to found a group with L{RaftNode.bootstrap}.  C{address} (this
    node's host:port) is recorded in the first configuration of a node that
    does not join, for peers that learn it from there.
    With C{coalesce} the frames sent to a peer in one reactor turn leave in
    one write (Twisted's TLS layer already sends a turn's writes as one
    record batch, so this saves work on plain TCP only).
    The node's Raft group id (L{suite.raft.groupid}) is kept in the file
    C{group} in C{groupDir} (default: C{walDir}).

    @raise ConfigError: an unwritable WAL/snapshot directory or a bad
        endpoint, naming it.
    """
    storage = WALStorage(walDir, snapshotDir, reactor)
    secure = bundle is not None

    def connect(address: str, factory: Any) -> Deferred[Any]:
        host, port = address.rsplit(":", 1)
        endpoint: Any = clientFromString(reactor, f"tcp:host={host}:port={port}:timeout=2")
        if secure:
            from suite.pki.tls import clientContextFactory

            endpoint = wrapClientTLS(clientContextFactory(bundle, ipAddress=host), endpoint)
        return endpoint.connect(factory)  # type: ignore[no-any-return]

    transport = RaftTransport(nodeId, reactor, connect, dict(peers), secure=secure, coalesce=coalesce)
    voters = frozenset() if join else frozenset(peers) | {nodeId}
    known = dict(peers)
    if address and not join:
        known[nodeId] = address
    bootstrap = Configuration(voters, frozenset(), tuple(sorted(known.items())))
    groups = threadedGroupStore(groupDir or walDir, reactor)
    node = RaftNode(nodeId, reactor, storage, transport, stateMachine, bootstrap, settings, groupStore=groups)
    service = RaftNodeService(node, storage, transport, reactor, bundle)
    service.listen(raftListen, transport.serverFactory(), listenFlag)
    return service
