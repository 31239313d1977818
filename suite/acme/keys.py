"""
Keys and certificate signing requests for ACME.

Generation is CPU work (RSA keys take a noticeable fraction of a second), so
the C{*InThread} helpers run it in the reactor's thread pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import josepy as jose
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.internet import threads
from twisted.internet.defer import Deferred

from suite.pki.keys import generateKey, keyToPEM

__all__ = [
    "generatePrivateKeyPEM",
    "generatePrivateKeyPEMInThread",
    "accountJWK",
    "signatureAlgorithm",
    "makeCSR",
    "makeCSRInThread",
]

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generatePrivateKeyPEM(kind: str = "ec") -> bytes:
    """
    A new private key as unencrypted PKCS#8 PEM: C{"ec"} (P-256, the
    default) or C{"rsa"} (2048 bits).
    """
    return keyToPEM(generateKey(kind))


def generatePrivateKeyPEMInThread(reactor: Any, kind: str = "ec") -> Deferred[bytes]:
    """
    L{generatePrivateKeyPEM} in C{reactor}'s thread pool.
    """
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), generatePrivateKeyPEM, kind)


def _loadKey(pem: bytes) -> _PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("only EC and RSA keys are supported")
    return key


def accountJWK(pem: bytes) -> jose.JWK:
    """
    The JSON Web Key for an account's private key in PEM.
    """
    key = _loadKey(pem)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("EC account keys must be P-256")
        return jose.JWKEC(key=key)
    return jose.JWKRSA(key=key)


def signatureAlgorithm(jwk: jose.JWK) -> jose.JWASignature:
    """
    The JWS algorithm for C{jwk}: ES256 for P-256 keys, RS256 for RSA keys.
    """
    if isinstance(jwk, jose.JWKEC):
        return jose.ES256
    if isinstance(jwk, jose.JWKRSA):
        return jose.RS256
    raise ValueError(f"unsupported account key type {type(jwk).__name__}")


def makeCSR(keyPEM: bytes, names: Sequence[str]) -> bytes:
    """
    A DER certificate signing request for C{names} (all as DNS subject
    alternative names; the first, when short enough, also as common name),
    signed with the key in C{keyPEM}.
    """
    if not names:
        raise ValueError("a certificate needs at least one name")
    key = _loadKey(keyPEM)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= 64 else [])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def makeCSRInThread(reactor: Any, keyPEM: bytes, names: Sequence[str]) -> Deferred[bytes]:
    """
    L{makeCSR} in C{reactor}'s thread pool.
    """
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), makeCSR, keyPEM, list(names))
