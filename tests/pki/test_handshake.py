"""
Real TLS handshakes on loopback: a Twisted server endpoint with
L{serverContextFactory} and a client endpoint with L{clientContextFactory},
over real sockets.
"""

from __future__ import annotations

from typing import Any

import attrs
import treq
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate as TwistedCertificate
from twisted.internet.ssl import CertificateOptions, TLSVersion, trustRootFromCertificates
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.pki.bundle import Bundle, BundleError
from suite.pki.endpoints import TLSServerEndpoint, tlsClientEndpoint, tlsServerEndpoint
from suite.pki.keys import certificateToPEM
from suite.pki.mint import mintCertificate
from suite.pki.peer import peerIdentity
from suite.pki.tls import (
    MTLSClientCreator,
    MTLSPolicyForHTTPS,
    clientContextFactory,
    publicServerContextFactory,
    serverContextFactory,
)
from suite.pki.verify import PeerIdentity, PeerPolicy, VerificationError

from . import helpers
from .helpers import SPIFFE_CLIENT, SPIFFE_SERVER


def _portOf(port: Any) -> int:
    return int(port.getHost().port)


def _version(transport: Any) -> str:
    return str(transport.getHandle().get_protocol_version_name())


@implementer(IHandshakeListener)
class _Greeter(Protocol):
    """
    Server side: once the handshake is done, record the client's identity
    and greet it, so the client only hears back if the server accepted it.
    """

    factory: _ServerFactory

    def handshakeCompleted(self) -> None:
        transport: Any = self.transport
        try:
            self.factory.result.clientIdentity = peerIdentity(transport)
        except VerificationError:
            self.factory.result.clientIdentity = None
        self.factory.result.serverALPN = transport.negotiatedProtocol
        self.factory.result.serverVersion = _version(transport)
        transport.write(b"hello")

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.factory.result.serverLost = reason
        self.factory.lost.callback(None)


class _ServerFactory(Factory):
    protocol = _Greeter  # type: ignore[assignment]

    def __init__(self, result: _Result) -> None:
        self.result = result
        self.lost: Deferred[None] = Deferred()


@implementer(IHandshakeListener)
class _Client(Protocol):
    """
    Client side: fires C{done} with the greeting, or with the reason the
    connection was lost before it.
    """

    def __init__(self, result: _Result) -> None:
        self.result = result
        self.done: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def handshakeCompleted(self) -> None:
        transport: Any = self.transport
        self.result.serverIdentity = peerIdentity(transport)
        self.result.clientALPN = transport.negotiatedProtocol
        self.result.clientVersion = _version(transport)

    def dataReceived(self, data: bytes) -> None:
        self.result.greeting += data
        if not self.done.called:
            self.done.callback(None)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.result.clientLost = reason
        if not self.done.called:
            self.done.callback(None)
        self.lost.callback(None)


@attrs.define
class _Result:
    greeting: bytes = b""
    clientIdentity: PeerIdentity | None = None
    serverIdentity: PeerIdentity | None = None
    clientLost: Failure | None = None
    serverLost: Failure | None = None
    clientALPN: bytes | None = None
    serverALPN: bytes | None = None
    clientVersion: str | None = None
    serverVersion: str | None = None

    @property
    def accepted(self) -> bool:
        return self.greeting == b"hello"


class _HandshakeCase(TestCase):
    """
    Each test makes real connections on 127.0.0.1 and tears them down.
    """

    timeout = 20

    async def handshake(self, server: Any, client: IOpenSSLClientConnectionCreator) -> _Result:
        """
        Listen with C{server} on an OS-chosen loopback port, connect with
        C{client}, wait for the greeting or the failure, then close both
        ends.
        """
        result = _Result()
        serverFactory = _ServerFactory(result)
        endpoint = TLSServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), server, reactor)
        port = await endpoint.listen(serverFactory)
        try:
            clientEndpoint = wrapClientTLS(client, TCP4ClientEndpoint(reactor, "127.0.0.1", _portOf(port)))
            protocol = await clientEndpoint.connect(Factory.forProtocol(lambda: _Client(result)))
            assert isinstance(protocol, _Client)
            await protocol.done
            if not protocol.lost.called:
                protocol.transport.abortConnection()  # type: ignore[union-attr]
            await protocol.lost
            await serverFactory.lost
        finally:
            await port.stopListening()  # type: ignore[misc]
        return result

    def assertRefused(self, result: _Result) -> None:
        """
        The server never greeted the client, both ends saw the connection
        fail, and the server recorded no accepted client identity.
        """
        self.assertEqual(result.greeting, b"")
        self.assertIsNotNone(result.clientLost)
        self.assertIsNotNone(result.serverLost)
        self.assertIsNone(result.clientIdentity)


