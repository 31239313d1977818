"""
Wiring of C{twistd ceptra}: identity, storage, control-plane feeds, admin
site.

Start-up order (each step fails fast with one line naming its cause):

 1. load the mTLS identity (C{CEPTRA_TLS_IDENTITY_CERT}/C{_KEY}/
    C{CEPTRA_TLS_TRUST_BUNDLE}) and check the certificate carries
    C{CEPTRA_NODE_SPIFFE} and C{CEPTRA_ADVERTISE_HOST};
 2. create the data, WAL and snapshot directories with a C{.write_probe};
 3. follow the control-plane feeds (routing/placement, features, warmup,
    activation) over HTTP(S) with the node's identity;
 4. serve C{/healthz}, C{/readyz}, C{/metrics} on C{CEPTRA_ADMIN_BIND}
    (metrics with a seconds unit are refused).

 5. host the partitions the routing feed places here, one Raft group each,
    over one mTLS multi-Raft listener on C{CEPTRA_RAFT_BIND}
    (L{suite.ceptra.partitions});
 6. serve the client API (ingest, rules, routing, results, SSE stream) on
    the admin listener (L{suite.ceptra.ingest}), whose clients must carry an
    allowed SPIFFE ID (L{suite.ceptra.access}).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from typing import Any

import treq.client
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from suite.ceptra.access import SpiffeAllowList
from suite.ceptra.health import ActivationHealth, PartitionsHealth, PlacementFeedHealth
from suite.ceptra.ingest import ClientAPI, FeatureRules, installClientAPI
from suite.ceptra.logmetrics import LogCounterService
from suite.ceptra.partitions import PartitionManager
from suite.ceptra.placement import FILENAME as PLACEMENT_FILE
from suite.ceptra.placement import LedgerCloser, PlacementFile, PlacementLedger
from suite.ceptra.routing import Routing, parseRouting
from suite.ceptra.storage import prepareStorage
from suite.clustor.feeds import FeedClient
from suite.daemon import ConfigError, attachCommon
from suite.fileutil import DirectoryLock, DirectoryLocked
from suite.netutil import isIPAddress
from suite.pki.bundle import Bundle
from suite.pki.load import checkNodeIdentity, loadIdentity
from suite.pki.tls import clientContextFactory, serverContextFactory
from suite.raft.multi import DialPolicy
from suite.raft.settings import RaftSettings
from suite.web.admin import makeAdminResource
from suite.web.limits import LimitedSite
from suite.web.listen import listenService
from suite.web.metrics import MillisecondsRegistry
from suite.web.sse import SSEHub

__all__ = ["makeService", "MTLSPolicy", "loadNodeIdentity"]

log = Logger(namespace="ceptra")


@implementer(IPolicyForHTTPS)
class MTLSPolicy:
    """
    HTTPS policy for the feed client: present the node's identity, verify
    the control plane's certificate against the trust bundle and its host
    name (or IP address) against the certificate's SANs.
    """

    MAX_CACHED = 64

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        # One TLS context per host: building one parses the key and
        # certificates (milliseconds of CPU), and the agent asks for one per
        # new connection.  The bundle is immutable, so a context stays valid.
        self._creators: dict[str, Any] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        host = hostname.decode("ascii", "replace").strip("[]")
        creator = self._creators.get(host)
        if creator is None:
            if len(self._creators) >= self.MAX_CACHED:
                self._creators.clear()
            if isIPAddress(host):
                creator = clientContextFactory(self.bundle, ipAddress=host)
            else:
                creator = clientContextFactory(self.bundle, hostname=host)
            self._creators[host] = creator
        return creator


def loadNodeIdentity(options: Mapping[str, Any]) -> Bundle:
    """
    Load the identity and check it names this node.

    @raise suite.pki.bundle.BundleError: naming the variable and file.
    """
    bundle = loadIdentity(
        options["tls-identity-cert"],
        options["tls-identity-key"],
        options["tls-trust-bundle"],
        certLabel="CEPTRA_TLS_IDENTITY_CERT",
        keyLabel="CEPTRA_TLS_IDENTITY_KEY",
        trustLabel="CEPTRA_TLS_TRUST_BUNDLE",
    )
    host = options["advertise-host"]
    label = f"CEPTRA_TLS_IDENTITY_CERT ({options['tls-identity-cert']})"
    checkNodeIdentity(
        bundle,
        hostname=None if isIPAddress(host) else host,
        ipAddress=host if isIPAddress(host) else None,
        spiffeId=options["node-spiffe"],
        label=label,
    )
    return bundle


class RoutingView:
    """
    The routing table parsed from the latest placement document (parsed
    again only when the document changes).
    """

    def __init__(self, feeds: FeedClient) -> None:
        self.feeds = feeds
        self._doc: Any = None
        self._routing = Routing()

    def __call__(self) -> Routing:
        doc = self.feeds.latest("placement")
        if doc is not self._doc:
            self._doc = doc
            self._routing = parseRouting(doc)
        return self._routing


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    The pool's connection factory without a log line per connection.
    """

    noisy = False


