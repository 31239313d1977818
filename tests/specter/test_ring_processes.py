"""
Real processes on loopback speaking mTLS: a 3-process ring of 15 vnodes
survives kill -9, hands keys over on SIGTERM; AOF torn tails are repaired;
bad RPC and HTTP input gets errors while the node keeps serving.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import tempfile

import treq
from twisted.trial.unittest import TestCase

from suite.specter.chord.errors import RemoteError
from suite.specter.chord.wire import pack, unpack
from tests.specter.ring import RingProcess, makeBundles, waitOneRing
from tests.support.process import scriptArgs, sleep

KEYS = 200


def _readAll(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(4096):
        out += chunk
    return out


class ThreeProcessRingTests(TestCase):
    """
    Three ring processes of five vnodes each.
    """

    timeout = 150

    async def startRing(self, *extra: str) -> list[RingProcess]:
        base = self.mktemp()
        os.makedirs(base)
        certs = makeBundles(base, 3)
        seed = RingProcess(self, base, "p0", certs[0], *extra).withInternalAuth().start()
        await seed.ready()
        others = [
            RingProcess(self, base, f"p{i}", certs[i], "--join", seed.addr, *extra).withInternalAuth().start()
            for i in (1, 2)
        ]
        for p in others:
            await p.ready()
        ring = [seed, *others]
        # Ready is per process; keys are written once all three agree on
        # one ring (every vnode's successor in place), however long the
        # joins take to stabilise on a busy machine.
        await waitOneRing(ring)
        return ring

    async def writeKeys(self, proc: RingProcess) -> dict[bytes, bytes]:
        keys = {b"key-%d" % i: b"value-%d" % i for i in range(KEYS)}
        client = await proc.rpc()
        for k, v in keys.items():
            await client.kv("put", k, v)
        return keys

    async def waitAllHeld(self, procs: list[RingProcess], keys: dict[bytes, bytes], copies: int) -> None:
        """
        Wait until every key is readable through each process and held by
        C{copies} of them.
        """

        async def check() -> bool:
            for k, v in keys.items():
                held = 0
                for p in procs:
                    if await p.call("kv", "get", k, []) != v:
                        return False
                    if await p.call("holders", k):
                        held += 1
                if held < copies:
                    return False
            return True

        await procs[0].proc.waitFor(check, f"all keys held by {copies} processes", timeout=60, interval=0.5)

    async def test_killNine(self) -> None:
        """
        With two copies per key (--replicas 2), kill -9 of one process loses
        no key, and the keys it held are copied again so that both surviving
        processes hold every key.
        """
        ring = await self.startRing("--replicas", "2")
        keys = await self.writeKeys(ring[1])
        await self.waitAllHeld(ring, keys, 2)
        onlyTwo = 0
        for k in keys:
            if not await self._holds(ring[0], k) or not await self._holds(ring[1], k):
                onlyTwo += 1
        self.assertGreater(onlyTwo, 0)
        ring[2].proc.kill9()
        await ring[2].proc.waitExit(10)
        await self.waitAllHeld(ring[:2], keys, 2)
        owner = await ring[0].call("lookup", b"key-1")
        self.assertNotEqual(owner["owner"][1], ring[2].addr)

    async def test_sigtermHandsOver(self) -> None:
        """
        With one copy per key (--replicas 1), SIGTERM makes the process hand
        its keys to its successors before it exits; none is lost.
        """
        ring = await self.startRing("--replicas", "1")
        keys = await self.writeKeys(ring[0])
        held = 0
        for k in keys:
            held += await self._holds(ring[2], k)
        self.assertGreater(held, 0)
        code = await ring[2].proc.stop(signal.SIGTERM, timeout=60)
        # twistd ends by re-raising the signal that stopped it
        self.assertIn(code, (0, -signal.SIGTERM))
        out = ring[2].proc.output()
        self.assertEqual(out.count("handed its range"), 5)
        for k, v in keys.items():
            self.assertEqual(await ring[0].call("kv", "get", k, []), v)

    async def _holds(self, p: RingProcess, key: bytes) -> bool:
        return bool(await p.call("holders", key))


class SingleProcessTests(TestCase):
    """
    One ring process: durability and bad input.
    """

    timeout = 90

    async def startOne(
        self, *extra: str, dataDir: str | None = None, cert: str | None = None, port: int | None = None
    ) -> RingProcess:
        base = self.mktemp()
        os.makedirs(base)
        if cert is None:
            cert = makeBundles(base, 1)[0]
        p = RingProcess(self, base, "solo", cert, *extra, dataDir=dataDir, port=port).start()
        await p.ready()
        return p

    async def test_aofTornTail(self) -> None:
        """
        After kill -9 and a record torn mid-write, the node starts, logs the
        repair and serves every flushed key.
        """
        p = await self.startOne("--aof-flush-interval", "0.1", "--replicas", "1")
        client = await p.rpc()
        for i in range(50):
            await client.kv("put", b"k%d" % i, b"v%d" % i)
        await sleep(1.0)
        p.proc.kill9()
        await p.proc.waitExit(10)
        victim = os.path.join(p.dataDir, "0", "kv.aof")
        with open(victim, "ab") as f:
            f.write(b"\x01\x00\x00\x01\x00\x12\x34")
        again = await self.startOne(dataDir=p.dataDir, cert=p.argv[p.argv.index("--cert") + 1], port=p.port)
        await again.proc.waitForLog("cut a torn or corrupt tail")
        for i in range(50):
            self.assertEqual(await again.call("kv", "get", b"k%d" % i, []), b"v%d" % i)

    async def test_sqliteAndCommandLine(self) -> None:
        """
        With the sqlite backend and the RPC on a unix socket, keys written
        with the specter kv command survive a restart.
        """
        from twisted.internet import reactor
        from twisted.internet.utils import getProcessOutputAndValue

        short = tempfile.mkdtemp(prefix="spk", dir="/tmp")  # AF_UNIX paths are short
        self.addCleanup(shutil.rmtree, short, True)
        sock = os.path.join(short, "rpc.sock")
        p = await self.startOne("--kv", "sqlite", "--listen-rpc", f"unix://{sock}")

        async def kv(*args: str) -> tuple[int, str]:
            argv = scriptArgs("specter", "kv", "--rpc", f"unix://{sock}", *args)
            out, err, code = await getProcessOutputAndValue(
                argv[0], argv[1:], env=dict(os.environ), reactor=reactor
            )
            return code, (out + err).decode()

        self.assertEqual(await kv("put", "colour", "blue"), (0, ""))
        self.assertEqual(await kv("append", "set", "a"), (0, "true\n"))
        code, out = await kv("get", "colour")
        self.assertEqual((code, out), (0, "blue\n"))
        code, out = await kv("lookup", "colour")
        self.assertEqual(code, 0, out)
        version = json.loads(out)["versions"]["value"]
        self.assertEqual(sorted(version), ["counter", "deleted", "hlc", "origin", "time"])
        self.assertFalse(version["deleted"])
        code, out = await kv("get", "nothing")
        self.assertEqual(code, 1)
        self.assertIn("not found", out)
        await p.proc.stop(signal.SIGTERM, timeout=30)
        self.assertTrue(os.path.exists(os.path.join(p.dataDir, "cache")))
        again = await self.startOne(
            "--kv",
            "sqlite",
            "--listen-rpc",
            f"unix://{sock}",
            dataDir=p.dataDir,
            cert=p.argv[p.argv.index("--cert") + 1],
            port=p.port,
        )
        code, out = await kv("get", "colour")
        self.assertEqual((code, out), (0, "blue\n"))
        self.assertIn(await self._ownerIndex(again, b"colour"), await again.call("holders", b"colour"))

    async def _ownerIndex(self, p: RingProcess, key: bytes) -> int:
        answer = await p.call("lookup", key)
        return int(answer["owner"][2])

    async def test_badInput(self) -> None:
        """
        Malformed RPC calls get errors, garbage frames close only that
        connection, /_internal is 404 without credentials, and the node
        keeps serving throughout.
        """
        p = await self.startOne()
        client = await p.rpc()
        for bad in (
            ("kv", "frobnicate", b"k", []),
            ("kv", "put", b"k", []),
            ("kv", "put", b"x" * 5000, [b"v"]),
            ("nosuch",),
            ("kv", "put", 7, [b"v"]),
        ):
            with self.assertRaises(RemoteError) as caught:
                await client.call(*bad)
            self.assertEqual(caught.exception.code, "bad-request")
        with socket.create_connection(("127.0.0.1", p.rpcPort)) as s:
            s.sendall(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")
            s.settimeout(5)
            self.assertEqual(s.recv(10), b"")
        # an oversized first frame: refused (a reason, then closed) unread
        with socket.create_connection(("127.0.0.1", p.rpcPort)) as s:
            s.sendall(struct.pack(">I", 1 << 30))
            s.settimeout(5)
            refusal = _readAll(s)
            self.assertEqual(unpack(refusal[4:])[:3], [1, 0, False])
            self.assertEqual(unpack(refusal[4:])[3][0], "unauthorized")
        # once authenticated, an oversized frame closes the connection
        with socket.create_connection(("127.0.0.1", p.rpcPort)) as s:
            auth = pack([0, 1, None, "auth", [p.rpcToken()]])
            s.sendall(struct.pack(">I", len(auth)) + auth)
            s.settimeout(5)
            self.assertEqual(unpack(s.recv(100)[4:]), [1, 1, True, True])
            s.sendall(struct.pack(">I", 1 << 30))
            self.assertEqual(s.recv(10), b"")
        with socket.create_connection(("127.0.0.1", p.port)) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.settimeout(5)
            try:
                s.recv(100)
            except (ConnectionResetError, TimeoutError):
                pass
        r = await treq.get(f"http://127.0.0.1:{p.httpPort}/_internal/chord/stats?key=a", persistent=False)
        self.assertEqual(r.code, 404)
        await r.content()
        await client.call("kv", "put", b"still", [b"serving"])
        self.assertEqual(await client.call("kv", "get", b"still", []), b"serving")

    async def test_internalWithCredentials(self) -> None:
        """
        With INTERNAL_USER/INTERNAL_PASS set, /_internal answers chord stats
        for a key and the ring graph behind basic auth.
        """
        p = RingProcess(self, self.mktemp(), "auth", "", port=None)
        base = os.path.dirname(p.dataDir)
        os.makedirs(base, exist_ok=True)
        cert = makeBundles(base, 1)[0]
        p = RingProcess(self, base, "auth", cert, "--verbose")
        p.proc.env.update(INTERNAL_USER="ops", INTERNAL_PASS="s3cret")
        p.start()
        await p.ready()
        url = f"http://127.0.0.1:{p.httpPort}/_internal/chord/stats?key=hello"
        r = await treq.get(url, persistent=False)
        self.assertEqual(r.code, 401)
        await r.content()
        r = await treq.get(url, auth=("ops", "wr0ng-guess"), persistent=False)
        self.assertEqual(r.code, 401)
        await r.content()
        r = await treq.get(url, auth=("ops", "s3cret"), persistent=False)
        self.assertEqual(r.code, 200)
        body = await r.json()
        self.assertIn(p.addr, body["owner"])
        r = await treq.get(
            f"http://127.0.0.1:{p.httpPort}/_internal/chord/graph", auth=("ops", "s3cret"), persistent=False
        )
        self.assertIn(b"<svg", await r.content())
        r = await treq.get(
            f"http://127.0.0.1:{p.httpPort}/_internal/kv/stats", auth=("ops", "s3cret"), persistent=False
        )
        self.assertEqual(r.code, 200)
        self.assertIn("vnode0", await r.json())
        r = await treq.get(f"http://127.0.0.1:{p.httpPort}/metrics", persistent=False)
        metrics = (await r.content()).decode()
        self.assertIn("specter_vnodes_serving 5.0", metrics)
        self.assertIn("specter_lookups_total", metrics)
        # debug surfaces: migrator state, expvar-like counters, on-demand CPU profile
        auth = ("ops", "s3cret")
        r = await treq.get(f"http://127.0.0.1:{p.httpPort}/_internal/migrator", auth=auth, persistent=False)
        migrator = await r.json()
        self.assertEqual([v["phase"] for v in migrator["vnodes"]], ["active"] * 5)
        self.assertEqual(migrator["addr"], p.addr)
        r = await treq.get(f"http://127.0.0.1:{p.httpPort}/_internal/debug/vars", auth=auth, persistent=False)
        snapshot = await r.json()
        self.assertEqual(snapshot["metrics"]["specter_vnodes_serving"], 5.0)
        self.assertGreater(snapshot["process"]["maxRSSKiB"], 0)
        profile = f"http://127.0.0.1:{p.httpPort}/_internal/debug/pprof/profile"
        r = await treq.get(profile + "?seconds=0.3", auth=auth, persistent=False)
        self.assertEqual(r.code, 200)
        self.assertIn(b"function calls", await r.content())
        r = await treq.get(profile + "?seconds=3600", auth=auth, persistent=False)
        self.assertEqual(r.code, 400)
        self.assertIn("at most 60", (await r.json())["error"])
        for path in ("migrator", "debug/vars", "debug/pprof/profile?seconds=1"):
            r = await treq.get(f"http://127.0.0.1:{p.httpPort}/_internal/{path}", persistent=False)
            self.assertEqual(r.code, 401, path)
            await r.content()
        # neither the password nor a wrong guess is logged, even with --verbose
        self.assertNotIn("s3cret", p.proc.output())
        self.assertNotIn("wr0ng-guess", p.proc.output())
        self.assertNotIn(base64.b64encode(b"ops:s3cret").decode(), p.proc.output())


class ForeignCATests(TestCase):
    """
    Only holders of a certificate from the ring's CA may talk to a node.
    """

    timeout = 60

    async def test_foreignCARefused(self) -> None:
        """
        A peer presenting a certificate from another CA is refused; one from
        the ring's CA is answered; the node keeps serving.
        """
        from twisted.internet import reactor

        from suite.pki.load import loadBundle
        from suite.pki.tls import clientContextFactory
        from suite.specter.chord.wire import ALPN, WireTransport

        base = self.mktemp()
        os.makedirs(base)
        ours = makeBundles(base, 1)[0]
        other = os.path.join(base, "foreign")
        from suite.pki.ca import initBundle

        initBundle(other, ["127.0.0.1"])
        p = RingProcess(self, base, "solo", ours).start()
        await p.ready()
        for bundleDir, ok in ((other, False), (ours, True)):
            transport = WireTransport(
                reactor, clientContextFactory(loadBundle(bundleDir), acceptableProtocols=[ALPN])
            )
            self.addCleanup(transport.close)
            if ok:
                refs = await transport.call(p.addr, None, "hello", [], 10)
                self.assertEqual(len(refs), 5)
            else:
                with self.assertRaises(RemoteError):
                    await transport.call(p.addr, None, "hello", [], 10)
        self.assertEqual(await p.call("kv", "get", b"none", []), None)
