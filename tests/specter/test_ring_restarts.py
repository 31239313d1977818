"""
Real processes: a ring survives every restart an operator does, each node
restarted with its own unchanged command (the seed without C{--join}).
After each, every acknowledged key is readable through every node and the
nodes' C{/_internal/chord/stats} describe one ring.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import treq
from twisted.internet.defer import Deferred, DeferredList
from twisted.trial.unittest import TestCase

from tests.specter.ring import RingProcess, chordStats, makeBundles, waitOneRing


class RestartTests(TestCase):
    """
    Three ring processes of five vnodes, R = 2.
    """

    timeout = 240

    async def startRing(self, *extra: str, seedExtra: tuple[str, ...] = ()) -> list[RingProcess]:
        base = self.mktemp()
        os.makedirs(base)
        certs = makeBundles(base, 3)
        seed = self.process(base, "p0", certs[0], *extra, *seedExtra)
        seed.start()
        await seed.ready()
        ring = [seed]
        for i in (1, 2):
            p = self.process(base, f"p{i}", certs[i], *extra, "--join", seed.addr)
            p.start()
            await p.ready()
            ring.append(p)
        await self.oneRing(ring)
        return ring

    def process(self, base: str, name: str, cert: str, *extra: str) -> RingProcess:
        return RingProcess(self, base, name, cert, "--replicas", "2", *extra).withInternalAuth()

    async def restart(self, p: RingProcess) -> None:
        """
        Start C{p} again with exactly the command it was first started with.
        """
        p.client = None
        p.start()
        await p.ready()

    async def write(self, p: RingProcess, keys: dict[bytes, bytes | None], n: int, tag: str) -> None:
        client = await p.rpc()
        for i in range(n):
            k, v = b"%s-%d" % (tag.encode(), i), b"value-%s-%d" % (tag.encode(), i)
            await client.kv("put", k, v)
            keys[k] = v

    async def stats(self, p: RingProcess) -> Any:
        return await chordStats(p)

    async def oneRing(self, ring: list[RingProcess], timeout: float = 60) -> None:
        await waitOneRing(ring, timeout)

    async def allReadable(
        self, ring: list[RingProcess], keys: dict[bytes, bytes | None], settle: float = 0
    ) -> None:
        """
        Every key reads back its value through every process; with
        C{settle}, keys still moving to new vnodes get that many seconds to
        arrive (a wrong or lost value still fails at the end).
        """
        for p in ring:
            client = await p.rpc()
            for k, v in keys.items():
                if settle:

                    async def arrived(client: Any = client, k: bytes = k, v: bytes | None = v) -> bool:
                        return bool(await client.kv("get", k) == v)

                    await p.proc.waitFor(arrived, f"{k!r} readable through {p.name}", timeout=settle)
                self.assertEqual(await client.kv("get", k), v, (p.name, k))

    async def check(
        self, ring: list[RingProcess], keys: dict[bytes, bytes | None], tag: str, settle: float = 0
    ) -> None:
        await self.oneRing(ring)
        for p in ring:
            await self.write(p, keys, 10, f"{tag}-{p.name}")
        await self.allReadable(ring, keys, settle)

    async def test_seedSigtermRestart(self) -> None:
        """
        The seed stopped with SIGTERM and started again without --join comes
        back into the ring instead of founding a second one.
        """
        ring = await self.startRing()
        keys: dict[bytes, bytes | None] = {}
        await self.write(ring[1], keys, 50, "before")
        await ring[0].proc.stop(signal.SIGTERM, timeout=60)
        await self.write(ring[2], keys, 20, "meanwhile")
        await self.restart(ring[0])
        self.assertIn("rejoining the ring through the 2 peers", ring[0].proc.output())
        await self.check(ring, keys, "after")

    async def test_seedKill9Restart(self) -> None:
        """
        The same after kill -9 of the seed.
        """
        ring = await self.startRing()
        keys: dict[bytes, bytes | None] = {}
        await self.write(ring[1], keys, 50, "before")
        ring[0].proc.kill9()
        await ring[0].proc.waitExit(10)
        await self.write(ring[2], keys, 20, "meanwhile")
        await self.restart(ring[0])
        await self.check(ring, keys, "after")

    async def test_rollingRestart(self) -> None:
        """
        Every process stopped and started again in turn, each with its own
        command.
        """
        ring = await self.startRing()
        keys: dict[bytes, bytes | None] = {}
        await self.write(ring[0], keys, 30, "before")
        for p in ring:
            await p.proc.stop(signal.SIGTERM, timeout=60)
            await self.restart(p)
            await self.oneRing(ring)
        await self.check(ring, keys, "after")

    async def test_wholeRingOtherOrder(self) -> None:
        """
        The whole ring stopped at once, then started in the reverse order:
        nobody is ready until the ring has re-formed, then one ring holds
        every key.
        """
        ring = await self.startRing()
        keys: dict[bytes, bytes | None] = {}
        await self.write(ring[1], keys, 50, "before")
        stops: list[Deferred[int]] = [Deferred.fromCoroutine(p.proc.stop(signal.SIGTERM, 90)) for p in ring]
        await DeferredList(stops, fireOnOneErrback=True)
        for p in reversed(ring):
            p.client = None
            p.start()
        for p in ring:
            await p.ready()
        await self.check(ring, keys, "after")

    async def test_advertiseAddressChanged(self) -> None:
        """
        A node killed and started again on another advertise address (new
        identity, same data directory, no --join) rejoins as new vnodes:
        one ring of the three processes, every key readable, the change
        logged.
        """
        ring = await self.startRing()
        keys: dict[bytes, bytes | None] = {}
        for p in ring:
            await self.write(p, keys, 10, f"before-{p.name}")
        old = ring[2]
        old.proc.kill9()
        await old.proc.waitExit(10)
        base = os.path.dirname(old.dataDir)
        moved = self.process(base, "p2", os.path.join(base, "cert2"))
        self.assertNotEqual(moved.addr, old.addr)
        moved.start()
        await moved.ready()
        await moved.proc.waitForLog(f"advertise address changed from {old.addr} to {moved.addr}")
        ring[2] = moved
        # new identity = new vnode ids: ranges move to them after the ring
        # agrees, so reads get a bounded time for the hand-over
        await self.check(ring, keys, "moved", settle=30)

    async def test_bootstrapSplitMerges(self) -> None:
        """
        The seed killed and started with --bootstrap on its old data while
        the two others go on: two rings with a shared history, each taking
        writes and deletions of the same keys.  Started again with its
        unchanged command, the seed rejoins and the keys merge by version:
        every key reads its newest acknowledged write through every node
        (deletions stay deleted), and lookup shows the winning version.
        """
        from tests.support.process import sleep

        fast = ("--aof-flush-interval", "0.05")
        ring = await self.startRing(*fast, seedExtra=("--kv", "sqlite"))
        seed = ring[0]
        expect: dict[bytes, bytes | None] = {}
        await self.write(ring[1], expect, 20, "k")
        seed.proc.kill9()
        await seed.proc.waitExit(10)
        await self.forgotten(ring[1:], seed.addr)
        await sleep(5)  # fix-fingers replaces the fingers that named it, too
        lone = RingProcess(
            self,
            os.path.dirname(seed.dataDir),
            "p0-bootstrap",
            seed.argv[seed.argv.index("--cert") + 1],
            "--replicas",
            "2",
            *fast,
            "--kv",
            "sqlite",
            "--bootstrap",
            port=seed.port,
            dataDir=seed.dataDir,
        )
        lone.start()
        await lone.ready()
        await lone.proc.waitForLog(r"founding a new ring \(--bootstrap\)")
        a, b = await ring[1].rpc(), await lone.rpc()

        async def phase(client: Any, keys: list[bytes], tag: bytes, op: str = "put") -> None:
            for k in keys:
                if op == "put":
                    await client.kv("put", k, b"%s-%s" % (k, tag))
                    expect[k] = b"%s-%s" % (k, tag)
                elif await client.kv("delete", k):
                    expect[k] = None  # (a key this side never saw stays as it was)
            await sleep(0.01)  # the next phase's stamps are later (ms clock)

        keys = sorted(expect)
        await phase(b, keys[:16], b"lone-1")
        await phase(a, keys[4:12], b"ring-2")
        await phase(b, keys[8:10], b"lone-3")
        await phase(a, keys[14:16], b"", "delete")
        await phase(b, keys[16:18], b"", "delete")
        await phase(b, [b"only-lone-%d" % i for i in range(5)], b"lone")
        await phase(a, [b"only-ring-%d" % i for i in range(5)], b"ring")
        await sleep(0.5)  # flushed (0.05 s interval) before the kill
        lone.proc.kill9()
        await lone.proc.waitExit(10)
        await self.restart(seed)
        await self.oneRing(ring)
        await self.allReadable(ring, expect, settle=30)
        # the winning version is the lone seed's write: one of its vnodes stamped it
        seedIds = {v["id"] for v in (await self.stats(seed))["vnodes"]}
        found = await seed.call("lookup", keys[8])
        self.assertIn(found["versions"]["value"]["origin"], seedIds)
        self.assertFalse(found["versions"]["value"]["deleted"])
        found = await ring[2].call("lookup", keys[14])
        self.assertTrue(found["versions"]["value"]["deleted"])

    async def test_leaverForgottenPromptly(self) -> None:
        """
        A process stopped with SIGTERM is gone from every other process's
        successor lists within a few maintenance rounds.
        """
        ring = await self.startRing()
        await ring[2].proc.stop(signal.SIGTERM, timeout=60)
        await self.forgotten(ring[:2], ring[2].addr, timeout=10)

    async def forgotten(self, ring: list[RingProcess], addr: str, timeout: float = 30) -> None:
        """
        Wait until no vnode of C{ring} names C{addr} as successor or predecessor.
        """

        async def gone() -> bool:
            for p in ring:
                for v in (await self.stats(p))["vnodes"]:
                    if any(addr in s for s in v["successors"]) or addr in (v["predecessor"] or ""):
                        return False
            return True

        await ring[0].proc.waitFor(gone, f"{addr} gone from every successor list", timeout=timeout)


class OutOfRingTests(TestCase):
    """
    A node that cannot get into its ring says so and refuses KV calls.
    """

    timeout = 90

    async def test_joinDeadAddress(self) -> None:
        """
        --join to an address where nothing listens: the node logs why at
        each (rate-limited) retry, /readyz is 503 with the reason and KV
        calls get a not-in-ring error instead of waiting.
        """
        from suite.specter.chord.errors import RemoteError
        from tests.support.process import freePort

        base = self.mktemp()
        os.makedirs(base)
        cert = makeBundles(base, 1)[0]
        dead = f"127.0.0.1:{freePort()}"
        p = RingProcess(self, base, "lost", cert, "--join", dead).start()
        await p.proc.waitForLog(r"not in the ring: cannot reach any known ring peer \(127\.0\.0\.1:\d+: ")
        self.assertIn("refused", p.proc.output().split("not in the ring:", 1)[1].splitlines()[0].lower())
        r = await p.proc.waitForHTTP(f"http://127.0.0.1:{p.httpPort}/readyz", code=503)
        self.assertIsNotNone(r)
        r = await treq.get(f"http://127.0.0.1:{p.httpPort}/readyz", persistent=False)
        self.assertEqual(r.code, 503)
        self.assertIn(b"cannot reach any known ring peer", await r.content())

        async def refused() -> Any:
            client = await p.rpc()
            try:
                await client.kv("put", b"k", b"v")
            except RemoteError as e:
                return e if e.code == "not-in-ring" else None
            return None

        error = await p.proc.waitFor(refused, "a not-in-ring refusal", timeout=30, interval=0.5)
        self.assertIn("cannot reach any known ring peer", error.message)
        await p.proc.waitFor(
            lambda: p.proc.output().count("not in the ring: cannot reach") >= 2, "a second report", 20
        )
        # rate-limited: far fewer reports than the five vnodes' retries
        self.assertLess(p.proc.output().count("not in the ring: cannot reach"), 10)
