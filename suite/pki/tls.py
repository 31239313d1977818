"""
mTLS connection creators built on pyOpenSSL and Twisted's
L{CertificateOptions}.

Servers present C{node.crt}, require a client certificate by default and
trust C{ca.crt} (plus C{client-ca.crt} with C{trustClientCA}).  Clients
present C{node.crt}, trust C{ca.crt}, and check the server's names (DNS and
IP SANs through service_identity, SPIFFE URI SANs through
L{suite.pki.verify}).  TLS 1.2 is the minimum; C{tls13Only} raises it to 1.3.

The creators plug into L{TLSMemoryBIOFactory}, C{reactor.listenSSL},
C{SSL4ServerEndpoint}, L{wrapClientTLS}, or L{suite.pki.endpoints}.  Their
options come from L{suite.pki.tlsoptions}, their per-connection checks from
L{suite.pki.verifycallback}; L{suite.pki.peer} tells who the peer is.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from suite.netutil import isIPAddress
from suite.pki.bundle import Bundle, BundleError
from suite.pki.interfaces import IPeerVerifier
from suite.pki.keys import PrivateKey
from suite.pki.tlsoptions import certificateOptions, minimumVersion, presentedCredentials, protocolList
from suite.pki.verify import PeerPolicy
from suite.pki.verifycallback import verifyCallback

__all__ = [
    "serverContextFactory",
    "clientContextFactory",
    "publicServerContextFactory",
    "MTLSServerCreator",
    "MTLSClientCreator",
    "MTLSPolicyForHTTPS",
]


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
        connection.set_verify(self._mode, verifyCallback(tlsProtocol, self.verifier, sendAlert=True))
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
            verifyCallback(tlsProtocol, self.verifier),
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
    options = certificateOptions(
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
    options = certificateOptions(
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
        raiseMinimumTo=minimumVersion(tls13Only),
        acceptableProtocols=protocolList(acceptableProtocols),
        **presentedCredentials(key, certificate, chain),
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
