"""
Real processes and sockets: a gateway with one tunnel, and nghttp (Debian's
nghttp2-client) as the HTTP/2 visitor, sending C{:authority} and C{Host}
as it is told.  A C{Host} that disagrees with C{:authority} gets 400 with
the reason and reaches no target (RFC 9113 8.3.1); one that agrees is
served by the C{:authority}'s tunnel.
"""

from __future__ import annotations

import os
import re

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


class MisdirectedSocketTests(TestCase):
    """
    curl over HTTP/2, one connection, its SNI (the URL's host, by
    C{--resolve}) choosing the certificate and C{Host} (sent as
    C{:authority}) naming each request's authority: a name the certificate
    presented does not cover gets 421 and reaches no target; a covered
    one, before and after on the same connection, is served.
    """

    timeout = 90

    async def curl(
        self, h: GatewayHarness, url: str, cacert: str, hosts: list[str | None]
    ) -> list[tuple[str, str, str]]:
        """
        One curl run, one transfer per entry of C{hosts} (a Host header,
        or None for the URL's), chained with C{--next}: each transfer's
        body, status and number of new connections.
        """
        args: list[str] = []
        name = url.split("/")[2].rsplit(":", 1)[0]
        for n, host in enumerate(hosts):
            if n:
                args.append("--next")
            args += ["-sS", "--http2", "--max-time", "20", "--cacert", cacert]
            args += ["--resolve", f"{name}:{h.port}:127.0.0.1"]
            args += ["-w", "|%{http_code} %{num_connects}\n"]
            if host is not None:
                args += ["-H", f"Host: {host}"]
            args.append(url)
        out, err, code = await getProcessOutputAndValue("curl", args, env=os.environ)
        text = out.decode("utf-8", "replace")
        self.assertEqual(code, 0, text + err.decode("utf-8", "replace"))
        return re.findall(r"(.*?)\|(\d{3}) (\d+)\n", text, re.S)

    async def test_uncoveredAuthority(self) -> None:
        """
        SNI the tunnel hostname (the apex's wildcard certificate): the
        tunnel is served, a name two labels under the apex (not covered)
        gets 421 with the reason, and the tunnel is served again, all on
        the first connection (curl opened one).  No SNI (an IP address:
        the node certificate) and C{Host} the tunnel hostname: 421, the
        target is never asked, while the node's own address is covered
        (and serves nothing: 404) on that connection.
        """
        echo = _Echo()
        port, backendPort = listenLocal(Site(echo))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        await h.start()
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")
        url = f"https://{host}:{h.port}/"
        deep = f"a.{host}"
        first, misdirected, again = await self.curl(h, url, h.cacert, [None, deep, None])
        self.assertEqual(first, (f"target saw Host {host}:{h.port}\n", "200", "1"))
        self.assertIn(f"does not cover {deep}", misdirected[0])
        self.assertEqual(misdirected[1:], ("421", "0"))
        self.assertEqual(again, (f"target saw Host {host}:{h.port}\n", "200", "0"))
        self.assertEqual(echo.hosts, [f"{host}:{h.port}".encode()] * 2)

        nodeCA = os.path.join(h.certs, "ca.crt")
        refused, node = await self.curl(h, f"https://127.0.0.1:{h.port}/", nodeCA, [host, None])
        self.assertIn(f"does not cover {host}", refused[0])
        self.assertEqual(refused[1:], ("421", "1"))
        self.assertIn("no tunnel is serving 127.0.0.1", node[0])
        self.assertEqual(node[1:], ("404", "0"))
        self.assertEqual(len(echo.hosts), 2)
