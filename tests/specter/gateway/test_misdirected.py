"""
421 Misdirected Request (RFC 9110 15.5.20, RFC 9113 9.1.2, RFC 9114 4.3.1),
never stored by a cache (C{Cache-Control: no-store}):
a request whose authority the certificate presented on its connection does
not cover is answered by the gateway, never routed.  The names a
certificate covers (L{suite.specter.gateway.certnames}), then HTTP/2 (an
in-memory C{h2} client), HTTP/1.1 (StringTransport) and HTTP/3 (aioquic's
client against the gateway's QUIC protocol) visitors whose transport
presents a given certificate.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import h2.events
from aioquic.h3.events import HeadersReceived
from cryptography import x509
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from suite.pki.mint import mintSelfSigned
from suite.pki.tlsoptions import presentedCredentials
from suite.specter.gateway import certnames
from suite.specter.gateway.certnames import (
    VERDICTS,
    CertificateNames,
    Coverage,
    presentedNames,
    quicPresentedNames,
)
from suite.specter.gateway.core import GatewayLink
from suite.specter.gateway.visitor import HTTPVisitor
from suite.specter.tunnel.frames import OPEN, FrameDecoder, decodeControl
from tests.specter.gateway.support import linkedGateway
from tests.specter.gateway.test_h2front import HOST, OTHER
from tests.specter.gateway.test_h2front import _Harness as _H2Harness
from tests.specter.gateway.test_h3drain import _Harness as _H3Harness

#: A validated custom domain, bound to the tunnel hostname L{HOST}.
SHOP = "shop.customer.test"
_WILDCARD = mintSelfSigned(["example.test", "*.example.test"], days=1)
_SHOP = mintSelfSigned([SHOP], days=1)
_NODE = mintSelfSigned(["127.0.0.1"], days=1)
_PSEUDO = [(":method", "GET"), (":scheme", "https"), (":path", "/")]


def _handle(certificate: tuple[Any, Any]) -> SSL.Connection:
    """
    A server-side pyOpenSSL connection presenting C{certificate} (what a
    TLS transport's C{getHandle} returns).
    """
    cert, key = certificate
    context = CertificateOptions(**presentedCredentials(key, cert, ())).getContext()
    return SSL.Connection(context, None)


class CertificateNamesTests(SynchronousTestCase):
    """
    What "covered" means: subjectAltName only, case-insensitive, a
    wildcard for exactly one left-most label, IP addresses only by IP
    addresses.
    """

    def test_exactNames(self) -> None:
        """
        A DNS name covers itself in any case, with or without a trailing
        dot on the authority's side; nothing above or below it.
        """
        names = CertificateNames(["Shop.Customer.TEST"])
        for host in ("shop.customer.test", "SHOP.customer.test", "shop.customer.test."):
            self.assertTrue(names.covers(host), host)
        for host in ("customer.test", "a.shop.customer.test", "shop.customer.test.evil", ""):
            self.assertFalse(names.covers(host), host)

    def test_wildcardOneLabel(self) -> None:
        """
        C{*.example.test} covers exactly one label in its place: not the
        apex itself, not two labels, not an empty label.
        """
        names = CertificateNames(["example.test", "*.example.test"])
        for host in ("example.test", "app.example.test", "APP.Example.Test", "x-1.example.test"):
            self.assertTrue(names.covers(host), host)
        for host in ("a.b.example.test", ".example.test", "app.example.testx", "appexample.test", "test"):
            self.assertFalse(names.covers(host), host)
        self.assertFalse(CertificateNames(["*.example.test"]).covers("example.test"))

    def test_partialWildcardsCoverNothing(self) -> None:
        """
        A C{*} that is not the whole left-most label (RFC 9525 6.3)
        covers nothing, not even its own text.
        """
        names = CertificateNames(["f*.example.test", "a.*.example.test", "*"])
        for host in ("foo.example.test", "f*.example.test", "a.b.example.test", "a.*.example.test", "x"):
            self.assertFalse(names.covers(host), host)

    def test_addresses(self) -> None:
        """
        An IP address in the authority is covered by the same address
        among the IP addresses (IPv6 in brackets, any spelling), never by
        a DNS name; a DNS name is never covered by an address.
        """
        names = CertificateNames(
            ["10.0.0.1", "*.example.test"],
            [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")],
        )
        self.assertTrue(names.covers("127.0.0.1"))
        self.assertTrue(names.covers("[::1]"))
        self.assertTrue(names.covers("[0:0:0::1]"))
        self.assertFalse(names.covers("10.0.0.1"))  # a DNS name that looks like an address
        self.assertFalse(names.covers("127.0.0.2"))
        self.assertFalse(names.covers("[::2]"))
        self.assertFalse(names.covers("[bogus"))
        self.assertFalse(names.covers("localhost"))

    def test_fromCertificate(self) -> None:
        """
        The names come from the subjectAltName; the common name alone
        covers nothing.
        """
        cert, _ = mintSelfSigned(["example.test", "*.example.test", "127.0.0.1"], days=1)
        names = CertificateNames.fromCertificate(cert)
        self.assertEqual(
            (names.exact, names.wildcards, names.addresses),
            ({"example.test"}, {"example.test"}, {"127.0.0.1"}),
        )
        self.assertEqual(repr(names), "<CertificateNames example.test *.example.test 127.0.0.1>")
        bare = _withoutSAN()
        self.assertFalse(CertificateNames.fromCertificate(bare).covers("bare.example.test"))

    def test_coverageRemembersVerdicts(self) -> None:
        """
        A connection's coverage asks the names once per distinct host, and
        starts over after L{VERDICTS} of them.
        """
        asked: list[str] = []

        class _Names(CertificateNames):
            def covers(self, host: str) -> bool:
                asked.append(host)
                return host == "a"

        coverage = Coverage(_Names(()))
        self.assertEqual([coverage.covers(h) for h in ("a", "b", "a", "b")], [True, False, True, False])
        self.assertEqual(asked, ["a", "b"])
        for n in range(VERDICTS):
            coverage.covers(f"h{n}")
        self.assertLessEqual(len(coverage.verdicts), VERDICTS)
        coverage.covers("a")
        self.assertEqual(asked[-1], "a")

    def test_presentedNamesPerContext(self) -> None:
        """
        The names of a TLS transport's certificate are read once per TLS
        context; a transport without a TLS handle (or with a socket's) has
        none: nothing is checked.
        """
        handle = _handle(_SHOP)
        reads: list[int] = []
        getCertificate = handle.get_certificate

        class _Transport:
            def getHandle(self) -> Any:
                return handle

        def counting(**kw: Any) -> Any:
            reads.append(1)
            return getCertificate(**kw)

        handle.get_certificate = counting  # type: ignore[method-assign]
        names = presentedNames(_Transport())
        self.assertIs(presentedNames(_Transport()), names)
        self.assertEqual(len(reads), 1)
        assert names is not None
        self.assertEqual(names.exact, {SHOP})
        self.assertIsNone(presentedNames(StringTransport()))

        class _Socket:
            def getHandle(self) -> Any:
                return object()

        self.assertIsNone(presentedNames(_Socket()))

    def test_quicPresentedNames(self) -> None:
        """
        QUIC: the names of aioquic's certificate, read once per
        certificate; none without one.
        """
        cert = _SHOP[0]
        names = quicPresentedNames(cert)
        self.assertIs(quicPresentedNames(cert), names)
        assert names is not None
        self.assertEqual(names.exact, {SHOP})
        self.assertIsNone(quicPresentedNames(None))
        for n in range(certnames.VERDICTS + 1):
            quicPresentedNames(mintSelfSigned([f"h{n}.test"], days=1)[0])
        self.assertLessEqual(len(certnames._byCertificate), certnames.VERDICTS)


def _withoutSAN() -> x509.Certificate:
    """
    A certificate whose common name is C{bare.example.test} and which has
    no subjectAltName.
    """
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bare.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


class H2MisdirectedTests(SynchronousTestCase):
    """
    HTTP/2: each request's C{:authority} must be covered by the
    certificate the connection presented; a stream naming another one is
    answered 421 and routed nowhere, the connection carries on.
    """

    def harness(self, certificate: tuple[Any, Any]) -> _H2Harness:
        h = _H2Harness(validate=False, handle=_handle(certificate))
        other = GatewayLink(h.gateway, "other-owner")
        self.otherWire = StringTransport()
        other.makeConnection(self.otherWire)
        h.gateway.registry.add(OTHER, other)
        h.gateway.customHosts[SHOP] = HOST
        h.gateway.customOwners[SHOP] = "owner"
        return h

    def send(self, h: _H2Harness, authorities: list[str]) -> None:
        for n, authority in enumerate(authorities):
            h.client.send_headers(1 + 2 * n, [*_PSEUDO, (":authority", authority)], end_stream=True)
        h.pump()

    def statuses(self, h: _H2Harness) -> dict[int, bytes]:
        return {e.stream_id: dict(e.headers)[b":status"] for e in h.of(h2.events.ResponseReceived)}

    def bodies(self, h: _H2Harness) -> dict[int, bytes]:
        return {e.stream_id: e.data for e in h.of(h2.events.DataReceived)}

    def opened(self, h: _H2Harness) -> list[str]:
        return [decodeControl(p)["host"] for k, _, p in h.linkFrames() if k == OPEN]

    def test_customDomainCertificate(self) -> None:
        """
        SNI chose a custom domain's certificate: a request for a tunnel
        hostname of the apex (twice: the second from the connection's
        cache) gets 421 with the reason and opens no tunnel stream; the
        custom domain itself goes to its tunnel on the same connection;
        the 421s are counted.
        """
        h = self.harness(_SHOP)
        self.send(h, [HOST, SHOP, HOST, OTHER])
        self.assertEqual(self.statuses(h), {1: b"421", 5: b"421", 7: b"421"})
        self.assertEqual(self.opened(h), [SHOP])  # on the link of the domain's tunnel
        self.assertEqual(self.otherWire.value(), b"")
        bodies = self.bodies(h)
        self.assertIn(f"does not cover {HOST}".encode(), bodies[1])
        self.assertIn(f"does not cover {OTHER}".encode(), bodies[7])
        self.assertEqual(h.gateway.metrics.errors, {421: 3})
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.of(h2.events.ConnectionTerminated), [])

    def test_wildcardCertificate(self) -> None:
        """
        SNI chose the apex's wildcard certificate: every tunnel hostname
        one label under the apex is served on the connection (browsers
        reuse it for all of them), whatever the case or port; a validated
        custom domain, or a name two labels under the apex, gets 421.
        """
        h = self.harness(_WILDCARD)
        self.send(h, [HOST, OTHER, "APP.Example.Test:8443", SHOP, "a.app.example.test"])
        self.assertEqual(self.statuses(h), {7: b"421", 9: b"421"})
        self.assertEqual(self.opened(h), [HOST, HOST])
        self.assertEqual(len(_opens(self.otherWire.value())), 1)
        self.assertIn(f"does not cover {SHOP}".encode(), self.bodies(h)[7])

    def test_nodeCertificate(self) -> None:
        """
        No SNI (the node certificate, for the node's address): a tunnel
        hostname or the apex gets 421; the node's own address is covered
        (and, naming no tunnel, a 404).
        """
        h = self.harness(_NODE)
        self.send(h, [HOST, "example.test", "127.0.0.1:8443"])
        self.assertEqual(self.statuses(h), {1: b"421", 3: b"421", 5: b"404"})
        # no cache may keep a 421 (RFC 9110 15.5.20); the 404 is not marked
        cacheControl = {
            e.stream_id: dict(e.headers).get(b"cache-control") for e in h.of(h2.events.ResponseReceived)
        }
        self.assertEqual(cacheControl, {1: b"no-store", 3: b"no-store", 5: None})
        self.assertEqual(self.opened(h), [])

    def test_withoutTLS(self) -> None:
        """
        A transport that is not TLS (no certificate presented) is not
        checked.
        """
        h = _H2Harness(validate=False)
        self.send(h, [HOST])
        self.assertEqual(self.opened(h), [HOST])


def _opens(data: bytes) -> list[int]:
    out: list[tuple[int, int, bytes]] = []
    FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(data)
    return [s for k, s, _ in out if k == OPEN]


class HTTP1MisdirectedTests(SynchronousTestCase):
    """
    HTTP/1.1: the connection is bound to its first request's Host; one the
    certificate presented does not cover is answered 421, and the
    connection closed, without routing.
    """

    def setUp(self) -> None:
        self.clock, self.gateway, self.link, self.wire = linkedGateway(HOST)

    def visit(self, certificate: tuple[Any, Any], head: bytes) -> StringTransport:
        transport = StringTransport()
        handle = _handle(certificate)
        transport.getHandle = lambda: handle  # type: ignore[attr-defined]
        visitor = HTTPVisitor(self.gateway)
        visitor.makeConnection(transport)
        visitor.dataReceived(head)
        return transport

    def test_uncoveredHost(self) -> None:
        """
        A custom domain's certificate and a Host naming a tunnel hostname
        of the apex: 421 naming the host, the connection closed, nothing
        sent down the tunnel; the node certificate likewise.
        """
        for certificate in (_SHOP, _NODE):
            transport = self.visit(certificate, b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
            out = transport.value()
            self.assertTrue(out.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), out)
            self.assertIn(b"Connection: close", out)
            head = out[: out.index(b"\r\n\r\n")].split(b"\r\n")
            self.assertIn(b"Cache-Control: no-store", head)
            self.assertIn(b"does not cover app.example.test", out)
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.wire.value(), b"")
        self.assertEqual(self.gateway.metrics.errors, {421: 2})

    def test_coveredHost(self) -> None:
        """
        The apex's wildcard certificate covers a tunnel hostname (any
        case, any port): routed.
        """
        transport = self.visit(_WILDCARD, b"GET / HTTP/1.1\r\nHost: App.Example.Test:8443\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(_opens(self.wire.value()), [1])


class H3MisdirectedTests(SynchronousTestCase):
    """
    HTTP/3 (aioquic's client against the gateway's QUIC protocol): as over
    HTTP/2, per request.
    """

    def harness(self, certificate: tuple[Any, Any] | None) -> _H3Harness:
        h = _H3Harness(certificate)
        self.addCleanup(h.clock.advance, 1000)
        h.gateway.customHosts[SHOP] = HOST
        h.gateway.customOwners[SHOP] = "owner"
        return h

    def send(self, h: _H3Harness, authorities: list[str]) -> list[int]:
        sids = []
        for authority in authorities:
            sid = h.client.get_next_available_stream_id()
            h.http.send_headers(
                sid,
                [
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":path", b"/"),
                    (b":authority", authority.encode()),
                ],
                end_stream=True,
            )
            sids.append(sid)
        h.pump()
        return sids

    def statuses(self, h: _H3Harness) -> dict[int, bytes]:
        return {e.stream_id: dict(e.headers)[b":status"] for e in h.events if isinstance(e, HeadersReceived)}

    def test_customDomainCertificate(self) -> None:
        """
        The custom domain's certificate: a tunnel hostname of the apex
        gets 421 (twice), the domain is forwarded, the connection stays.
        """
        h = self.harness(_SHOP)
        first, shop, again = self.send(h, [HOST, SHOP, HOST])
        self.assertEqual(self.statuses(h), {first: b"421", again: b"421"})
        cacheControl = {
            e.stream_id: dict(e.headers).get(b"cache-control")
            for e in h.events
            if isinstance(e, HeadersReceived)
        }
        self.assertEqual(cacheControl, {first: b"no-store", again: b"no-store"})
        self.assertIn(f"does not cover {HOST}".encode(), h.bodies()[first])
        self.assertEqual(len(h.tunnelStreams()), 1)
        self.assertIsNone(h.terminated)
        self.assertEqual(h.gateway.metrics.errors, {421: 2})

    def test_wildcardCertificate(self) -> None:
        """
        The apex's wildcard certificate: tunnel hostnames are forwarded, a
        custom domain and a name two labels down get 421.
        """
        h = self.harness(None)
        host, shop, deep = self.send(h, [HOST, SHOP, "a.app.example.test"])
        self.assertEqual(self.statuses(h), {shop: b"421", deep: b"421"})
        self.assertEqual(len(h.tunnelStreams()), 1)
