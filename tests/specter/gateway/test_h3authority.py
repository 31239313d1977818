"""
HTTP/3 requests whose C{Host} header disagrees with their C{:authority}
(RFC 9114 4.3.1), in memory: aioquic's client against the gateway's QUIC
protocol (the harness of L{tests.specter.gateway.test_h3drain}), with a
second tunnel on its own link.
"""

from __future__ import annotations

from aioquic.h3.events import HeadersReceived
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.core import GatewayLink
from tests.specter.gateway.test_h3drain import HOST, _Harness

#: A second tunnel, on its own link.
OTHER = "other.example.test"
_PSEUDO = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")]


class H3AuthorityTests(SynchronousTestCase):
    """
    A request with a C{Host} naming another host or port than its
    C{:authority}, two C{Host} headers, or user information in its
    authority is malformed: answered 400 with the reason (as every
    malformed request), routed by neither name.
    """

    def setUp(self) -> None:
        self.h = _Harness()
        self.addCleanup(self.h.clock.advance, 1000)
        self.other = GatewayLink(self.h.gateway, "other-owner")
        self.otherWire = StringTransport()
        self.other.makeConnection(self.otherWire)
        self.h.gateway.registry.add(OTHER, self.other)

    def send(self, headers: list[tuple[bytes, bytes]]) -> int:
        sid = self.h.client.get_next_available_stream_id()
        self.h.http.send_headers(sid, [*_PSEUDO, *headers], end_stream=True)
        return sid

    def statuses(self) -> dict[int, bytes]:
        return {
            e.stream_id: dict(e.headers)[b":status"] for e in self.h.events if isinstance(e, HeadersReceived)
        }

    def test_malformedAuthorityRefused(self) -> None:
        """
        Each malformed request gets 400 naming what is wrong; the
        connection stays up, no tunnel stream is opened on either link.
        """
        cases = {
            self.send(
                [(b":authority", HOST.encode()), (b"host", OTHER.encode())]
            ): b"disagrees with :authority",
            self.send([(b":authority", b"nobody.example.test"), (b"host", HOST.encode())]): b"disagrees",
            self.send([(b":authority", HOST.encode()), (b"host", HOST.encode() + b":8443")]): b"disagrees",
            self.send(
                [(b":authority", HOST.encode()), (b"host", HOST.encode()), (b"host", OTHER.encode())]
            ): b"more than one Host header",
            self.send([(b":authority", b"user@" + HOST.encode())]): b"user information",
        }
        self.h.pump()
        self.assertEqual(self.statuses(), {sid: b"400" for sid in cases})
        bodies = self.h.bodies()
        for sid, reason in cases.items():
            self.assertIn(reason, bodies[sid])
        self.assertEqual(self.h.tunnelStreams(), [])
        self.assertEqual(self.otherWire.value(), b"")
        self.assertIsNone(self.h.terminated)

    def test_agreeingHostForwarded(self) -> None:
        """
        A Host equal to :authority up to case and the default port: the
        request goes to the :authority's tunnel.
        """
        self.send([(b":authority", HOST.encode()), (b"host", b"App.Example.Test:443")])
        self.h.pump()
        self.assertEqual(len(self.h.tunnelStreams()), 1)
        self.assertEqual(self.otherWire.value(), b"")
