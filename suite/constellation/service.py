"""
Wiring of C{twistd constellation}.

What runs today: gossip membership (C{--bind-addr}:C{--bind-port}, joined
through C{--join}) feeding the catalog's nodes, and the Traefik HTTP provider
(from that catalog) with C{/healthz}, C{/readyz} and C{/metrics} on the same
listener.  What is not built yet fails at start-up, but only when the
operator asks for it: Cloudflare DNS (C{CLOUDFLARE_ZONE_ID} set), Docker
monitoring (C{--docker}), WARP monitoring (C{--warp-container}).  The
guide's start-up lines are logged only for what really starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from twisted.application.service import MultiService
from twisted.logger import Logger

from suite.constellation.membership import GossipCatalog, GossipService
from suite.constellation.priority import nodePriority
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
    if options.get("docker"):
        raise notImplementedYet("Docker service monitoring (--docker)")
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
    gossip = GossipService(options, reactor)
    catalog = GossipCatalog(node, options.get("public-ip"), gossip.node.members)
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

    def counter(state: str) -> Callable[[], float]:
        return lambda: float(gossip.summary()["members"].get(state, 0))

    for state in ("alive", "suspect", "dead", "left"):
        members.labels(state).set_function(counter(state))

    def providerHealth() -> HealthReport:
        return HealthReport(
            True,
            (),
            {
                "node": node,
                "priority": priority,
                "services": len(catalog.services()),
                "gossip": gossip.summary(),
            },
        )

    admin = makeAdminResource([FunctionHealth("provider", providerHealth)], registry=registry, clock=reactor)
    site = LimitedSite(ProviderRoot(catalog, options["domain"], admin, _warpStatus), reactor=reactor)

    root = MultiService()
    gossip.setServiceParent(root)

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
    log.info("Docker monitoring, DNS management and WARP monitoring are off (not implemented yet)")
    attachCommon(root, options, {"catalog": catalog, "site": site, "gossip": gossip.node}, reactor)
    return root
