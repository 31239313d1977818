"""
mTLS connection creators built on pyOpenSSL and Twisted's
L{CertificateOptions}.

Servers present C{node.crt}, require a client certificate by default and
trust C{ca.crt} (plus C{client-ca.crt} with C{trustClientCA}).  Clients
present C{node.crt}, trust C{ca.crt}, and check the server's names (DNS and
IP SANs through service_identity, SPIFFE URI SANs through
L{suite.pki.verify}).  TLS 1.2 is the minimum; C{tls13Only} raises it to 1.3.

The creators plug into L{TLSMemoryBIOFactory}, C{reactor.listenSSL},
C{SSL4ServerEndpoint}, L{wrapClientTLS}, or the endpoint helpers below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString, wrapClientTLS
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import Certificate as TwistedCertificate
from twisted.internet.ssl import CertificateOptions, TLSVersion, trustRootFromCertificates
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from suite.netutil import isIPAddress
from suite.pki.bundle import Bundle, BundleError
from suite.pki.interfaces import IPeerVerifier
from suite.pki.keys import PrivateKey
from suite.pki.verify import PeerIdentity, PeerPolicy, VerificationError, identityOf

__all__ = [
    "PeerIdentity",
    "VerificationError",
    "serverContextFactory",
    "clientContextFactory",
    "peerIdentity",
    "peerCertificate",
    "tlsServerEndpoint",
    "tlsClientEndpoint",
    "TLSServerEndpoint",
    "MTLSServerCreator",
    "MTLSClientCreator",
    "MTLSPolicyForHTTPS",
    "publicServerContextFactory",
]

log = Logger()

_VerifyCallback = Callable[[SSL.Connection, crypto.X509, int, int, int], bool]


def _protocols(acceptableProtocols: Sequence[bytes | str] | None) -> list[bytes] | None:
    if acceptableProtocols is None:
        return None
    return [p.encode("ascii") if isinstance(p, str) else p for p in acceptableProtocols]


def _options(
    bundle: Bundle,
    trust: Sequence[x509.Certificate],
    *,
    presentCertificate: bool,
    tls13Only: bool,
    acceptableProtocols: Sequence[bytes | str] | None,
) -> CertificateOptions:
    kwargs: dict[str, Any] = {}
    if presentCertificate:
        kwargs.update(
            privateKey=crypto.PKey.from_cryptography_key(bundle.nodeKey),
            certificate=crypto.X509.from_cryptography(bundle.nodeCert),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in bundle.nodeChain],
        )
    roots = [TwistedCertificate(crypto.X509.from_cryptography(c)) for c in trust]
    options = CertificateOptions(
        trustRoot=trustRootFromCertificates(roots),
        raiseMinimumTo=TLSVersion.TLSv1_3 if tls13Only else TLSVersion.TLSv1_2,
        acceptableProtocols=_protocols(acceptableProtocols),
        **kwargs,
    )
    _lenientALPN(options.getContext(), _protocols(acceptableProtocols) or [])
    return options


def _lenientALPN(context: SSL.Context, static: Sequence[bytes]) -> None:
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


# OpenSSL X509_V_ERR_* codes worth a plain-words reason.
_CHAIN_ERRORS = {
    2: "is not issued by a trusted CA",
    9: "is not valid yet",
    10: "has expired",
    18: "is not issued by a trusted CA",
    19: "is not issued by a trusted CA",
    20: "is not issued by a trusted CA",
    21: "is not issued by a trusted CA",
    24: "is issued by a certificate that is not a CA",
    25: "exceeds the CA's path length",
    26: "is not meant for this use (extended key usage)",
}


def _chainReason(errno: int, depth: int) -> str:
    reason = _CHAIN_ERRORS.get(errno, "failed verification")
    untrusted = reason == _CHAIN_ERRORS[2]
    what = "peer certificate" if depth == 0 or untrusted else f"peer certificate chain (depth {depth})"
    return f"{what} {reason} (OpenSSL verify error {errno})"


def _verifyCallback(
    tlsProtocol: TLSMemoryBIOProtocol, verifier: IPeerVerifier | None, sendAlert: bool = False
) -> _VerifyCallback:
    """
    A per-connection OpenSSL verify callback.  OpenSSL checks the chain; a
    chain error is turned into a L{VerificationError} with a plain reason,
    and on the leaf (depth 0) C{verifier} checks the peer's names.  The
    protocol learns the reason through C{failVerification}.

    With C{sendAlert} (servers) the connection is not aborted: OpenSSL
    fails the handshake with its TLS alert, which Twisted sends before
    closing, so the refused peer learns why (an abort would drop it); the
    protocol still gets the L{VerificationError} as its reason.
    """
    protocolRef: TLSMemoryBIOProtocol | None = tlsProtocol

    def fail(reason: str) -> bool:
        nonlocal protocolRef
        log.warn("TLS peer certificate refused: {reason}", reason=reason)
        if protocolRef is not None:
            failure = Failure(VerificationError(reason))
            if sendAlert:
                protocolRef._reason = failure  # what failVerification records, without the abort
            else:
                protocolRef.failVerification(failure)
        protocolRef = None
        return False

    def callback(
        connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        nonlocal protocolRef
        try:
            if not ok:
                return fail(_chainReason(errno, depth))
            if depth != 0:
                return True
            if verifier is not None:
                try:
                    verifier.verifyPeer(certificate.to_cryptography())
                except VerificationError as e:
                    return fail(str(e))
            # The leaf is the last certificate checked: drop the protocol so
            # no reference cycle outlives the handshake.
            protocolRef = None
            return True
        except BaseException:
            # An exception must not escape into OpenSSL; fail closed.
            log.failure("while verifying a TLS peer certificate")
            protocolRef = None
            return False

    return callback


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class MTLSServerCreator:
    """
    Server-side connection creator: presents the node certificate and
    verifies client certificates against the trusted CAs (and, optionally,
    an L{IPeerVerifier}).
    """

    def __init__(
        self,
        options: CertificateOptions,
        *,
        requireClientCert: bool,
        verifier: IPeerVerifier | None,
    ) -> None:
        self.options = options
        self.requireClientCert = requireClientCert
        self.verifier = verifier
        self._mode = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
        if requireClientCert:
            self._mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """
        Create the OpenSSL connection for one accepted TLS connection.
        """
        connection = self.options.serverConnectionForTLS(tlsProtocol)
        connection.set_verify(self._mode, _verifyCallback(tlsProtocol, self.verifier, sendAlert=True))
        return connection

    def getContext(self) -> SSL.Context:
        """
        The shared context, for old APIs that want one.  It verifies the
        chain and requires a client certificate, but applies no
        L{IPeerVerifier}: prefer passing this object itself.
        """
        context = self.options.getContext()
        context.set_verify(self._mode)
        return context


@implementer(IOpenSSLClientConnectionCreator)
class MTLSClientCreator:
    """
    Client-side connection creator: presents the node (or client)
    certificate, verifies the server's chain against the trusted CAs and its
    names with an L{IPeerVerifier}, and sends SNI for a DNS host name.
    """

    def __init__(
        self,
        options: CertificateOptions,
        *,
        verifier: IPeerVerifier,
        serverName: str | None,
    ) -> None:
        self.options = options
        self.verifier = verifier
        self.serverName = serverName
        self._serverNameBytes = None if serverName is None else serverName.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """
        Create the OpenSSL connection for one outgoing TLS connection.
        """
        connection = self.options.clientConnectionForTLS(tlsProtocol)
        if self._serverNameBytes is not None:
            connection.set_tlsext_host_name(self._serverNameBytes)
        connection.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            _verifyCallback(tlsProtocol, self.verifier),
        )
        return connection


def serverContextFactory(
    bundle: Bundle,
    *,
    requireClientCert: bool = True,
    trustClientCA: bool = False,
    tls13Only: bool = False,
    acceptableProtocols: Sequence[bytes | str] | None = None,
    peerVerifier: IPeerVerifier | None = None,
) -> MTLSServerCreator:
    """
    Build the server side of mTLS.

    @param requireClientCert: refuse clients without a certificate (default).
        When false, a certificate a client does present is still verified.
    @param trustClientCA: also accept client certificates issued by
        C{client-ca.crt} (tunnel clients); otherwise only certificates from
        C{ca.crt} (other nodes) are accepted.
    @param tls13Only: refuse TLS 1.2.
    @param acceptableProtocols: ALPN protocols in preference order, e.g.
        C{[b"h2", b"http/1.1"]}.
    @param peerVerifier: an extra rule on the client's names (e.g. a
        L{PeerPolicy} with a SPIFFE trust domain).
    @raise BundleError: if C{trustClientCA} is asked of a bundle without a
        client CA.
    """
    trust = list(bundle.trustRoots)
    if trustClientCA:
        if bundle.clientCACert is None:
            raise BundleError(
                f"{bundle.source or 'bundle'}: no client CA certificate to trust client certificates with"
            )
        trust.append(bundle.clientCACert)
    options = _options(
        bundle,
        trust,
        presentCertificate=True,
        tls13Only=tls13Only,
        acceptableProtocols=acceptableProtocols,
    )
    return MTLSServerCreator(options, requireClientCert=requireClientCert, verifier=peerVerifier)


def clientContextFactory(
    bundle: Bundle,
    *,
    hostname: str | None = None,
    ipAddress: str | None = None,
    spiffeId: str | None = None,
    tls13Only: bool = False,
    acceptableProtocols: Sequence[bytes | str] | None = None,
    useClientCert: bool = True,
    peerVerifier: IPeerVerifier | None = None,
) -> MTLSClientCreator:
    """
    Build the client side of mTLS.

    The server's certificate must chain to C{ca.crt} and carry every name
    given: C{hostname} (a DNS SAN, wildcards allowed; an IP literal here is
    checked as an IP SAN), C{ipAddress} (an IP SAN), C{spiffeId} (an exact
    SPIFFE ID, or a trust domain C{spiffe://example.org}).  With no name
    given, any certificate from the CA is accepted.

    @param useClientCert: present C{node.crt} (default); false for a client
        without a certificate.
    @param peerVerifier: replaces the rule built from the names above.
    @raise ValueError: for a malformed IP address or SPIFFE ID.
    """
    verifier = peerVerifier
    if verifier is None:
        verifier = PeerPolicy(hostname=hostname, ipAddress=ipAddress, spiffeId=spiffeId)
    serverName = None
    if hostname is not None and not isIPAddress(hostname):
        serverName = hostname
    options = _options(
        bundle,
        bundle.trustRoots,
        presentCertificate=useClientCert,
        tls13Only=tls13Only,
        acceptableProtocols=acceptableProtocols,
    )
    return MTLSClientCreator(options, verifier=verifier, serverName=serverName)


def publicServerContextFactory(
    certificate: x509.Certificate,
    key: PrivateKey,
    *,
    chain: Sequence[x509.Certificate] = (),
    tls13Only: bool = False,
    acceptableProtocols: Sequence[bytes | str] | None = None,
) -> CertificateOptions:
    """
    Server options for a public listener (no client certificates asked for),
    e.g. with an ACME or self-signed certificate; TLS 1.2+ (or 1.3 only).
    """
    return CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(certificate),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain],
        raiseMinimumTo=TLSVersion.TLSv1_3 if tls13Only else TLSVersion.TLSv1_2,
        acceptableProtocols=_protocols(acceptableProtocols),
    )


@implementer(IPolicyForHTTPS)
class MTLSPolicyForHTTPS:
    """
    An HTTPS policy for L{twisted.web.client.Agent} (and treq) speaking mTLS
    with a bundle: each server is verified against the host of the URL (a
    DNS or IP SAN) and, if given, a SPIFFE ID or trust domain.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        spiffeId: str | None = None,
        tls13Only: bool = False,
        useClientCert: bool = True,
    ) -> None:
        if spiffeId is not None:
            PeerPolicy(spiffeId=spiffeId)
        self.bundle = bundle
        self.spiffeId = spiffeId
        self.tls13Only = tls13Only
        self.useClientCert = useClientCert

    def creatorForNetloc(self, hostname: bytes, port: int) -> MTLSClientCreator:
        """
        The connection creator for C{https://hostname:port/}.
        """
        host = hostname.decode("idna") if isinstance(hostname, bytes) else hostname
        return clientContextFactory(
            self.bundle,
            hostname=host.strip("[]"),
            spiffeId=self.spiffeId,
            tls13Only=self.tls13Only,
            useClientCert=self.useClientCert,
            acceptableProtocols=[b"http/1.1"],
        )


def peerCertificate(transport: Any) -> x509.Certificate | None:
    """
    The certificate the peer of a TLS C{transport} presented, or L{None}.
    """
    getPeerCertificate = getattr(transport, "getPeerCertificate", None)
    if getPeerCertificate is None:
        return None
    certificate = getPeerCertificate()
    if certificate is None:
        return None
    if isinstance(certificate, crypto.X509):
        return certificate.to_cryptography()
    if isinstance(certificate, x509.Certificate):
        return certificate
    return None


def peerIdentity(transport: Any) -> PeerIdentity:
    """
    The names in the certificate the peer of a TLS C{transport} presented,
    so a daemon can derive the peer node's identity from its certificate.

    @raise VerificationError: if the peer presented no certificate (or the
        transport is not TLS).
    """
    certificate = peerCertificate(transport)
    if certificate is None:
        raise VerificationError("peer presented no certificate")
    return identityOf(certificate)


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    Wrap any stream server endpoint (TCP, unix) in TLS with a server
    connection creator.
    """

    def __init__(
        self,
        wrapped: IStreamServerEndpoint,
        creator: IOpenSSLServerConnectionCreator,
        clock: IReactorTime | None = None,
    ) -> None:
        self.wrapped = wrapped
        self.creator = creator
        self.clock = clock

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with C{protocolFactory} wrapped in TLS.
        """
        return self.wrapped.listen(TLSMemoryBIOFactory(self.creator, False, protocolFactory, self.clock))


def tlsServerEndpoint(
    reactor: Any, description: str, creator: IOpenSSLServerConnectionCreator
) -> TLSServerEndpoint:
    """
    A TLS server endpoint from an endpoint string (C{tcp:8443:interface=::1},
    C{unix:/run/x.sock}) and a creator from L{serverContextFactory}.
    """
    return TLSServerEndpoint(serverFromString(reactor, description), creator, reactor)


def tlsClientEndpoint(
    reactor: Any, description: str, creator: IOpenSSLClientConnectionCreator
) -> IStreamClientEndpoint:
    """
    A TLS client endpoint from an endpoint string (C{tcp:host=...:port=...})
    and a creator from L{clientContextFactory}.
    """
    return wrapClientTLS(creator, clientFromString(reactor, description))
