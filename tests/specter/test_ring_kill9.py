"""
Real processes: a 3-process ring with the default AOF and the default
replication (R = 3) keeps every acknowledged write through kill -9 of its
processes, all three at once while writes are in flight, or one after the
other while the others keep taking writes.  Only acknowledged puts count;
a put that failed or was cut off by the kill may or may not be there.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.trial.unittest import TestCase

from tests.specter.ring import RingProcess, makeBundles, waitOneRing
from tests.support.process import sleep

#: acknowledged puts (distinct keys) before the whole ring is killed
KEYS = 300
#: concurrent writers per process
WRITERS = 2


class RingKill9Tests(TestCase):
    """
    Three ring processes of five vnodes, default C{--kv aof} and C{--replicas}.
    """

    timeout = 240

    async def startRing(self) -> list[RingProcess]:
        base = self.mktemp()
        os.makedirs(base)
        certs = makeBundles(base, 3)
        seed = RingProcess(self, base, "p0", certs[0]).withInternalAuth().start()
        await seed.ready()
        ring = [seed]
        for i in (1, 2):
            p = RingProcess(self, base, f"p{i}", certs[i], "--join", seed.addr).withInternalAuth().start()
            await p.ready()
            ring.append(p)
        await waitOneRing(ring)
        return ring

    async def restart(self, p: RingProcess) -> None:
        """
        Start C{p} again with its unchanged command (same data directory
        and addresses).
        """
        p.client = None
        p.start()
        await p.ready()

    async def writer(
        self,
        p: RingProcess,
        keys: Iterable[bytes],
        acked: dict[bytes, bytes],
        failed: list[bytes],
        *,
        stopOnError: bool,
    ) -> None:
        """
        Put each of C{keys} through C{p}, one at a time; record the
        acknowledged ones in C{acked} and the others in C{failed}.
        """
        for k in keys:
            v = b"value-" + k
            try:
                client = await p.rpc()
                await client.kv("put", k, v)
            except Exception:
                failed.append(k)
                if stopOnError:
                    return
                await sleep(0.05)
            else:
                acked[k] = v

    def writers(
        self,
        procs: list[RingProcess],
        tag: str,
        perProcess: int | None,
        acked: dict[bytes, bytes],
        failed: list[bytes],
        *,
        stopOnError: bool,
    ) -> Deferred[Any]:
        """
        L{WRITERS} writers per process of C{procs}, each putting its own
        distinct keys: C{perProcess} per process in all, or without end
        (until a put fails) for C{None}.
        """
        ds = []
        for p in procs:
            for w in range(WRITERS):
                numbers = itertools.count(w, WRITERS) if perProcess is None else range(w, perProcess, WRITERS)
                keys = map((b"%s-%s-%%d" % (tag.encode(), p.name.encode())).__mod__, numbers)
                ds.append(
                    Deferred.fromCoroutine(self.writer(p, keys, acked, failed, stopOnError=stopOnError))
                )
        return DeferredList(ds, fireOnOneErrback=True, consumeErrors=True)

    async def allHeld(self, ring: list[RingProcess], acked: dict[bytes, bytes], timeout: float = 60) -> None:
        """
        Wait until every acknowledged key reads back its value through
        every process and is held by every process (R = 3 copies on three
        distinct processes); fail naming the keys still missing.
        """
        missing: dict[str, list[bytes]] = {}

        async def check() -> bool:
            missing.clear()
            for p in ring:
                client = await p.rpc()
                for k, v in sorted(acked.items()):
                    got = await client.kv("get", k)
                    if got != v or not await client.call("holders", k):
                        missing.setdefault(p.name, []).append(k)
            return not missing

        try:
            await ring[0].proc.waitFor(check, "every acknowledged key on every process", timeout, interval=1)
        except Exception as e:
            summary = {name: (len(ks), ks[:10]) for name, ks in missing.items()}
            self.fail(f"acknowledged keys lost or not replicated: {summary}: {e}")

    async def test_wholeRingKill9(self) -> None:
        """
        Writers put distinct keys through the three processes; after
        L{KEYS} acknowledged puts, with puts in flight through each process,
        all three processes are killed with SIGKILL at once.  Started again
        with their unchanged commands, they form one ring again and every
        acknowledged put reads back its value through every process and is
        held by all three.
        """
        ring = await self.startRing()
        acked: dict[bytes, bytes] = {}
        failed: list[bytes] = []
        # the writers never stop by themselves: the kill cuts each of them
        # off with a put in flight, through every process
        writing = self.writers(ring, "all", None, acked, failed, stopOnError=True)
        await ring[0].proc.waitFor(lambda: len(acked) >= KEYS, f"{KEYS} acknowledged puts", 90)
        for p in ring:
            p.proc.kill9()
        for p in ring:
            await p.proc.waitExit(10)
        await writing
        self.assertEqual(len(failed), WRITERS * len(ring), failed)
        self.assertGreaterEqual(len(acked), KEYS)
        for p in ring:
            p.client = None
            p.start()
        for p in ring:
            await p.ready()
        await waitOneRing(ring)
        await self.allHeld(ring, acked)

    async def test_rollingKill9(self) -> None:
        """
        Each process in turn killed with SIGKILL while writers go on putting
        through the two others, then started again with its unchanged
        command; once the ring has settled every acknowledged put reads
        back through every process and is held by all three.
        """
        ring = await self.startRing()
        acked: dict[bytes, bytes] = {}
        failed: list[bytes] = []
        for k, victim in enumerate(ring):
            others = [p for p in ring if p is not victim]
            before = len(acked)
            writing = self.writers(others, f"roll{k}", 40, acked, failed, stopOnError=False)
            await victim.proc.waitFor(lambda b=before: len(acked) >= b + 10, "puts before the kill", 60)
            victim.proc.kill9()
            await victim.proc.waitExit(10)
            await writing
            # writes went on being acknowledged while the victim was down
            self.assertGreater(len(acked), before + 20)
            await self.restart(victim)
            await waitOneRing(ring)
        await self.allHeld(ring, acked)
