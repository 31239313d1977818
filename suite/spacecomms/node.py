"""
The SpaceComms node: wires its parts together and is what sessions and
the API talk to.  Sessions call the L{IMessageSink} methods (HELLO checks,
session up and down, envelopes); the API calls C{ingestCDM},
C{withdrawCDM}, C{announceObject} and C{withdrawObject}.

The parts, sharing one L{NodeCore}: the peer table
(L{suite.spacecomms.peering}), the ledger of records
(L{suite.spacecomms.ledger}: store, supersession, TCA withdrawal,
retention), outbound routing (L{suite.spacecomms.forwarding}), updates
made here (L{suite.spacecomms.local}), routed messages from peers
(L{suite.spacecomms.inbound}), plus re-sync (L{suite.spacecomms.resync})
and anti-entropy (L{suite.spacecomms.antientropy}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from suite.spacecomms.antientropy import AntiEntropy
from suite.spacecomms.cdm.model import CDM
from suite.spacecomms.config import Config, PeerConfig, Policies
from suite.spacecomms.core import NodeCore
from suite.spacecomms.envelope import REPAIR_TYPES, ROUTED_TYPES, SUPPORTED_VERSIONS, Envelope
from suite.spacecomms.forwarding import Forwarder, entryKind
from suite.spacecomms.inbound import Inbound
from suite.spacecomms.interfaces import IMessageSink, IPeerLink, IRecordStore
from suite.spacecomms.ledger import Ledger
from suite.spacecomms.local import LocalUpdates
from suite.spacecomms.metrics import NodeMetrics
from suite.spacecomms.peering import PeerTable
from suite.spacecomms.resync import ResyncCore, ResyncInputs, ResyncMachine, SendInputs, sendSync
from suite.spacecomms.router import Router, TokenBucket
from suite.spacecomms.signing import Signer
from suite.spacecomms.store import Record

__all__ = ["SpaceNode"]


@implementer(IMessageSink)
class SpaceNode:
    """
    One node's state and routing.
    """

    log = Logger(namespace="spacecomms.node")

    def __init__(self, config: Config, store: IRecordStore, clock: IReactorTime) -> None:
        self.nodeId = config.node_id
        self.clock = clock
        self.started = clock.seconds()
        self.metrics = NodeMetrics(self)
        router = Router(
            self.nodeId,
            clock,
            config.max_hop_count,
            max(config.message_ttl_seconds, 60.0),
            config.max_clock_skew_seconds,
        )
        self.core = NodeCore(self.nodeId, config, IRecordStore(store), clock, router, self.metrics)
        self.peers = PeerTable(self.core, config.peers)
        self.ledger = Ledger(self.core)
        self.forwarder = Forwarder(self.core, self.peers)
        self.local = LocalUpdates(self.core, self.ledger, self.forwarder)
        self.inbound = Inbound(self.core, self.peers, self.ledger, self.forwarder, self.local)
        self.peers.ownSequence = self.ledger.restoreMark
        self.forwarder.wants = self._wants
        #: Each established peer's re-sync towards this node (open or done).
        self.syncs: dict[str, ResyncInputs] = {}
        #: This node's re-sync to each established peer (sending or sent).
        self.sends: dict[str, SendInputs] = {}
        self.onPeersChanged: list[Callable[[], None]] = []
        self._tick = LoopingCall(self.ledger.tick)
        self._tick.clock = clock
        self.antiEntropy = AntiEntropy(self)

    # -- what the parts share, as the node's own attributes -----------------

    @property
    def config(self) -> Config:
        """
        The configuration in force (replaced on a reload).
        """
        return self.core.config

    @config.setter
    def config(self, config: Config) -> None:
        self.core.config = config

    @property
    def signer(self) -> Signer | None:
        """
        This node's signing identity (set when TLS is on); with it every
        routed message must carry a valid signature of its originator.
        """
        return self.core.signer

    @signer.setter
    def signer(self, signer: Signer | None) -> None:
        self.core.signer = signer

    @property
    def store(self) -> IRecordStore:
        """
        The record store.
        """
        return self.core.store

    @property
    def router(self) -> Router:
        """
        The routing rules.
        """
        return self.core.router

    @property
    def links(self) -> dict[str, IPeerLink]:
        """
        The established session to each peer.
        """
        return self.peers.links

    @property
    def peerConfigs(self) -> dict[str, PeerConfig]:
        """
        The configured peers by id.
        """
        return self.peers.configs

    @property
    def buckets(self) -> dict[str, TokenBucket]:
        """
        Each established peer's rate-limit bucket.
        """
        return self.peers.buckets

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        """
        Load the store and start the once-a-second lifecycle tick.
        """
        self.ledger.load()
        self._tick.start(1.0, now=True)
        self.antiEntropy.start()

    def stop(self) -> Any:
        """
        Stop the timers and close the store (may return a Deferred).
        """
        if self._tick.running:
            self._tick.stop()
        self.antiEntropy.stop()
        self.inbound.stop()
        for sync in self.syncs.values():
            sync.sessionLost()
        self.syncs.clear()
        for send in self.sends.values():
            send.sessionLost()
        self.sends.clear()
        return self.store.close()

    def now(self) -> float:
        """
        The current time on the node's clock.
        """
        return self.core.now()

    def peerCapable(self, peer: str, capability: str) -> bool:
        """
        Whether C{peer} announced C{capability} in its HELLO (assumed when
        no HELLO was seen, as in simulations).
        """
        return self.peers.capable(peer, capability)

    # -- reconfiguration -------------------------------------------------

    def setPeers(self, peers: list[PeerConfig]) -> None:
        """
        Replace the peer table (SIGHUP reload, API); sessions of removed
        peers are closed.
        """
        self.peers.replace(peers)
        for cb in self.onPeersChanged:
            cb()

    def policies(self, peerId: str) -> Policies:
        """
        The routing policies towards C{peerId}.
        """
        return self.peers.policies(peerId)

    # -- local operations (the API) ----------------------------------------

    def ingestCDM(self, cdm: CDM, override: bool = False) -> tuple[Record, bool]:
        """
        See L{LocalUpdates.ingestCDM}.
        """
        return self.local.ingestCDM(cdm, override)

    def withdrawCDM(self, key: str, reason: str = "FALSE_POSITIVE", override: bool = False) -> Record | None:
        """
        See L{LocalUpdates.withdrawCDM}.
        """
        return self.local.withdrawCDM(key, reason, override)

    def announceObject(self, objectId: str, state: dict[str, Any]) -> Record:
        """
        See L{LocalUpdates.announceObject}.
        """
        return self.local.announceObject(objectId, state)

    def withdrawObject(self, objectId: str, reason: str = "NO_LONGER_TRACKED") -> Record | None:
        """
        See L{LocalUpdates.withdrawObject}.
        """
        return self.local.withdrawObject(objectId, reason)

    # -- IMessageSink ------------------------------------------------------

    def checkHello(self, hello: Envelope, expectedPeer: str | None) -> tuple[str, str] | None:
        return self.peers.checkHello(hello, expectedPeer)

    def helloPayload(self, peerId: str | None) -> dict[str, Any]:
        return self.peers.helloPayload(peerId)

    def heartbeatCounts(self) -> dict[str, int]:
        return {"cdm_count": self.store.count("cdm", True), "object_count": self.store.count("object", True)}

    def sessionEstablished(self, link: IPeerLink) -> None:
        link = IPeerLink(link)
        peer = link.peerId
        self.peers.attach(link)
        old = self.syncs.pop(peer, None)
        if old is not None:
            old.sessionLost()
        oldSend = self.sends.pop(peer, None)
        if oldSend is not None:
            oldSend.sessionLost()
        sync = self.syncs[peer] = ResyncMachine(ResyncCore(self, link, self.config.resync_grace_seconds))
        sync.started()
        self.sends[peer] = sendSync(self, link, self.peers.restoreAfter.get(peer))
        for cb in self.onPeersChanged:
            cb()

    def sessionLost(self, link: IPeerLink, reason: str) -> None:
        peer = link.peerId
        if self.peers.detach(link):
            sync = self.syncs.pop(peer, None)
            if sync is not None:
                sync.sessionLost()
            send = self.sends.pop(peer, None)
            if send is not None:
                send.sessionLost()
            self.antiEntropy.peerGone(peer)
        for cb in self.onPeersChanged:
            cb()

    def envelopeReceived(self, link: IPeerLink, env: Envelope) -> None:
        peer = link.peerId
        self.metrics.received()
        routed = env.message_type in ROUTED_TYPES
        bucket = self.buckets.get(peer)
        if (
            routed
            and bucket is not None
            and not self._exempt(peer, env, self.syncing(peer))
            and not bucket.take()
        ):
            self.inbound.rateLimited(link, env)
            return
        if env.protocol_version not in SUPPORTED_VERSIONS:
            self.forwarder.error(
                link,
                "UNSUPPORTED_VERSION",
                f"protocol version {env.protocol_version[:20]} not supported",
                env.message_id,
            )
            return
        mtype = env.message_type
        if mtype == "HEARTBEAT":
            measure = getattr(link, "heartbeatLatency", None)
            ms = measure(env) if measure is not None else None
            if ms is None and not self.peerCapable(peer, "heartbeat_echo"):
                # A peer that does not echo: the age of its heartbeat, which
                # includes the skew between the two clocks.
                ms = max(0.0, self.now() - env.timestamp) * 1000.0
            if ms is not None:
                self.metrics.heartbeat(peer, ms)
            return
        if mtype == "SYNC_SUMMARY":
            send = self.sends.get(peer)
            if send is not None:
                send.summaryReceived(env.payload)
            return
        if mtype == "END_OF_SYNC":
            sync = self.syncs.get(peer)
            if sync is not None:
                sync.endOfSync()
            return
        if mtype == "ERROR":
            self.log.warn(
                "peer {peer} reported error {code}: {reason}",
                peer=peer,
                code=env.payload.get("code"),
                reason=str(env.payload.get("message"))[:200],
            )
            return
        if mtype == "HELLO":
            self.forwarder.error(link, "INVALID_MESSAGE", "HELLO on an established session", env.message_id)
            return
        if mtype in REPAIR_TYPES:
            self.antiEntropy.received(link, env)
            return
        sync = self.syncs.get(peer)
        restoring = sync is not None and sync.syncing()
        if self.inbound.apply(link, env, restoring) and env.source_node == self.nodeId and sync is not None:
            sync.restored()

    def peerSynced(self, peer: str) -> None:
        """
        C{peer}'s re-sync towards this node is over (END_OF_SYNC or the
        grace time): this node's re-sync to it no longer needs its summary.
        """
        send = self.sends.get(peer)
        if send is not None:
            send.peerSynced()

    def _wants(self, peer: str, kind: str, key: str, version: tuple[int, str]) -> bool:
        """
        Whether an entry applied here goes on to C{peer} at C{version}
        (see L{SendInputs.forwarding}).
        """
        send = self.sends.get(peer)
        return send is None or send.forwarding(kind, key, version)

    def syncing(self, peer: str) -> bool:
        """
        Whether C{peer}'s re-sync towards this node is open (from the
        session's start until its END_OF_SYNC or the grace time).
        """
        sync = self.syncs.get(peer)
        return sync is not None and sync.syncing()

    def _exempt(self, peer: str, env: Envelope, syncing: bool) -> bool:
        """
        Whether a routed message is not counted by the rate limit: a
        re-announcement during the peer's re-sync, or the answer to one of
        this node's anti-entropy pulls.
        """
        p = env.payload
        if syncing and p.get("sync") is True:
            return True
        if p.get("repair") is not True:
            return False
        kind, key = entryKind(env)
        return self.antiEntropy.expected(peer, kind, key)
