"""
P2P streams over real loopback TLS: key-bound identities, the site and data
protocols, stream caps and line limits.
"""

from __future__ import annotations

import os
import warnings

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from suite.goop.identity import Identity, loadIdentity
from suite.goop.p2p.streams import (
    DATA_PROTOCOL,
    SITE_PROTOCOL,
    PeerMismatch,
    StreamServerFactory,
    listenStreams,
    openStream,
)
from suite.goop.p2p.tls import PeerTLS
from suite.goop.peer.site import SiteFiles
from suite.netutil import boundPort


class StreamTests(TestCase):
    def ident(self) -> Identity:
        d = self.mktemp()
        os.makedirs(d)
        return loadIdentity(d)

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits a coroutine setUp
        self.server, self.client = self.ident(), self.ident()
        site = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(site, "lua"))
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write("home")
        with open(os.path.join(site, "lua", "f.lua"), "w") as f:
            f.write("secret")
        self.factory = StreamServerFactory(maxPerPeer=2)
        self.factory.addRequestHandler(SITE_PROTOCOL, SiteFiles(reactor, site).handle)
        self.seen: list[str] = []

        def data(peer: str, req: dict) -> dict:
            self.seen.append(peer)
            return {"ok": True, "data": req.get("op")}

        self.factory.addRequestHandler(DATA_PROTOCOL, data)
        self.port = await listenStreams(reactor, PeerTLS(self.server), 0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addr = f"127.0.0.1:{boundPort(self.port)}"

    async def open(self, proto: str, expected: str | None = None):
        s = await openStream(reactor, PeerTLS(self.client), self.addr, expected or self.server.peerId, proto)

        def close() -> object:
            s.close()
            return s.whenClosed()

        self.addCleanup(close)
        return s

    async def test_siteAndIdentity(self) -> None:
        """Files are served, lua/ is not, and the server learns the client's key-derived id."""
        s = await self.open(SITE_PROTOCOL)
        r = await s.request({"path": "/"})
        self.assertTrue(r["ok"])
        r = await s.request({"path": "lua/f.lua"})
        self.assertEqual(r, {"ok": False, "error": "not found"})
        d = await self.open(DATA_PROTOCOL)
        self.assertEqual(await d.request({"op": "tables"}), {"ok": True, "data": "tables"})
        self.assertEqual(self.seen, [self.client.peerId])

    async def test_ipv6Address(self) -> None:
        """
        A peer listening on an IPv6 address (C{p2p.listen_addr: "::1"}, or an
        mDNS AAAA record) is dialled at C{[::1]:PORT}; the endpoint string
        this used to build could not hold an IPv6 literal.
        """
        import socket

        from twisted.trial.unittest import SkipTest

        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
        except OSError:
            raise SkipTest("no IPv6 loopback here") from None
        port = await listenStreams(reactor, PeerTLS(self.server), 0, self.factory, interface="::1")
        self.addCleanup(port.stopListening)
        self.addr = f"[::1]:{boundPort(port)}"
        s = await self.open(SITE_PROTOCOL)
        self.assertTrue((await s.request({"path": "/"}))["ok"])

    async def test_wrongPeerRefused(self) -> None:
        """Dialling an address whose key is not the expected peer fails."""
        with self.assertRaises(PeerMismatch):
            await openStream(reactor, PeerTLS(self.client), self.addr, "0" * 64, SITE_PROTOCOL)

    async def test_clientWithoutKeyRefused(self) -> None:
        """A TLS client that presents no certificate never gets an answer."""
        from OpenSSL import SSL

        from suite.goop.p2p.streams import StreamClient, _ClientFactory

        class Anonymous(PeerTLS):
            def __init__(self) -> None:
                ctx = SSL.Context(SSL.TLS_METHOD)
                ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
                self.context = ctx

        from twisted.internet.endpoints import clientFromString, wrapClientTLS

        proto = StreamClient(None, SITE_PROTOCOL)
        ep = wrapClientTLS(
            Anonymous(), clientFromString(reactor, f"tcp:host=127.0.0.1:port={boundPort(self.port)}")
        )
        await ep.connect(_ClientFactory(proto))

        def closeStream() -> Deferred[None]:
            proto.close()
            return proto.whenClosed()

        self.addCleanup(closeStream)
        try:
            await proto.ready  # TLS 1.3: the client may finish before the server refuses it
            answer = proto.request({"path": "/"})
            with self.assertRaises(ConnectionError):
                await answer
        except ConnectionError:
            pass
        self.assertTrue(proto.closed)

    async def test_limits(self) -> None:
        """Unknown protocols, oversized lines and streams over the per-peer cap are refused."""
        s = await self.open("/goop/unknown/1.0.0")
        s.send({"x": 1})
        self.assertIn("unsupported protocol", (await s.request({"x": 2}))["error"])
        big = await self.open(DATA_PROTOCOL)
        r = await big.request({"op": "x" * (70 * 1024)})
        self.assertIn("line longer", r["error"])
        await self.open(DATA_PROTOCOL)
        await self.open(DATA_PROTOCOL)
        third = await self.open(DATA_PROTOCOL)
        with self.assertRaises(ConnectionError):
            await third.request({"op": "tables"})


class NoDeprecatedObjectsTests(TestCase):
    """
    The peer TLS context hands pyOpenSSL cryptography objects, not its
    deprecated C{X509}/C{PKey} wrappers.
    """

    def test_context(self) -> None:
        """Building the context emits no deprecation warning."""
        d = self.mktemp()
        os.makedirs(d)
        identity = loadIdentity(d)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            PeerTLS(identity)
        self.assertEqual(
            [
                f"{w.filename}:{w.lineno}: {w.message}"
                for w in caught
                if issubclass(w.category, DeprecationWarning)
            ],
            [],
        )
