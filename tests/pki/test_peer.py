"""
Tests for the pieces of the TLS layer that need no handshake:
L{suite.pki.peer} (the certificate a transport's peer presented),
L{suite.pki.verifycallback.chainReason} and L{suite.pki.tlsoptions}.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import crypto
from twisted.internet.ssl import TLSVersion
from twisted.trial.unittest import SynchronousTestCase

from suite.pki.peer import peerCertificate, peerIdentity
from suite.pki.tlsoptions import minimumVersion, protocolList
from suite.pki.verify import VerificationError
from suite.pki.verifycallback import chainReason
from tests.pki import helpers


class _Transport:
    """A transport whose peer presented C{certificate}."""

    def __init__(self, certificate: Any) -> None:
        self.certificate = certificate

    def getPeerCertificate(self) -> Any:
        return self.certificate


class PeerCertificateTests(SynchronousTestCase):
    """
    L{peerCertificate} and L{peerIdentity}.
    """

    def setUp(self) -> None:
        self.certificate = helpers.serverBundle().nodeCert

    def test_presented(self) -> None:
        """
        A pyOpenSSL or cryptography certificate comes back as a
        cryptography certificate.
        """
        self.assertIs(peerCertificate(_Transport(self.certificate)), self.certificate)
        converted = peerCertificate(_Transport(crypto.X509.from_cryptography(self.certificate)))
        self.assertEqual(converted, self.certificate)

    def test_none(self) -> None:
        """
        No certificate, an unknown object, or a transport without TLS give
        L{None}.
        """
        self.assertIsNone(peerCertificate(_Transport(None)))
        self.assertIsNone(peerCertificate(_Transport(b"der")))
        self.assertIsNone(peerCertificate(object()))

    def test_identity(self) -> None:
        """
        L{peerIdentity} gives the names of the presented certificate, and
        refuses a peer without one.
        """
        identity = peerIdentity(_Transport(self.certificate))
        self.assertEqual(identity.spiffeId, helpers.SPIFFE_SERVER)
        e = self.assertRaises(VerificationError, peerIdentity, _Transport(None))
        self.assertEqual(str(e), "peer presented no certificate")


class ChainReasonTests(SynchronousTestCase):
    """
    L{chainReason} puts OpenSSL's verify errors in plain words.
    """

    def test_reasons(self) -> None:
        """
        The leaf and untrusted chains speak of the peer certificate; deeper
        errors name the depth; unknown codes still give the number.
        """
        self.assertEqual(chainReason(10, 0), "peer certificate has expired (OpenSSL verify error 10)")
        self.assertEqual(
            chainReason(20, 1), "peer certificate is not issued by a trusted CA (OpenSSL verify error 20)"
        )
        self.assertEqual(
            chainReason(10, 1), "peer certificate chain (depth 1) has expired (OpenSSL verify error 10)"
        )
        self.assertEqual(
            chainReason(999, 0), "peer certificate failed verification (OpenSSL verify error 999)"
        )


class OptionsTests(SynchronousTestCase):
    """
    L{protocolList} and L{minimumVersion}.
    """

    def test_protocolList(self) -> None:
        """
        Text protocol names are encoded; L{None} means no ALPN.
        """
        self.assertEqual(protocolList(["h2", b"http/1.1"]), [b"h2", b"http/1.1"])
        self.assertIsNone(protocolList(None))

    def test_minimumVersion(self) -> None:
        """
        TLS 1.2 is the floor unless 1.3 only is asked for.
        """
        self.assertEqual(minimumVersion(False), TLSVersion.TLSv1_2)
        self.assertEqual(minimumVersion(True), TLSVersion.TLSv1_3)
