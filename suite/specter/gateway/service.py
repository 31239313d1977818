"""
The gateway as a service: the TLS port (one per TCP bind) in front of the
shared L{Gateway}; on stop it drains (clients move to their other links)
before the port closes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from suite.daemon import ConfigError, watchListening
from suite.specter.gateway.core import Gateway, GatewayConfig
from suite.specter.gateway.interfaces import IRouteStore
from suite.specter.gateway.listener import (
    GatewayFactory,
    PublicCertificates,
    makeTLSFactory,
    selfSignedCertificate,
)
from suite.specter.tunnel.twistedio import leanDispatch

__all__ = ["GatewayService", "makeGatewayService"]

log = Logger()


class GatewayService(MultiService):
    """
    Listens on the gateway port(s); drains links on stop.
    """

    def __init__(self, gateway: Gateway, factory: Any, endpoints: list[str], reactor: Any) -> None:
        super().__init__()
        self.gateway = gateway
        self.factory = factory
        self.endpoints = endpoints
        self.reactor = reactor
        self.ports: list[Any] = []
        self.extraListeners: list[tuple[str, Any]] = []
        self._trigger: Any = None
        self.h3: Any = None
        self.certificates: PublicCertificates | None = None
        self._bound = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._bound:
            return
        self._bound = True
        listeners = [("--listen-tcp", e, self.factory) for e in self.endpoints]
        listeners += [("--listen-http", e, f) for e, f in self.extraListeners]
        for flag, description, factory in listeners:
            d = serverFromString(self.reactor, description).listen(factory)
            # a port that cannot be bound ends start-up with one line naming the flag (exit 1)
            watchListening(self, flag, description, d, self.reactor)
            d.addCallback(self._listening)

    def _listening(self, port: Any) -> None:
        if hasattr(port, "stopListening"):
            self.ports.append(port)

    def startService(self) -> None:
        leanDispatch(self.reactor)
        self.privilegedStartService()
        super().startService()
        log.info(
            "gateway listening on {endpoints} for {apexes}",
            endpoints=", ".join(self.endpoints + [e for e, _ in self.extraListeners]),
            apexes=", ".join(self.gateway.config.apexes),
        )
        self._trigger = self.reactor.addSystemEventTrigger("before", "shutdown", self.gateway.drain)
        if self.h3 is not None:
            binds = ", ".join(f"udp {h}:{p}" for h, p in self.h3.binds)
            watchListening(self, "--listen-udp", binds, self.h3.start(), self.reactor)

    async def _stop(self) -> None:
        if self._trigger is not None:
            self.reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        log.info("gateway draining {count} tunnel links", count=len(self.gateway.links))
        await self.gateway.drain()
        if self.gateway.overlay is not None:
            self.gateway.overlay.close()
        if self.h3 is not None:
            self.h3.stop()
        await DeferredList([Deferred.fromCoroutine(_stopPort(p)) for p in self.ports], consumeErrors=True)
        self.ports = []
        await super().stopService()

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())


async def _stopPort(port: Any) -> None:
    await port.stopListening()


def makeGatewayService(
    config: GatewayConfig,
    bundle: Any,
    routes: IRouteStore,
    reactor: Any,
    dataDir: str,
    endpoints: list[str],
    extra: dict[bytes, Callable[[Any], Any]] | None = None,
    peers: Callable[[], list[str]] | None = None,
    proxyProtocol: bool = False,
    httpEndpoints: list[str] | None = None,
    httpsPort: int = 443,
    udpBinds: list[tuple[str, int]] | None = None,
) -> GatewayService:
    """
    Build the gateway: self-signed public certificate for the apexes (kept
    in C{DATA/gateway}), the ALPN-routing TLS factory, the HTTP/2 front end.
    """
    from suite.specter.gateway.h2 import H2Front
    from suite.specter.gateway.overlay import OverlayPool

    gateway = Gateway(config, routes, reactor, peers)
    gateway.overlay = OverlayPool(gateway, bundle, reactor)
    gateway.bundle = bundle
    cert, key, _ = selfSignedCertificate(os.path.join(dataDir, "gateway"), config.apexes)
    front = H2Front(gateway, reactor)
    factory = GatewayFactory(gateway, bundle, h2=front, transportBuffer=config.transportBuffer)
    factory.extra.update(extra or {})
    certificates = PublicCertificates(config.apexes, cert, key)
    tls: Any = makeTLSFactory(
        gateway, bundle, cert, key, factory, list(factory.extra), reactor, certificates=certificates
    )
    if proxyProtocol:
        from suite.specter.gateway.proxyproto import ProxyHeaderFactory

        tls = ProxyHeaderFactory(tls, allowHeaderless=True)
    service = GatewayService(gateway, tls, endpoints, reactor)
    service.certificates = certificates
    if udpBinds:
        from suite.specter.gateway.h3 import H3Server, isAsyncioReactor

        if not isAsyncioReactor(reactor):
            raise ConfigError(
                "--listen-udp: QUIC/HTTP/3 needs the asyncio reactor: run twistd --reactor=asyncio specter ... "
                "(the specter console script installs it itself)"
            )
        service.h3 = H3Server(
            gateway, front.pool, udpBinds, cert, key, reactor, select=certificates.quicMaterialFor
        )
        # the advertised port is the one visitors reach (a port mapping may
        # put it in front of another bind), as for the HTTPS redirects
        if all(port != httpsPort for _, port in udpBinds):
            log.warn(
                "HTTP/3 is advertised (Alt-Svc) on the advertised port {port}, where no UDP bind "
                "listens ({binds}): visitors reach it only through a mapping of UDP {port} to a bind",
                port=httpsPort,
                binds=" ".join(f"{h}:{p}" for h, p in udpBinds),
            )
        gateway.altSvc = f'h3=":{httpsPort}"; ma=86400'.encode()
        # Alt-Svc only for names whose certificate HTTP/3 presents too
        gateway.servesH3 = lambda host: certificates.quicMaterialFor(host) is not None
    if httpEndpoints:
        from suite.specter.gateway.plain import PlainHTTPFactory

        plain: Any = PlainHTTPFactory(gateway, httpsPort)
        if proxyProtocol:
            from suite.specter.gateway.proxyproto import ProxyHeaderFactory

            plain = ProxyHeaderFactory(plain, allowHeaderless=False)
        service.extraListeners = [(e, plain) for e in httpEndpoints]
    return service
