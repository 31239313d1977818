"""
Private keys and PEM encoding shared by the CA and the bundle loader.
"""

from __future__ import annotations

from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = [
    "PrivateKey",
    "KEY_TYPES",
    "generateKey",
    "keyToPEM",
    "certificateToPEM",
    "publicKeyDER",
    "keyMatchesCertificate",
]

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]
"""The private key types a bundle may hold."""

KEY_TYPES = ("ec", "rsa")
"""Key types L{generateKey} can make: EC P-256 (default) and RSA."""


def generateKey(keyType: str = "ec", rsaBits: int = 2048) -> PrivateKey:
    """
    Make a new private key: EC on the P-256 curve (C{"ec"}) or RSA (C{"rsa"}).

    @raise ValueError: for an unknown key type or an RSA size below 2048 bits.
    """
    if keyType == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if keyType == "rsa":
        if rsaBits < 2048:
            raise ValueError(f"RSA keys must have at least 2048 bits, not {rsaBits}")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsaBits)
    raise ValueError(f"unknown key type {keyType!r} (expected one of: {', '.join(KEY_TYPES)})")


def keyToPEM(key: PrivateKey) -> bytes:
    """
    Encode a private key as unencrypted PKCS#8 PEM.
    """
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificateToPEM(*certificates: x509.Certificate) -> bytes:
    """
    Encode one or more certificates as concatenated PEM blocks.
    """
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates)


def publicKeyDER(certificateOrKey: x509.Certificate | PrivateKey) -> bytes:
    """
    The DER SubjectPublicKeyInfo of a certificate's or private key's public key.
    """
    return certificateOrKey.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def keyMatchesCertificate(key: PrivateKey, certificate: x509.Certificate) -> bool:
    """
    Whether C{key} is the private half of C{certificate}'s public key.
    """
    return publicKeyDER(key) == publicKeyDER(certificate)
