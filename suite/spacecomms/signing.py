"""
End-to-end signatures of routed messages (with TLS on).

The originator of an announce or withdrawal signs it with its TLS key and
attaches its certificate; every receiver, however many hops away, checks
that the certificate is issued by a CA of its C{ca_path}, is valid now,
names the message's C{source_node} (CN or DNS SAN), and that the signature
covers the message.  A relaying peer can therefore carry a message but not
make or change one in another node's name.  The signature and certificate
are stored with the entry, so re-sync and anti-entropy re-send them.

The signed bytes are the msgpack encoding of::

    [message_type, source_node, key, sequence, reason or None, override,
     SHA-256(msgpack(cdm or state)) or b""]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgpack
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from suite.pki.check import issuedBy

_Known = tuple[float, float, set[str], "Callable[[bytes, bytes], None] | None"]

__all__ = ["Signer", "signedBytes", "MAX_SIGNATURE_BYTES", "MAX_CERT_BYTES"]

MAX_SIGNATURE_BYTES = 1024
MAX_CERT_BYTES = 8192
_CACHE = 4096
_ECDSA = ec.ECDSA(hashes.SHA256())
_SHA256 = hashes.SHA256()
_PKCS1 = padding.PKCS1v15()


def signedBytes(mtype: str, source: str, payload: dict[str, Any]) -> bytes:
    """
    What the originator signs for a routed message.
    """
    cdm = mtype.startswith("CDM")
    key = payload["cdm_id" if cdm else "object_id"]
    body = payload.get("cdm" if cdm else "state") if mtype.endswith("ANNOUNCE") else None
    digest = b"" if body is None else hashlib.sha256(msgpack.packb(body, use_bin_type=True)).digest()
    reason = None if mtype.endswith("ANNOUNCE") else payload.get("reason")
    return msgpack.packb(
        [mtype, source, key, payload["sequence"], reason, payload.get("override") is True, digest],
        use_bin_type=True,
    )


def _checker(pub: Any) -> Callable[[bytes, bytes], None] | None:
    """
    A function checking a signature over data with C{pub} (raising
    L{InvalidSignature}), or None for a key type this module does not sign
    with.  Made once per certificate.
    """
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return lambda sig, data: pub.verify(sig, data, _ECDSA)
    if isinstance(pub, rsa.RSAPublicKey):
        return lambda sig, data: pub.verify(sig, data, _PKCS1, _SHA256)
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return pub.verify
    return None


def _names(cert: x509.Certificate) -> set[str]:
    names = {str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.update(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return names


class Signer:
    """
    This node's signing identity and the trust it checks others against.
    """

    def __init__(self, key: Any, cert: x509.Certificate, trust: list[x509.Certificate]) -> None:
        self.key = key
        self.certDER = cert.public_bytes(serialization.Encoding.DER)
        self.trust = trust
        #: Checked certificates by DER: (not before, not after as POSIX
        #: seconds, names, signature check or None for an unsupported key
        #: type), or why the certificate is refused.
        self._known: dict[bytes, _Known | str] = {}

    @classmethod
    def fromBundle(cls, bundle: Any) -> Signer:
        return cls(bundle.nodeKey, bundle.nodeCert, [bundle.caCert, *bundle.extraTrust])

    def sign(self, mtype: str, source: str, payload: dict[str, Any]) -> None:
        """
        Add C{signature} and C{cert} to C{payload}.
        """
        data = signedBytes(mtype, source, payload)
        k = self.key
        if isinstance(k, ec.EllipticCurvePrivateKey):
            sig = k.sign(data, _ECDSA)
        elif isinstance(k, rsa.RSAPrivateKey):
            sig = k.sign(data, _PKCS1, _SHA256)
        else:
            sig = k.sign(data)
        payload["signature"] = sig
        payload["cert"] = self.certDER

    def _certificate(self, der: bytes) -> _Known | str:
        known = self._known.get(der)
        if known is not None:
            return known
        result: _Known | str
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            result = "certificate: not a DER certificate"
        else:
            result = "certificate: not issued by a CA of server.tls.ca_path"
            for ca in self.trust:
                if not issuedBy(cert, ca):
                    continue
                result = (
                    cert.not_valid_before_utc.timestamp(),
                    cert.not_valid_after_utc.timestamp(),
                    _names(cert),
                    _checker(cert.public_key()),
                )
                break
        if len(self._known) >= _CACHE:
            self._known.clear()
        self._known[der] = result
        return result

    def verify(self, mtype: str, source: str, payload: dict[str, Any], now: float) -> str | None:
        """
        None if the message is signed by a certificate of ours naming
        C{source}; else the reason it is refused.
        """
        sig, der = payload.get("signature"), payload.get("cert")
        if not isinstance(sig, bytes) or not isinstance(der, bytes):
            return "authority: signature: the message is not signed"
        found = self._certificate(der)
        if isinstance(found, str):
            return f"authority: signature: {found}"
        notBefore, notAfter, names, check = found
        if not notBefore <= now <= notAfter:
            return "authority: signature: certificate: not valid now"
        if source not in names:
            return f"authority: signature: the certificate does not name {source}"
        data = signedBytes(mtype, source, payload)
        if check is None:
            return "authority: signature: unsupported key type"
        try:
            check(sig, data)
        except InvalidSignature:
            return f"authority: signature: does not verify for {source}"
        return None
