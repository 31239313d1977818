"""
Real processes: an acknowledged write survives kill -9 of a node that
holds the only copy (a lone seed, R = 1), with the default AOF (written to
the file before the acknowledgement, fsynced every C{--aof-flush-interval})
and with C{--aof-sync} (fsynced before the acknowledgement).
"""

from __future__ import annotations

import os

from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase

from tests.specter.ring import RingProcess, makeBundles

SEQUENTIAL = [b"k%d" % i for i in range(20)]
#: put at once: many arrive in one read, each written before its answer
CONCURRENT = [b"c%d" % i for i in range(200)]


def expected() -> list[bytes | None]:
    return [b"v-" + k for k in SEQUENTIAL + CONCURRENT]


class AOFKill9Tests(TestCase):
    timeout = 120

    async def writeKillRead(self, *extra: str) -> list[bytes | None]:
        base = self.mktemp()
        os.makedirs(base)
        (cert,) = makeBundles(base, 1)
        # a flush interval no test waits out: no fsync timer runs before the kill
        p = RingProcess(self, base, "p0", cert, "--replicas", "1", "--aof-flush-interval", "300", *extra)
        p.start()
        await p.ready()
        client = await p.rpc()
        for k in SEQUENTIAL:
            await client.kv("put", k, b"v-" + k)
        await gatherResults([client.kv("put", k, b"v-" + k) for k in CONCURRENT])
        p.proc.kill9()
        await p.proc.waitExit(30)
        p.client = None
        p.start()
        await p.ready()
        client = await p.rpc()
        return list(await gatherResults([client.kv("get", k) for k in SEQUENTIAL + CONCURRENT]))

    async def test_defaultSurvivesKill9(self) -> None:
        """
        With the default AOF every acknowledged put, one at a time or many
        at once, is read back after kill -9 and a restart, although no
        fsync ran: each was written to the file before it was acknowledged.
        """
        self.assertEqual(await self.writeKillRead(), expected())

    async def test_syncSurvivesKill9(self) -> None:
        """
        With --aof-sync likewise (each put fsynced before it is acknowledged).
        """
        self.assertEqual(await self.writeKillRead("--aof-sync"), expected())
