"""
How C{specter server} puts the gateway on its port: the ring's own ALPN
(C{specter-chord/1}) becomes one more protocol of the gateway's TLS port,
routes live in the ring KV, and ring peers are the other gateways.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from suite.specter.gateway.core import GatewayConfig
from suite.specter.gateway.routes import RingRouteStore
from suite.specter.gateway.service import GatewayService, makeGatewayService

__all__ = ["gatewayRequested", "makeRingGateway", "observeGateway", "GATEWAY_FEATURES"]

log = Logger()

#: Features of C{ServerOptions.laterFeatures} the gateway provides.
GATEWAY_FEATURES = (
    "PROXY protocol (--proxy-protocol)",
    "HTTP CONNECT/redirect listener (--listen-http)",
    "gateway buffer tuning (--transport-buffer)",
    "gateway buffer tuning (--proxy-buffer)",
    "QUIC/UDP listeners (--listen-udp)",
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


def _udpBinds(options: Any, reactor: Any) -> list[tuple[str, int]] | None:
    """
    QUIC binds: an explicit C{--listen-udp} needs the asyncio reactor (a
    start-up error otherwise); binds only implied by C{--listen-addr} are
    served when the reactor allows it and skipped with a warning if not.
    """
    from suite.specter.gateway.h3 import isAsyncioReactor

    binds = [tuple(b) for b in options.get("udp-binds") or []]
    if not binds:
        return None
    if options.get("listen-udp") or isAsyncioReactor(reactor):
        return binds
    log.warn(
        "QUIC/HTTP/3 is off: it needs the asyncio reactor (twistd --reactor=asyncio specter ..., "
        "or the specter console script) to serve it on {binds}",
        binds=binds,
    )
    return None


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

    udpBinds = _udpBinds(options, reactor)

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
        udpBinds=udpBinds,
    )


def observeGateway(
    service: GatewayService,
    registry: Any,
    helper: Any,
    user: str | None,
    password: str | None,
    ldapChecker: Any = None,
    more: dict[bytes, Any] | None = None,
) -> None:
    """
    Show the gateway on the helper site: its metrics in C{registry}
    (C{/metrics}) and C{/_internal/tunnels} (plus C{more} views, e.g.
    C{acme}) behind the C{/_internal} credentials.
    """
    from suite.specter.gateway.views import GatewayCollector, apexResource, mountTunnelViews

    registry.register(GatewayCollector(service.gateway))
    mountTunnelViews(helper, service.gateway, user, password, ldapChecker, more)
    apex = apexResource(helper)
    if apex is not None:
        service.gateway.setApexResource(apex)
