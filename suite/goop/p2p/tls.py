"""
TLS for peer-to-peer streams, bound to the peers' ed25519 keys.

Each side presents a self-signed certificate for its identity key; each
side requires the other's certificate (TLS 1.3 only).  The handshake's
CertificateVerify proves possession of the key, so the peer id computed from
the certificate's public key is authenticated.  A client also checks that
id against the one it meant to reach.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from zope.interface import implementer

from suite.goop.identity import Identity, peerIdOfCertificate
from suite.pki.peer import peerCertificate

__all__ = ["PeerTLS", "remotePeerId"]


def _verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    # Self-signed by design: accept the leaf if it carries an ed25519 key;
    # identity is checked against the peer id after the handshake.
    if depth != 0:
        return False
    try:
        peerIdOfCertificate(cert.to_cryptography())
    except ValueError:
        return False
    return True


def remotePeerId(transport: Any) -> str:
    """The authenticated peer id of the other end of a TLS transport."""
    cert = peerCertificate(transport)
    if cert is None:
        raise ValueError("no peer certificate")
    return peerIdOfCertificate(cert)


@implementer(IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator)
class PeerTLS:
    """Creates TLS connections for both directions from one identity."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        # pyOpenSSL takes cryptography objects here; its own X509/PKey
        # wrappers are deprecated as arguments.
        ctx.use_certificate(identity.certificate())
        ctx.use_privatekey(identity.privateKey)
        ctx.check_privatekey()
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        self.context = ctx

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self.context, None)
        conn.set_app_data(tlsProtocol)
        conn.set_connect_state()
        return conn

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self.context, None)
        conn.set_app_data(tlsProtocol)
        conn.set_accept_state()
        return conn
