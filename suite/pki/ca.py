"""
The private CA: mint CA, node and client certificates and write bundles.

A bundle directory holds two self-signed CAs: C{ca.crt}/C{ca.key} issues
node certificates (inter-node mTLS), C{client-ca.crt}/C{client-ca.key}
issues client certificates (tunnel clients).  C{node.crt}/C{node.key} is this
node's identity.  Keys are written with mode 0600, every file atomically.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from suite.fileutil import syncDirectory, writeAtomically
from suite.pki.bundle import (
    CA_CERT,
    CA_KEY,
    CLIENT_CA_CERT,
    CLIENT_CA_KEY,
    CLIENT_CERT,
    CLIENT_KEY,
    NODE_CERT,
    NODE_KEY,
    Bundle,
    BundleError,
    loadBundle,
)
from suite.pki.keys import PrivateKey, certificateToPEM, generateKey, keyToPEM
from suite.pki.verify import parseSpiffeId

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_NODE_DAYS",
    "DEFAULT_CLIENT_DAYS",
    "IPLike",
    "splitNames",
    "mintCA",
    "mintCertificate",
    "mintSelfSigned",
    "initBundle",
    "writeNodeCertificate",
    "mintClientCertificate",
    "writeClientCertificate",
    "CLIENT_CERT",
    "CLIENT_KEY",
    "certificateToPEM",
    "keyToPEM",
]

DEFAULT_CA_DAYS = 3650
DEFAULT_NODE_DAYS = 825
DEFAULT_CLIENT_DAYS = 365

_BACKDATE = datetime.timedelta(minutes=5)
_MAX_CN = 64
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?$")

IPLike = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]


def _utcnow(now: datetime.datetime | None) -> datetime.datetime:
    return now if now is not None else datetime.datetime.now(datetime.UTC)


def _dnsName(name: str) -> str:
    ascii = name
    if not name.isascii():
        try:
            ascii = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{name!r} is not a valid DNS name")
    if len(ascii) > 253 or not _DNS_NAME.match(ascii):
        raise ValueError(f"{name!r} is neither an IP address nor a valid DNS name")
    return ascii.rstrip(".").lower()


def splitNames(names: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """
    Sort host names into DNS names and IP addresses (compressed text).

    @raise ValueError: for a name that is neither.
    """
    dnsNames: list[str] = []
    ips: list[str] = []
    for name in names:
        name = name.strip()
        try:
            ip = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            dns = _dnsName(name)
            if dns not in dnsNames:
                dnsNames.append(dns)
        else:
            if ip.compressed not in ips:
                ips.append(ip.compressed)
    return tuple(dnsNames), tuple(ips)


def _signatureHash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _validity(
    issuerNotAfter: datetime.datetime | None,
    days: int,
    notBefore: datetime.datetime | None,
    notAfter: datetime.datetime | None,
    now: datetime.datetime | None,
) -> tuple[datetime.datetime, datetime.datetime]:
    if days < 1:
        raise ValueError(f"validity must be at least one day, not {days}")
    start = notBefore if notBefore is not None else _utcnow(now) - _BACKDATE
    end = notAfter if notAfter is not None else _utcnow(now) + datetime.timedelta(days=days)
    if issuerNotAfter is not None and notAfter is None:
        end = min(end, issuerNotAfter)
    if end <= start:
        raise ValueError("certificate would expire before it becomes valid")
    return start, end


def _name(commonName: str) -> x509.Name:
    if not commonName:
        raise ValueError("empty common name")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName[:_MAX_CN])])


def mintCA(
    commonName: str,
    days: int = DEFAULT_CA_DAYS,
    *,
    keyType: str = "ec",
    key: PrivateKey | None = None,
    notBefore: datetime.datetime | None = None,
    notAfter: datetime.datetime | None = None,
    now: datetime.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """
    Mint a self-signed CA certificate (path length 0: it issues leaf
    certificates only) and its key.

    @param keyType: C{"ec"} (P-256, default) or C{"rsa"} (2048 bits); ignored
        when C{key} is given.
    @return: C{(certificate, key)}, cryptography objects.
    """
    key = key if key is not None else generateKey(keyType)
    start, end = _validity(None, days, notBefore, notAfter, now)
    name = _name(commonName)
    publicKey = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(publicKey)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(publicKey), critical=False)
        .sign(key, _signatureHash(key))
    )
    return certificate, key


def mintCertificate(
    issuerCert: x509.Certificate,
    issuerKey: PrivateKey,
    commonName: str,
    *,
    dnsNames: Sequence[str] = (),
    ipAddresses: Sequence[IPLike] = (),
    uris: Sequence[str] = (),
    days: int = DEFAULT_NODE_DAYS,
    serverAuth: bool = True,
    clientAuth: bool = True,
    keyType: str = "ec",
    key: PrivateKey | None = None,
    notBefore: datetime.datetime | None = None,
    notAfter: datetime.datetime | None = None,
    now: datetime.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """
    Mint a leaf certificate issued by C{issuerCert}/C{issuerKey}.

    @param dnsNames: DNS SANs (wildcards like C{*.example.com} allowed).
    @param ipAddresses: IP SANs, as text or C{ipaddress} objects.
    @param uris: URI SANs; C{spiffe://} ones are checked against the SPIFFE
        ID syntax.
    @param days: validity from now, capped at the issuer's expiry unless
        C{notAfter} is given.
    @param serverAuth: include the serverAuth extended key usage.
    @param clientAuth: include the clientAuth extended key usage.
    @param keyType: C{"ec"} (P-256, default) or C{"rsa"}; ignored when
        C{key} is given.
    @param notBefore: explicit start of validity (default: five minutes ago).
    @param notAfter: explicit end of validity (tests mint expired
        certificates with it).
    @return: C{(certificate, key)}, cryptography objects.
    @raise ValueError: for a malformed name or an empty validity period.
    """
    return _mintLeaf(
        issuerCert.subject,
        issuerKey,
        issuerCert.not_valid_after_utc,
        commonName,
        dnsNames=dnsNames,
        ipAddresses=ipAddresses,
        uris=uris,
        days=days,
        serverAuth=serverAuth,
        clientAuth=clientAuth,
        keyType=keyType,
        key=key,
        notBefore=notBefore,
        notAfter=notAfter,
        now=now,
    )


def _mintLeaf(
    issuerName: x509.Name,
    issuerKey: PrivateKey,
    issuerNotAfter: datetime.datetime | None,
    commonName: str,
    *,
    dnsNames: Sequence[str],
    ipAddresses: Sequence[IPLike],
    uris: Sequence[str],
    days: int,
    serverAuth: bool,
    clientAuth: bool,
    keyType: str,
    key: PrivateKey | None,
    notBefore: datetime.datetime | None,
    notAfter: datetime.datetime | None,
    now: datetime.datetime | None,
) -> tuple[x509.Certificate, PrivateKey]:
    if not (serverAuth or clientAuth):
        raise ValueError("a certificate needs serverAuth, clientAuth or both")
    dns = tuple(_dnsName(name) for name in dnsNames)
    ips = tuple(ipaddress.ip_address(ip) if isinstance(ip, str) else ip for ip in ipAddresses)
    for uri in uris:
        if uri.startswith("spiffe:"):
            parseSpiffeId(uri, allowTrustDomain=False)
        elif ":" not in uri:
            raise ValueError(f"{uri!r} is not a URI")
    key = key if key is not None else generateKey(keyType)
    start, end = _validity(issuerNotAfter, days, notBefore, notAfter, now)
    publicKey = key.public_key()
    usages = []
    if serverAuth:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if clientAuth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(commonName))
        .issuer_name(issuerName)
        .public_key(publicKey)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(publicKey), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuerKey.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    sans.extend(x509.IPAddress(ip) for ip in ips)
    sans.extend(x509.UniformResourceIdentifier(uri) for uri in uris)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuerKey, _signatureHash(issuerKey)), key


def mintSelfSigned(
    names: Sequence[str],
    *,
    days: int = 90,
    keyType: str = "ec",
    now: datetime.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """
    Mint a self-signed server certificate for C{names} (host names and IP
    addresses; the first is the common name), e.g. for a public listener
    when no ACME certificate is configured.  It is not a CA.

    @raise ValueError: if C{names} is empty or holds a malformed name.
    """
    dnsNames, ips = splitNames(names)
    if not (dnsNames or ips):
        raise ValueError("a self-signed certificate needs at least one host name or IP address")
    key = generateKey(keyType)
    commonName = (dnsNames + ips)[0]
    return _mintLeaf(
        _name(commonName),
        key,
        None,
        commonName,
        dnsNames=dnsNames,
        ipAddresses=ips,
        uris=(),
        days=days,
        serverAuth=True,
        clientAuth=False,
        keyType=keyType,
        key=key,
        notBefore=None,
        notAfter=None,
        now=now,
    )


# --- writing ---------------------------------------------------------------


def _writeFiles(
    directory: str, files: dict[str, tuple[bytes, int]], force: bool, guard: Iterable[str]
) -> None:
    """
    Write C{files} (name -> (data, mode)) into C{directory}, refusing when
    any name in C{guard} exists there already unless C{force}.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise BundleError(f"{directory}: exists and is not a directory")
    existing = [name for name in guard if os.path.exists(os.path.join(directory, name))]
    if existing and not force:
        raise BundleError(
            f"{directory}: already holds {', '.join(existing)}; refusing to overwrite "
            "(use --force to replace it)"
        )
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for name, (data, mode) in files.items():
            writeAtomically(os.path.join(directory, name), data, mode, syncDir=False)
        syncDirectory(directory)
    except OSError as e:
        raise BundleError(f"{e.filename or directory}: cannot write: {e.strerror or e}")


def _bundleFiles(
    caCerts: Sequence[x509.Certificate],
    caKey: PrivateKey | None,
    clientCACert: x509.Certificate | None,
    clientCAKey: PrivateKey | None,
    nodeCert: x509.Certificate,
    nodeKey: PrivateKey,
) -> dict[str, tuple[bytes, int]]:
    files: dict[str, tuple[bytes, int]] = {
        CA_CERT: (certificateToPEM(*caCerts), 0o644),
        NODE_CERT: (certificateToPEM(nodeCert), 0o644),
        NODE_KEY: (keyToPEM(nodeKey), 0o600),
    }
    if caKey is not None:
        files[CA_KEY] = (keyToPEM(caKey), 0o600)
    if clientCACert is not None:
        files[CLIENT_CA_CERT] = (certificateToPEM(clientCACert), 0o644)
    if clientCAKey is not None:
        files[CLIENT_CA_KEY] = (keyToPEM(clientCAKey), 0o600)
    return files


_ALL_FILES = (CA_CERT, CA_KEY, CLIENT_CA_CERT, CLIENT_CA_KEY, NODE_CERT, NODE_KEY)


def _nodeLeaf(
    caCert: x509.Certificate,
    caKey: PrivateKey,
    nodeNames: Sequence[str],
    spiffeIds: Sequence[str],
    days: int,
    keyType: str,
    commonName: str | None,
    now: datetime.datetime | None,
) -> tuple[x509.Certificate, PrivateKey]:
    dnsNames, ips = splitNames(nodeNames)
    if not (dnsNames or ips or spiffeIds):
        raise ValueError("a node certificate needs at least one host name, IP address or SPIFFE ID")
    if commonName is None:
        if dnsNames or ips:
            commonName = (dnsNames + ips)[0]
        else:
            commonName = parseSpiffeId(spiffeIds[0], allowTrustDomain=False).path.rsplit("/", 1)[-1]
    return mintCertificate(
        caCert,
        caKey,
        commonName,
        dnsNames=dnsNames,
        ipAddresses=ips,
        uris=tuple(spiffeIds),
        days=days,
        keyType=keyType,
        now=now,
    )


def initBundle(
    directory: str | os.PathLike[str],
    nodeNames: Sequence[str],
    *,
    spiffeIds: Sequence[str] = (),
    days: int = DEFAULT_NODE_DAYS,
    caDays: int = DEFAULT_CA_DAYS,
    keyType: str = "ec",
    caName: str = "suite",
    commonName: str | None = None,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> Bundle:
    """
    Create a new private CA bundle in C{directory}: C{ca.crt}, C{ca.key},
    C{client-ca.crt}, C{client-ca.key}, C{node.crt}, C{node.key} (keys 0600,
    the directory created 0700 if missing).

    @param nodeNames: host names and IP addresses of this node (its SANs).
    @param spiffeIds: SPIFFE IDs of this node (URI SANs).
    @param caName: prefix of the CAs' common names (C{"<caName> node CA"}).
    @param force: replace an existing bundle instead of refusing.
    @raise BundleError: if a bundle already exists there or cannot be written.
    @raise ValueError: for a malformed node name or SPIFFE ID.
    """
    path = os.fspath(directory)
    caCert, caKey = mintCA(f"{caName} node CA", caDays, keyType=keyType, now=now)
    clientCACert, clientCAKey = mintCA(f"{caName} client CA", caDays, keyType=keyType, now=now)
    nodeCert, nodeKey = _nodeLeaf(caCert, caKey, nodeNames, spiffeIds, days, keyType, commonName, now)
    files = _bundleFiles([caCert], caKey, clientCACert, clientCAKey, nodeCert, nodeKey)
    _writeFiles(path, files, force, _ALL_FILES)
    return Bundle(
        caCert=caCert,
        nodeCert=nodeCert,
        nodeKey=nodeKey,
        clientCACert=clientCACert,
        clientCAKey=clientCAKey,
        caKey=caKey,
        source=path,
    )


def writeNodeCertificate(
    source: Bundle | str | os.PathLike[str],
    directory: str | os.PathLike[str],
    nodeNames: Sequence[str],
    *,
    spiffeIds: Sequence[str] = (),
    days: int = DEFAULT_NODE_DAYS,
    keyType: str = "ec",
    commonName: str | None = None,
    includeCAKey: bool = False,
    includeClientCAKey: bool = True,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> Bundle:
    """
    Mint a certificate for another node from the CA of C{source} (a bundle or
    a bundle directory holding C{ca.key}) and write a complete bundle for it
    in C{directory}: the same C{ca.crt}, C{client-ca.crt} (and
    C{client-ca.key} unless C{includeClientCAKey} is false), a new C{node.crt}
    and C{node.key}, and C{ca.key} only with C{includeCAKey}.

    @raise BundleError: if the source has no CA key, or the target already
        holds a bundle (unless C{force}).
    """
    bundle = source if isinstance(source, Bundle) else loadBundle(source, now=now)
    if bundle.caKey is None:
        raise BundleError(f"{bundle.source or 'bundle'}: {CA_KEY} is missing; cannot mint node certificates")
    path = os.fspath(directory)
    nodeCert, nodeKey = _nodeLeaf(
        bundle.caCert, bundle.caKey, nodeNames, spiffeIds, days, keyType, commonName, now
    )
    caKey = bundle.caKey if includeCAKey else None
    clientCAKey = bundle.clientCAKey if includeClientCAKey else None
    files = _bundleFiles(bundle.trustRoots, caKey, bundle.clientCACert, clientCAKey, nodeCert, nodeKey)
    _writeFiles(path, files, force, _ALL_FILES)
    return Bundle(
        caCert=bundle.caCert,
        nodeCert=nodeCert,
        nodeKey=nodeKey,
        clientCACert=bundle.clientCACert,
        clientCAKey=clientCAKey,
        caKey=caKey,
        extraTrust=bundle.extraTrust,
        source=path,
    )


def _mintClient(
    bundle: Bundle,
    commonName: str,
    dnsNames: Sequence[str],
    uris: Sequence[str],
    days: int,
    keyType: str,
    now: datetime.datetime | None,
    notAfter: datetime.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    if bundle.clientCACert is None or bundle.clientCAKey is None:
        raise BundleError(
            f"{bundle.source or 'bundle'}: {CLIENT_CA_KEY} is missing; cannot mint client certificates"
        )
    return mintCertificate(
        bundle.clientCACert,
        bundle.clientCAKey,
        commonName,
        dnsNames=dnsNames,
        uris=uris,
        days=days,
        serverAuth=False,
        clientAuth=True,
        keyType=keyType,
        now=now,
        notAfter=notAfter,
    )


def mintClientCertificate(
    bundle: Bundle,
    commonName: str,
    *,
    dnsNames: Sequence[str] = (),
    uris: Sequence[str] = (),
    days: int = DEFAULT_CLIENT_DAYS,
    keyType: str = "ec",
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """
    Mint a client certificate (clientAuth only) signed by the bundle's client
    CA.

    @return: C{(certificatePEM, keyPEM)}.
    @raise BundleError: if the bundle has no client CA key.
    """
    certificate, key = _mintClient(bundle, commonName, dnsNames, uris, days, keyType, now)
    return certificateToPEM(certificate), keyToPEM(key)


def writeClientCertificate(
    bundle: Bundle,
    commonName: str,
    directory: str | os.PathLike[str],
    *,
    dnsNames: Sequence[str] = (),
    uris: Sequence[str] = (),
    days: int = DEFAULT_CLIENT_DAYS,
    keyType: str = "ec",
    force: bool = False,
    now: datetime.datetime | None = None,
) -> tuple[str, ...]:
    """
    Mint a client certificate and write C{client.crt}, C{client.key} (0600)
    and the servers' C{ca.crt} into C{directory}.

    @return: the paths written.
    """
    certificate, key = _mintClient(bundle, commonName, dnsNames, uris, days, keyType, now)
    path = os.fspath(directory)
    files = {
        CLIENT_CERT: (certificateToPEM(certificate), 0o644),
        CLIENT_KEY: (keyToPEM(key), 0o600),
        CA_CERT: (certificateToPEM(*bundle.trustRoots), 0o644),
    }
    _writeFiles(path, files, force, files)
    return tuple(os.path.join(path, name) for name in files)
