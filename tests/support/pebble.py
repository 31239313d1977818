"""
A real ACME server for tests: Debian's C{pebble}, with a TLS certificate
minted per test, and an in-test authoritative DNS server (twisted.names) on
a loopback port that answers pebble's DNS-01 TXT queries from a
L{MemoryChallengePublisher}.

    dns = await startChallengeDNS(self, publisher)
    pebble = await startPebble(self, dnsPort=dns.port)
    client = ACMEClient(pebble.directoryURL, ..., http=pebble.http)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IListeningPort
from twisted.names import dns, error, server
from twisted.names.common import ResolverBase
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import HTTPConnectionPool

from suite.acme.publisher import MemoryChallengePublisher
from suite.acme.transport import makeHTTPClient
from suite.pki.keys import certificateToPEM, keyToPEM
from suite.pki.mint import mintCA, mintCertificate
from tests.support.process import DaemonProcess, freePort

__all__ = ["PEBBLE", "Pebble", "ChallengeDNS", "startPebble", "startChallengeDNS", "PublisherResolver"]

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"


class PublisherResolver(ResolverBase):
    """
    An authoritative resolver for C{zone} whose TXT records are what the
    publisher holds (or what C{override} returns for a name, to simulate a
    wrong answer); other names in the zone exist with no records, names
    outside it are refused.
    """

    def __init__(
        self,
        publisher: MemoryChallengePublisher,
        zone: str,
        override: Callable[[str], list[str] | None] | None = None,
    ) -> None:
        super().__init__()
        self.publisher = publisher
        self.zone = zone.lower().rstrip(".")
        self.override = override
        self.queries: list[tuple[str, int]] = []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> defer.Deferred[Any]:
        text = name.decode("ascii").lower().rstrip(".")
        self.queries.append((text, type))
        if not (text == self.zone or text.endswith("." + self.zone)):
            return defer.fail(error.DNSQueryRefusedError(text))
        answers = []
        if type in (dns.TXT, dns.ALL_RECORDS):
            values = self.override(text) if self.override is not None else None
            if values is None:
                values = self.publisher.lookup(text)
            for value in values:
                answers.append(
                    dns.RRHeader(
                        name, dns.TXT, dns.IN, 0, dns.Record_TXT(value.encode("ascii"), ttl=0), auth=True
                    )
                )
        return defer.succeed((answers, [], []))


@dataclass
class ChallengeDNS:
    """
    The running DNS server: its port and resolver.
    """

    port: int
    resolver: PublisherResolver
    listeners: list[IListeningPort] = field(default_factory=list)


async def startChallengeDNS(
    testCase: TestCase,
    publisher: MemoryChallengePublisher,
    zone: str = "example.test",
    override: Callable[[str], list[str] | None] | None = None,
) -> ChallengeDNS:
    """
    Serve C{zone} over UDP and TCP on a free loopback port until the test ends.
    """
    resolver = PublisherResolver(publisher, zone, override)
    factory = server.DNSServerFactory(authorities=[resolver])
    port = freePort()
    udp = reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")  # type: ignore[attr-defined]
    tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
    running = ChallengeDNS(port, resolver, [udp, tcp])
    for listener in running.listeners:
        testCase.addCleanup(listener.stopListening)
    return running


@dataclass
class Pebble:
    """
    A running pebble: its directory, its management API, and a treq client
    that trusts the TLS certificate minted for it.
    """

    process: DaemonProcess
    directoryURL: str
    managementURL: str
    tlsCAPEM: bytes
    http: HTTPClient

    async def get(self, path: str) -> bytes:
        """
        GET C{path} from the management API.
        """
        response = await self.http.get(self.managementURL + path, timeout=10)
        body: bytes = await response.content()
        if response.code != 200:
            raise AssertionError(f"pebble {path}: HTTP {response.code}")
        return body


async def startPebble(testCase: TestCase, dnsPort: int) -> Pebble:
    """
    Start pebble on loopback with a fresh TLS certificate for 127.0.0.1,
    resolving through C{127.0.0.1:dnsPort}; it is stopped when the test ends.
    """
    if not os.access(PEBBLE, os.X_OK):
        raise SkipTest("pebble is not installed (apt-get install pebble)")
    base = os.path.abspath(testCase.mktemp())
    os.makedirs(base)
    caCert, caKey = mintCA("pebble test TLS CA", days=2)
    cert, key = mintCertificate(
        caCert,
        caKey,
        "127.0.0.1",
        ipAddresses=["127.0.0.1"],
        dnsNames=["localhost"],
        days=1,
        clientAuth=False,
    )
    certPath, keyPath = os.path.join(base, "cert.pem"), os.path.join(base, "key.pem")
    with open(certPath, "wb") as f:
        f.write(certificateToPEM(cert, caCert))
    with open(keyPath, "wb") as f:
        f.write(keyToPEM(key))
    acmePort, managementPort, httpPort, tlsPort = freePort(), freePort(), freePort(), freePort()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acmePort}",
            "managementListenAddress": f"127.0.0.1:{managementPort}",
            "certificate": certPath,
            "privateKey": keyPath,
            "httpPort": httpPort,
            "tlsPort": tlsPort,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    configPath = os.path.join(base, "pebble-config.json")
    with open(configPath, "w") as f:
        json.dump(config, f)
    process = DaemonProcess(
        testCase,
        [PEBBLE, "-config", configPath, "-dnsserver", f"127.0.0.1:{dnsPort}"],
        env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
        cwd=base,
        name="pebble",
    ).start()
    await process.waitForPort(acmePort)
    await process.waitForPort(managementPort)
    caPEM = certificateToPEM(caCert)
    pool = HTTPConnectionPool(reactor, persistent=True)
    testCase.addCleanup(pool.closeCachedConnections)
    http = makeHTTPClient(reactor, [caPEM], pool)
    return Pebble(
        process, f"https://127.0.0.1:{acmePort}/dir", f"https://127.0.0.1:{managementPort}", caPEM, http
    )
