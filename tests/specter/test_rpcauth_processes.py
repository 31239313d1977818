"""
The local RPC's authentication with real processes: a TCP C{--listen-rpc}
refuses C{specter kv} without the node's token and serves it with
C{--data}, C{--rpc-token-file} or C{SPECTER_RPC_TOKEN_FILE}; C{specter dns}
reads the ring with C{--rpc-token-file}; a unix socket C{--listen-rpc}
serves its own user without a token (C{SO_PEERCRED}).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from suite.specter.rpcauth import ENV_TOKEN_FILE, TOKEN_FILE
from tests.specter.ring import RingProcess, makeBundles
from tests.support.process import DaemonProcess, freePort, scriptArgs


class RPCAuthProcessTests(TestCase):
    timeout = 120

    async def kv(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        argv = scriptArgs("specter", "kv", *args)
        environ = {k: v for k, v in os.environ.items() if k != ENV_TOKEN_FILE}
        environ.update(env or {})
        out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=environ, reactor=reactor)
        return code, out.decode(), err.decode()

    async def test_tokenAndPeerUid(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        cert = makeBundles(base, 1)[0]
        short = tempfile.mkdtemp(prefix="spa", dir="/tmp")  # AF_UNIX paths are short
        self.addCleanup(shutil.rmtree, short, True)
        sock = os.path.join(short, "rpc.sock")
        tcp = RingProcess(self, base, "tcp", cert).start()
        unix = RingProcess(self, base, "unix", cert, "--listen-rpc", f"unix://{sock}").start()
        await tcp.ready()
        await unix.ready()

        tokenPath = os.path.join(tcp.dataDir, TOKEN_FILE)
        self.assertEqual(stat.S_IMODE(os.stat(tokenPath).st_mode), 0o600)
        with open(tokenPath) as f:
            token = f.read().strip()
        rpc = f"tcp://127.0.0.1:{tcp.rpcPort}"

        # without the token: refused, the error naming the flag to give
        code, out, err = await self.kv("--rpc", rpc, "put", "colour", "blue")
        self.assertEqual(code, 1, out + err)
        self.assertIn("refused", err)
        self.assertIn("--rpc-token-file", err)
        self.assertNotIn("Traceback", err)
        code, out, err = await self.kv(
            "--rpc", rpc, "get", "colour", env={ENV_TOKEN_FILE: os.path.join(base, "x")}
        )
        # an unreadable token file is a configuration error naming its variable
        self.assertEqual(code, 2, err)
        self.assertIn(f"{ENV_TOKEN_FILE}: cannot read", err)
        await tcp.proc.waitForLog(r"--listen-rpc: refused 127\.0\.0\.1:\d+: call 'kv' before authenticating")

        # with it: --data, --rpc-token-file, the environment
        self.assertEqual(
            await self.kv("--rpc", rpc, "--data", tcp.dataDir, "put", "colour", "blue"), (0, "", "")
        )
        self.assertEqual(
            await self.kv("--rpc", rpc, "--rpc-token-file", tokenPath, "get", "colour"), (0, "blue\n", "")
        )
        self.assertEqual(
            await self.kv("--rpc", rpc, "get", "colour", env={ENV_TOKEN_FILE: tokenPath}), (0, "blue\n", "")
        )
        # the tests' own client authenticates with the data directory's token
        client = await tcp.rpc()
        self.assertEqual(await client.kv("get", b"colour"), b"blue")

        # specter dns reads the ring through the TCP RPC with the token file
        internal, dnsPort = freePort(), freePort()
        solver = DaemonProcess(
            self,
            scriptArgs(
                "specter",
                "dns",
                "--acme",
                "acme://ops@example.net@acme.test",
                "--acme-ns",
                "ns1.acme.test/127.0.0.1",
                "--rpc",
                rpc,
                "--rpc-token-file",
                tokenPath,
                "--listen-addr",
                f"127.0.0.1:{dnsPort}",
                "--listen-internal",
                f"tcp://127.0.0.1:{internal}",
            ),
            name="dns",
        ).start()
        await solver.waitForHTTP(f"http://127.0.0.1:{internal}/readyz")
        await solver.stop()

        # the unix socket: the same user needs no token
        self.assertEqual(await self.kv("--rpc", f"unix://{sock}", "put", "shape", "round"), (0, "", ""))
        self.assertEqual(await self.kv("--rpc", f"unix://{sock}", "get", "shape"), (0, "round\n", ""))

        for p in (tcp, unix):
            self.assertNotIn(token, p.proc.output())
        self.assertNotIn(token, solver.output())
