"""
End to end with curl: a keep-alive HTTP/1.1 connection bound to one
tunnel's host carries a later request naming another tunnel's host; the
gateway does not forward it to the first tunnel, and curl retries it on a
new connection, routed by its own Host.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.specter.gateway.support import GatewayHarness, listenLocal


class _Named(Resource):
    """
    Answers every GET with its name and the Host it was asked for, and
    keeps the paths it was asked.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.paths: list[str] = []

    def render_GET(self, request: Any) -> bytes:
        self.paths.append(request.uri.decode())
        host = (request.getHeader(b"host") or b"").decode()
        return f"{self.name} {host}\n".encode()


class HostBindingCurlTests(TestCase):
    timeout = 90

    async def test_laterOtherHostRetriedElsewhere(self) -> None:
        a, b = _Named("A"), _Named("B")
        portA, backendA = listenLocal(Site(a))
        self.addCleanup(portA.stopListening)
        portB, backendB = listenLocal(Site(b))
        self.addCleanup(portB.stopListening)
        h = GatewayHarness(self)
        await h.start()
        _, hostA = await h.tunnel(f"http://127.0.0.1:{backendA}")
        _, hostB = await h.tunnel(f"http://127.0.0.1:{backendB}")
        authorityA, authorityB = f"{hostA}:{h.port}", f"{hostB}:{h.port}"
        urlA = f"https://{authorityA}"
        common = [
            "--http1.1",
            "--max-time",
            "10",
            "--cacert",
            h.cacert,
            "--resolve",
            f"{authorityA}:127.0.0.1",
        ]
        # one curl, one connection: the second transfer reuses it with B's Host
        out, err, code = await getProcessOutputAndValue(
            "curl",
            [
                "-sS",
                "-v",
                *common,
                f"{urlA}/first",
                "--next",
                *common,
                "-H",
                f"Host: {authorityB}",
                f"{urlA}/second",
            ],
            env=os.environ,
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(out.decode().splitlines(), [f"A {authorityA}", f"B {authorityB}"], err)
        self.assertIn(b"Re-using existing connection", err)
        self.assertEqual(a.paths, ["/first"])  # B's request never reached A
        self.assertEqual(b.paths, ["/second"])
        await h.gateway.waitForLog(
            f"closed: a later request names {hostB}, this connection is bound to {hostA}"
        )
