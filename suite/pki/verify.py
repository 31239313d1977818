"""
Peer identity: what a certificate names, and whether it names the peer we want.

DNS names and IP addresses are matched by C{service_identity}; SPIFFE IDs
(URI SANs of the form C{spiffe://trust-domain/path}) are matched here, either
exactly or by trust domain (an expected ID without a path).
"""

from __future__ import annotations

import ipaddress
import re

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from service_identity import CertificateError as _SICertificateError
from service_identity import VerificationError as _SIVerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from zope.interface import implementer

from suite.netutil import isIPAddress
from suite.pki.interfaces import IPeerVerifier

__all__ = [
    "VerificationError",
    "PeerIdentity",
    "SpiffeId",
    "parseSpiffeId",
    "identityOf",
    "PeerPolicy",
    "verifyCertificate",
]

SPIFFE_SCHEME = "spiffe://"
_MAX_SPIFFE_LENGTH = 2048
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


class VerificationError(Exception):
    """
    A peer's certificate does not name the expected peer.  The message says
    what was expected and what the certificate holds.
    """


@attrs.frozen
class SpiffeId:
    """
    A parsed SPIFFE ID.  An empty C{path} means "the whole trust domain".
    """

    trustDomain: str
    path: str = ""

    def __str__(self) -> str:
        return f"{SPIFFE_SCHEME}{self.trustDomain}{self.path}"

    @property
    def isTrustDomain(self) -> bool:
        """
        Whether this names a trust domain rather than one workload.
        """
        return self.path == ""

    def matches(self, other: SpiffeId) -> bool:
        """
        Whether C{other} (from a certificate) is this ID, or lies in this
        trust domain when this names a trust domain.
        """
        if self.trustDomain != other.trustDomain:
            return False
        return self.isTrustDomain or self.path == other.path


def parseSpiffeId(text: str, *, allowTrustDomain: bool = True) -> SpiffeId:
    """
    Parse C{spiffe://trust-domain/path}; with C{allowTrustDomain}, also
    C{spiffe://trust-domain} (with or without a trailing slash).

    @raise ValueError: with the reason the text is not a SPIFFE ID.
    """
    if len(text) > _MAX_SPIFFE_LENGTH:
        raise ValueError(f"SPIFFE ID longer than {_MAX_SPIFFE_LENGTH} characters")
    if not text.startswith(SPIFFE_SCHEME):
        raise ValueError(f"{text!r} is not a SPIFFE ID: it must start with {SPIFFE_SCHEME}")
    rest = text[len(SPIFFE_SCHEME) :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"{text!r} is not a SPIFFE ID: no query or fragment allowed")
    trustDomain, slash, path = rest.partition("/")
    if not trustDomain:
        raise ValueError(f"{text!r} is not a SPIFFE ID: the trust domain is empty")
    if not _TRUST_DOMAIN.match(trustDomain):
        raise ValueError(
            f"{text!r} is not a SPIFFE ID: the trust domain may hold only lowercase "
            "letters, digits, '.', '-' and '_'"
        )
    if not path:
        if not allowTrustDomain:
            raise ValueError(f"{text!r} names a trust domain, not a workload (it has no path)")
        return SpiffeId(trustDomain)
    for segment in path.split("/"):
        if not segment:
            raise ValueError(f"{text!r} is not a SPIFFE ID: empty path segment or trailing '/'")
        if segment in (".", ".."):
            raise ValueError(f"{text!r} is not a SPIFFE ID: '.' and '..' path segments are not allowed")
        if not _PATH_SEGMENT.match(segment):
            raise ValueError(
                f"{text!r} is not a SPIFFE ID: path segments may hold only letters, digits, '.', '-' and '_'"
            )
    return SpiffeId(trustDomain, "/" + path)


@attrs.frozen
class PeerIdentity:
    """
    The names a certificate carries: subject common name and subject
    alternative names (DNS names, IP addresses in compressed text form, URIs).
    """

    commonName: str | None
    dnsNames: tuple[str, ...] = ()
    ipAddresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    fingerprint: str = ""
    """SHA-256 of the DER certificate, lowercase hex."""

    @property
    def spiffeIds(self) -> tuple[str, ...]:
        """
        The URIs that are well-formed SPIFFE IDs naming a workload.
        """
        found = []
        for uri in self.uris:
            try:
                parseSpiffeId(uri, allowTrustDomain=False)
            except ValueError:
                continue
            found.append(uri)
        return tuple(found)

    @property
    def spiffeId(self) -> str | None:
        """
        The first SPIFFE ID, or L{None}.
        """
        ids = self.spiffeIds
        return ids[0] if ids else None

    def describe(self) -> str:
        """
        A short text listing the names, e.g. C{CN=node1 DNS:node1 IP:10.0.0.1}.
        """
        parts = []
        if self.commonName is not None:
            parts.append(f"CN={self.commonName}")
        parts.extend(f"DNS:{name}" for name in self.dnsNames)
        parts.extend(f"IP:{ip}" for ip in self.ipAddresses)
        parts.extend(f"URI:{uri}" for uri in self.uris)
        return " ".join(parts) if parts else "no names"


