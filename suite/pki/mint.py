"""
Certificate profiles: build and sign the suite's three kinds of
certificate from a key (L{suite.pki.keys}), names (L{suite.pki.names}) and
a validity period (L{suite.pki.validity}).

  - L{mintCA}: a self-signed CA that issues leaf certificates only;
  - L{mintCertificate}: a leaf issued by a CA (serverAuth and/or
    clientAuth; DNS, IP and URI SANs);
  - L{mintSelfSigned}: a self-signed server leaf (not a CA) for a public
    listener without an ACME certificate.

Every certificate gets a random serial number and a subject key identifier;
leaves also get the issuer's key identifier.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from suite.pki.keys import PrivateKey, generateKey
from suite.pki.names import IPLike, dnsName, splitNames
from suite.pki.validity import validityPeriod
from suite.pki.verify import parseSpiffeId

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_NODE_DAYS",
    "DEFAULT_CLIENT_DAYS",
    "mintCA",
    "mintCertificate",
    "mintSelfSigned",
]

DEFAULT_CA_DAYS = 3650
DEFAULT_NODE_DAYS = 825
DEFAULT_CLIENT_DAYS = 365

_MAX_CN = 64


def _signatureHash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(commonName: str) -> x509.Name:
    if not commonName:
        raise ValueError("empty common name")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName[:_MAX_CN])])


def _keyUsage(*, keyEncipherment: bool = False, certSign: bool = False) -> x509.KeyUsage:
    """
    Digital signature, plus key encipherment (RSA leaves) or certificate and
    CRL signing (CAs).
    """
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=keyEncipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certSign,
        crl_sign=certSign,
        encipher_only=False,
        decipher_only=False,
    )


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
    start, end = validityPeriod(None, days, notBefore, notAfter, now)
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
        .add_extension(_keyUsage(certSign=True), critical=True)
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
    dns = tuple(dnsName(name) for name in dnsNames)
    ips = tuple(ipaddress.ip_address(ip) if isinstance(ip, str) else ip for ip in ipAddresses)
    for uri in uris:
        if uri.startswith("spiffe:"):
            parseSpiffeId(uri, allowTrustDomain=False)
        elif ":" not in uri:
            raise ValueError(f"{uri!r} is not a URI")
    key = key if key is not None else generateKey(keyType)
    start, end = validityPeriod(issuerNotAfter, days, notBefore, notAfter, now)
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
        .add_extension(_keyUsage(keyEncipherment=isinstance(key, rsa.RSAPrivateKey)), critical=True)
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
