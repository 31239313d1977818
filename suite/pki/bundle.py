"""
A certificate bundle: the CA certificates, this node's certificate and key,
and the client CA, checked; and L{BundleError}, what every problem with one
raises.

A L{BundleError} is a L{suite.daemon.ConfigError} whose one-line message
starts with the file or variable at fault and gives the reason, so a daemon
refuses to start instead of failing its first handshake.  Bundles are made
by L{suite.pki.load} (from a directory, the environment or identity files,
checked by L{suite.pki.check}) and by L{suite.pki.ca}; the PEM accessors
here are what the TLS layer and the writers publish.
"""

from __future__ import annotations

import attrs
from cryptography import x509

from suite.daemon import ConfigError
from suite.pki.keys import PrivateKey, certificateToPEM, keyToPEM
from suite.pki.verify import PeerIdentity, identityOf

__all__ = ["BundleError", "Bundle"]


class BundleError(ConfigError):
    """
    A certificate bundle is unusable.  The message names the file or
    environment variable and the reason.
    """


@attrs.frozen(eq=False)
class Bundle:
    """
    A checked certificate bundle.

    @ivar caCert: the CA that issues node certificates (C{ca.crt}); peers'
        certificates must chain to it (or to one of C{extraTrust}).
    @ivar nodeCert: this node's certificate (C{node.crt}).
    @ivar nodeKey: its private key (C{node.key}).
    @ivar clientCACert: the CA that issues client certificates
        (C{client-ca.crt}), or L{None} for an identity loaded with
        L{suite.pki.load.loadIdentity}.
    @ivar clientCAKey: its key (C{client-ca.key}), if present; needed to mint
        client certificates.
    @ivar caKey: the node CA's key (C{ca.key}), if present; needed to mint
        more node certificates.
    @ivar extraTrust: further trusted CA certificates (a trust bundle holding
        several CAs, or extra blocks in C{ca.crt}).
    @ivar nodeChain: intermediate certificates sent after C{nodeCert}.
    @ivar source: where the bundle came from (a directory, C{environment}, or
        the identity certificate path), for messages.

    Bundles compare by identity (private key objects have no value
    equality); compare C{nodeCert} and the PEM accessors instead.
    """

    caCert: x509.Certificate
    nodeCert: x509.Certificate
    nodeKey: PrivateKey
    clientCACert: x509.Certificate | None
    clientCAKey: PrivateKey | None = None
    caKey: PrivateKey | None = None
    extraTrust: tuple[x509.Certificate, ...] = ()
    nodeChain: tuple[x509.Certificate, ...] = ()
    source: str = ""

    @property
    def trustRoots(self) -> tuple[x509.Certificate, ...]:
        """
        The CA certificates peers' node certificates may chain to.
        """
        return (self.caCert, *self.extraTrust)

    @property
    def caCertPEM(self) -> bytes:
        """C{ca.crt} (with any extra trusted CAs) as PEM."""
        return certificateToPEM(*self.trustRoots)

    @property
    def nodeCertPEM(self) -> bytes:
        """C{node.crt} as PEM, followed by any intermediates."""
        return certificateToPEM(self.nodeCert, *self.nodeChain)

    @property
    def nodeKeyPEM(self) -> bytes:
        """C{node.key} as PKCS#8 PEM.  Secret: never log it."""
        return keyToPEM(self.nodeKey)

    @property
    def clientCACertPEM(self) -> bytes | None:
        """C{client-ca.crt} as PEM, or L{None}."""
        return None if self.clientCACert is None else certificateToPEM(self.clientCACert)

    @property
    def clientCAKeyPEM(self) -> bytes | None:
        """C{client-ca.key} as PEM, or L{None}.  Secret: never log it."""
        return None if self.clientCAKey is None else keyToPEM(self.clientCAKey)

    @property
    def caKeyPEM(self) -> bytes | None:
        """C{ca.key} as PEM, or L{None}.  Secret: never log it."""
        return None if self.caKey is None else keyToPEM(self.caKey)

    @property
    def identity(self) -> PeerIdentity:
        """The names this node's certificate carries."""
        return identityOf(self.nodeCert)

    def __repr__(self) -> str:
        return f"<Bundle from {self.source or 'memory'}: {self.identity.describe()}>"
