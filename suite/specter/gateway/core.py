"""
The gateway core: configuration, the links clients hold here, hostname
allocation and route resolution for visitors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.specter.gateway.interfaces import IRouteStore
from suite.specter.gateway.lifecycle import MOVE, DrainingVisitor, newDrainMachine, newLinkMachine
from suite.specter.gateway.routes import LinkRegistry, RouteCache, RouteOwned
from suite.specter.tunnel.mux import Link

__all__ = ["GatewayConfig", "Gateway", "GatewayLink", "Metrics", "TUNNEL_ALPN", "TCP_ALPN"]

log = Logger()
TUNNEL_ALPN = b"specter-tunnel/1"
TCP_ALPN = b"specter-tcp/1"
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass
class GatewayConfig:
    """
    Gateway settings from the command line.
    """

    apexes: list[str]
    advertise: str
    window: int = 256 * 1024
    chunk: int = 16 * 1024
    transportBuffer: int = 16 * 1024
    maxHeaderBytes: int = 16 * 1024
    leaseTTL: float = 30.0
    drainSeconds: float = 5.0
    maxLinksPerClient: int = 64
    #: Seconds a connection may take to finish its TLS handshake, and a
    #: visitor to send its first request head, before it is closed.
    headTimeout: float = 30.0


@dataclass
class Metrics:
    """
    Counters shown on /metrics and /_internal.
    """

    linksOpened: int = 0
    streamsOpened: int = 0
    errors: dict[int, int] = field(default_factory=dict)


class Gateway:
    """
    What every gateway connection shares.
    """

    def __init__(
        self,
        config: GatewayConfig,
        routes: IRouteStore,
        clock: IReactorTime,
        peers: Callable[[], list[str]] | None = None,
    ) -> None:
        self.config = config
        self.routes = IRouteStore(routes)
        self.clock = clock
        self.registry = LinkRegistry(config.advertise)
        self.cache = RouteCache(self.routes, clock)
        self.metrics = Metrics()
        self.peers = peers or (lambda: [])
        self.links: set[GatewayLink] = set()
        #: HTTP/2 and HTTP/3 visitor connections (the drain tells them to go away
        #: and waits for them).
        self.visitors: set[DrainingVisitor] = set()
        #: The gateway's shutdown (L{suite.specter.gateway.lifecycle.DrainMachine}).
        self.drainMachine = newDrainMachine(self, clock, config.drainSeconds)
        self.overlay: Any = None
        self.overlayLinks: set[Any] = set()
        #: What requests for an apex itself see (C{/_internal} with
        #: credentials); None: a 404 page.
        self.bundle: Any = None
        #: The Alt-Svc value advertising HTTP/3, when it is served.
        self.altSvc: bytes | None = None
        #: Whether HTTP/3 can serve a host name (its certificate by SNI).
        self.servesH3: Callable[[str], bool] = lambda host: True
        #: Called with a link whose client drains (drop its idle streams).
        self.onLinkDraining: list[Callable[[Any], None]] = []
        #: Called after the frames of one read from a tunnel link were
        #: handled (the HTTP/2 front end and the TLS writes send the
        #: responses they carried; see L{GatewayLink.readHandled}).
        self.afterLinkRead: list[Callable[[], None]] = []
        self.apexResource: Any = None
        self.apexSite: Any = None
        #: The L{suite.specter.customdomains.CustomDomains} answering
        #: C{specter client acme|validate}; None: custom domains are off.
        self.customDomains: Any = None
        #: Validated custom domains served here: domain -> the owner's
        #: tunnel hostname visitors of the domain are routed to.
        self.customHosts: dict[str, str] = {}
        #: Their owners: a tunnel hostname released and taken by another
        #: client does not get the domain's visitors.
        self.customOwners: dict[str, str] = {}

    def setApexResource(self, resource: Any) -> None:
        """
        Serve C{resource} to visitors asking for an apex itself.
        """
        from suite.web.limits import LimitedSite

        self.apexResource = resource
        self.apexSite = LimitedSite(resource, reactor=self.clock)
        self.apexSite.noisy = False

    def isPublicName(self, name: str) -> bool:
        """
        Whether C{name} is an apex or a name under one (served with the
        public certificate).
        """
        name = name.rstrip(".").lower()
        return any(name == a or name.endswith("." + a) for a in self.config.apexes)

    def checkHostname(self, hostname: str) -> str:
        """
        Normalise a client-chosen hostname; it must be one label under an apex.
        """
        hostname = hostname.rstrip(".").lower()
        for apex in self.config.apexes:
            if hostname.endswith("." + apex) and _LABEL.match(hostname[: -len(apex) - 1]):
                return hostname
        raise ValueError(f"hostname {hostname!r} must be one label under {', '.join(self.config.apexes)}")

    def newHostname(self) -> str:
        """
        A fresh random hostname under the first apex.
        """
        return f"{os.urandom(5).hex()}.{self.config.apexes[0]}"

    def gateways(self) -> list[str]:
        """
        Gateways a client may link to: this one first, then ring peers.
        """
        out = [self.config.advertise]
        for peer in self.peers():
            if peer not in out:
                out.append(peer)
        return out

    def resolve(self, hostname: str) -> Deferred[Any]:
        """
        Fire with a local link for C{hostname}, a reason string when it is
        served elsewhere but cannot be reached from here, or L{None}.  A
        validated custom domain resolves as its owner's tunnel hostname.
        """
        owner: str | None = None
        domain = hostname.rstrip(".").lower()
        tunnel = self.customHosts.get(domain)
        if tunnel is not None:
            hostname, owner = tunnel, self.customOwners.get(domain)
        link = self.registry.pick(hostname)
        if link is not None and (owner is None or link.owner == owner):
            return succeed(link)

        def found(route: Any) -> Any:
            if route is None or (owner is not None and route.owner != owner):
                return None
            link = self.registry.pick(hostname)
            if link is not None:
                return link
            others = [g for g in route.gateways if g != self.config.advertise]
            if not others:
                return f"the tunnel for {hostname} has no live link"
            if self.overlay is None:
                return f"the tunnel for {hostname} is linked to {', '.join(others)}; forwarding is off"
            return Deferred.fromCoroutine(self._forward(hostname, others))

        return self.cache.lookup(hostname).addCallback(found)

    async def _forward(self, hostname: str, others: list[str]) -> Any:
        assert self.overlay is not None
        for peer in self.overlay.order(others):
            try:
                return await self.overlay.linkTo(peer)
            except Exception as e:  # next peer; logged
                log.warn(
                    "cannot forward {hostname} to {peer}: {error}", hostname=hostname, peer=peer, error=str(e)
                )
        self.cache.invalidate(hostname)
        return f"the gateways holding {hostname} ({', '.join(others)}) cannot be reached"

    def altSvcFor(self, host: str) -> bytes | None:
        """
        The C{Alt-Svc} value to send with an answer for C{host}: none when
        HTTP/3 is off or cannot present a certificate for that name.
        """
        if self.altSvc is None or not self.servesH3(host):
            return None
        return self.altSvc

    @property
    def draining(self) -> bool:
        """
        Whether the gateway is shutting down.
        """
        return self.drainMachine.isDraining()

    def drain(self) -> Deferred[None]:
        """
        Ask every client to move to its other links, then close what stays:
        fires once the last link is gone, or after C{drainSeconds}.
        """
        done: Deferred[None] = Deferred()
        self.drainMachine.drainRequested(done)
        return done

    def linkOpened(self, link: GatewayLink) -> None:
        """
        A tunnel link (or command connection) was opened.
        """
        self.links.add(link)
        self.metrics.linksOpened += 1
        self.drainMachine.linkOpened(link.machine)

    def linkClosed(self, link: GatewayLink) -> None:
        """
        A tunnel link was lost.
        """
        self.links.discard(link)
        if not self.links and not self.visitors:
            self.drainMachine.linksGone()

    def visitorOpened(self, visitor: DrainingVisitor) -> None:
        """
        An HTTP/2 or HTTP/3 visitor connection was opened.
        """
        self.visitors.add(visitor)
        self.drainMachine.visitorOpened(visitor)

    def visitorClosed(self, visitor: DrainingVisitor) -> None:
        """
        An HTTP/2 or HTTP/3 visitor connection was closed.
        """
        self.visitors.discard(visitor)
        if not self.links and not self.visitors:
            self.drainMachine.linksGone()

    # -- IDrainActions --------------------------------------------------------------------
    def askVisitorsToLeave(self) -> None:
        for visitor in list(self.visitors):
            visitor.goAway()

    def askLinksToMove(self) -> None:
        for link in list(self.links):
            link.machine.gatewayDraining()
        if not self.links and not self.visitors:
            self.drainMachine.linksGone()

    def abortLinks(self) -> None:
        for link in list(self.links) + list(self.overlayLinks):
            link.transport.abortConnection()

    def closeVisitors(self) -> None:
        for visitor in list(self.visitors):
            visitor.close()


class GatewayLink(Link):
    """
    The gateway end of a tunnel link (or of a one-shot command connection
    from C{specter client ls|release}).
    """

    streamParity = 1

    def __init__(self, gateway: Gateway, owner: str) -> None:
        super().__init__(gateway.config.window, gateway.config.chunk)
        self.gateway = gateway
        self.owner = owner
        self.hostnames: dict[str, str] = {}
        self.renewer: LoopingCall | None = None
        #: The link's lifecycle (L{suite.specter.gateway.lifecycle.LinkMachine}).
        self.machine = newLinkMachine(self)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.gateway.linkOpened(self)

    def acceptsStreams(self) -> bool:
        """
        Whether visitors may be sent down this link (not while either end
        drains: they are forwarded to the client's other gateways instead).
        """
        return self.machine.acceptsStreams()

    def controlReceived(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        rid = message.get("id")
        if kind == "register":
            self.machine.registerRequested(message)
            return
        if kind == "drain":
            self.machine.clientDrainRequested(rid)
            return
        handler = {
            "ls": self._ls,
            "release": self._release,
            "ping": self._ping,
            "acme": self._acme,
            "validate": self._validate,
        }.get(str(kind))
        if handler is None:
            self.sendControl({"t": "error", "id": rid, "reason": f"unknown control message {kind!r}"})
            return
        Deferred.fromCoroutine(handler(message)).addErrback(self._answerFailure, kind, rid)

    def _answerFailure(self, f: Failure, kind: Any, rid: Any) -> None:
        """
        A control message failed: tell the client why (expected errors by
        their message, anything else as an internal error, logged).
        """
        expected = f.check(RouteOwned, ValueError)
        reason = f.getErrorMessage() if expected else "internal error, try again"
        if not expected:
            log.failure("control message {kind} failed", f, kind=kind)
        self.sendControl({"t": "error", "id": rid, "reason": reason})

    # -- ILinkActions (the link machine's outputs) ------------------------------------------
    def clientDraining(self, requestId: Any) -> None:
        """
        The client is shutting down: no new visitors come down this link
        (they go to the client's other links, or get a 502); close the idle
        pooled streams, which would otherwise hold it open.
        """
        for dropIdle in self.gateway.onLinkDraining:
            dropIdle(self)
        log.info("tunnel client {owner} is draining its link", owner=self.owner)
        self.sendControl({"t": "draining", "id": requestId})

    def askToMove(self) -> None:
        self.sendControl(dict(MOVE))

    def startRegistration(self, message: dict[str, Any]) -> None:
        Deferred.fromCoroutine(self._publish(message)).addErrback(
            self._answerFailure, "register", message.get("id")
        )

    async def _publish(self, message: dict[str, Any]) -> None:
        if len(self.hostnames) >= self.gateway.config.maxLinksPerClient:
            raise ValueError("too many hostnames on one link")
        wanted = message.get("hostname")
        hostname = self.gateway.checkHostname(str(wanted)) if wanted else self.gateway.newHostname()
        kind = "tcp" if message.get("kind") == "tcp" else "http"
        cfg = self.gateway.config
        await self.gateway.routes.publish(hostname, self.owner, kind, cfg.advertise, cfg.leaseTTL)
        self.machine.registrationPublished(hostname, kind, message.get("id"))

    def completeRegistration(self, hostname: str, kind: str, requestId: Any) -> None:
        cfg = self.gateway.config
        self.hostnames[hostname] = kind
        self.gateway.registry.add(hostname, self)
        self.gateway.cache.invalidate(hostname)
        log.info(
            "tunnel {hostname} registered by {owner} ({kind})", hostname=hostname, owner=self.owner, kind=kind
        )
        self.sendControl(
            {
                "t": "registered",
                "id": requestId,
                "hostname": hostname,
                "gateways": self.gateway.gateways(),
                "ttl": cfg.leaseTTL,
            }
        )
        self.sendControl({"t": "published", "hostname": hostname})
        if self.renewer is None:
            self.renewer = LoopingCall(self._renew)
            self.renewer.clock = self.gateway.clock
            self.renewer.start(cfg.leaseTTL / 3, now=False).addErrback(
                lambda f: log.failure("lease renewal loop", f)
            )

    def releaseRoutes(self) -> None:
        if self.renewer is not None and self.renewer.running:
            self.renewer.stop()
        for hostname in self.hostnames:
            self.gateway.registry.remove(hostname, self)
            self.gateway.cache.invalidate(hostname)
            if self.gateway.registry.pick(hostname) is None:
                self.gateway.routes.withdraw(hostname, self.gateway.config.advertise).addErrback(
                    lambda f, h=hostname: log.warn(
                        "withdrawing {hostname} failed: {error}", hostname=h, error=f.getErrorMessage()
                    )
                )
        if self.hostnames:
            log.info(
                "tunnel link of {owner} closed ({hostnames})",
                owner=self.owner,
                hostnames=", ".join(self.hostnames),
            )

    # -- other control messages -----------------------------------------------------------
    async def _ping(self, message: dict[str, Any]) -> None:
        self.sendControl({"t": "pong", "id": message.get("id")})

    def _renew(self) -> Deferred[Any]:
        cfg = self.gateway.config
        ds = []
        for hostname, kind in list(self.hostnames.items()):
            d = self.gateway.routes.publish(hostname, self.owner, kind, cfg.advertise, cfg.leaseTTL)
            d.addErrback(
                lambda f, h=hostname: log.warn(
                    "renewing the route of {hostname} failed: {error}", hostname=h, error=f.getErrorMessage()
                )
            )
            ds.append(d)
        from twisted.internet.defer import DeferredList

        return DeferredList(ds)

    async def _ls(self, message: dict[str, Any]) -> None:
        names = await self.gateway.routes.owned(self.owner)
        self.sendControl({"t": "ls", "id": message.get("id"), "hostnames": names})

    async def _release(self, message: dict[str, Any]) -> None:
        hostname = str(message.get("hostname", "")).rstrip(".").lower()
        existed = await self.gateway.routes.release(hostname, self.owner)
        for link in list(self.gateway.links):
            if link.owner == self.owner and hostname in link.hostnames:
                del link.hostnames[hostname]
                self.gateway.registry.remove(hostname, link)
        self.gateway.cache.invalidate(hostname)
        log.info("tunnel {hostname} released by {owner}", hostname=hostname, owner=self.owner)
        self.sendControl({"t": "released", "id": message.get("id"), "hostname": hostname, "existed": existed})

    def _domains(self) -> Any:
        if self.gateway.customDomains is None:
            raise ValueError("custom domains are off on this gateway (it runs without --acme)")
        return self.gateway.customDomains

    async def _tunnelHostname(self, wanted: Any) -> str:
        """
        The owner's tunnel hostname a custom domain is served by: the one
        asked for, or the only one the owner has.
        """
        owned = await self.gateway.routes.owned(self.owner)
        if wanted:
            hostname = self.gateway.checkHostname(str(wanted))
            if hostname not in owned:
                raise ValueError(f"{hostname} is not one of your tunnel hostnames (see 'specter client ls')")
            return hostname
        if len(owned) == 1:
            return str(owned[0])
        if not owned:
            raise ValueError("you have no tunnel hostname yet: run 'specter client tunnel' first")
        raise ValueError(
            f"you have several tunnel hostnames ({', '.join(owned)}): choose one with --hostname"
        )

    async def _acme(self, message: dict[str, Any]) -> None:
        domains = self._domains()
        domain = str(message.get("domain", ""))
        if message.get("remove"):
            record = await domains.remove(domain, self.owner)
            self.sendControl({"t": "acme", "id": message.get("id"), "domain": record.domain, "removed": True})
            return
        domain = domains.normalise(domain)
        existing = await domains.get(domain)
        if existing is not None and existing.owner != self.owner:
            raise ValueError(f"{domain} is claimed by another client")
        hostname = await self._tunnelHostname(message.get("hostname"))
        record = await domains.claim(domain, self.owner, hostname)
        self.sendControl(
            {
                "t": "acme",
                "id": message.get("id"),
                "domain": record.domain,
                "hostname": record.hostname,
                "name": f"_acme-challenge.{record.domain}",
                "cname": domains.target(record),
                "validated": record.validated,
            }
        )

    async def _validate(self, message: dict[str, Any]) -> None:
        record, target = await self._domains().validate(str(message.get("domain", "")), self.owner)
        self.sendControl(
            {
                "t": "validated",
                "id": message.get("id"),
                "domain": record.domain,
                "hostname": record.hostname,
                "target": target,
            }
        )

    def streamOpened(self, stream: Any, meta: dict[str, Any]) -> None:
        stream.reset("clients may not open streams")

    def readHandled(self) -> None:
        """
        Everything one read from the network carried has been handled (the
        gateway's TLS transport calls this after each read): the hooks send
        the answers it carried.
        """
        for hook in self.gateway.afterLinkRead:
            hook()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        super().connectionLost(reason)
        self.machine.connectionLost()
        self.gateway.linkClosed(self)
