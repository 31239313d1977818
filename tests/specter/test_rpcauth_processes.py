"""
The local RPC's authentication with real processes: a TCP C{--listen-rpc}
refuses a client without the node's token and serves C{specter kv} with
C{--data}, C{--rpc-token-file} or C{SPECTER_RPC_TOKEN_FILE}, or with
nothing when it runs as the node's user (the listener's own token);
C{specter dns} reads the ring with C{--rpc-token-file} or, likewise,
nothing; a unix socket C{--listen-rpc}
serves its own user without a token (C{SO_PEERCRED}) and refuses another
user (a child process dropped to C{nobody}).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from suite.specter.chord.errors import RemoteError
from suite.specter.chord.wire import unpack
from suite.specter.rpc import RPCFactory, connectRPC
from suite.specter.rpcauth import ENV_TOKEN_FILE, TOKEN_FILE
from tests.specter.ring import RingProcess, makeBundles
from tests.specter.test_rpcauth import TOKEN, FakeRing
from tests.support.process import DaemonProcess, freePort, scriptArgs


class RPCAuthProcessTests(TestCase):
    timeout = 120

    async def startSolver(self, rpc: str, name: str, *extra: str) -> DaemonProcess:
        """
        A C{specter dns} reading the ring through C{rpc}, once it is ready.
        """
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
                *extra,
                "--listen-addr",
                f"127.0.0.1:{dnsPort}",
                "--listen-internal",
                f"tcp://127.0.0.1:{internal}",
            ),
            name=name,
        ).start()
        await solver.waitForHTTP(f"http://127.0.0.1:{internal}/readyz")
        return solver

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

        # a client without the token (as another user's would be, who cannot
        # see the node's files): refused, the error naming the flag to give
        refused = await connectRPC(reactor, tcp.rpcEndpoint, None)
        e = await self.assertFailure(refused.kv("put", b"colour", b"blue"), RemoteError)
        self.assertIn("--rpc-token-file", e.message)
        refused.close()
        wrong = os.path.join(base, "wrong.token")
        with open(wrong, "w") as f:
            f.write("0" * 64 + "\n")
        code, out, err = await self.kv("--rpc", rpc, "--rpc-token-file", wrong, "put", "colour", "blue")
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

        # as the node's user with nothing else given, as in the demo's
        # `specter kv --rpc tcp://... put k v`: the listening node's own token
        self.assertEqual(await self.kv("--rpc", rpc, "put", "found", "itself"), (0, "", ""))
        self.assertEqual(
            await self.kv("--rpc", f"tcp://localhost:{tcp.rpcPort}", "get", "found"), (0, "itself\n", "")
        )

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

        # specter dns reads the ring through the TCP RPC with the token
        # file, and, run as the node's user, with no token file at all
        solver = await self.startSolver(rpc, "dns", "--rpc-token-file", tokenPath)
        await solver.stop()
        finder = await self.startSolver(rpc, "dns-found")
        self.assertNotIn("unauthorized", finder.output())
        await finder.stop()

        # the unix socket: the same user needs no token
        self.assertEqual(await self.kv("--rpc", f"unix://{sock}", "put", "shape", "round"), (0, "", ""))
        self.assertEqual(await self.kv("--rpc", f"unix://{sock}", "get", "shape"), (0, "round\n", ""))

        for p in (tcp, unix):
            self.assertNotIn(token, p.proc.output())
        self.assertNotIn(token, solver.output())
        self.assertNotIn(token, finder.output())


#: a client in a child process: optionally becomes user ARGV[2], connects
#: to the unix socket ARGV[1] and prints (hex) what the server sends until
#: it closes (a refused peer is told at once, before it sends anything)
PEER = """
import os, socket, struct, sys
if len(sys.argv) > 2:
    os.setgid(int(sys.argv[2]))
    os.setuid(int(sys.argv[2]))
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(10)
out = b""
while chunk := s.recv(4096):
    out += chunk
sys.stdout.write(out.hex())
"""


class PeerCredTests(TestCase):
    """
    C{SO_PEERCRED} on a real unix socket: this process's user is served
    without a token, another user is refused naming its uid.
    """

    timeout = 60

    async def test_peerUid(self) -> None:
        d = tempfile.mkdtemp(prefix="spc", dir="/tmp")
        self.addCleanup(shutil.rmtree, d, True)
        # open to everyone, so another user's connection reaches the uid check
        os.chmod(d, 0o711)
        path = os.path.join(d, "rpc.sock")
        if os.getuid() == 0:
            # root is trusted: the other user is a child that drops to nobody
            ownUid, other = 0, ["65534"]
        else:
            # not root: the server claims another uid, so this user is the stranger
            ownUid, other = os.getuid() + 12345, []
        factory = RPCFactory(FakeRing(), reactor, token=TOKEN, uid=os.getuid())
        unix: Any = reactor
        port = unix.listenUNIX(path, factory, mode=0o666)
        self.addCleanup(port.stopListening)

        client = await connectRPC(reactor, f"unix:{path}")
        self.assertEqual(await client.call("stats"), {"values": 0})
        client.close()

        factory.uid = ownUid
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", PEER, path, *other], env=dict(os.environ), reactor=reactor
        )
        self.assertEqual(code, 0, err)
        data = bytes.fromhex(out.decode())
        answer = unpack(data[4:])
        self.assertEqual(answer[:3], [1, 0, False])
        self.assertEqual(answer[3][0], "unauthorized")
        self.assertIn(f"unix peer uid {other[0] if other else os.getuid()}", answer[3][1])
        self.assertEqual(factory.refusals.refused, 1)
