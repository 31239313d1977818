"""
Who is at the other end of a TLS transport: the certificate the peer
presented and the names it carries.  A daemon learns its peer's identity
from here, never from what the peer claims.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from OpenSSL import crypto

from suite.pki.verify import PeerIdentity, VerificationError, identityOf

__all__ = ["peerCertificate", "peerIdentity"]


def peerCertificate(transport: Any) -> x509.Certificate | None:
    """
    The certificate the peer of a TLS C{transport} presented, or L{None}.
    """
    getPeerCertificate = getattr(transport, "getPeerCertificate", None)
    if getPeerCertificate is None:
        return None
    certificate = getPeerCertificate()
    if certificate is None:
        return None
    if isinstance(certificate, crypto.X509):
        return certificate.to_cryptography()
    if isinstance(certificate, x509.Certificate):
        return certificate
    return None


def peerIdentity(transport: Any) -> PeerIdentity:
    """
    The names in the certificate the peer of a TLS C{transport} presented,
    so a daemon can derive the peer node's identity from its certificate.

    @raise VerificationError: if the peer presented no certificate (or the
        transport is not TLS).
    """
    certificate = peerCertificate(transport)
    if certificate is None:
        raise VerificationError("peer presented no certificate")
    return identityOf(certificate)
