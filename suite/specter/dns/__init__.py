"""
C{specter dns}: the authoritative DNS server of the ACME zone, answering
DNS-01 challenge TXT records from the ring KV (read through a server's
C{--listen-rpc}), over UDP and TCP.

    zone.py        what each name answers (no sockets)
    challenges.py  TXT values from the ring KV: one RPC connection, 1 s cache
    server.py      the twisted.names factory and protocols
    health.py      the optional --listen-internal helper (/healthz, /readyz, /metrics)
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TCPServer, UDPServer
from twisted.application.service import MultiService
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from suite.specter.dns.challenges import RingChallenges, connectQuietly
from suite.specter.dns.server import ACMEDNSFactory, DatagramProtocol
from suite.specter.dns.zone import ACMEZone
from suite.specter.rpcauth import listenerToken
from suite.specter.service import addSentry, listenOrExit

__all__ = ["DNSService", "makeDNSService", "DEFAULT_PORT"]

log = Logger()
DEFAULT_PORT = 53


class DNSService(MultiService):
    """
    The root service of C{specter dns}.
    """

    def __init__(self, zone: ACMEZone, factory: ACMEDNSFactory, challenges: RingChallenges) -> None:
        super().__init__()
        self.zone = zone
        self.factory = factory
        self.challenges = challenges
        self.binds: list[str] = []

    def privilegedStartService(self) -> None:
        listenOrExit(super().privilegedStartService)

    def startService(self) -> None:
        listenOrExit(super().startService)
        log.info(
            "ACME DNS for {zone} on {binds}; TXT from the ring RPC {rpc}",
            zone=self.zone.zone.decode(),
            binds=" ".join(self.binds),
            rpc=self.challenges.description,
        )


def _bind(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def makeDNSService(options: Any, reactor: Any) -> DNSService:
    """
    Build C{specter dns} from parsed L{suite.specter.options.DNSOptions}.
    """
    email, zoneName = options["acme"]
    token = options.get("rpc-token")
    secret = None if token is None else str(token.reveal()).encode()

    def connect(r: Any, d: Any) -> Any:
        # without a token file: the loopback node's own token, looked up (in
        # a thread: it reads /proc) at every connection, since the node may
        # start after the solver
        if secret is None and not options["rpc-client"].startswith("unix:"):
            uri = options.get("rpc") or ""
            pool = getattr(r, "getThreadPool", None)
            if pool is None:  # a reactor without threads
                return connectQuietly(r, d, listenerToken(uri))
            found = deferToThreadPool(r, pool(), listenerToken, uri)
            return found.addCallback(lambda token: connectQuietly(r, d, token))
        return connectQuietly(r, d, secret)

    challenges = RingChallenges(reactor, options["rpc-client"], connect=connect)
    zone = ACMEZone(zoneName, email, options["acme-ns"], challenges)
    factory = ACMEDNSFactory(zone, reactor, rateLimit=options.get("rate-limit") or 0.0)
    root = DNSService(zone, factory, challenges)
    addSentry(options, root, reactor)
    challenges.setServiceParent(root)
    default = [("0.0.0.0", DEFAULT_PORT)]
    for host, port in options["udp-binds"] or default:
        udp = UDPServer(port, DatagramProtocol(factory, reactor), interface=host, reactor=reactor)
        udp.setServiceParent(root)
        root.binds.append(f"udp/{_bind(host)}:{port}")
    for host, port in options["tcp-binds"] or default:
        tcp = TCPServer(port, factory, interface=host, reactor=reactor)
        tcp.setServiceParent(root)
        root.binds.append(f"tcp/{_bind(host)}:{port}")
    if options.get("internal-endpoint"):
        from prometheus_client import CollectorRegistry

        from suite.specter.dns.health import DNSCollector, RingRPCHealth
        from suite.web.admin import makeAdminResource, makeAdminService

        registry = CollectorRegistry()
        registry.register(DNSCollector(factory, challenges))
        admin = makeAdminResource([RingRPCHealth(challenges)], registry=registry, clock=reactor)
        helper = makeAdminService(options["internal-endpoint"], admin, reactor, flag="--listen-internal")
        helper.setServiceParent(root)
        root.binds.append(f"http/{options['listen-internal']}")
    return root
