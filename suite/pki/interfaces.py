"""
Interfaces of the PKI layer.

A TLS connection creator from L{suite.pki.tls} asks an L{IPeerVerifier}
whether the certificate the peer presented names the peer it wanted; a daemon
that can reload its certificates asks an L{ICertificateSource} for the current
bundle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from cryptography import x509

    from suite.pki.bundle import Bundle
    from suite.pki.verify import PeerIdentity

__all__ = ["IPeerVerifier", "ICertificateSource"]


class IPeerVerifier(Interface):
    """
    A rule about which peer identities a TLS endpoint accepts.

    The connection creators of L{suite.pki.tls} call C{verifyPeer} once per
    connection, on the leaf certificate, after OpenSSL has checked the chain
    up to a trusted CA.
    """

    description = Attribute("A short human-readable text naming the expected peer, for logs.")

    def verifyPeer(certificate: x509.Certificate) -> PeerIdentity:
        """
        Check the peer's leaf certificate.

        @param certificate: the peer's leaf certificate.
        @type certificate: L{cryptography.x509.Certificate}

        @return: the identity the certificate carries.
        @rtype: L{suite.pki.verify.PeerIdentity}

        @raise suite.pki.verify.VerificationError: if the peer is not acceptable,
            with a message saying what was expected and what was found.
        """


class ICertificateSource(Interface):
    """
    Where a daemon's certificate bundle comes from: a directory, the
    environment, or a bundle already in memory.
    """

    description = Attribute("Where the bundle is read from, for messages (a path or 'environment').")

    def loadBundle() -> Bundle:
        """
        Read and check the bundle now.

        @rtype: L{suite.pki.bundle.Bundle}
        @raise suite.pki.bundle.BundleError: naming the file or variable at fault.
        """
