"""
Real processes and sockets: a gateway with one tunnel, and nghttp (Debian's
nghttp2-client) as the HTTP/2 visitor, sending C{:authority} and C{Host}
as it is told.  A C{Host} that disagrees with C{:authority} gets 400 with
the reason and reaches no target (RFC 9113 8.3.1); one that agrees is
served by the C{:authority}'s tunnel.
"""

from __future__ import annotations

import os

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.specter.gateway.support import GatewayHarness, listenLocal


class _Echo(Resource):
    """
    Answers with the Host it was sent; counts the requests.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hosts: list[bytes] = []

    def render_GET(self, request: Request) -> bytes:
        host = request.getHeader(b"host") or b""
        self.hosts.append(host)
        return b"target saw Host " + host + b"\n"


class AuthoritySocketTests(TestCase):
    timeout = 90

    async def test_hostAgainstAuthority(self) -> None:
        """
        Host naming another tunnel than :authority, or :authority naming no
        tunnel with a Host naming one: 400 naming the reason, the target
        never asked; Host agreeing (up to case): 200 from the :authority's
        tunnel, whose target sees the :authority.
        """
        echo = _Echo()
        port, backendPort = listenLocal(Site(echo))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        await h.start()
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")

        async def nghttp(authority: str, hostHeader: str) -> str:
            out, err, code = await getProcessOutputAndValue(
                "nghttp",
                [
                    "-v",
                    "-t",
                    "20",
                    "-H",
                    f":authority: {authority}",
                    "-H",
                    f"host: {hostHeader}",
                    f"https://127.0.0.1:{h.port}/",
                ],
                env=os.environ,
            )
            text = (out + err).decode("utf-8", "replace")
            self.assertEqual(code, 0, text)
            # nghttp sent both as told (it does not merge them)
            self.assertIn(f":authority: {authority}", text)
            self.assertIn(f"host: {hostHeader}", text)
            return text

        other = "other.example.test"
        refused = await nghttp(host, other)
        self.assertIn(":status: 400", refused)
        self.assertIn("the Host header disagrees with :authority", refused)
        refused = await nghttp("nobody.example.test", host)
        self.assertIn(":status: 400", refused)
        self.assertEqual(echo.hosts, [])
        served = await nghttp(host, host.upper())
        self.assertIn(":status: 200", served)
        self.assertIn(f"target saw Host {host}\n", served)
        self.assertEqual(echo.hosts, [host.encode()])