class _PoolCloser(Service):
    """
    Close the feed client's persistent connections at shutdown.
    """

    def __init__(self, pool: HTTPConnectionPool) -> None:
        self.pool = pool

    def stopService(self) -> Any:
        super().stopService()
        return self.pool.closeCachedConnections()


class CollectorTuning(Service):
    """
    Fewer, later garbage collections once the node runs: engine state,
    dedup horizon and Raft log hold many long-lived containers, and with the
    default thresholds generational collections ran every few hundred
    allocations (about 15 % of an applied event's CPU, 40 % of parsing an
    ingest batch).  Start-up objects are frozen out of collection, as
    L{suite.raft.__main__} does.
    """

    THRESHOLDS = (20000, 50, 50)

    def startService(self) -> None:
        super().startService()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*self.THRESHOLDS)


def makeService(options: Mapping[str, Any], reactor: Any = None) -> MultiService:
    """
    Build a CEPtra node's root service from parsed L{suite.ceptra.options.Options}.

    @raise suite.daemon.ConfigError: naming the variable/file at fault.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    bundle = loadNodeIdentity(options)
    storage = prepareStorage(options["data-dir"], options["wal-dir"], options["snapshot-dir"])
    try:
        # One node per storage: a second process on the same WAL would corrupt it.
        lock = DirectoryLock(storage.dataDir, storage.walDir, storage.snapshotDir)
    except DirectoryLocked as e:
        raise ConfigError(f"CEPTRA_DATA_DIR: {e}: is another ceptra node running on this storage?") from None
    except OSError as e:
        raise ConfigError(f"CEPTRA_DATA_DIR: cannot lock {storage.dataDir}: {e.strerror or e}") from None

    root = MultiService()
    lock.setServiceParent(root)
    registry = MillisecondsRegistry(auto_describe=True)
    logCounter = LogCounterService(registry)
    logCounter.setName("log-metrics")
    logCounter.setServiceParent(root)

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    pool._factory = _QuietClientFactory
    http = treq.client.HTTPClient(Agent(reactor, contextFactory=MTLSPolicy(bundle), pool=pool))
    feeds = FeedClient(
        options["control-plane-url"],
        {
            "placement": options["cp-routing-path"],
            "features": options["cp-feature-path"],
            "warmup": options["cp-warmup-path"],
            "activation": options["cp-activation-path"],
        },
        http,
        reactor,
        registry,
        intervalMs=options["feed-interval-ms"],
        staleAfterMs=options["feed-stale-ms"],
        timeoutMs=options["feed-timeout-ms"],
    )
    # Children stop in reverse order: the feed client (cancelling fetches
    # in flight) before the pool closes its cached connections.
    _PoolCloser(pool).setServiceParent(root)
    feeds.setName("feeds")
    feeds.setServiceParent(root)

    routing = RoutingView(feeds)
    retry = DialPolicy(
        timeout=options["raft-client-timeout-ms"] / 1000.0,
        attempts=options["raft-client-retry-attempts"],
        backoff=options["raft-client-backoff-ms"] / 1000.0,
    )
    settings = RaftSettings(
        electionTimeoutMin=options["raft-election-timeout-ms"] / 1000.0,
        electionTimeoutMax=2 * options["raft-election-timeout-ms"] / 1000.0,
        heartbeatInterval=options["raft-heartbeat-ms"] / 1000.0,
        snapshotThreshold=options["snapshot-threshold"],
    )
    hub = SSEHub(reactor)
    ledger = PlacementLedger(PlacementFile(os.path.join(storage.dataDir, PLACEMENT_FILE), reactor))
    # Children stop in reverse order: the ledger's last save after the manager stopped.
    LedgerCloser(ledger).setServiceParent(root)
    manager = PartitionManager(
        options["node-spiffe"],
        reactor,
        routing,
        storage.walDir,
        storage.snapshotDir,
        bundle=bundle,
        dial=retry,
        settings=settings,
        maxLag=options["ready-max-lag"],
        registry=registry,
        ledger=ledger,
        dataDir=storage.dataDir,
        retiredKeep=float(options["retired-keep-s"]),
        advertise=(options["advertise-host"], options["raft-port"]),
    )
    manager.setName("partitions")
    manager.setServiceParent(root)
    raftListener = listenService(
        options["raft-endpoint"],
        manager.serverFactory(),
        reactor,
        serverContextFactory(bundle, requireClientCert=True),
        flag="--raft-bind (CEPTRA_RAFT_BIND)",
    )
    raftListener.setName("raft")
    raftListener.setServiceParent(root)
    mtls = options["admin-tls"] == "mtls"
    api = ClientAPI(
        manager,
        manager.currentRouting,
        http,
        reactor,
        hub,
        retry,
        scheme="https" if mtls else "http",
        combineDelay=options["ingest-combine-ms"] / 1000.0,
    )
    manager.onResults = api.publishResults
    manager.wantResults = api.wantsResults
    featureRules = FeatureRules(api, lambda: feeds.latest("features"))
    rulesTimer = TimerService(0.5, featureRules.check)
    rulesTimer.clock = reactor
    rulesTimer.setName("feature-rules")
    rulesTimer.setServiceParent(root)

    resource = makeAdminResource(
        [
            PlacementFeedHealth(feeds, options["node-spiffe"]),
            PartitionsHealth(manager),
            ActivationHealth(feeds, options["node-spiffe"]),
        ],
        registry=registry,
        forbidSecondsSuffix=True,
        clock=reactor,
    )
    installClientAPI(resource, api)
    context = None
    allowList = SpiffeAllowList(options["admin-allowed-spiffe"], lambda: routing().spiffeIds())
    if mtls:
        context = serverContextFactory(
            bundle,
            requireClientCert=True,
            peerVerifier=allowList,
            acceptableProtocols=[b"h2", b"http/1.1"],
        )
    admin = listenService(
        options["admin-endpoint"],
        # plain HTTP (loopback only): no web page may drive it (DNS rebinding, cross-site posts)
        LimitedSite(
            resource, reactor=reactor, maxBodyBytes=options["max-batch-bytes"], localHostsOnly=not mtls
        ),
        reactor,
        context,
        flag="--admin-bind (CEPTRA_ADMIN_BIND)",
    )
    admin.setName("admin")
    admin.setServiceParent(root)
    CollectorTuning().setServiceParent(root)

    log.info(
        "ceptra node {spiffe} ({advertise}): data {data}, wal {wal}, snapshots {snapshots}; "
        "admin on {admin} ({scheme}); raft on {raftBind} (mTLS); control plane {url}",
        spiffe=options["node-spiffe"],
        advertise=options["advertise-host"],
        data=storage.dataDir,
        wal=storage.walDir,
        snapshots=storage.snapshotDir,
        admin=options["admin-bind"],
        scheme="mTLS" if mtls else "plain HTTP",
        raftBind=options["raft-bind"],
        url=options["control-plane-url"],
    )
    attachCommon(
        root,
        options,
        {
            "feeds": feeds,
            "partitions": manager,
            "api": api,
            "bundle": bundle,
            "storage": storage,
            "registry": registry,
        },
        reactor,
    )
    return root
