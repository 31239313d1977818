"""
The one TLS port: certificate choice by SNI, protocol choice by ALPN.

  - SNI an apex or a name under one: a public certificate, no client
    certificate asked; ALPN C{h2}, C{http/1.1} or C{specter-tcp/1}.  The
    apex and names one label under it get the apex's ACME certificate once
    there is one (L{PublicCertificates.install}), everything else under an
    apex the self-signed certificate of all apexes.
  - any other SNI (or none): the node certificate, a client certificate
    asked for and verified against C{ca.crt} and C{client-ca.crt}; ALPN
    C{specter-tunnel/1} (client certificate from the client CA required),
    C{specter-chord/1} (node certificate required) or the visitor ALPNs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from suite.daemon import ConfigError
from suite.netutil import noDelay
from suite.specter.gateway.core import TCP_ALPN, TUNNEL_ALPN, Gateway, GatewayLink
from suite.specter.gateway.overlay import OVERLAY_ALPN, OverlayLink
from suite.specter.gateway.proxyproto import headerless
from suite.specter.gateway.visitor import HTTPVisitor, TCPVisitor
from suite.specter.tunnel.mux import eagerWrites
from suite.specter.tunnel.twistedio import LeanTLSTransport, TurnWrites

__all__ = ["GatewayFactory", "PublicCertificates", "makeTLSFactory", "selfSignedCertificate", "VISITOR_ALPNS"]

log = Logger()
VISITOR_ALPNS = [b"h2", b"http/1.1"]


def selfSignedCertificate(directory: str, apexes: list[str]) -> tuple[Any, Any, str]:
    """
    Load or mint the self-signed certificate for C{apexes} (and their
    wildcards) kept in C{directory}; return C{(cert, key, certPath)}.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from suite.pki.keys import certificateToPEM, keyToPEM
    from suite.pki.mint import mintSelfSigned

    names = []
    for apex in apexes:
        names += [apex, f"*.{apex}"]
    os.makedirs(directory, exist_ok=True)
    certPath = os.path.join(directory, "selfsigned.crt")
    keyPath = os.path.join(directory, "selfsigned.key")
    if os.path.exists(certPath) and os.path.exists(keyPath):
        with open(certPath, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(keyPath, "rb") as f:
            key = load_pem_private_key(f.read(), None)
        try:
            sans = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            sans = []
        if sorted(sans) == sorted(names):
            return cert, key, certPath
    try:
        cert, key = mintSelfSigned(names, days=365)
    except ValueError as e:
        raise ConfigError(f"--apex: {e}") from None
    fd = os.open(keyPath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(keyToPEM(key))
    with open(certPath, "wb") as f:
        f.write(certificateToPEM(cert))
    return cert, key, certPath


#: A certificate for aioquic: (leaf, intermediates, private key).
QuicMaterial = tuple[Any, list[Any], Any]


class PublicCertificates:
    """
    The OpenSSL contexts of the public names, chosen by SNI: the
    self-signed one for every apex until an apex's own certificate (ACME:
    the apex and its wildcard) is installed.  Installing builds a new
    context and makes it the one new handshakes get; connections made with
    the previous one keep it.

    @ivar notAfter: expiry (seconds since the epoch) of each installed
        certificate, by apex.
    """

    PROTOCOLS = [*VISITOR_ALPNS, TCP_ALPN]

    def __init__(self, apexes: list[str], certificate: Any, key: Any) -> None:
        self.apexes = [a.lower().rstrip(".") for a in apexes]
        self.default = self._context(certificate, key, [])
        #: The same certificates as (leaf, chain, key) for QUIC (aioquic
        #: takes cryptography objects, not OpenSSL contexts).
        self.quicDefault: QuicMaterial = (certificate, [], key)
        self.quicByName: dict[str, QuicMaterial] = {}
        self.byApex: dict[str, SSL.Context] = {}
        #: Contexts of validated custom domains (exact names).
        self.byDomain: dict[str, SSL.Context] = {}
        self.notAfter: dict[str, float] = {}

    def _context(self, certificate: Any, key: Any, chain: list[Any]) -> SSL.Context:
        from suite.pki.tls import publicServerContextFactory

        options = publicServerContextFactory(
            certificate, key, chain=chain, acceptableProtocols=self.PROTOCOLS
        )
        context: SSL.Context = options.getContext()
        return context

    def contextFor(self, name: str) -> SSL.Context | None:
        """
        The context for SNI C{name}, or L{None} if it is not a public name.
        """
        name = name.rstrip(".").lower()
        custom = self.byDomain.get(name)
        if custom is not None:
            return custom
        for apex in self.apexes:
            if name == apex:
                return self.byApex.get(apex, self.default)
            if name.endswith("." + apex):
                label = name[: -len(apex) - 1]
                if "." not in label:
                    return self.byApex.get(apex, self.default)
                return self.default
        return None

    def quicMaterialFor(self, name: str | None) -> QuicMaterial | None:
        """
        What a QUIC handshake with SNI C{name} presents: the same choice as
        L{contextFor}, or L{None} for a name HTTP/3 does not serve (no SNI,
        or not a public name: the node certificate is TCP-only).
        """
        if not name:
            return None
        name = name.rstrip(".").lower()
        custom = self.quicByName.get(name)
        if custom is not None and name in self.byDomain:
            return custom
        for apex in self.apexes:
            if name == apex or (name.endswith("." + apex) and "." not in name[: -len(apex) - 1]):
                return self.quicByName.get(apex, self.quicDefault)
            if name.endswith("." + apex):
                return self.quicDefault
        return None

    def _load(self, name: str, chainPEM: bytes, keyPEM: bytes) -> tuple[SSL.Context, float]:
        """
        A context serving this chain and key, and the leaf's expiry.

        @raise ValueError: if the PEM data does not parse or the key does not
            belong to the certificate.
        """
        chain, key = loadChain(chainPEM, keyPEM)
        try:
            context = self._context(chain[0], key, chain[1:])
            context.check_privatekey()
        except SSL.Error as e:
            raise ValueError(f"the certificate of {name} does not match its key: {e}") from None
        self.quicByName[name] = (chain[0], chain[1:], key)
        return context, chain[0].not_valid_after_utc.timestamp()

    def install(self, apex: str, chainPEM: bytes, keyPEM: bytes) -> None:
        """
        Serve C{apex} and the names one label under it with this
        certificate (PEM chain, leaf first, and its private key) from the
        next handshake on.

        @raise ValueError: if C{apex} is not one of the apexes, or the key
            does not belong to the certificate.
        """
        apex = apex.lower().rstrip(".")
        if apex not in self.apexes:
            raise ValueError(f"{apex!r} is not an apex of this gateway")
        self.byApex[apex], self.notAfter[apex] = self._load(apex, chainPEM, keyPEM)

    def installCustom(self, domain: str, chainPEM: bytes, keyPEM: bytes) -> None:
        """
        Serve the custom domain C{domain} (that exact name) with this
        certificate from the next handshake on.

        @raise ValueError: if C{domain} is an apex or under one, or the key
            does not belong to the certificate.
        """
        domain = domain.lower().rstrip(".")
        if any(domain == a or domain.endswith("." + a) for a in self.apexes):
            raise ValueError(f"{domain!r} is an apex name, not a custom domain")
        self.byDomain[domain], self.notAfter[domain] = self._load(domain, chainPEM, keyPEM)

    def uninstallCustom(self, domain: str) -> None:
        """
        Stop serving the custom domain C{domain} (new handshakes get the
        node certificate).
        """
        domain = domain.lower().rstrip(".")
        self.byDomain.pop(domain, None)
        self.quicByName.pop(domain, None)
        self.notAfter.pop(domain, None)

    def serves(self, name: str) -> bool:
        """
        Whether the ACME certificate stored under C{name} is installed.
        """
        return name in self.byApex or name in self.byDomain


def loadChain(chainPEM: bytes, keyPEM: bytes) -> tuple[list[x509.Certificate], Any]:
    """
    Parse a PEM chain (leaf first) and its private key.

    @raise ValueError: if either does not parse.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return x509.load_pem_x509_certificates(chainPEM), load_pem_private_key(keyPEM, None)


def makeTLSFactory(
    gateway: Gateway,
    bundle: Any,
    publicCert: Any,
    publicKey: Any,
    wrapped: Factory,
    extraALPNs: list[bytes],
    clock: Any = None,
    certificates: PublicCertificates | None = None,
) -> TLSMemoryBIOFactory:
    """
    The TLS wrapper of the gateway port; public names get their context
    from C{certificates} (made from C{publicCert}/C{publicKey} if not given).
    """
    from suite.pki.tls import serverContextFactory

    if certificates is None:
        certificates = PublicCertificates(gateway.config.apexes, publicCert, publicKey)
    nodeCreator = serverContextFactory(
        bundle,
        requireClientCert=False,
        trustClientCA=bundle.clientCACert is not None,
        acceptableProtocols=[TUNNEL_ALPN, OVERLAY_ALPN, *extraALPNs, *VISITOR_ALPNS, TCP_ALPN],
    )
    nodeContext = nodeCreator.options.getContext()

    def chooseCertificate(connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if not name:
            return
        text = name.decode("ascii", "replace")
        if gateway.isPublicName(text):
            context = certificates.contextFor(text)
        else:
            context = certificates.byDomain.get(text.rstrip(".").lower())
        if context is not None:
            connection.set_context(context)
            connection.set_verify(SSL.VERIFY_NONE, None)

    nodeContext.set_tlsext_servername_callback(chooseCertificate)
    factory: Any = TLSMemoryBIOFactory(nodeCreator, False, wrapped, clock)
    factory.protocol = LeanTLSTransport
    if clock is None:
        from twisted.internet import reactor as clock
    factory.turnWrites = TurnWrites(clock)
    # what a link read answered leaves when the read is handled (after the
    # HTTP/2 front end, registered before, queued its frames)
    gateway.afterLinkRead.append(factory.turnWrites.flush)
    return factory  # type: ignore[no-any-return]


def _issuedBy(certificate: x509.Certificate | None, issuer: x509.Certificate | None) -> bool:
    return certificate is not None and issuer is not None and certificate.issuer == issuer.subject


@implementer(IHandshakeListener)
class _Dispatch(Protocol):
    """
    Waits for the TLS handshake, then hands the connection to the protocol
    its ALPN names.
    """

    transport: Any = None

    def __init__(self, factory: GatewayFactory) -> None:
        self.factory = factory
        self.timer: Any = None

    def connectionMade(self) -> None:
        gateway = self.factory.gateway
        self.timer = gateway.clock.callLater(gateway.config.headTimeout, self._timedOut)

    def _timedOut(self) -> None:
        self.timer = None
        self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def handshakeCompleted(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        tls = self.transport
        try:
            proto = self.factory.protocolFor(tls.negotiatedProtocol, tls)
        except Exception:  # per connection: logged, closed
            log.failure("choosing the protocol of a gateway connection")
            proto = None
        if proto is None:
            tls.loseConnection()
            return
        tls.wrappedProtocol = proto
        proto.makeConnection(tls)

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()


class GatewayFactory(Factory):
    """
    Builds a connection's protocol from its negotiated ALPN.

    @ivar h2: builds the protocol of an HTTP/2 visitor (an
        L{suite.specter.gateway.h2.H2Front}); None: C{h2} is refused.
    @ivar extra: more ALPN protocols (name -> factory of a protocol given
        the TLS transport), e.g. the ring's C{specter-chord/1}.
    """

    def __init__(
        self, gateway: Gateway, bundle: Any, h2: Any = None, transportBuffer: int | None = None
    ) -> None:
        self.gateway = gateway
        self.bundle = bundle
        self.h2 = h2
        self.transportBuffer = transportBuffer
        self.extra: dict[bytes, Callable[[Any], Protocol | None]] = {}

    def buildProtocol(self, addr: Any) -> Protocol:
        proto = _Dispatch(self)
        proto.factory = self
        return proto

    def _tuneBuffer(self, tls: Any) -> None:
        noDelay(tls)
        eagerWrites(tls)
        if self.transportBuffer:
            inner = getattr(tls, "transport", None)
            if inner is not None and hasattr(inner, "bufferSize"):
                inner.bufferSize = self.transportBuffer

    def protocolFor(self, alpn: bytes | None, tls: Any) -> Protocol | None:
        """
        The protocol for a connection that negotiated C{alpn}, or L{None}
        to close it.
        """
        from suite.pki.peer import peerCertificate

        self._tuneBuffer(tls)
        if alpn in (None, b"http/1.1", b"h2", TCP_ALPN) and headerless(tls):
            log.warn("visitor {peer} refused: no PROXY protocol header", peer=tls.getPeer())
            return None
        if alpn in (None, b"http/1.1"):
            return HTTPVisitor(self.gateway)
        if alpn == b"h2":
            if self.h2 is None:
                return None
            proto: Protocol = self.h2.buildProtocol(tls.getPeer())
            return proto
        if alpn == TCP_ALPN:
            return TCPVisitor(self.gateway)
        if alpn == TUNNEL_ALPN:
            cert = peerCertificate(tls)
            if not _issuedBy(cert, self.bundle.clientCACert):
                log.warn(
                    "tunnel link from {peer} refused: no client certificate from the client CA",
                    peer=tls.getPeer(),
                )
                return None
            assert cert is not None
            names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            owner = str(names[0].value) if names else cert.serial_number
            return GatewayLink(self.gateway, str(owner))
        if alpn == OVERLAY_ALPN:
            if not _issuedBy(peerCertificate(tls), self.bundle.caCert):
                log.warn("overlay link from {peer} refused: no node certificate", peer=tls.getPeer())
                return None
            return OverlayLink(self.gateway, dialler=False)
        build = self.extra.get(alpn)
        if build is not None:
            if not _issuedBy(peerCertificate(tls), self.bundle.caCert):
                log.warn(
                    "{alpn} connection from {peer} refused: no node certificate",
                    alpn=alpn.decode(),
                    peer=tls.getPeer(),
                )
                return None
            return build(tls)
        return None
