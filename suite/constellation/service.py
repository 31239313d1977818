"""
Wiring of C{twistd constellation}.

Gossip membership (C{--bind-addr}:C{--bind-port}, joined through
C{--join}) carrying the replicated cluster state
(L{suite.constellation.state}: node meta, Raft addresses and services with
their health); Docker monitoring (C{--docker}) writing this node's services
into it; public IP detection; Raft on C{--raft-port} with the lease keeper
(L{suite.constellation.consensus}, L{suite.constellation.leases}); the DNS
writer (L{suite.constellation.dns}) with its provider; WARP egress health
(C{--warp-container}); and the Traefik HTTP provider with C{/api/state},
C{/healthz}, C{/readyz} and C{/metrics} on the same listener.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from suite.constellation.catalog import ClusterCatalog
from suite.constellation.consensus import makeRaftAgent
from suite.constellation.deploy.agent import DeclarationResource, DeclarationStore, DeployReconciler
from suite.constellation.dns import DNSCollector, DNSWriter, plan
from suite.constellation.docker import Container, DockerClient
from suite.constellation.interfaces import IDNSProvider
from suite.constellation.labels import serviceRecord
from suite.constellation.leases import DNS_WRITER, LB_LEADER
from suite.constellation.membership import GossipService
from suite.constellation.monitor import DockerMonitor
from suite.constellation.options import warnPlaceholderDomain, warnPrivatePublicIP
from suite.constellation.priority import nodePriority
from suite.constellation.publicip import detectPublicIP
from suite.constellation.state import ClusterState
from suite.constellation.traefik import ProviderRoot
from suite.constellation.warp import WarpMonitor
from suite.daemon import ConfigError, attachCommon
from suite.logging import Secret
from suite.web.admin import makeAdminResource
from suite.web.health import FunctionHealth, HealthReport
from suite.web.limits import LimitedSite
from suite.web.listen import listenService

__all__ = ["makeService", "readCloudflareToken", "makeDNSProvider", "TOKEN_FILE"]

log = Logger(namespace="constellation")

TOKEN_FILE = "cf-api-token.txt"
_MAX_TOKEN_BYTES = 4096


def _userName() -> str:
    """The name of the user the agent runs as (its uid when it has none)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def readCloudflareToken(secretsPath: str) -> Secret:
    """
    Read C{SECRETS_PATH/cf-api-token.txt}.

    @raise ConfigError: naming the file when it is missing, unreadable or empty.
    """
    path = os.path.join(secretsPath, TOKEN_FILE)
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode & 0o777
            data = f.read(_MAX_TOKEN_BYTES + 1)
    except OSError as e:
        hint = ""
        if isinstance(e, PermissionError):
            user = _userName()
            hint = f" (the agent runs as user {user}: chown {user} {path}, or make it readable by that user)"
        raise ConfigError(
            f"SECRETS_PATH: cannot read {path} (needed because CLOUDFLARE_ZONE_ID is set): "
            f"{e.strerror or e}{hint}"
        ) from None
    if len(data) > _MAX_TOKEN_BYTES:
        raise ConfigError(f"SECRETS_PATH: {path} is larger than {_MAX_TOKEN_BYTES} bytes")
    token = data.decode("utf-8", "replace").strip()
    if not token:
        raise ConfigError(f"SECRETS_PATH: {path} is empty")
    if mode & 0o077:
        log.warn(
            "SECRETS_PATH: {path} is readable by other users (mode {mode}): chmod 600 it, as the guide says",
            path=path,
            mode=f"{mode:04o}",
        )
    return Secret(token)


def makeDNSProvider(options: Mapping[str, Any], reactor: Any) -> IDNSProvider | None:
    """
    The configured DNS provider, or None (C{--dns-provider none}).

    @raise ConfigError: for an unreadable token or key file.
    """
    kind = options.get("dns-provider") or "none"
    if kind == "cloudflare":
        from suite.constellation.cloudflare import CloudflareProvider

        token = readCloudflareToken(options["secrets-path"])
        return CloudflareProvider(
            reactor,
            options["cloudflare-zone-id"],
            token,
            options["domain"],
            options.get("cloudflare-api") or "https://api.cloudflare.com/client/v4",
        )
    if kind == "rfc2136":
        from suite.constellation.rfc2136 import RFC2136Provider, readTSIGKey

        key = readTSIGKey(options["tsig-key-file"])
        return RFC2136Provider(reactor, tuple(options["dns-server"]), options["dns-zone"], key)
    return None


