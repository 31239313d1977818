"""
Wiring of C{twistd constellation}.

What runs today: gossip membership (C{--bind-addr}:C{--bind-port}, joined
through C{--join}) carrying the replicated cluster state
(L{suite.constellation.state}: node meta and services with their health);
Docker monitoring (C{--docker}) writing this node's services into it; public
IP detection; and the Traefik HTTP provider rendered from it, with
C{/healthz}, C{/readyz} and C{/metrics} on the same listener.  What is not
built yet fails at start-up, but only when the operator asks for it:
Cloudflare DNS (C{CLOUDFLARE_ZONE_ID} set), WARP monitoring
(C{--warp-container}).  The
guide's start-up lines are logged only for what really starts.
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
from suite.constellation.deploy.agent import DeclarationResource, DeployReconciler
from suite.constellation.docker import Container, DockerClient
from suite.constellation.labels import serviceRecord
from suite.constellation.membership import GossipService
from suite.constellation.monitor import DockerMonitor
from suite.constellation.priority import nodePriority
from suite.constellation.publicip import detectPublicIP
from suite.constellation.state import ClusterState
from suite.constellation.traefik import ProviderRoot
from suite.daemon import ConfigError, attachCommon, notImplementedYet
from suite.logging import Secret
from suite.web.admin import makeAdminResource
from suite.web.health import FunctionHealth, HealthReport
from suite.web.limits import LimitedSite
from suite.web.listen import listenService

__all__ = ["makeService", "readCloudflareToken", "checkRequestedFeatures", "TOKEN_FILE"]

log = Logger(namespace="constellation")

TOKEN_FILE = "cf-api-token.txt"
_MAX_TOKEN_BYTES = 4096


def readCloudflareToken(secretsPath: str) -> Secret:
    """
    Read C{SECRETS_PATH/cf-api-token.txt}.

    @raise ConfigError: naming the file when it is missing, unreadable or empty.
    """
    path = os.path.join(secretsPath, TOKEN_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_TOKEN_BYTES + 1)
    except OSError as e:
        raise ConfigError(
            f"SECRETS_PATH: cannot read {path} (needed because CLOUDFLARE_ZONE_ID is set): {e.strerror or e}"
        ) from None
    if len(data) > _MAX_TOKEN_BYTES:
        raise ConfigError(f"SECRETS_PATH: {path} is larger than {_MAX_TOKEN_BYTES} bytes")
    token = data.decode("utf-8", "replace").strip()
    if not token:
        raise ConfigError(f"SECRETS_PATH: {path} is empty")
    return Secret(token)


def checkRequestedFeatures(options: Mapping[str, Any]) -> None:
    """
    Refuse, with one line, every configured feature that is not built yet.
    Input that is wrong anyway (a missing token file) is reported first.

    @raise ConfigError: naming the setting.
    """
    if options.get("cloudflare-zone-id"):
        readCloudflareToken(options["secrets-path"])
        raise notImplementedYet(
            "Cloudflare DNS management (CLOUDFLARE_ZONE_ID is set; unset it to run without DNS updates)"
        )
    if options.get("warp-container"):
        raise notImplementedYet("WARP health monitoring (--warp-container)")


def _warpStatus() -> dict[str, Any]:
    return {"monitored": False, "reason": "WARP monitoring not implemented yet"}


def makeService(options: Mapping[str, Any], reactor: Any = None) -> MultiService:
    """
    Build the agent's root service from parsed L{suite.constellation.options.Options}.

    @raise ConfigError: for a refused endpoint or a requested feature not built yet.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    checkRequestedFeatures(options)
    node = options["ts-hostname"]
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
    monitor: DockerMonitor | None = None
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
        )
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

    admin = makeAdminResource([FunctionHealth("provider", providerHealth)], registry=registry, clock=reactor)
    provider = ProviderRoot(
        catalog,
        options["domain"],
        admin,
        _warpStatus,
        options.get("entrypoints") or ["websecure"],
        options.get("cert-resolver"),
    )
    provider.getStaticEntity(b"api").putChild(
        b"deploy", DeclarationResource(state, lambda: deployer.results if deployer else {})
    )
    site = LimitedSite(provider, reactor=reactor)

    root = MultiService()
    gossip.setServiceParent(root)
    if monitor is not None:
        monitor.setServiceParent(root)
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
    log.warn(
        "raft not implemented yet: nothing bound on port {raftPort}; {dataDir} is not used",
        raftPort=options["raft-port"],
        dataDir=options["data-dir"],
    )
    log.info("DNS management and WARP monitoring are off (not implemented yet)")
    if monitor is None:
        log.info("Docker monitoring is off (no --docker)")
    attachCommon(
        root,
        options,
        {"catalog": catalog, "site": site, "gossip": gossip.node, "state": state, "docker": monitor},
        reactor,
    )
    return root


class _PublicIPDetection(Service):
    """
    Detect the public IP at start-up (PUBLIC_IP unset) and publish it.
    """

    name = "public-ip"

    def __init__(
        self,
        reactor: Any,
        sources: list[str],
        state: ClusterState,
        gossip: GossipService,
        meta: dict[str, Any],
    ) -> None:
        self.reactor, self.sources, self.state, self.gossip, self.meta = reactor, sources, state, gossip, meta
        self.found: str | None = None

    def startService(self) -> None:
        super().startService()
        d = Deferred.fromCoroutine(detectPublicIP(self.reactor, self.sources))
        d.addCallback(self._detected)
        d.addErrback(lambda f: log.failure("public IP detection failed", f))

    def _detected(self, result: tuple[str | None, list[str]]) -> None:
        ip, errors = result
        for error in errors:
            log.warn("public IP source failed: {error}", error=error)
        if ip is None:
            log.warn("public IP not detected from {n} sources; set PUBLIC_IP", n=len(self.sources))
            return
        self.found = ip
        log.info("public IP {ip} detected", ip=ip)
        self.meta["ip"] = ip
        self.state.update({"node": dict(self.meta)})
        if self.gossip.node.running:
            meta = dict(self.gossip.node.meta)
            meta["ip"] = ip
            self.gossip.node.setMetadata(meta)
