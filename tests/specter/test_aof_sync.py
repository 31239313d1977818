"""
Real processes: C{--aof-sync} makes an acknowledged write survive kill -9
of a node that holds the only copy (a lone seed, R = 1), where the default
(fsync every C{--aof-flush-interval}) may lose the writes of the last
interval.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from tests.specter.ring import RingProcess, makeBundles


class AOFSyncTests(TestCase):
    timeout = 120

    async def writeKillRead(self, *extra: str) -> list[bytes | None]:
        base = self.mktemp()
        os.makedirs(base)
        (cert,) = makeBundles(base, 1)
        # a flush interval no test waits out: only --aof-sync writes before acknowledging
        p = RingProcess(self, base, "p0", cert, "--replicas", "1", "--aof-flush-interval", "300", *extra)
        p.start()
        await p.ready()
        client = await p.rpc()
        keys = [b"k%d" % i for i in range(20)]
        for k in keys:
            await client.kv("put", k, b"v-" + k)
        p.proc.kill9()
        await p.proc.waitExit(30)
        p.client = None
        p.start()
        await p.ready()
        client = await p.rpc()
        return [await client.kv("get", k) for k in keys]

    async def test_syncSurvivesKill9(self) -> None:
        """
        With --aof-sync every acknowledged put is read back after kill -9
        and a restart; without it, none of them (the file was never
        written), which is what the flag is for.
        """
        values = await self.writeKillRead("--aof-sync")
        self.assertEqual(values, [b"v-k%d" % i for i in range(20)])
        self.assertEqual(await self.writeKillRead(), [None] * 20)
