"""
The HTTP/3 listener's certificate can be replaced for new QUIC connections
(the gateway does so with the ACME certificate when it has one apex).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.pki.ca import certificateToPEM, keyToPEM, mintSelfSigned
from suite.specter.gateway.h3 import H3Server


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
            keyToPEM(server.configuration.private_key),  # type: ignore[arg-type]
            keyToPEM(leafKey),
        )

    def test_badPEM(self) -> None:
        cert, key = mintSelfSigned(["example.test"], days=1)
        server = H3Server(None, None, [("127.0.0.1", 0)], cert, key, None)  # type: ignore[arg-type]
        self.assertRaises(ValueError, server.useCertificate, b"not a certificate", b"nor a key")
        self.assertEqual(server.configuration.certificate, cert)
