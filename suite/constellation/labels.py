"""
Traefik labels, read as Traefik's Docker provider reads them, turned into
the per-container service record the agent gossips.

A record (a plain dict, msgpack-able) is::

    {"container": "web-1", "healthy": True, "health": "healthy",
     "routers": {"web": {"rule": "Host(`web.example.org`)", "service": "web", ...}},
     "services": {"web": {"url": "http://10.0.0.5:8080", "loadBalancer": {...}}},
     "defaultRouters": ["web"]}

Read labels (anything else under C{traefik.} is ignored):

  - C{traefik.enable=false}: the container is watched but not routed;
  - C{traefik.http.routers.R.rule|entrypoints|middlewares|service|priority|tls|tls.certresolver|tls.options};
  - C{traefik.http.services.S.loadbalancer.server.port|server.scheme|passhostheader},
    C{...loadbalancer.healthcheck.path|interval|timeout|scheme|hostname|port};
  - the default service name is C{com.docker.compose.service}, else the
    container name; with no service label, the port is the container's
    only exposed port;
  - with no router label, a default router named after each service is
    rendered later (L{suite.constellation.traefik}) under C{DOMAIN}.

The backend address: the node's address (C{--service-address}) for a
container on the host network or for a published port; otherwise the
container's IP on C{traefik.docker.network} (or its first network), which
is reachable from this node only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from suite.constellation.docker import Container

__all__ = ["serviceRecord", "safeName"]

_ROUTER_KEYS = {
    "rule": "rule",
    "entrypoints": "entryPoints",
    "middlewares": "middlewares",
    "service": "service",
    "priority": "priority",
}
_TLS_KEYS = {"certresolver": "certResolver", "options": "options"}
_HEALTH_KEYS = {
    "path": "path",
    "interval": "interval",
    "timeout": "timeout",
    "scheme": "scheme",
    "hostname": "hostname",
    "port": "port",
}


def safeName(value: str) -> str:
    """
    A router or service name Traefik accepts (no C{@}, no dots).
    """
    return re.sub(r"[^A-Za-z0-9_-]", "-", value).strip("-") or "service"


def _list(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def _bool(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def _port(value: str) -> int | None:
    try:
        port = int(value.strip())
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


def serviceRecord(container: Container, nodeAddress: str) -> dict[str, Any]:
    """
    The gossiped record of C{container} on a node reachable at C{nodeAddress}.
    """
    labels: Mapping[str, str] = container.labels
    record: dict[str, Any] = {
        "container": container.name,
        "healthy": container.healthy,
        "health": container.health if container.running else "exited",
        "routers": {},
        "services": {},
        "defaultRouters": [],
        "errors": [],
    }
    if labels.get("traefik.enable", "true").strip().lower() == "false":
        return record
    defaultName = safeName(labels.get("com.docker.compose.service") or container.name)
    routers: dict[str, dict[str, Any]] = {}
    services: dict[str, dict[str, str]] = {}
    for key, value in sorted(labels.items()):
        parts = key.split(".")
        if len(parts) < 5 or parts[:2] != ["traefik", "http"]:
            continue
        kind, name, rest = parts[2], parts[3], [p.lower() for p in parts[4:]]
        if kind == "routers":
            routers.setdefault(name, {})[".".join(rest)] = value
        elif kind == "services" and rest[0] == "loadbalancer" and len(rest) > 1:
            services.setdefault(name, {})[".".join(rest[1:])] = value
    if not services:
        services[defaultName] = {}
    for name, keys in sorted(services.items()):
        port = _port(keys["server.port"]) if "server.port" in keys else None
        if port is None and "server.port" in keys:
            record["errors"].append(f"service {name}: server.port {keys['server.port']!r} is not a port")
            continue
        if port is None:
            tcp = [p for p in container.exposed if p.endswith("/tcp")]
            if len(tcp) != 1:
                record["errors"].append(
                    f"service {name}: no traefik.http.services.{name}.loadbalancer.server.port label "
                    f"and {len(tcp)} exposed ports"
                )
                continue
            port = int(tcp[0].split("/")[0])
        host = _host(container, port, nodeAddress, labels)
        if host is None:
            record["errors"].append(f"service {name}: the container has no address this node can reach")
            continue
        scheme = keys.get("server.scheme", "http")
        lb: dict[str, Any] = {}
        if "passhostheader" in keys:
            lb["passHostHeader"] = _bool(keys["passhostheader"])
        health: dict[str, Any] = {}
        for k, v in keys.items():
            if k.startswith("healthcheck.") and k[12:] in _HEALTH_KEYS:
                field = _HEALTH_KEYS[k[12:]]
                health[field] = _port(v) if field == "port" else v
        if health:
            lb["healthCheck"] = health
        record["services"][name] = {"url": f"{scheme}://{host}", "loadBalancer": lb}
    for name, keys in sorted(routers.items()):
        router: dict[str, Any] = {}
        for k, v in keys.items():
            if k in ("entrypoints", "middlewares"):
                router[_ROUTER_KEYS[k]] = _list(v)
            elif k == "priority":
                try:
                    router["priority"] = int(v)
                except ValueError:
                    record["errors"].append(f"router {name}: priority {v!r} is not a number")
            elif k in _ROUTER_KEYS:
                router[_ROUTER_KEYS[k]] = v.strip()
            elif k == "tls":
                if _bool(v):
                    router.setdefault("tls", {})
            elif k.startswith("tls.") and k[4:] in _TLS_KEYS:
                router.setdefault("tls", {})[_TLS_KEYS[k[4:]]] = v.strip()
        if "rule" not in router:
            record["errors"].append(f"router {name}: no rule")
            continue
        if "service" not in router:
            if len(record["services"]) != 1:
                record["errors"].append(f"router {name}: no service, and the container has {len(services)}")
                continue
            router["service"] = next(iter(record["services"]))
        record["routers"][name] = router
    if not routers:
        record["defaultRouters"] = sorted(record["services"])
    return record


def _host(container: Container, port: int, nodeAddress: str, labels: Mapping[str, str]) -> str | None:
    address = nodeAddress if ":" not in nodeAddress else f"[{nodeAddress}]"
    if container.networkMode == "host":
        return f"{address}:{port}"
    published = container.published.get(f"{port}/tcp")
    if published:
        return f"{address}:{published}"
    wanted = labels.get("traefik.docker.network")
    if wanted and container.networks.get(wanted):
        return f"{container.networks[wanted]}:{port}"
    for _, ip in sorted(container.networks.items()):
        return f"{ip}:{port}" if ":" not in ip else f"[{ip}]:{port}"
    return None