class HandshakeTests(_HandshakeCase):
    """
    Trust, names, versions and ALPN over real loopback handshakes.
    """

    async def test_rightCAAcceptedBothWays(self) -> None:
        """
        A server and a client from the same CA complete the handshake, and
        each side sees the other's identity from its certificate.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle()),
            clientContextFactory(helpers.clientBundle(), hostname="server.example"),
        )
        self.assertTrue(result.accepted)
        assert result.clientIdentity is not None and result.serverIdentity is not None
        self.assertEqual(result.clientIdentity.commonName, "client.example")
        self.assertEqual(result.clientIdentity.spiffeId, SPIFFE_CLIENT)
        self.assertEqual(result.serverIdentity.dnsNames, ("server.example", "*.wild.example"))
        self.assertEqual(result.serverIdentity.ipAddresses, ("127.0.0.1",))
        self.assertEqual(result.serverIdentity.uris, (SPIFFE_SERVER,))

    async def test_foreignServerRefused(self) -> None:
        """
        A client refuses a server whose certificate comes from a CA it does
        not trust, even though the names match.
        """
        result = await self.handshake(
            serverContextFactory(helpers.foreignBundle()),
            clientContextFactory(helpers.clientBundle(), hostname="server.example"),
        )
        self.assertRefused(result)
        assert result.clientLost is not None
        self.assertTrue(result.clientLost.check(VerificationError))
        self.assertIn("not issued by a trusted CA", str(result.clientLost.value))
        self.assertIsNone(result.serverIdentity)

    async def test_foreignClientRefused(self) -> None:
        """
        A server refuses a client certificate from a CA it does not trust.
        """
        foreign = helpers.foreignBundle()
        # The foreign client trusts our CA so that only the server can refuse.
        client = attrs.evolve(foreign, caCert=helpers.nodeCA()[0])
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle()),
            clientContextFactory(client, hostname="server.example"),
        )
        self.assertRefused(result)
        assert result.serverLost is not None
        self.assertTrue(result.serverLost.check(VerificationError))
        self.assertIn("not issued by a trusted CA", str(result.serverLost.value))

    async def test_expiredServerRefused(self) -> None:
        """
        A client refuses a server certificate from the right CA that has
        expired.
        """
        result = await self.handshake(
            serverContextFactory(helpers.expiredBundle()),
            clientContextFactory(helpers.clientBundle(), hostname="server.example"),
        )
        self.assertRefused(result)
        assert result.clientLost is not None
        self.assertTrue(result.clientLost.check(VerificationError))
        self.assertEqual(
            str(result.clientLost.value), "peer certificate has expired (OpenSSL verify error 10)"
        )

    async def test_expiredClientRefused(self) -> None:
        """
        A server refuses a client certificate from the right CA that has
        expired.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle()),
            clientContextFactory(helpers.expiredBundle(), hostname="server.example"),
        )
        self.assertRefused(result)
        assert result.serverLost is not None
        self.assertTrue(result.serverLost.check(VerificationError))
        self.assertIn("has expired", str(result.serverLost.value))

    async def test_wrongDNSNameRefused(self) -> None:
        """
        A client refuses a server from the right CA whose certificate does
        not carry the expected DNS name, with a message naming both.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle()),
            clientContextFactory(helpers.clientBundle(), hostname="other.example"),
        )
        self.assertRefused(result)
        assert result.clientLost is not None
        self.assertTrue(result.clientLost.check(VerificationError))
        message = str(result.clientLost.value)
        self.assertIn("'other.example'", message)
        self.assertIn("DNS:server.example", message)

    async def test_wildcardDNSNameAccepted(self) -> None:
        """
        A wildcard DNS SAN matches one label, as service_identity rules say.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle()),
            clientContextFactory(helpers.clientBundle(), hostname="node7.wild.example"),
        )
        self.assertTrue(result.accepted)

    async def test_ipAddressAccepted(self) -> None:
        """
        A client expecting 127.0.0.1 accepts a server with that IP SAN,
        whether it is passed as C{ipAddress} or as C{hostname}.
        """
        kwargsList: list[dict[str, Any]] = [{"ipAddress": "127.0.0.1"}, {"hostname": "127.0.0.1"}]
        for kwargs in kwargsList:
            result = await self.handshake(
                serverContextFactory(helpers.serverBundle()),
                clientContextFactory(helpers.clientBundle(), **kwargs),
            )
            self.assertTrue(result.accepted, kwargs)

    async def test_wrongIPAddressRefused(self) -> None:
        """
        A client expecting another IP address refuses the server.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle()),
            clientContextFactory(helpers.clientBundle(), ipAddress="10.1.2.3"),
        )
        self.assertRefused(result)
        assert result.clientLost is not None
        self.assertTrue(result.clientLost.check(VerificationError))
        self.assertIn("10.1.2.3", str(result.clientLost.value))

    async def test_rightSpiffeIdAccepted(self) -> None:
        """
        A client expecting the server's exact SPIFFE ID, or its trust domain,
        accepts it.
        """
        for spiffeId in (SPIFFE_SERVER, "spiffe://example.org"):
            result = await self.handshake(
                serverContextFactory(helpers.serverBundle()),
                clientContextFactory(helpers.clientBundle(), spiffeId=spiffeId),
            )
            self.assertTrue(result.accepted, spiffeId)

    async def test_wrongSpiffeIdRefused(self) -> None:
        """
        A client refuses a server whose SPIFFE ID differs (another path, or
        another trust domain), naming the expected and the found IDs.
        """
        for spiffeId in ("spiffe://example.org/ns/prod/other", "spiffe://other.org"):
            result = await self.handshake(
                serverContextFactory(helpers.serverBundle()),
                clientContextFactory(helpers.clientBundle(), spiffeId=spiffeId),
            )
            self.assertRefused(result)
            assert result.clientLost is not None
            self.assertTrue(result.clientLost.check(VerificationError))
            self.assertIn(spiffeId, str(result.clientLost.value))
            self.assertIn(SPIFFE_SERVER, str(result.clientLost.value))

    async def test_allNamesMustMatch(self) -> None:
        """
        With a host name and a SPIFFE ID given, both must match.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle()),
            clientContextFactory(
                helpers.clientBundle(), hostname="server.example", spiffeId="spiffe://example.org/x"
            ),
        )
        self.assertRefused(result)

    async def test_serverPeerVerifier(self) -> None:
        """
        A server with a SPIFFE trust-domain rule accepts a client in that
        domain and refuses one with another SPIFFE ID.
        """
        server = serverContextFactory(
            helpers.serverBundle(), peerVerifier=PeerPolicy(spiffeId="spiffe://example.org")
        )
        good = await self.handshake(server, clientContextFactory(helpers.clientBundle()))
        self.assertTrue(good.accepted)
        caCert, caKey = helpers.nodeCA()
        cert, key = mintCertificate(caCert, caKey, "stranger", uris=["spiffe://other.org/x"])
        bad = await self.handshake(server, clientContextFactory(helpers.bundleWith(cert, key)))
        self.assertRefused(bad)

    async def test_clientWithoutCertificateRefused(self) -> None:
        """
        An mTLS server refuses a client that presents no certificate.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle()),
            clientContextFactory(helpers.clientBundle(), useClientCert=False),
        )
        self.assertRefused(result)
        assert result.serverLost is not None
        self.assertTrue(result.serverLost.check(SSL.Error))

    async def test_optionalClientCertificate(self) -> None:
        """
        With C{requireClientCert=False} a client without a certificate is
        accepted, and the server sees no peer identity.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle(), requireClientCert=False),
            clientContextFactory(helpers.clientBundle(), useClientCert=False),
        )
        self.assertTrue(result.accepted)
        self.assertIsNone(result.clientIdentity)

    async def test_clientCAOnlyWhenTrusted(self) -> None:
        """
        A client certificate from the client CA is refused by a default
        server and accepted by one with C{trustClientCA=True}.
        """
        serverBundle = helpers.serverBundle()
        certPEM, keyPEM = _mintClient(serverBundle)
        tunnelClient = _clientBundleFromPEM(serverBundle, certPEM, keyPEM)
        refused = await self.handshake(
            serverContextFactory(serverBundle),
            clientContextFactory(tunnelClient, hostname="server.example"),
        )
        self.assertRefused(refused)
        accepted = await self.handshake(
            serverContextFactory(serverBundle, trustClientCA=True),
            clientContextFactory(tunnelClient, hostname="server.example"),
        )
        self.assertTrue(accepted.accepted)
        assert accepted.clientIdentity is not None
        self.assertEqual(accepted.clientIdentity.commonName, "tunnel-client-1")

    async def test_defaultNegotiatesTLS13(self) -> None:
        """
        Two default ends negotiate TLS 1.3.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle()),
            clientContextFactory(helpers.clientBundle()),
        )
        self.assertEqual((result.clientVersion, result.serverVersion), ("TLSv1.3", "TLSv1.3"))

    async def test_tls12ClientAcceptedByDefault(self) -> None:
        """
        A default server accepts a TLS 1.2-only client (TLS 1.2 is the
        minimum, not excluded), and both ends verify each other.
        """
        result = await self.handshake(serverContextFactory(helpers.serverBundle()), _tls12Client())
        self.assertTrue(result.accepted)
        self.assertEqual(result.serverVersion, "TLSv1.2")
        assert result.clientIdentity is not None
        self.assertEqual(result.clientIdentity.commonName, "client.example")

    async def test_tls13OnlyRefusesTLS12Client(self) -> None:
        """
        A C{tls13Only} server refuses a client that speaks at most TLS 1.2.
        """
        result = await self.handshake(
            serverContextFactory(helpers.serverBundle(), tls13Only=True), _tls12Client()
        )
        self.assertRefused(result)
        self.assertIsNone(result.serverIdentity)

    async def test_tls13OnlyClientAgainstTLS12Server(self) -> None:
        """
        A C{tls13Only} client refuses a server that speaks at most TLS 1.2.
        """
        bundle = helpers.serverBundle()
        server = serverContextFactory(bundle)
        server.options = CertificateOptions(
            privateKey=server.options.privateKey,
            certificate=server.options.certificate,
            trustRoot=_trust(bundle),
            lowerMaximumSecurityTo=TLSVersion.TLSv1_2,
        )
        result = await self.handshake(server, clientContextFactory(helpers.clientBundle(), tls13Only=True))
        self.assertRefused(result)

    async def test_alpnNegotiation(self) -> None:
        """
        ALPN picks the server's most preferred protocol the client offers;
        both ends see the same choice.
        """
        server = serverContextFactory(helpers.serverBundle(), acceptableProtocols=[b"h2", b"http/1.1"])
        result = await self.handshake(
            server, clientContextFactory(helpers.clientBundle(), acceptableProtocols=["http/1.1"])
        )
        self.assertEqual((result.clientALPN, result.serverALPN), (b"http/1.1", b"http/1.1"))
        result = await self.handshake(
            server,
            clientContextFactory(helpers.clientBundle(), acceptableProtocols=[b"h2", b"http/1.1"]),
        )
        self.assertEqual((result.clientALPN, result.serverALPN), (b"h2", b"h2"))

    async def test_endpointStrings(self) -> None:
        """
        L{tlsServerEndpoint} and L{tlsClientEndpoint} build TLS endpoints
        from endpoint strings.
        """
        result = _Result()
        serverFactory = _ServerFactory(result)
        endpoint = tlsServerEndpoint(
            reactor, "tcp:0:interface=127.0.0.1", serverContextFactory(helpers.serverBundle())
        )
        port = await endpoint.listen(serverFactory)
        self.addCleanup(port.stopListening)
        client = tlsClientEndpoint(
            reactor,
            f"tcp:host=127.0.0.1:port={_portOf(port)}",
            clientContextFactory(helpers.clientBundle(), ipAddress="127.0.0.1"),
        )
        protocol = await client.connect(Factory.forProtocol(lambda: _Client(result)))
        assert isinstance(protocol, _Client)
        await protocol.done
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        await protocol.lost
        await serverFactory.lost
        self.assertTrue(result.accepted)

    async def test_listenSSL(self) -> None:
        """
        The server creator also works with C{reactor.listenSSL}.
        """
        result = _Result()
        serverFactory = _ServerFactory(result)
        port = reactor.listenSSL(  # type: ignore[attr-defined]
            0, serverFactory, serverContextFactory(helpers.serverBundle()), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        client = wrapClientTLS(
            clientContextFactory(helpers.clientBundle(), hostname="server.example"),
            TCP4ClientEndpoint(reactor, "127.0.0.1", _portOf(port)),
        )
        protocol = await client.connect(Factory.forProtocol(lambda: _Client(result)))
        assert isinstance(protocol, _Client)
        await protocol.done
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        await protocol.lost
        await serverFactory.lost
        self.assertTrue(result.accepted)
        assert result.clientIdentity is not None
        self.assertEqual(result.clientIdentity.commonName, "client.example")


def _trust(bundle: Bundle) -> Any:
    return trustRootFromCertificates(
        [TwistedCertificate.loadPEM(certificateToPEM(c)) for c in bundle.trustRoots]
    )


def _tls12Client() -> MTLSClientCreator:
    """
    A client with the test node certificate that speaks at most TLS 1.2.
    """
    from suite.pki.tlsoptions import presentedCredentials

    bundle = helpers.clientBundle()
    options = CertificateOptions(
        trustRoot=_trust(bundle),
        lowerMaximumSecurityTo=TLSVersion.TLSv1_2,
        **presentedCredentials(bundle.nodeKey, bundle.nodeCert, ()),
    )
    return MTLSClientCreator(options, verifier=PeerPolicy(hostname="server.example"), serverName=None)


def _mintClient(bundle: Bundle) -> tuple[bytes, bytes]:
    from suite.pki.ca import mintClientCertificate

    return mintClientCertificate(bundle, "tunnel-client-1")


def _clientBundleFromPEM(server: Bundle, certPEM: bytes, keyPEM: bytes) -> Bundle:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key: Any = load_pem_private_key(keyPEM, None)
    return Bundle(
        caCert=server.caCert,
        nodeCert=x509.load_pem_x509_certificate(certPEM),
        nodeKey=key,
        clientCACert=None,
        source="client",
    )


class MoreHandshakeTests(_HandshakeCase):
    """
    Key usage, public listeners and HTTPS through an Agent.
    """

    async def test_clientOnlyCertificateCannotServe(self) -> None:
        """
        A certificate minted for clientAuth only is refused as a server
        certificate, even from the right CA with the right name.
        """
        caCert, caKey = helpers.nodeCA()
        cert, key = mintCertificate(
            caCert, caKey, "server.example", dnsNames=["server.example"], serverAuth=False
        )
        result = await self.handshake(
            serverContextFactory(helpers.bundleWith(cert, key)),
            clientContextFactory(helpers.clientBundle(), hostname="server.example"),
        )
        self.assertRefused(result)

    async def test_publicServer(self) -> None:
        """
        A public listener asks for no client certificate: a client without
        one is accepted and the server sees no client identity.
        """
        bundle = helpers.serverBundle()
        result = await self.handshake(
            publicServerContextFactory(bundle.nodeCert, bundle.nodeKey, acceptableProtocols=[b"h2"]),
            clientContextFactory(
                helpers.clientBundle(),
                hostname="server.example",
                useClientCert=False,
                acceptableProtocols=[b"h2"],
            ),
        )
        self.assertTrue(result.accepted)
        self.assertIsNone(result.clientIdentity)
        self.assertEqual(result.clientALPN, b"h2")

    async def test_agentOverMTLS(self) -> None:
        """
        L{MTLSPolicyForHTTPS} lets an L{Agent} fetch from an mTLS HTTPS
        server, verifying it by the URL's IP address; the server sees the
        client's certificate.
        """
        seen: list[PeerIdentity] = []

        class Hello(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                seen.append(peerIdentity(request.channel.transport))
                return b"hi"

        endpoint = tlsServerEndpoint(
            reactor, "tcp:0:interface=127.0.0.1", serverContextFactory(helpers.serverBundle())
        )
        port = await endpoint.listen(Site(Hello()))
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        policy = MTLSPolicyForHTTPS(helpers.clientBundle(), spiffeId="spiffe://example.org")
        self.assertTrue(verifyObject(IPolicyForHTTPS, policy))
        agent = Agent(reactor, contextFactory=policy, pool=pool)
        response = await agent.request(b"GET", f"https://127.0.0.1:{_portOf(port)}/".encode())
        # treq's collector: readBody warns when the whole body came with the
        # head (the connection's producer is already gone by then).
        body = await treq.content(response)
        self.assertEqual((response.code, body), (200, b"hi"))
        self.assertEqual([identity.commonName for identity in seen], ["client.example"])
        await pool.closeCachedConnections()

    async def test_agentRefusesWrongSpiffe(self) -> None:
        """
        The same policy with another SPIFFE ID refuses the server.
        """
        endpoint = tlsServerEndpoint(
            reactor, "tcp:0:interface=127.0.0.1", serverContextFactory(helpers.serverBundle())
        )
        port = await endpoint.listen(Site(Resource()))
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(
            reactor,
            contextFactory=MTLSPolicyForHTTPS(helpers.clientBundle(), spiffeId="spiffe://other.org"),
            pool=pool,
        )
        with self.assertRaises(ResponseNeverReceived) as caught:
            await agent.request(b"GET", f"https://127.0.0.1:{_portOf(port)}/".encode())
        self.assertTrue(caught.exception.reasons[0].check(VerificationError))
        await pool.closeCachedConnections()


class InterfaceTests(TestCase):
    """
    The connection creators and the endpoint provide their interfaces.
    """

    def test_verifyObject(self) -> None:
        """
        Server and client creators and L{TLSServerEndpoint} pass
        C{verifyObject}.
        """
        server = serverContextFactory(helpers.serverBundle())
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, server))
        self.assertTrue(verifyObject(IOpenSSLContextFactory, server))
        self.assertIsInstance(server.getContext(), SSL.Context)
        client = clientContextFactory(helpers.clientBundle(), hostname="server.example")
        self.assertTrue(verifyObject(IOpenSSLClientConnectionCreator, client))
        endpoint = TLSServerEndpoint(TCP4ServerEndpoint(reactor, 0), server)
        self.assertTrue(verifyObject(IStreamServerEndpoint, endpoint))

    def test_trustClientCANeedsClientCA(self) -> None:
        """
        Asking to trust the client CA of a bundle without one is a
        L{BundleError} naming the bundle.
        """
        bundle = attrs.evolve(helpers.serverBundle(), clientCACert=None)
        e = self.assertRaises(BundleError, serverContextFactory, bundle, trustClientCA=True)
        self.assertIn("test", str(e))

    def test_badExpectations(self) -> None:
        """
        A malformed SPIFFE ID or IP address is refused when the client
        creator is built.
        """
        self.assertRaises(ValueError, clientContextFactory, helpers.clientBundle(), spiffeId="spiffe://A/b")
        self.assertRaises(ValueError, clientContextFactory, helpers.clientBundle(), ipAddress="999.1.1.1")
        self.assertRaises(ValueError, MTLSPolicyForHTTPS, helpers.clientBundle(), spiffeId="nope")

    def test_peerIdentityWithoutCertificate(self) -> None:
        """
        L{peerIdentity} of a transport without a peer certificate raises
        L{VerificationError}.
        """
        self.assertRaises(VerificationError, peerIdentity, object())
