"""
C{makeService} of the control plane under a memory reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.clustor import tap
from suite.clustor.options import Options
from suite.clustor.server import ControlPlaneStore
from suite.clustor.service import StateHealth
from suite.daemon import ConfigError
from suite.web.interfaces import IHealth
from tests.clustor.certs import CertAuthority
from tests.clustor.helpers import writeState


class MakeServiceTests(SynchronousTestCase):
    """
    The root service holds the reloader and the listener.
    """

    def build(self, *argv: str) -> tuple[MemoryReactorClock, MultiService]:
        options = Options(environ={})
        options.parseOptions(["--state", writeState(self.mktemp()), *argv])
        reactor = MemoryReactorClock()
        from suite.clustor import service

        return reactor, service.makeService(options, reactor)

    def test_children(self) -> None:
        """
        Plain HTTP on loopback: reloader and listener; starting listens on the port.
        """
        reactor, root = self.build("--listen", "tcp:26999:interface=127.0.0.1")
        names = {s.name for s in root}
        self.assertEqual(names, {"reloader", "http"})
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual([(p[0], p[3]) for p in reactor.tcpServers], [(26999, "127.0.0.1")])
        self.assertEqual(len(reactor.getDelayedCalls()), 1)  # the file watch

    def test_plainRefusesRebinding(self) -> None:
        """
        Plain HTTP on loopback answers a DNS-rebinding page (its own name
        in C{Host}) 421 and reads the feeds to local clients.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        reactor, root = self.build("--listen", "tcp:26999:interface=127.0.0.1")
        root.startService()
        self.addCleanup(root.stopService)
        site = reactor.tcpServers[0][1]
        for host, code in ((b"evil.example:26999", b"421"), (b"localhost:26999", b"200")):
            address = IPv4Address("TCP", "127.0.0.1", 26999)
            protocol: Any = site.buildProtocol(address)
            transport = StringTransport(peerAddress=address, hostAddress=address)
            protocol.makeConnection(transport)
            protocol.dataReceived(b"GET /routing HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            self.assertEqual(transport.value().split(b" ", 2)[1], code, host)

    def test_plainRemoteRefused(self) -> None:
        """
        Plain HTTP on a non-loopback interface is refused, naming the flag.
        """
        with self.assertRaises(ConfigError) as cm:
            self.build("--listen", "tcp:26999:interface=0.0.0.0")
        self.assertIn("--listen (CLUSTOR_CP_LISTEN)", str(cm.exception))
        self.assertIn("not loopback", str(cm.exception))

    def test_mtlsAnyInterface(self) -> None:
        """
        With TLS material the listener may bind any interface.
        """
        ca = CertAuthority(self.mktemp())
        ident = ca.identity("cp")
        reactor, root = self.build(
            "--listen",
            "tcp:26998:interface=0.0.0.0",
            "--tls-identity-cert",
            ident.cert,
            "--tls-identity-key",
            ident.key,
            "--tls-trust-bundle",
            ident.trust,
        )
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual([p[0] for p in reactor.tcpServers], [26998])

    def test_badStateExits(self) -> None:
        """
        Through the plugin entry, a bad state file is one line and exit code 2.
        """
        options = Options(environ={})
        options.parseOptions(["--state", writeState(self.mktemp(), "partitions: 7\n")])
        with self.assertRaises(SystemExit) as cm:
            tap.makeService(options, MemoryReactorClock())
        self.assertEqual(cm.exception.code, 2)

    def test_stateHealth(self) -> None:
        """
        The readiness provider reports the revision and reload failures.
        """
        store = ControlPlaneStore(writeState(self.mktemp()))
        health = StateHealth(store)
        self.assertTrue(verifyObject(IHealth, health))
        report = health.check()
        self.assertTrue(report.ready)
        self.assertEqual((report.details["revision"], report.details["reloadFailures"]), (1, 0))
