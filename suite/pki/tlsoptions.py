"""
Twisted L{CertificateOptions} for the suite's TLS endpoints: what to trust,
what to present, the lowest TLS version, and ALPN (with an ALPN selection
that tolerates clients offering none of our protocols).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet.ssl import Certificate as TwistedCertificate
from twisted.internet.ssl import CertificateOptions, TLSVersion, trustRootFromCertificates

from suite.pki.bundle import Bundle
from suite.pki.keys import PrivateKey

__all__ = ["protocolList", "certificateOptions", "lenientALPN", "minimumVersion", "presentedCredentials"]


def minimumVersion(tls13Only: bool) -> TLSVersion:
    """
    The lowest TLS version accepted: 1.2, or 1.3 with C{tls13Only}.
    """
    version: TLSVersion = TLSVersion.TLSv1_3 if tls13Only else TLSVersion.TLSv1_2
    return version


def protocolList(acceptableProtocols: Sequence[bytes | str] | None) -> list[bytes] | None:
    """
    ALPN protocol names as bytes (text is ASCII-encoded); L{None} stays
    L{None} (no ALPN).
    """
    if acceptableProtocols is None:
        return None
    return [p.encode("ascii") if isinstance(p, str) else p for p in acceptableProtocols]


def presentedCredentials(
    key: PrivateKey, certificate: x509.Certificate, chain: Sequence[x509.Certificate]
) -> dict[str, Any]:
    """
    The C{privateKey}, C{certificate} and C{extraCertChain} arguments of
    L{CertificateOptions}, as cryptography objects.

    Twisted (26.10) hands them unchanged to pyOpenSSL's
    C{Context.use_privatekey}, C{use_certificate} and
    C{add_extra_chain_cert}, which take cryptography objects; passing
    pyOpenSSL's C{PKey}/C{X509} wrappers there is deprecated since pyOpenSSL
    24.3.  (Twisted's annotations still name the wrappers, hence the
    untyped mapping.)
    """
    return {"privateKey": key, "certificate": certificate, "extraCertChain": list(chain)}


def certificateOptions(
    bundle: Bundle,
    trust: Sequence[x509.Certificate],
    *,
    presentCertificate: bool,
    tls13Only: bool,
    acceptableProtocols: Sequence[bytes | str] | None,
) -> CertificateOptions:
    """
    Options trusting C{trust}, presenting C{bundle}'s node certificate (and
    chain) when C{presentCertificate}, with TLS 1.2 (or, with C{tls13Only},
    1.3) as the minimum and C{acceptableProtocols} offered by ALPN.
    """
    kwargs: dict[str, Any] = {}
    if presentCertificate:
        kwargs.update(presentedCredentials(bundle.nodeKey, bundle.nodeCert, bundle.nodeChain))
    roots = [TwistedCertificate(crypto.X509.from_cryptography(c)) for c in trust]
    options = CertificateOptions(
        trustRoot=trustRootFromCertificates(roots),
        raiseMinimumTo=minimumVersion(tls13Only),
        acceptableProtocols=protocolList(acceptableProtocols),
        **kwargs,
    )
    lenientALPN(options.getContext(), protocolList(acceptableProtocols) or [])
    return options


def lenientALPN(context: SSL.Context, static: Sequence[bytes]) -> None:
    """
    Replace Twisted's ALPN select callback on a (cached) context: when this
    side offers no protocol the client asked for, carry on without ALPN
    instead of answering C{b""}, which OpenSSL 3 turns into an "internal
    error" alert (curl offers C{h2}/C{http/1.1} by default).
    """
    from twisted.internet._sslverify import protosFromProtocol

    def select(conn: SSL.Connection, offered: Sequence[bytes]) -> Any:
        ours = protosFromProtocol(conn.get_app_data(), static)
        for p in ours:
            if p in offered:
                return p
        return SSL.NO_OVERLAPPING_PROTOCOLS

    context.set_alpn_select_callback(select)
