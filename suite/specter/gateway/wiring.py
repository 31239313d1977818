"""
How C{specter server} puts the gateway on its port: the ring's own ALPN
(C{specter-chord/1}) becomes one more protocol of the gateway's TLS port,
routes live in the ring KV, and ring peers are the other gateways.
"""

from __future__ import annotations

from typing import Any

from suite.specter.gateway.core import GatewayConfig
from suite.specter.gateway.routes import RingRouteStore
from suite.specter.gateway.service import GatewayService, makeGatewayService

__all__ = ["gatewayRequested", "makeRingGateway", "GATEWAY_FEATURES"]

#: Features of C{ServerOptions.laterFeatures} the gateway provides.
GATEWAY_FEATURES = (
    "PROXY protocol (--proxy-protocol)",
    "HTTP CONNECT/redirect listener (--listen-http)",
    "gateway buffer tuning (--transport-buffer)",
    "gateway buffer tuning (--proxy-buffer)",
)


def gatewayRequested(options: Any) -> bool:
    """
    Whether this server runs the gateway: an C{--apex} was given.
    """
    return bool(options.get("apex"))


def _hostPort(pair: tuple[str, int]) -> str:
    host, port = pair
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peers(node: Any) -> list[str]:
    seen: list[str] = []
    for vnode in getattr(node, "vnodes", []):
        for ref in getattr(vnode, "succs", []):
            if ref.addr != node.addr and ref.addr not in seen:
                seen.append(ref.addr)
    return seen


def makeRingGateway(options: Any, bundle: Any, node: Any, chordFactory: Any, reactor: Any) -> GatewayService:
    """
    The gateway of a ring node, listening on every C{--listen-tcp} bind (and
    C{--listen-http} when asked for or when the advertised port is 443).
    """
    advertise = _hostPort(options["advertise-addr"])
    config = GatewayConfig(
        apexes=list(options["apex"]),
        advertise=advertise,
        chunk=int(options["proxy-buffer"]),
        transportBuffer=int(options["transport-buffer"]),
    )
    endpoints = []
    for host, port in options["tcp-binds"]:
        endpoints.append(f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}")
    httpEndpoints = []
    explicit = options.get("listen-http")
    if explicit is not None or options["advertise-addr"][1] == 443:
        port = explicit[1] if explicit is not None else 80
        hosts = (
            [explicit[0]]
            if explicit is not None and explicit[0] not in ("", "0.0.0.0")
            else [h for h, _ in options["tcp-binds"]]
        )
        for host in dict.fromkeys(hosts):
            httpEndpoints.append(f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}")

    def chord(tls: Any) -> Any:
        return chordFactory.buildProtocol(tls.getPeer())

    from suite.specter.chord.wire import ALPN

    return makeGatewayService(
        config,
        bundle,
        RingRouteStore(node, reactor),
        reactor,
        options["data-dir"],
        endpoints,
        extra={ALPN: chord},
        peers=lambda: _peers(node),
        proxyProtocol=bool(options.get("proxy-protocol")),
        httpEndpoints=httpEndpoints,
        httpsPort=options["advertise-addr"][1],
    )
