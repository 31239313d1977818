"""
Which authorities a visitor connection may carry: the names of the
certificate the gateway presented on it.

A client may send a request on a connection only for an origin the
connection is authoritative for (RFC 9110 section 4.3.3, RFC 9113 section
9.1.1, RFC 9114 section 3.3): over TLS, one the certificate presented in
the handshake covers.  A request naming another authority is answered
421 Misdirected Request (RFC 9110 section 15.5.20, RFC 9113 section
9.1.2, RFC 9114 section 4.3.1), never routed: the client may retry it on
a connection of its own.

"Covered" is the check a client makes of a server certificate (RFC 9110
section 4.3.4, which defers to RFC 9525 section 6.3), on the host of the
request's authority (its port is no part of it):

  - only the subjectAltName extension counts (DNS names and IP
    addresses); the subject's common name never does (RFC 9525 removed
    it), so a certificate without subjectAltName covers nothing;
  - DNS names compare case-insensitively (ASCII; internationalised names
    are compared as their A-labels, as they are sent), a trailing dot of
    the authority left out;
  - a DNS name whose complete left-most label is C{*} covers any name
    with exactly one non-empty label in its place (C{*.example.com}
    covers C{a.example.com}, neither C{example.com} nor
    C{a.b.example.com}); a C{*} anywhere else (C{f*.example.com},
    C{a.*.example.com}) covers nothing;
  - an IP address in the authority (C{127.0.0.1}, C{[::1]}) is covered
    only by the same address among the certificate's IP addresses, never
    by a DNS name.

The names are read once per TLS context (the gateway builds one context
per certificate; L{presentedNames}) or per QUIC certificate
(L{quicPresentedNames}), and each connection keeps its verdict per
distinct host (L{Coverage}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from weakref import WeakKeyDictionary

from cryptography import x509

__all__ = [
    "CertificateNames",
    "Coverage",
    "coverageOf",
    "misdirectedReason",
    "presentedNames",
    "quicPresentedNames",
    "MISDIRECTED",
    "MISDIRECTED_HEADERS",
]

#: RFC 9110 section 15.5.20.
MISDIRECTED = 421
#: The headers every 421 carries besides its content type and length.  A
#: 421 answers a request as it came on one connection, while a cache keys
#: its entries on the URI alone: a stored 421 would be served to a client
#: that asks on a connection where the request is answered.  RFC 9110 does
#: not make a 421 heuristically cacheable (it is not among the codes of
#: its section 15.1; RFC 7540's "cacheable by default" was dropped, erratum
#: 4666), but a cache may still store one it is given freshness for, and
#: caches written to RFC 7540 may store it by default: C{no-store} rules
#: out both (the answer is cheap to give again).
MISDIRECTED_HEADERS: tuple[tuple[bytes, bytes], ...] = ((b"cache-control", b"no-store"),)
#: Distinct hosts a connection remembers its verdict for (then it starts over).
VERDICTS = 64


def _address(host: str) -> str | None:
    """
    The canonical text of C{host} when it is an IP address (IPv6 in
    brackets, as an authority holds it), else L{None}.
    """
    if host.startswith("["):
        text = host[1:-1] if host.endswith("]") else host[1:]
        try:
            return f"[{ipaddress.IPv6Address(text.partition('%')[0])}]"
        except ValueError:
            return host
    if host[-1:].isdigit():
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            return None
    return None


class CertificateNames:
    """
    The names one certificate is valid for.

    @ivar exact: its DNS names without a wildcard, lower case.
    @ivar wildcards: for each DNS name C{*.REST}, C{REST} (lower case).
    @ivar addresses: its IP addresses, canonical (IPv6 in brackets).
    """

    __slots__ = ("exact", "wildcards", "addresses")

    def __init__(self, dnsNames: Iterable[str], ipAddresses: Iterable[Any] = ()) -> None:
        exact: set[str] = set()
        wildcards: set[str] = set()
        for name in dnsNames:
            name = name.lower().rstrip(".")
            if name.startswith("*."):
                rest = name[2:]
                if rest and "*" not in rest:
                    wildcards.add(rest)
            elif name and "*" not in name and _address(name) is None:
                exact.add(name)
        self.exact = frozenset(exact)
        self.wildcards = frozenset(wildcards)
        self.addresses = frozenset(
            f"[{a}]" if isinstance(a, ipaddress.IPv6Address) else str(a) for a in ipAddresses
        )

    @classmethod
    def fromCertificate(cls, certificate: x509.Certificate) -> CertificateNames:
        """
        The names of C{certificate}'s subjectAltName (none without one).
        """
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return cls(())
        return cls(san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress))

    def covers(self, host: str) -> bool:
        """
        Whether the certificate covers C{host} (an authority's host, port
        left out; see the module's rules).
        """
        host = host.lower()
        if host.endswith("."):
            host = host[:-1]
        address = _address(host)
        if address is not None:
            return address in self.addresses
        if host in self.exact:
            return True
        label, dot, rest = host.partition(".")
        return bool(label and dot and rest in self.wildcards)

    def __repr__(self) -> str:
        names = sorted(self.exact) + sorted(f"*.{w}" for w in self.wildcards) + sorted(self.addresses)
        return f"<CertificateNames {' '.join(names)}>"


class Coverage:
    """
    One connection's view: the names of the certificate it presented and
    the verdict for each distinct host it was asked for (up to
    L{VERDICTS}, then it starts over).
    """

    __slots__ = ("names", "verdicts")

    def __init__(self, names: CertificateNames) -> None:
        self.names = names
        self.verdicts: dict[str, bool] = {}

    def covers(self, host: str) -> bool:
        """
        Whether this connection may carry requests for C{host}.
        """
        verdict = self.verdicts.get(host)
        if verdict is None:
            verdict = self.names.covers(host)
            if len(self.verdicts) >= VERDICTS:
                self.verdicts.clear()
            self.verdicts[host] = verdict
        return verdict


#: The names of each TLS context's certificate (one certificate per context).
_byContext: WeakKeyDictionary[Any, CertificateNames] = WeakKeyDictionary()
#: The names of each certificate QUIC connections presented.
_byCertificate: dict[x509.Certificate, CertificateNames] = {}


def presentedNames(transport: Any) -> CertificateNames | None:
    """
    The names of the certificate a TLS transport (whose handle is a
    pyOpenSSL connection past its handshake) presented, read once per TLS
    context; L{None} when C{transport} is not TLS.
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    try:
        connection = getHandle()
        context = connection.get_context()
    except Exception:  # not a TLS connection (a socket, a test transport)
        return None
    names = _byContext.get(context)
    if names is None:
        certificate = connection.get_certificate(as_cryptography=True)
        names = CertificateNames(()) if certificate is None else CertificateNames.fromCertificate(certificate)
        _byContext[context] = names
    return names


def quicPresentedNames(certificate: x509.Certificate | None) -> CertificateNames | None:
    """
    The names of the certificate a QUIC connection presented (aioquic's
    TLS context's C{certificate}), read once per certificate; L{None}
    without one.
    """
    if certificate is None:
        return None
    names = _byCertificate.get(certificate)
    if names is None:
        names = CertificateNames.fromCertificate(certificate)
        if len(_byCertificate) >= VERDICTS:
            _byCertificate.clear()
        _byCertificate[certificate] = names
    return names


def coverageOf(names: CertificateNames | None) -> Coverage | None:
    """
    A connection's L{Coverage} of C{names}, L{None} (nothing checked) when
    the connection is not TLS.
    """
    return None if names is None else Coverage(names)


def misdirectedReason(host: str) -> str:
    """
    The body of a 421 answer for a request naming C{host}.
    """
    return (
        f"the certificate of this connection does not cover {host}: "
        "send the request on a new connection to that name"
    )
