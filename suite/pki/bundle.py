"""
Certificate bundles: the CA certificates, this node's certificate and key,
and the client CA, loaded from a directory, from base64 environment
variables, or from separate identity files, and checked at load time.

Every problem is a L{BundleError} (a L{suite.daemon.ConfigError}) whose
one-line message starts with the file or variable at fault and gives the
reason, so a daemon refuses to start instead of failing its first handshake.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
from collections.abc import Mapping, Sequence

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from zope.interface import implementer

from suite.daemon import ConfigError
from suite.pki.interfaces import ICertificateSource
from suite.pki.keys import PrivateKey, certificateToPEM, keyMatchesCertificate, keyToPEM
from suite.pki.verify import PeerIdentity, PeerPolicy, VerificationError, identityOf

__all__ = [
    "BundleError",
    "Bundle",
    "CA_CERT",
    "CA_KEY",
    "CLIENT_CA_CERT",
    "CLIENT_CA_KEY",
    "NODE_CERT",
    "NODE_KEY",
    "CLIENT_CERT",
    "CLIENT_KEY",
    "BUNDLE_FILES",
    "ENV_CA",
    "ENV_NODE",
    "ENV_NODE_KEY",
    "ENV_CLIENT_CA",
    "ENV_CLIENT_CA_KEY",
    "loadBundle",
    "loadBundleFromEnv",
    "loadIdentity",
    "loadClientIdentity",
    "checkNodeIdentity",
    "DirectorySource",
    "EnvironmentSource",
    "StaticSource",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CLIENT_CA_CERT = "client-ca.crt"
CLIENT_CA_KEY = "client-ca.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"
CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"
BUNDLE_FILES = (CA_CERT, CA_KEY, CLIENT_CA_CERT, CLIENT_CA_KEY, NODE_CERT, NODE_KEY)
"""Every file a bundle directory may hold; C{ca.key} and C{client-ca.key} are optional."""

ENV_CA = "CERT_CA"
ENV_NODE = "CERT_NODE"
ENV_NODE_KEY = "CERT_NODE_KEY"
ENV_CLIENT_CA = "CERT_CLIENT_CA"
ENV_CLIENT_CA_KEY = "CERT_CLIENT_CA_KEY"

_MAX_PEM_BYTES = 1024 * 1024


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
        L{loadIdentity}.
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


# --- parsing ---------------------------------------------------------------


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now if now is not None else datetime.datetime.now(datetime.UTC)


def _parseCertificates(label: str, data: bytes) -> list[x509.Certificate]:
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


def _parseKey(label: str, data: bytes) -> PrivateKey:
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


def _formatTime(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _checkValidity(label: str, certificate: x509.Certificate, now: datetime.datetime) -> None:
    if certificate.not_valid_after_utc <= now:
        raise BundleError(f"{label}: certificate expired on {_formatTime(certificate.not_valid_after_utc)}")
    if certificate.not_valid_before_utc > now:
        raise BundleError(
            f"{label}: certificate not valid until {_formatTime(certificate.not_valid_before_utc)}"
        )


def _checkIsCA(label: str, certificate: x509.Certificate) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise BundleError(f"{label}: not a CA certificate (no basicConstraints extension)")
    except ValueError as e:
        raise BundleError(f"{label}: malformed extensions ({e})")
    if not constraints.ca:
        raise BundleError(f"{label}: not a CA certificate (basicConstraints CA is false)")


def _issuedBy(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _checkKey(keyLabel: str, key: PrivateKey, certLabel: str, certificate: x509.Certificate) -> None:
    if not keyMatchesCertificate(key, certificate):
        raise BundleError(f"{keyLabel}: private key does not match {certLabel}")


def _checkChain(
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
        if not _issuedBy(current, intermediate):
            raise BundleError(
                f"{label}: certificate chain is out of order (a block is not issued by the next)"
            )
        current = intermediate
    for anchor in anchors:
        if _issuedBy(current, anchor):
            return anchor
    raise BundleError(f"{label}: not signed by {anchorLabel}")


@attrs.frozen
class _Item:
    """One input: its label for messages and its bytes (None when absent)."""

    label: str
    data: bytes | None


def _assemble(
    *,
    ca: _Item,
    node: _Item,
    nodeKey: _Item,
    clientCA: _Item | None,
    clientCAKey: _Item | None,
    caKey: _Item | None,
    source: str,
    now: datetime.datetime | None,
) -> Bundle:
    when = _now(now)
    assert ca.data is not None and node.data is not None and nodeKey.data is not None

    trust = _parseCertificates(ca.label, ca.data)
    for certificate in trust:
        _checkIsCA(ca.label, certificate)
        _checkValidity(ca.label, certificate, when)

    nodeCerts = _parseCertificates(node.label, node.data)
    leaf, chain = nodeCerts[0], nodeCerts[1:]
    _checkValidity(node.label, leaf, when)
    for intermediate in chain:
        _checkValidity(node.label, intermediate, when)
    key = _parseKey(nodeKey.label, nodeKey.data)
    _checkKey(nodeKey.label, key, node.label, leaf)
    anchor = _checkChain(node.label, leaf, chain, trust, ca.label)
    try:
        identityOf(leaf)
    except VerificationError as e:
        raise BundleError(f"{node.label}: {e}")

    clientCACert = None
    if clientCA is not None and clientCA.data is not None:
        clientCAs = _parseCertificates(clientCA.label, clientCA.data)
        if len(clientCAs) > 1:
            raise BundleError(
                f"{clientCA.label}: holds {len(clientCAs)} certificates; expected one client CA"
            )
        clientCACert = clientCAs[0]
        _checkIsCA(clientCA.label, clientCACert)
        _checkValidity(clientCA.label, clientCACert, when)

    parsedClientCAKey = None
    if clientCAKey is not None and clientCAKey.data is not None:
        if clientCACert is None or clientCA is None:
            raise BundleError(f"{clientCAKey.label}: present without a client CA certificate")
        parsedClientCAKey = _parseKey(clientCAKey.label, clientCAKey.data)
        _checkKey(clientCAKey.label, parsedClientCAKey, clientCA.label, clientCACert)

    parsedCAKey = None
    if caKey is not None and caKey.data is not None:
        parsedCAKey = _parseKey(caKey.label, caKey.data)
        _checkKey(caKey.label, parsedCAKey, ca.label, anchor)

    # The CA that issued this node's certificate is the bundle's CA; any
    # other trusted CA is kept as extra trust.
    caCert = anchor
    others = tuple(c for c in trust if c is not anchor)
    return Bundle(
        caCert=caCert,
        nodeCert=leaf,
        nodeKey=key,
        clientCACert=clientCACert,
        clientCAKey=parsedClientCAKey,
        caKey=parsedCAKey,
        extraTrust=others,
        nodeChain=tuple(chain),
        source=source,
    )


# --- loaders ---------------------------------------------------------------


def _readFile(path: str, label: str | None = None, *, required: bool = True) -> _Item:
    name = label or path
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        if not required:
            return _Item(name, None)
        raise BundleError(f"{name}: cannot read: no such file")
    except IsADirectoryError:
        raise BundleError(f"{name}: cannot read: is a directory")
    except OSError as e:
        raise BundleError(f"{name}: cannot read: {e.strerror or e}")
    if len(data) > _MAX_PEM_BYTES:
        raise BundleError(f"{name}: larger than {_MAX_PEM_BYTES} bytes; not a PEM file")
    return _Item(name, data)


def loadBundle(directory: str | os.PathLike[str], *, now: datetime.datetime | None = None) -> Bundle:
    """
    Load and check the bundle in C{directory}: C{ca.crt}, C{node.crt},
    C{node.key}, C{client-ca.crt} are required; C{client-ca.key} and
    C{ca.key} are loaded when present.

    @param now: the time certificates must be valid at (default: now).
    @raise BundleError: naming the file and the reason.
    """
    path = os.fspath(directory)
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise BundleError(f"{path}: not a directory (expected a certificate bundle directory)")
        raise BundleError(f"{path}: no such certificate bundle directory")

    def item(name: str, required: bool = True) -> _Item:
        return _readFile(os.path.join(path, name), required=required)

    return _assemble(
        ca=item(CA_CERT),
        node=item(NODE_CERT),
        nodeKey=item(NODE_KEY),
        clientCA=item(CLIENT_CA_CERT),
        clientCAKey=item(CLIENT_CA_KEY, required=False),
        caKey=item(CA_KEY, required=False),
        source=path,
        now=now,
    )


def _envItem(environ: Mapping[str, str], name: str, required: bool) -> _Item:
    value = environ.get(name)
    if value is None or not value.strip():
        if required:
            raise BundleError(
                f"{name}: not set (certificates from the environment need "
                f"{ENV_CA}, {ENV_NODE}, {ENV_NODE_KEY} and {ENV_CLIENT_CA}, base64-encoded PEM)"
            )
        return _Item(name, None)
    text = value.strip()
    if len(text) > 2 * _MAX_PEM_BYTES:
        raise BundleError(f"{name}: longer than {2 * _MAX_PEM_BYTES} characters")
    if text.startswith("-----BEGIN"):
        return _Item(name, text.encode("ascii", "replace"))
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{name}: not valid base64")
    return _Item(name, data)


def loadBundleFromEnv(environ: Mapping[str, str], *, now: datetime.datetime | None = None) -> Bundle:
    """
    Load and check a bundle from base64-encoded PEM in C{CERT_CA},
    C{CERT_NODE}, C{CERT_NODE_KEY}, C{CERT_CLIENT_CA} and (optional)
    C{CERT_CLIENT_CA_KEY}.  A value that is already PEM text is accepted too.

    @raise BundleError: naming the variable and the reason.
    """
    return _assemble(
        ca=_envItem(environ, ENV_CA, True),
        node=_envItem(environ, ENV_NODE, True),
        nodeKey=_envItem(environ, ENV_NODE_KEY, True),
        clientCA=_envItem(environ, ENV_CLIENT_CA, True),
        clientCAKey=_envItem(environ, ENV_CLIENT_CA_KEY, False),
        caKey=None,
        source="environment",
        now=now,
    )


def loadIdentity(
    certPath: str | os.PathLike[str],
    keyPath: str | os.PathLike[str],
    trustBundlePath: str | os.PathLike[str] | None,
    *,
    certLabel: str | None = None,
    keyLabel: str | None = None,
    trustLabel: str | None = None,
    now: datetime.datetime | None = None,
) -> Bundle:
    """
    Load an identity from separate files: a certificate (optionally followed
    by intermediates), its key, and a trust bundle holding one or more CA
    certificates.  The returned bundle has no client CA.

    With C{trustBundlePath} None the trust anchor is the last certificate
    of the certificate file (a full-chain file: the node certificate, then
    its issuers); it must be a CA.

    @param certLabel: how to name the certificate in messages, e.g.
        C{"CEPTRA_TLS_IDENTITY_CERT"}; the path is always appended.
    @raise BundleError: naming the file (and label) and the reason.
    """

    def name(path: str, label: str | None) -> str:
        return path if label is None else f"{label} ({path})"

    cert, key = os.fspath(certPath), os.fspath(keyPath)
    node = _readFile(cert, name(cert, certLabel))
    if trustBundlePath is None:
        assert node.data is not None
        chain = _parseCertificates(node.label, node.data)
        if len(chain) < 2:
            raise BundleError(
                f"{node.label}: no trust bundle given and no issuer certificate after the node's"
            )
        ca = _Item(f"{node.label} (issuer at the end of the chain)", certificateToPEM(chain[-1]))
    else:
        trust = os.fspath(trustBundlePath)
        ca = _readFile(trust, name(trust, trustLabel))
    return _assemble(
        ca=ca,
        node=node,
        nodeKey=_readFile(key, name(key, keyLabel)),
        clientCA=None,
        clientCAKey=None,
        caKey=None,
        source=cert,
        now=now,
    )


def loadClientIdentity(directory: str | os.PathLike[str], *, now: datetime.datetime | None = None) -> Bundle:
    """
    Load a client's files as written by C{pki client}: C{client.crt},
    C{client.key} and the servers' C{ca.crt}.  The client certificate is
    issued by the client CA, which the client does not hold, so only the key
    match and validity are checked here; the server checks the chain.

    The result plugs into L{suite.pki.tls.clientContextFactory} like a node
    bundle.
    """
    path = os.fspath(directory)
    if not os.path.isdir(path):
        raise BundleError(f"{path}: no such client certificate directory")
    when = _now(now)
    ca = _readFile(os.path.join(path, CA_CERT))
    cert = _readFile(os.path.join(path, CLIENT_CERT))
    key = _readFile(os.path.join(path, CLIENT_KEY))
    assert ca.data is not None and cert.data is not None and key.data is not None
    trust = _parseCertificates(ca.label, ca.data)
    for certificate in trust:
        _checkIsCA(ca.label, certificate)
        _checkValidity(ca.label, certificate, when)
    certificates = _parseCertificates(cert.label, cert.data)
    _checkValidity(cert.label, certificates[0], when)
    privateKey = _parseKey(key.label, key.data)
    _checkKey(key.label, privateKey, cert.label, certificates[0])
    return Bundle(
        caCert=trust[0],
        nodeCert=certificates[0],
        nodeKey=privateKey,
        clientCACert=None,
        extraTrust=tuple(trust[1:]),
        nodeChain=tuple(certificates[1:]),
        source=path,
    )


def checkNodeIdentity(
    bundle: Bundle,
    *,
    hostname: str | None = None,
    ipAddress: str | None = None,
    spiffeId: str | None = None,
    label: str | None = None,
) -> PeerIdentity:
    """
    Fail fast at start-up when this node's own certificate does not carry the
    names the daemon is configured with (its advertised host, its SPIFFE ID).

    @param label: names the certificate in the message (default: the
        bundle's source).
    @raise BundleError: naming the certificate and the missing name.
    """
    try:
        policy = PeerPolicy(hostname=hostname, ipAddress=ipAddress, spiffeId=spiffeId)
    except ValueError as e:
        raise BundleError(f"{label or bundle.source or 'node certificate'}: {e}")
    try:
        return policy.verifyPeer(bundle.nodeCert)
    except VerificationError as e:
        text = str(e).replace("peer certificate", "node certificate", 1)
        raise BundleError(f"{label or bundle.source or 'node certificate'}: {text}")


# --- sources ---------------------------------------------------------------


@implementer(ICertificateSource)
@attrs.frozen
class DirectorySource:
    """
    A bundle directory (C{--cert-dir}); read anew on every C{loadBundle}.
    """

    directory: str

    @property
    def description(self) -> str:
        return self.directory

    def loadBundle(self) -> Bundle:
        """Read and check the directory now."""
        return loadBundle(self.directory)


@implementer(ICertificateSource)
@attrs.frozen
class EnvironmentSource:
    """
    The C{CERT_*} environment variables (C{--cert-env}).
    """

    environ: Mapping[str, str] = attrs.field(repr=False)

    @property
    def description(self) -> str:
        return "environment"

    def loadBundle(self) -> Bundle:
        """Decode and check the variables now."""
        return loadBundleFromEnv(self.environ)


@implementer(ICertificateSource)
@attrs.frozen
class StaticSource:
    """
    A bundle already in memory (tests, embedded demos).
    """

    bundle: Bundle

    @property
    def description(self) -> str:
        return self.bundle.source or "memory"

    def loadBundle(self) -> Bundle:
        """Return the bundle."""
        return self.bundle
