"""
A peer's identity: an ed25519 key kept in the peer directory.

The peer id is the SHA-256 of the raw public key (hex).  The same key signs
rendezvous publications and backs a self-signed TLS certificate, so a TLS
handshake proves possession of the key whose hash is the peer id.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from suite.daemon import ConfigError
from suite.pki.keys import certificateToPEM, keyToPEM

__all__ = ["Identity", "loadIdentity", "peerIdOf", "verifySignature", "KEY_NAME"]

KEY_NAME = "identity.key"


def peerIdOf(publicRaw: bytes) -> str:
    """The peer id for a raw 32-byte ed25519 public key."""
    return hashlib.sha256(publicRaw).hexdigest()


def verifySignature(publicKeyB64: str, signatureB64: str, payload: bytes) -> str:
    """
    Check C{signature} over C{payload} with the given public key; return
    the peer id it belongs to, or raise C{ValueError} with the reason.
    """
    try:
        raw = base64.b64decode(publicKeyB64, validate=True)
        sig = base64.b64decode(signatureB64, validate=True)
    except (ValueError, TypeError):
        raise ValueError("public key or signature is not base64") from None
    if len(raw) != 32 or len(sig) != 64:
        raise ValueError("wrong public key or signature length")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, payload)
    except InvalidSignature:
        raise ValueError("bad signature") from None
    return peerIdOf(raw)


@dataclass
class Identity:
    """The private key, its peer id, and the TLS certificate bound to it."""

    privateKey: Ed25519PrivateKey

    @property
    def publicRaw(self) -> bytes:
        return self.privateKey.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def publicB64(self) -> str:
        return base64.b64encode(self.publicRaw).decode()

    @property
    def peerId(self) -> str:
        return peerIdOf(self.publicRaw)

    def sign(self, payload: bytes) -> str:
        """Base64 ed25519 signature of C{payload}."""
        return base64.b64encode(self.privateKey.sign(payload)).decode()

    def certificate(self) -> x509.Certificate:
        """A self-signed certificate for this key; CN is the peer id."""
        if not hasattr(self, "_cert"):
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.peerId)])
            now = datetime.datetime.now(datetime.UTC)
            self._cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(self.privateKey.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .sign(self.privateKey, None)
            )
        return self._cert

    def certificatePEM(self) -> bytes:
        return certificateToPEM(self.certificate())

    def keyPEM(self) -> bytes:
        return keyToPEM(self.privateKey)


def peerIdOfCertificate(cert: x509.Certificate) -> str:
    """The peer id of an ed25519 certificate (ValueError for other keys)."""
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("peer certificate does not carry an ed25519 key")
    return peerIdOf(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def loadIdentity(directory: str) -> Identity:
    """Load C{DIR/identity.key}, creating it (mode 0600) on first start."""
    path = os.path.join(directory, KEY_NAME)
    if not os.path.exists(path):
        key = Ed25519PrivateKey.generate()
        ident = Identity(key)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(ident.keyPEM())
        return ident
    try:
        with open(path, "rb") as f:
            loaded = serialization.load_pem_private_key(f.read(), None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{path}: cannot load the identity key: {e}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an ed25519 private key")
    return Identity(loaded)
