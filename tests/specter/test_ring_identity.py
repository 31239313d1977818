"""
Node identity and the local RPC surface, with real processes: a node
certificate must name the advertised address (at start-up, when dialled
and in every call that names its caller); the unix RPC socket is private;
RPC arguments are checked; bad addresses are usage errors.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from suite.pki.ca import writeNodeCertificate
from suite.pki.load import loadBundle
from suite.pki.tls import clientContextFactory
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.wire import ALPN, WireTransport
from tests.specter.ring import RingProcess, makeBundles
from tests.support.process import freePort, scriptArgs


async def run(*argv: str) -> tuple[int, str]:
    from twisted.internet import reactor

    out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=dict(os.environ), reactor=reactor)
    return code, (out + err).decode()


class UsageTests(TestCase):
    """
    Addresses that cannot be a ring node's are usage errors: exit 2, one line.
    """

    timeout = 60

    async def test_badAddresses(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        cert = makeBundles(base, 1)[0]
        common = ("specter", "server", "--data", os.path.join(base, "d"), "--cert", cert)
        for extra, flag in (
            (("--join", "nonsense"), "--join"),
            (("--advertise-addr", "foo"), "--advertise-addr"),
            (("--join", "127.0.0.1:99999"), "--join"),
            (("--bootstrap", "--join", "127.0.0.1:7440"), "--bootstrap"),
        ):
            code, out = await run(*scriptArgs(*common, *extra))
            self.assertEqual(code, 2, out)
            lines = [line for line in out.splitlines() if line.strip()]
            self.assertIn(flag, lines[0])
            self.assertNotIn("Traceback", out)

    async def test_certificateNotNamingAdvertised(self) -> None:
        """
        A certificate minted for 10.9.9.9 cannot advertise 127.0.0.1.
        """
        base = self.mktemp()
        os.makedirs(base)
        first = makeBundles(base, 1)[0]
        other = os.path.join(base, "other")
        writeNodeCertificate(first, other, ["10.9.9.9"])
        port = freePort()
        code, out = await run(
            *scriptArgs(
                "specter",
                "server",
                "--data",
                os.path.join(base, "d"),
                "--cert",
                other,
                "--listen-tcp",
                f"127.0.0.1:{port}",
                "--advertise-addr",
                f"127.0.0.1:{port}",
                "--listen-rpc",
                f"tcp://127.0.0.1:{freePort()}",
                "--listen-internal",
                f"tcp://127.0.0.1:{freePort()}",
            )
        )
        self.assertEqual(code, 2, out)
        self.assertIn("--advertise-addr: the node certificate does not name 127.0.0.1", out)
        self.assertIn("10.9.9.9", out)


class IdentityTests(TestCase):
    """
    One running node and hand-made peers.
    """

    timeout = 90

    async def test_identityChecks(self) -> None:
        """
        Dialled at a name its certificate lacks, the node is refused; a
        caller whose certificate lacks the address it claims is refused
        (forbidden) on join and notify; a truthful caller is answered.
        """
        from twisted.internet import reactor

        base = self.mktemp()
        os.makedirs(base)
        certs = makeBundles(base, 2)
        p = RingProcess(self, base, "solo", certs[0]).start()
        await p.ready()
        bundle = loadBundle(certs[1])

        def dialling(host: str) -> object:
            return clientContextFactory(bundle, hostname=host, acceptableProtocols=[ALPN])

        transport = WireTransport(reactor, dialling)
        self.addCleanup(transport.close)
        refs = await transport.call(p.addr, None, "hello", [], 10)
        self.assertEqual(len(refs), 5)
        with self.assertRaises(RemoteError):
            await transport.call(f"localhost:{p.port}", None, "hello", [], 10)
        vid = refs[0][0]
        liar = [12345, "10.9.9.9:7440", 0]
        for method in ("join", "notify"):
            with self.assertRaises(RemoteError) as caught:
                await transport.call(p.addr, vid, method, [liar], 10)
            self.assertEqual(caught.exception.code, "forbidden")
            self.assertIn("10.9.9.9", caught.exception.message)
        honest = [12345, "127.0.0.1:1", 0]
        self.assertIsNone(await transport.call(p.addr, vid, "notify", [honest], 10))
        self.assertIn("ring call refused", p.proc.output())


class RPCSurfaceTests(TestCase):
    """
    The unix RPC socket and argument checks.
    """

    timeout = 90

    async def test_unixSocketPrivate(self) -> None:
        """
        The RPC socket is created 0600; a world-writable directory is refused.
        """
        base = self.mktemp()
        os.makedirs(base)
        cert = makeBundles(base, 1)[0]
        short = tempfile.mkdtemp(prefix="spr", dir="/tmp")
        self.addCleanup(shutil.rmtree, short, True)
        os.chmod(short, 0o755)
        sock = os.path.join(short, "rpc.sock")
        p = RingProcess(self, base, "solo", cert, "--listen-rpc", f"unix://{sock}").start()
        await p.ready()
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o600)
        client = await p.rpc()
        await client.kv("put", b"k", b"v")
        for bad, field in (
            (("acquire", b"lock", b"me", -5), "ttl"),
            (("acquire", b"lock", b"me", 0), "ttl"),
            (("acquire", b"lock", b"me", 10**9), "ttl"),
            (("acquire", b"lock", b"me", "soon"), "ttl"),
            (("renew", b"lock", -1, 10), "token"),
            (("release", b"lock", "x"), "token"),
            (("put", b"", b"v"), "key"),
            (("put", b"k", b"x" * (8 * 1024 * 1024 + 1)), "value"),
            (("acquire", b"lock", b"h" * 5000, 10), "holder"),
        ):
            with self.assertRaises(RemoteError) as caught:
                await client.kv(*bad)
            self.assertEqual(caught.exception.code, "bad-request", bad[:3])
            self.assertIn(field, caught.exception.message)
        lease = await client.kv("acquire", b"lock", b"me", 10)
        self.assertEqual(lease[1], b"me")

        loose = tempfile.mkdtemp(prefix="spw", dir="/tmp")
        self.addCleanup(shutil.rmtree, loose, True)
        os.chmod(loose, 0o777)
        code, out = await run(
            *scriptArgs(
                "specter",
                "server",
                "--data",
                os.path.join(base, "d2"),
                "--cert",
                cert,
                "--listen-tcp",
                f"127.0.0.1:{freePort()}",
                "--listen-rpc",
                f"unix://{loose}/rpc.sock",
                "--listen-internal",
                f"tcp://127.0.0.1:{freePort()}",
            )
        )
        self.assertEqual(code, 2, out)
        self.assertIn("--listen-rpc: socket directory", out)
        self.assertIn("writable by everyone", out)