def makeService(options: Mapping[str, Any], reactor: Any = None) -> MultiService:
    """
    Build the agent's root service from parsed L{suite.constellation.options.Options}.

    @raise ConfigError: for a refused endpoint or a requested feature not built yet.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    warnPlaceholderDomain(options)
    warnPrivatePublicIP(options)
    node = options["ts-hostname"]
    dnsProvider = makeDNSProvider(options, reactor)
    priority = nodePriority(node)
    # The generation orders this process's entries after those of its
    # earlier runs; it is only ever compared with this node's own.
    state = ClusterState(node, time.time_ns() // 1000, reactor)
    gossip = GossipService(options, reactor, state)
    catalog = ClusterCatalog(node, state, gossip.node.members)
    nodeMeta: dict[str, Any] = {
        "priority": priority,
        "ip": options.get("public-ip"),
        "roles": options.get("roles") or [],
    }
    state.update({"node": dict(nodeMeta)})
    advertise = gossip.node.address[0]

    def raftAddresses() -> dict[str, tuple[str, bool]]:
        out: dict[str, tuple[str, bool]] = {}
        for origin in state.origins():
            record = state.entries(origin).get("raft")
            if isinstance(record, dict) and isinstance(record.get("addr"), str):
                out[origin] = (record["addr"], bool(record.get("member")))
        return out

    def raftGroups() -> dict[str, str]:
        out: dict[str, str] = {}
        for origin in state.origins():
            record = state.entries(origin).get("raft")
            if isinstance(record, dict) and isinstance(record.get("group"), str):
                out[origin] = record["group"]
        return out

    raftService, raftAgent, leases, dataLock = makeRaftAgent(
        options,
        reactor,
        advertise=advertise,
        gossipKey=gossip.key.keys[0] if gossip.key is not None else None,
        members=gossip.node.members,
        raftAddresses=raftAddresses,
        publish=lambda record: None if state.update({"raft": record}) else None,
        raftGroups=raftGroups,
        bind=gossip.bindAddress,
    )
    keeper = raftAgent.keeper

    def desiredRecords() -> dict[str, list[str]]:
        nodes = {n.name: n for n in catalog.nodes() if n.status == "alive"}
        leader = leases.get(LB_LEADER).holder
        lbIP = nodes[leader].publicIP if leader in nodes else None
        return plan(options["domain"], lbIP, {name: n.publicIP for name, n in nodes.items()})

    dnsWriter = DNSWriter(
        dnsProvider,
        reactor,
        lambda: keeper.acting(DNS_WRITER),
        desiredRecords,
        dryRun=bool(options.get("dns-dry-run")),
        interval=float(options.get("dns-interval") or 60.0),
    )
    # Renewals notify too: reconcile only when the plan or the writer's token changed.
    keeper.changed.append(dnsWriter.pokeIfChanged)
    state.onChange = dnsWriter.pokeIfChanged
    monitor: DockerMonitor | None = None
    engine: DockerClient | None = None
    deployer: DeployReconciler | None = None
    if options.get("docker"):
        address = options.get("service-address") or gossip.node.address[0]

        def publish(containers: list[Container]) -> None:
            state.update({f"svc/{c.name}": serviceRecord(c, address) for c in containers}, prefix="svc/")

        engine = DockerClient(reactor, options["docker"])
        monitor = DockerMonitor(
            engine,
            reactor,
            options.get("docker-label") or [],
            publish,
            float(options.get("docker-interval") or 10.0),
        )
        deployer = DeployReconciler(
            engine,
            state,
            catalog,
            reactor,
            options["secrets-path"],
            options["config-path"],
            options["domain"],
            float(options.get("docker-interval") or 10.0),
            store=_declarationStore(options["data-dir"], reactor),
        )
    warp: WarpMonitor | None = None
    if options.get("warp-container"):
        warp = WarpMonitor(
            engine,
            reactor,
            options["warp-container"],
            options.get("warp-probe-url"),
            float(options.get("warp-interval") or 30.0),
            probeFrom=options.get("warp-probe-from") or "container",
        )

    def warpStatus() -> dict[str, Any]:
        if warp is None:
            return {"monitored": False, "reason": "no --warp-container"}
        return warp.status()

    registry = CollectorRegistry(auto_describe=True)
    Gauge(
        "constellation_node_priority",
        "Leader-election priority of this node (lower wins).",
        registry=registry,
    ).set(priority)
    Gauge(
        "constellation_services_known", "Services in this agent's catalog.", registry=registry
    ).set_function(lambda: len(catalog.services()))
    Gauge("constellation_nodes_known", "Nodes in this agent's catalog.", registry=registry).set_function(
        lambda: len(catalog.nodes())
    )
    members = Gauge(
        "constellation_gossip_members",
        "Gossip members by state (this node included).",
        ["state"],
        registry=registry,
    )

    def counter(status: str) -> Callable[[], float]:
        return lambda: float(gossip.summary()["members"].get(status, 0))

    for status in ("alive", "suspect", "dead", "left"):
        members.labels(status).set_function(counter(status))

    Gauge(
        "constellation_warp_healthy",
        "1 when WARP egress is healthy, 0 when not, -1 when not monitored.",
        registry=registry,
    ).set_function(lambda: -1.0 if warp is None else float(bool(warp.status().get("healthy"))))
    Gauge("constellation_raft_term", "Current Raft term.", registry=registry).set_function(
        lambda: float(raftService.node.term)
    )
    Gauge(
        "constellation_raft_leader", "1 while this node is the Raft leader.", registry=registry
    ).set_function(lambda: float(raftService.node.leader is not None))
    Gauge(
        "constellation_raft_foreign_members",
        "Alive gossip members that belong to another Raft group (groups formed apart).",
        registry=registry,
    ).set_function(lambda: float(len(raftAgent.foreign)))
    holding = Gauge(
        "constellation_lease_held", "1 while this node may act under the lease.", ["lease"], registry=registry
    )
    tokens = Gauge(
        "constellation_lease_token", "Current fencing token of the lease.", ["lease"], registry=registry
    )

    def held(name: str) -> Callable[[], float]:
        return lambda: float(keeper.acting(name) is not None)

    def token(name: str) -> Callable[[], float]:
        return lambda: float(leases.get(name).token)

    for name in (LB_LEADER, DNS_WRITER):
        holding.labels(name).set_function(held(name))
        tokens.labels(name).set_function(token(name))
    registry.register(DNSCollector(dnsWriter))

    def raftHealth() -> HealthReport:
        status = raftAgent.status()
        reasons = []
        if not status["member"]:
            reasons.append("not a member of a Raft group yet (waiting to be added or to bootstrap)")
        elif status["leader"] is None:
            reasons.append(f"no Raft leader known in term {status['term']}")
        if leases.get(DNS_WRITER).holder is None and dnsProvider is not None:
            reasons.append("no node holds the DNS writer lease")
        return HealthReport(not reasons, reasons, status)

    def warpHealth() -> HealthReport:
        status = warpStatus()
        if warp is None or status.get("healthy"):
            return HealthReport(True, (), status)
        return HealthReport(False, (f"WARP egress: {status.get('reason')}",), status)

    def providerHealth() -> HealthReport:
        return HealthReport(
            True,
            (),
            {
                "node": node,
                "priority": priority,
                "services": len(catalog.services()),
                "gossip": gossip.summary(),
                "docker": monitor.status() if monitor is not None else None,
                "state": dict(state.stats),
            },
        )

    admin = makeAdminResource(
        [
            FunctionHealth("provider", providerHealth),
            FunctionHealth("raft", raftHealth),
            FunctionHealth("warp", warpHealth),
        ],
        registry=registry,
        clock=reactor,
    )
    provider = ProviderRoot(
        catalog,
        options["domain"],
        admin,
        warpStatus,
        options.get("entrypoints") or ["websecure"],
        options.get("cert-resolver"),
        extra=lambda: {"raft": raftAgent.status(), "dns": dnsWriter.status()},
    )
    provider.getStaticEntity(b"api").putChild(
        b"deploy",
        DeclarationResource(
            state,
            lambda: deployer.results if deployer else {},
            stored=deployer.keep if deployer else None,
        ),
    )
    # /api/deploy runs containers: no web page may reach it (DNS rebinding, cross-site posts)
    site = LimitedSite(provider, reactor=reactor, localHostsOnly=True)

    root = MultiService()
    dataLock.setServiceParent(root)  # first: released after everything else stopped
    gossip.setServiceParent(root)
    if monitor is not None:
        monitor.setServiceParent(root)
    raftAgent.setServiceParent(root)  # owns the Raft service
    dnsWriter.setServiceParent(root)
    if warp is not None:
        warp.setServiceParent(root)
    if deployer is not None:
        deployer.setServiceParent(root)
    if not options.get("public-ip") and options.get("public-ip-sources"):
        _PublicIPDetection(reactor, options["public-ip-sources"], state, gossip, nodeMeta).setServiceParent(
            root
        )

    def started(port: object) -> None:
        log.info("HTTP provider listening on {endpoint}", endpoint=listener.description)
        log.info("Constellation Agent started successfully")

    listener = listenService(
        options["http-provider"],
        site,
        reactor,
        flag="--http-provider (CONSTELLATION_HTTP_PROVIDER)",
        allowRemote=bool(options.get("allow-remote-provider")),
        onListening=started,
    )
    listener.setName("http-provider")
    listener.setServiceParent(root)

    log.info(
        "starting Constellation Agent on node {node} (priority {priority}), domain {domain}",
        node=node,
        priority=priority,
        domain=options["domain"],
    )
    if warp is None:
        log.info("WARP monitoring is off (no --warp-container)")
    if monitor is None:
        log.info("Docker monitoring is off (no --docker)")
    attachCommon(
        root,
        options,
        {
            "catalog": catalog,
            "site": site,
            "gossip": gossip.node,
            "state": state,
            "docker": monitor,
            "raft": raftService.node,
            "leases": keeper,
            "dns": dnsWriter,
            "warp": warp,
        },
        reactor,
    )
    return root


def _declarationStore(dataDir: str, reactor: Any) -> DeclarationStore:
    """
    C{DATA_DIR/deploy}: deployment declarations kept across restarts.

    @raise ConfigError: when the directory cannot be created or read.
    """
    from twisted.internet.threads import deferToThreadPool

    store = DeclarationStore(
        os.path.join(dataDir, "deploy"), lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f)
    )
    try:
        os.makedirs(store.directory, mode=0o700, exist_ok=True)
        os.listdir(store.directory)
    except OSError as e:
        raise ConfigError(f"--data-dir (DATA_DIR): cannot use {store.directory}: {e.strerror or e}") from None
    return store


class _PublicIPDetection(Service):
    """
    Detect the public IP (PUBLIC_IP unset) at start-up and publish it; ask
    again every C{interval} seconds (the address of a home connection
    changes), and every C{retry} seconds while no source answers (the
    network may not be up yet at boot).  A change is published, so the DNS
    plan follows; a failed check keeps the last address known.
    """

    name = "public-ip"

    def __init__(
        self,
        reactor: Any,
        sources: list[str],
        state: ClusterState,
        gossip: GossipService,
        meta: dict[str, Any],
        detect: Callable[..., Any] = detectPublicIP,
        interval: float = 300.0,
        retry: float = 30.0,
    ) -> None:
        self.reactor, self.sources, self.state, self.gossip, self.meta = reactor, sources, state, gossip, meta
        self.detect, self.interval, self.retry = detect, interval, retry
        self.found: str | None = None
        self.failing = False
        self._timer: Any = None

    def startService(self) -> None:
        super().startService()
        self._check()

    def stopService(self) -> None:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _check(self) -> None:
        self._timer = None
        d = Deferred.fromCoroutine(self.detect(self.reactor, self.sources))
        d.addCallback(self._detected)
        d.addErrback(lambda f: log.failure("public IP detection failed", f))
        d.addBoth(self._schedule)

    def _schedule(self, result: object) -> None:
        if self.running:
            delay = self.retry if self.found is None or self.failing else self.interval
            self._timer = self.reactor.callLater(delay, self._check)

    def _detected(self, result: tuple[str | None, list[str]]) -> None:
        ip, errors = result
        if ip is None:
            if not self.failing:
                # once per run of failures: a retry every 30 s would flood the log
                for error in errors:
                    log.warn("public IP source failed: {error}", error=error)
                log.warn(
                    "public IP not detected from {n} sources; set PUBLIC_IP (retrying every {retry:g} s)",
                    n=len(self.sources),
                    retry=self.retry,
                )
            self.failing = True
            return
        self.failing = False
        if ip == self.found:
            return
        if self.found is None:
            for error in errors:
                log.warn("public IP source failed: {error}", error=error)
            log.info("public IP {ip} detected", ip=ip)
        else:
            log.warn("public IP changed from {old} to {ip}", old=self.found, ip=ip)
        self.found = ip
        self.meta["ip"] = ip
        self.state.update({"node": dict(self.meta)})
        if self.gossip.node.running:
            meta = dict(self.gossip.node.meta)
            meta["ip"] = ip
            self.gossip.node.setMetadata(meta)
