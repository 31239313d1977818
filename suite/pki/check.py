"""
Parse a bundle's PEM inputs and check them: each certificate parses, CAs are
CAs, everything is valid now, keys match their certificates, and the node
certificate chains to a trusted CA.  L{assemble} turns checked inputs into a
L{suite.pki.bundle.Bundle}; every failure is a L{BundleError} naming the
input (L{suite.pki.layout.PEMInput}) at fault.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from suite.pki.bundle import Bundle, BundleError
from suite.pki.keys import PrivateKey, keyMatchesCertificate
from suite.pki.layout import PEMInput
from suite.pki.validity import checkValidity, utcNow
from suite.pki.verify import VerificationError, identityOf

__all__ = [
    "parseCertificates",
    "parseKey",
    "parseTrust",
    "checkIsCA",
    "checkKey",
    "checkChain",
    "issuedBy",
    "assemble",
]


def parseCertificates(label: str, data: bytes) -> list[x509.Certificate]:
    """
    Parse one or more PEM certificates.

    @raise BundleError: naming C{label}, for anything else (a key, junk).
    """
    if b"-----BEGIN CERTIFICATE-----" not in data:
        if b"PRIVATE KEY-----" in data:
            raise BundleError(f"{label}: holds a private key, not a PEM certificate")
        raise BundleError(f"{label}: not a PEM certificate")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise BundleError(f"{label}: not a valid PEM certificate ({e})")
    if not certificates:
        raise BundleError(f"{label}: not a PEM certificate")
    return certificates


def parseKey(label: str, data: bytes) -> PrivateKey:
    """
    Parse an unencrypted PEM private key of a supported type.

    @raise BundleError: naming C{label}, for anything else.
    """
    if b"PRIVATE KEY-----" not in data:
        if b"-----BEGIN CERTIFICATE-----" in data:
            raise BundleError(f"{label}: holds a certificate, not a PEM private key")
        raise BundleError(f"{label}: not a PEM private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BundleError(f"{label}: private key is encrypted; provide it unencrypted")
    except (ValueError, UnsupportedAlgorithm) as e:
        raise BundleError(f"{label}: not a valid PEM private key ({e})")
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise BundleError(f"{label}: unsupported private key type {type(key).__name__}")
    return key


def checkIsCA(label: str, certificate: x509.Certificate) -> None:
    """
    @raise BundleError: naming C{label}, unless C{certificate} is a CA.
    """
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise BundleError(f"{label}: not a CA certificate (no basicConstraints extension)")
    except ValueError as e:
        raise BundleError(f"{label}: malformed extensions ({e})")
    if not constraints.ca:
        raise BundleError(f"{label}: not a CA certificate (basicConstraints CA is false)")


def parseTrust(trust: PEMInput, now: datetime.datetime) -> list[x509.Certificate]:
    """
    Parse a trust bundle: one or more CA certificates, each valid at C{now}.
    """
    assert trust.data is not None
    certificates = parseCertificates(trust.label, trust.data)
    for certificate in certificates:
        checkIsCA(trust.label, certificate)
        checkValidity(trust.label, certificate, now)
    return certificates


def issuedBy(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """
    Whether C{issuer}'s key signed C{certificate} (and the names match).
    """
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def checkKey(keyLabel: str, key: PrivateKey, certLabel: str, certificate: x509.Certificate) -> None:
    """
    @raise BundleError: naming C{keyLabel}, unless C{key} is C{certificate}'s.
    """
    if not keyMatchesCertificate(key, certificate):
        raise BundleError(f"{keyLabel}: private key does not match {certLabel}")


def checkChain(
    label: str,
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    anchorLabel: str,
) -> x509.Certificate:
    """
    Check that C{leaf}, through C{chain}, is issued by one of C{anchors};
    return that anchor.
    """
    current = leaf
    for intermediate in chain:
        if not issuedBy(current, intermediate):
            raise BundleError(
                f"{label}: certificate chain is out of order (a block is not issued by the next)"
            )
        current = intermediate
    for anchor in anchors:
        if issuedBy(current, anchor):
            return anchor
    raise BundleError(f"{label}: not signed by {anchorLabel}")


def assemble(
    *,
    ca: PEMInput,
    node: PEMInput,
    nodeKey: PEMInput,
    clientCA: PEMInput | None,
    clientCAKey: PEMInput | None,
    caKey: PEMInput | None,
    source: str,
    now: datetime.datetime | None,
) -> Bundle:
    """
    Check every input and make the bundle.  C{ca} is the trust bundle; the
    CA in it that issued the node certificate becomes the bundle's CA, the
    others its extra trust.  Optional inputs may be L{None} or hold no data.

    @raise BundleError: naming the input at fault and the reason.
    """
    when = utcNow(now)
    assert node.data is not None and nodeKey.data is not None
    trust = parseTrust(ca, when)

    nodeCerts = parseCertificates(node.label, node.data)
    leaf, chain = nodeCerts[0], nodeCerts[1:]
    checkValidity(node.label, leaf, when)
    for intermediate in chain:
        checkValidity(node.label, intermediate, when)
    key = parseKey(nodeKey.label, nodeKey.data)
    checkKey(nodeKey.label, key, node.label, leaf)
    anchor = checkChain(node.label, leaf, chain, trust, ca.label)
    try:
        identityOf(leaf)
    except VerificationError as e:
        raise BundleError(f"{node.label}: {e}")

    clientCACert = None
    if clientCA is not None and clientCA.data is not None:
        clientCAs = parseCertificates(clientCA.label, clientCA.data)
        if len(clientCAs) > 1:
            raise BundleError(
                f"{clientCA.label}: holds {len(clientCAs)} certificates; expected one client CA"
            )
        clientCACert = clientCAs[0]
        checkIsCA(clientCA.label, clientCACert)
        checkValidity(clientCA.label, clientCACert, when)

    parsedClientCAKey = None
    if clientCAKey is not None and clientCAKey.data is not None:
        if clientCACert is None or clientCA is None:
            raise BundleError(f"{clientCAKey.label}: present without a client CA certificate")
        parsedClientCAKey = parseKey(clientCAKey.label, clientCAKey.data)
        checkKey(clientCAKey.label, parsedClientCAKey, clientCA.label, clientCACert)

    parsedCAKey = None
    if caKey is not None and caKey.data is not None:
        parsedCAKey = parseKey(caKey.label, caKey.data)
        checkKey(caKey.label, parsedCAKey, ca.label, anchor)

    # The CA that issued this node's certificate is the bundle's CA; any
    # other trusted CA is kept as extra trust.
    return Bundle(
        caCert=anchor,
        nodeCert=leaf,
        nodeKey=key,
        clientCACert=clientCACert,
        clientCAKey=parsedClientCAKey,
        caKey=parsedCAKey,
        extraTrust=tuple(c for c in trust if c is not anchor),
        nodeChain=tuple(chain),
        source=source,
    )
