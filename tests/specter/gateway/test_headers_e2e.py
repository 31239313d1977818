"""
End to end: a visitor reaches the backend with the same forwarding
headers and the same C{Host} over HTTP/1.1 (every request of a keep-alive
connection), HTTP/2 (curl) and HTTP/3 (aioquic).
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.specter.gateway.support import PY, GatewayHarness, listenLocal

_SEEN = (b"host", b"x-forwarded-for", b"x-forwarded-proto", b"forwarded")


class _Headers(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        seen = {n.decode(): [v.decode() for v in request.requestHeaders.getRawHeaders(n, [])] for n in _SEEN}
        return json.dumps(seen, sort_keys=True).encode() + b"\n"


class ForwardedHeadersTests(TestCase):
    timeout = 90

    async def test_sameHeadersOverEveryProtocol(self) -> None:
        port, backendPort = listenLocal(Site(_Headers()))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        await h.start("--listen-udp", f"127.0.0.1:{h.port}")
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")
        await h.gateway.waitForLog("HTTP/3 \\(QUIC\\) listening")
        authority = f"{host}:{h.port}"
        expected = {
            "forwarded": [f'for=127.0.0.1;proto=https;host="{authority}"'],
            "host": [authority],
            "x-forwarded-for": ["127.0.0.1"],
            "x-forwarded-proto": ["https"],
        }
        # HTTP/1.1: two requests on one connection, the visitor's own forwarding headers dropped
        url = f"https://{authority}/path"
        out, err, code = await getProcessOutputAndValue(
            "curl",
            [
                "-sS",
                "--http1.1",
                "--max-time",
                "10",
                "--cacert",
                h.cacert,
                "--resolve",
                f"{authority}:127.0.0.1",
                "-H",
                "X-Forwarded-For: 6.6.6.6",
                "-H",
                "Forwarded: for=6.6.6.6",
                url,
                url,
            ],
            env=os.environ,
        )
        self.assertEqual(code, 0, err)
        lines = out.decode().splitlines()
        self.assertEqual(len(lines), 2, out)
        self.assertIn(b"Re-using existing connection", err + await self._verboseReuse(h, url))
        for line in lines:
            self.assertEqual(json.loads(line), expected)
        out, err, code = await h.curl(host, "--http2")
        self.assertEqual(code, 0, err)
        self.assertTrue(out.endswith(" 2"), out)
        self.assertEqual(json.loads(out.splitlines()[0]), expected)
        script = os.path.join(os.path.dirname(__file__), "h3client.py")
        out3, err3, code = await getProcessOutputAndValue(
            PY, [script, host, str(h.port), "/", h.cacert, authority], env=os.environ
        )
        self.assertEqual(code, 0, err3)
        status, body = out3.decode().split("\n", 1)
        self.assertEqual(status, "status=200")
        self.assertEqual(json.loads(body), expected)

    async def _verboseReuse(self, h: GatewayHarness, url: str) -> bytes:
        """
        curl's own word that both requests shared one connection.
        """
        authority = url.split("/")[2]
        _, err, _ = await getProcessOutputAndValue(
            "curl",
            [
                "-sS",
                "-v",
                "-o",
                "/dev/null",
                "--http1.1",
                "--cacert",
                h.cacert,
                "--resolve",
                f"{authority}:127.0.0.1",
                url,
                url,
            ],
            env=os.environ,
        )
        return err
