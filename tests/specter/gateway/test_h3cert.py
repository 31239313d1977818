"""
The HTTP/3 listener's certificates: the configured one can be replaced,
and each connection gets the certificate of its SNI name.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from suite.pki.keys import certificateToPEM, keyToPEM
from suite.pki.mint import mintSelfSigned
from suite.specter.gateway.h3 import H3Server, chooseCertificateBySNI
from suite.specter.gateway.listener import PublicCertificates


class UseCertificateTests(SynchronousTestCase):
    def test_replaced(self) -> None:
        first, firstKey = mintSelfSigned(["example.test"], days=1)
        server = H3Server(None, None, [("127.0.0.1", 0)], first, firstKey, None)  # type: ignore[arg-type]
        self.assertEqual(server.configuration.certificate, first)
        leaf, leafKey = mintSelfSigned(["example.test", "*.example.test"], days=90)
        issuer, _ = mintSelfSigned(["issuer.test"], days=90)
        chain = certificateToPEM(leaf) + certificateToPEM(issuer)
        server.useCertificate(chain, keyToPEM(leafKey))
        self.assertEqual(server.configuration.certificate, leaf)
        self.assertEqual(server.configuration.certificate_chain, [issuer])
        self.assertEqual(
            keyToPEM(server.configuration.private_key),
            keyToPEM(leafKey),
        )

    def test_badPEM(self) -> None:
        cert, key = mintSelfSigned(["example.test"], days=1)
        server = H3Server(None, None, [("127.0.0.1", 0)], cert, key, None)  # type: ignore[arg-type]
        self.assertRaises(ValueError, server.useCertificate, b"not a certificate", b"nor a key")
        self.assertEqual(server.configuration.certificate, cert)


def _presented(certificate: Any, key: Any, select: Any, name: str) -> Any:
    """
    An in-memory QUIC handshake with a server-side connection (configured
    with C{certificate}, choosing by SNI through C{select}) asking for SNI
    C{name}; the certificate the server presented.
    """
    import ssl

    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    config = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=name, verify_mode=ssl.CERT_NONE
    )
    client = QuicConnection(configuration=config)
    serverConfig = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    serverConfig.certificate, serverConfig.private_key = certificate, key
    server = QuicConnection(
        configuration=serverConfig,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    chooseCertificateBySNI(server, select)
    here, there = ("1.2.3.4", 1234), ("2.3.4.5", 443)
    client.connect(there, now=0.0)
    for _ in range(6):
        for data, _addr in client.datagrams_to_send(now=0.0):
            server.receive_datagram(data, here, now=0.0)
        for data, _addr in server.datagrams_to_send(now=0.0):
            client.receive_datagram(data, there, now=0.0)
    return client.tls._peer_certificate


class SNITests(SynchronousTestCase):
    """
    HTTP/3 presents the certificate TCP would for each SNI name, and the
    gateway advertises Alt-Svc only for names HTTP/3 can serve.
    """

    def setUp(self) -> None:
        self.default, self.defaultKey = mintSelfSigned(["a.test", "*.a.test", "b.test", "*.b.test"], days=1)
        self.certificates = PublicCertificates(["a.test", "b.test"], self.default, self.defaultKey)
        self.bCert, bKey = mintSelfSigned(["b.test", "*.b.test"], days=90)
        self.certificates.install("b.test", certificateToPEM(self.bCert), keyToPEM(bKey))
        self.shop, shopKey = mintSelfSigned(["shop.customer.test"], days=90)
        self.certificates.installCustom("shop.customer.test", certificateToPEM(self.shop), keyToPEM(shopKey))

    def presented(self, name: str) -> Any:
        return _presented(self.default, self.defaultKey, self.certificates.quicMaterialFor, name)

    def test_certificatePerName(self) -> None:
        self.assertEqual(self.presented("x.b.test"), self.bCert)
        self.assertEqual(self.presented("b.test"), self.bCert)
        self.assertEqual(self.presented("shop.customer.test"), self.shop)
        self.assertEqual(self.presented("x.a.test"), self.default)
        self.assertEqual(self.presented("deep.x.b.test"), self.default)
        self.assertEqual(self.presented("unknown.test"), self.default)

    def test_altSvcOnlyWhereServed(self) -> None:
        from twisted.internet.task import Clock

        from suite.specter.gateway.core import Gateway, GatewayConfig
        from suite.specter.gateway.routes import MemoryRouteStore

        clock = Clock()
        gateway = Gateway(
            GatewayConfig(apexes=["a.test", "b.test"], advertise="127.0.0.1:443"),
            MemoryRouteStore(clock),
            clock,
        )
        self.assertIsNone(gateway.altSvcFor("x.a.test"))
        gateway.altSvc = b'h3=":443"'
        gateway.servesH3 = lambda host: self.certificates.quicMaterialFor(host) is not None
        self.assertEqual(gateway.altSvcFor("x.a.test"), b'h3=":443"')
        self.assertEqual(gateway.altSvcFor("shop.customer.test"), b'h3=":443"')
        self.assertIsNone(gateway.altSvcFor("other.customer.test"))
        self.certificates.uninstallCustom("shop.customer.test")
        self.assertIsNone(gateway.altSvcFor("shop.customer.test"))
