"""
The gateway inside real C{specter server} ring processes: routes in the
ring KV, a request at node A for a tunnel linked only to node B is
forwarded over the overlay, /_internal/tunnels shows the link.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

import treq
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from suite.pki.ca import writeClientCertificate
from suite.pki.load import loadBundle
from tests.specter.gateway.support import curlTLS, listenLocal
from tests.specter.ring import RingProcess, makeBundles
from tests.support.process import DaemonProcess, waitUntil

APEX = "example.test"


async def _servedThrough(host: str, node: RingProcess, cacert: str) -> tuple[str, str]:
    """
    Poll C{https://HOST/x} through C{node}'s gateway until it answers 200
    (the route reaches the ring first); the last output and error output.
    """
    last = ("", "")

    async def served() -> bool:
        nonlocal last
        out, err, _ = await curlTLS(host, node.port, cacert, "/x", "-w", "\n%{http_code}")
        last = (out, err)
        return out.endswith("200")

    await waitUntil(served, lambda: f"the tunnel served through {node.addr}: {last}", 30, 0.2)
    return last


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"ring backend " + request.uri


class RingGatewayTests(TestCase):
    timeout = 120

    async def test_forwardedAcrossTheRing(self) -> None:
        """
        curl at node A reaches a tunnel whose only link is on node B.
        """

        site = Site(_Hello())
        port, portNumber = listenLocal(site)
        self.addCleanup(port.stopListening)
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        certs = makeBundles(base, 2)
        alice = os.path.join(base, "alice")
        writeClientCertificate(loadBundle(certs[0]), "alice", alice)
        extra = (
            "--apex",
            APEX,
            "--virtual",
            "1",
            "--kv",
            "memory",
            "--auth_user",
            "ops",
            "--auth_pass",
            "pw",
        )
        a = RingProcess(self, base, "a", certs[0], *extra).start()
        await a.ready()
        b = RingProcess(self, base, "b", certs[1], "--join", a.addr, *extra).start()
        await b.ready()
        argv = [
            sys.executable,
            "-m",
            "suite.specter.client",
            "--server",
            b.addr,
            "--cert-dir",
            alice,
            "tunnel",
            "--links",
            "1",
            "--target",
            f"http://127.0.0.1:{portNumber}",
        ]
        client = DaemonProcess(self, argv, name="client").start()
        host = (await client.waitForLog(r"tunnel (\S+) linked through")).group(1)
        for node in (a, b):
            cacert = os.path.join(node.dataDir, "gateway", "selfsigned.crt")
            out, err = await _servedThrough(host, node, cacert)
            self.assertEqual(out, "ring backend /x\n200", err)
        r: Any = await treq.get(
            f"http://127.0.0.1:{b.httpPort}/_internal/tunnels", auth=("ops", "pw"), persistent=False
        )
        views = await r.json()
        self.assertEqual(views["hostnames"], [host])
        cacert = os.path.join(b.dataDir, "gateway", "selfsigned.crt")
        out, err, code = await getProcessOutputAndValue(
            "curl",
            [
                "-sS",
                "--max-time",
                "10",
                "-u",
                "ops:pw",
                "--cacert",
                cacert,
                "--resolve",
                f"{APEX}:{b.port}:127.0.0.1",
                f"https://{APEX}:{b.port}/_internal/tunnels",
            ],
            env=os.environ,
        )
        self.assertIn(host, out.decode(), err)

    async def test_gatewayLossAndRestart(self) -> None:
        """
        A client linked to two ring gateways keeps serving through A while
        B is SIGTERMed under HTTP/2 load (zero failed requests), and after B
        is killed with SIGKILL.
        """

        site = Site(_Hello())
        port, portNumber = listenLocal(site)
        self.addCleanup(port.stopListening)
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        certs = makeBundles(base, 3)
        alice = os.path.join(base, "alice")
        writeClientCertificate(loadBundle(certs[0]), "alice", alice)
        extra = ("--apex", APEX, "--virtual", "1", "--kv", "memory")
        a = RingProcess(self, base, "a", certs[0], *extra).start()
        await a.ready()
        b = RingProcess(self, base, "b", certs[1], "--join", a.addr, *extra).start()
        c = RingProcess(self, base, "c", certs[2], "--join", a.addr, *extra).start()
        await b.ready()
        await c.ready()
        argv = [
            sys.executable,
            "-m",
            "suite.specter.client",
            "--server",
            a.addr,
            "--cert-dir",
            alice,
            "tunnel",
            "--links",
            "3",
            "--target",
            f"http://127.0.0.1:{portNumber}",
        ]
        client = DaemonProcess(self, argv, name="client").start()
        host = (await client.waitForLog(r"tunnel (\S+) linked through")).group(1)
        await client.waitFor(
            lambda: len(set(re.findall(r"linked through (\S+)\"", client.output()))) >= 3,
            "links to three gateways",
        )
        cacert = os.path.join(a.dataDir, "gateway", "selfsigned.crt")
        load = getProcessOutputAndValue(
            "h2load",
            [
                "-n",
                "3000",
                "-c",
                "4",
                "-m",
                "4",
                # SNI and :authority the tunnel hostname (covered by the
                # certificate presented), the connection to the gateway
                "--connect-to",
                f"127.0.0.1:{a.port}",
                f"https://{host}:{a.port}/load",
            ],
            env=os.environ,
        )
        b.proc.sendSignal(signal.SIGTERM)
        out, err, code = await load
        self.assertIn(b"3000 succeeded, 0 failed", out, out.decode()[-800:])
        c.proc.kill9()
        out, err, code = await curlTLS(host, a.port, cacert, "/after", "-w", "\n%{http_code}")
        self.assertEqual(out, "ring backend /after\n200", err)
