"""
Real processes: the C{specter server} console script serves HTTP/3 with
C{--listen-udp} (it installs the asyncio reactor itself), and C{twistd
specter} on another reactor says in one line that QUIC needs
C{--reactor=asyncio}.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.specter.ring import RingProcess, makeBundles
from tests.support.process import freePort, twistdArgs

HERE = os.path.dirname(__file__)


class ConsoleQUICTests(TestCase):
    timeout = 120

    async def test_consoleScriptServesHTTP3(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        [cert] = makeBundles(base, 1)
        port = freePort()
        node = RingProcess(
            self, base, "n0", cert, "--apex", "example.test", "--listen-udp", f"127.0.0.1:{port}", port=port
        ).start()
        await node.ready()
        await node.proc.waitForLog("HTTP/3 \\(QUIC\\) listening on udp 127.0.0.1")
        cacert = os.path.join(base, "n0", "gateway", "selfsigned.crt")
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [os.path.join(HERE, "h3client.py"), "nobody.example.test", str(port), "/", cacert],
            env=os.environ,
        )
        self.assertEqual(code, 0, err)
        self.assertTrue(out.decode().startswith("status=404\n"), out)
        self.assertIn("no tunnel is serving nobody.example.test", out.decode())

    async def test_twistdNeedsAsyncio(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        [cert] = makeBundles(base, 1)
        port = freePort()
        argv = twistdArgs(
            "specter",
            "server",
            "--data",
            os.path.join(base, "d"),
            "--cert",
            cert,
            "--apex",
            "example.test",
            "--listen-tcp",
            f"127.0.0.1:{port}",
            "--listen-udp",
            f"127.0.0.1:{port}",
            "--listen-rpc",
            f"tcp://127.0.0.1:{freePort()}",
            "--listen-internal",
            f"tcp://127.0.0.1:{freePort()}",
        )
        out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=os.environ)
        self.assertNotEqual(code, 0)
        text = (out + err).decode()
        lines = [line for line in text.splitlines() if "--reactor=asyncio" in line]
        self.assertEqual(len(lines), 1, text)
        self.assertIn("--listen-udp", lines[0])
        self.assertNotIn("Traceback", text)


class BusyPortTests(TestCase):
    """
    A gateway port that cannot be bound (TCP or QUIC's UDP) ends start-up
    with one line naming the flag, exit status 1.
    """

    timeout = 120

    async def _start(self, proto: int, flag: str) -> None:
        import socket

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        [cert] = makeBundles(base, 1)
        busy = socket.socket(socket.AF_INET, proto)
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        if proto == socket.SOCK_STREAM:
            busy.listen()
        port = busy.getsockname()[1]
        node = RingProcess(
            self,
            base,
            "n0",
            cert,
            "--apex",
            "example.test",
            "--listen-udp",
            f"127.0.0.1:{port}",
            port=port,
        )
        if proto == socket.SOCK_DGRAM:
            # TCP on a free port, UDP on the busy one
            tcp = freePort()
            node.argv[node.argv.index(f"127.0.0.1:{port}")] = f"127.0.0.1:{tcp}"
            node.argv[node.argv.index(f"127.0.0.1:{port}")] = f"127.0.0.1:{tcp}"
        node.proc.argv = node.argv
        node.start()
        self.assertEqual(await node.proc.waitExit(60), 1)
        lines = [line for line in node.proc.output().splitlines() if "cannot listen" in line]
        self.assertEqual(len(lines), 1, node.proc.output())
        self.assertIn(f"{flag}: cannot listen on", lines[0])
        self.assertNotIn("Traceback", node.proc.output())

    async def test_busyTCP(self) -> None:
        import socket

        await self._start(socket.SOCK_STREAM, "--listen-tcp")

    async def test_busyUDP(self) -> None:
        import socket

        await self._start(socket.SOCK_DGRAM, "--listen-udp")
