"""
Interfaces of the PKI layer.

A TLS connection creator from L{suite.pki.tls} asks an L{IPeerVerifier}
whether the certificate the peer presented names the peer it wanted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from cryptography import x509

    from suite.pki.verify import PeerIdentity

__all__ = ["IPeerVerifier"]


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