def identityOf(certificate: x509.Certificate) -> PeerIdentity:
    """
    Extract the L{PeerIdentity} of a certificate.

    @raise VerificationError: if the certificate's names cannot be parsed.
    """
    try:
        commonNames = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        commonName = str(commonNames[0].value) if commonNames else None
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            dnsNames: list[str] = []
            ips: list[str] = []
            uris: list[str] = []
        else:
            dnsNames = list(san.get_values_for_type(x509.DNSName))
            ips = [ip.compressed for ip in san.get_values_for_type(x509.IPAddress)]
            uris = list(san.get_values_for_type(x509.UniformResourceIdentifier))
    except ValueError as e:
        raise VerificationError(f"peer certificate has malformed names: {e}")
    return PeerIdentity(
        commonName=commonName,
        dnsNames=tuple(dnsNames),
        ipAddresses=tuple(ips),
        uris=tuple(uris),
        fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
    )


@implementer(IPeerVerifier)
@attrs.frozen
class PeerPolicy:
    """
    The identity a peer must prove.  Every given name must be present in the
    peer's certificate; with none given, any certificate issued by a trusted
    CA is accepted.

    @ivar hostname: a DNS name the certificate must carry (matched by
        service_identity, wildcards included).  An IP address given here is
        treated as C{ipAddress}.
    @ivar ipAddress: an IP address the certificate must carry as an IP SAN.
    @ivar spiffeId: a SPIFFE ID the certificate must carry as a URI SAN, or a
        trust domain (C{spiffe://example.org}) one of its SPIFFE IDs must lie in.
    """

    hostname: str | None = None
    ipAddress: str | None = None
    spiffeId: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.ipAddress is not None:
            try:
                ipaddress.ip_address(self.ipAddress)
            except ValueError:
                raise ValueError(f"{self.ipAddress!r} is not an IP address")
        if self.spiffeId is not None:
            parseSpiffeId(self.spiffeId)
        if self.hostname is not None and not self.hostname:
            raise ValueError("empty host name")

    @property
    def description(self) -> str:
        """
        The expected names, for logs and messages.
        """
        parts = []
        if self.hostname is not None:
            parts.append(f"host name {self.hostname!r}")
        if self.ipAddress is not None:
            parts.append(f"IP address {self.ipAddress}")
        if self.spiffeId is not None:
            kind = "trust domain" if parseSpiffeId(self.spiffeId).isTrustDomain else "SPIFFE ID"
            parts.append(f"{kind} {self.spiffeId}")
        return ", ".join(parts) if parts else "any certificate from a trusted CA"

    def verifyPeer(self, certificate: x509.Certificate) -> PeerIdentity:
        """
        Check C{certificate} against every expected name.

        @raise VerificationError: naming the first expectation not met and the
            names the certificate does carry.
        """
        identity = identityOf(certificate)
        dnsNames: list[str] = []
        ips: list[str] = []
        if self.hostname is not None:
            (ips if isIPAddress(self.hostname) else dnsNames).append(self.hostname)
        if self.ipAddress is not None:
            ips.append(self.ipAddress)
        for hostname in dnsNames:
            try:
                verify_certificate_hostname(certificate, hostname)
            except (_SIVerificationError, _SICertificateError):
                raise VerificationError(
                    f"peer certificate does not match host name {hostname!r} (it has {identity.describe()})"
                )
        for ip in ips:
            _checkIP(certificate, identity, ip)
        if self.spiffeId is not None:
            _checkSpiffe(identity, self.spiffeId)
        return identity


def _checkIP(certificate: x509.Certificate, identity: PeerIdentity, ip: str) -> None:
    try:
        verify_certificate_ip_address(certificate, ip)
    except (_SIVerificationError, _SICertificateError):
        raise VerificationError(
            f"peer certificate does not match IP address {ip} (it has {identity.describe()})"
        )


def _checkSpiffe(identity: PeerIdentity, expected: str) -> None:
    want = parseSpiffeId(expected)
    for uri in identity.spiffeIds:
        if want.matches(parseSpiffeId(uri)):
            return
    kind = "trust domain" if want.isTrustDomain else "SPIFFE ID"
    held = ", ".join(identity.spiffeIds) or "none"
    raise VerificationError(f"peer certificate does not match {kind} {expected} (its SPIFFE IDs: {held})")


def verifyCertificate(
    certificate: x509.Certificate,
    *,
    hostname: str | None = None,
    ipAddress: str | None = None,
    spiffeId: str | None = None,
) -> PeerIdentity:
    """
    Check that C{certificate} names the given peer; see L{PeerPolicy}.

    @raise VerificationError: if it does not.
    @raise ValueError: if an expected name is malformed.
    """
    return PeerPolicy(hostname=hostname, ipAddress=ipAddress, spiffeId=spiffeId).verifyPeer(certificate)
