"""
The disaster-recovery procedures of docs/disaster_recovery.md with real
processes: three CEPtra nodes and a control plane on loopback (mTLS,
SPIFFE IDs).  In order, on one cluster:

  - full-cluster restart (procedure 1, every node killed with SIGKILL):
    every acknowledged event is there and each partition's state hash is
    the one it had before;
  - one node's disk lost (procedure 2): the node is restarted with an empty
    data directory under the same identity; the leaders rebuild it, its vote
    counts again, its replicas equal the others;
  - quorum loss with the majority's disks lost (procedure 3): two nodes
    killed and their data directories removed, the partitions stop; the two
    are restarted empty under the same identities and the survivor's copy
    is elected and rebuilds them, with every acknowledged event.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.ceptra.cluster import RULES, CeptraCluster, clientAgent, makeCluster
from tests.support.process import DaemonProcess, freePort, sleep, twistdArgs

NAMES = ["a", "b", "c"]
PARTITIONS = {"p0": NAMES, "p1": NAMES}
BATCH = 50


class DisasterRecoveryTests(TestCase):
    timeout = 300

    async def test_procedures(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        cluster = makeCluster(base, NAMES, PARTITIONS, freePort)
        DaemonProcess(self, twistdArgs(*cluster.cpArgs()), name="clustor-cp", cwd=base).start()
        self.cluster = cluster
        self.nodes: dict[str, DaemonProcess] = {}
        self.agent = clientAgent(cluster.client, reactor)
        self.addCleanup(self.agent._pool.closeCachedConnections)
        self.acked: list[dict[str, Any]] = []
        self.rng = random.Random(3)
        for n in NAMES:
            self.startNode(n)
        await self.allReady("every node ready")
        r = await treq.post(cluster.admin("a") + "/rules", json=RULES, agent=self.agent, timeout=10)
        self.assertEqual(r.code, 200, await r.content())
        await self.ingest(10)
        before = await self.converged("the first batches")

        # Procedure 1: every node killed at once, then started again.
        for n in NAMES:
            self.nodes[n].kill9()
        for n in NAMES:
            await self.nodes[n].waitForExit(10)
        for n in NAMES:
            self.startNode(n)
        await self.allReady("every node ready after a full-cluster restart")
        after = await self.converged("the full-cluster restart")
        self.assertEqual(
            {p: v["stateHash"] for p, v in after.items()}, {p: v["stateHash"] for p, v in before.items()}
        )

        # Procedure 2: c's disk is lost; c starts empty under the same identity.
        old = {p: v["incarnation"] for p, v in (await self.partitions("c")).items()}
        self.nodes["c"].kill9()
        await self.nodes["c"].waitForExit(10)
        shutil.rmtree(self.dataDir("c"))
        await self.ingest(4)
        self.startNode("c")
        await self.nodes["c"].waitForLog("which its group has not recorded")
        await self.allReady("c ready after its disk was rebuilt")
        views = await self.converged("c rebuilt")
        rebuilt = await self.partitions("c")
        for pid in PARTITIONS:
            self.assertNotEqual(rebuilt[pid]["incarnation"], old[pid])
            self.assertTrue(rebuilt[pid]["voteIntact"], rebuilt[pid])
            self.assertEqual(rebuilt[pid]["stateHash"], views[pid]["stateHash"])
        metrics = await self.get("c", "/metrics")
        self.assertIn('ceptra_partition_vote_intact{partition="p0"} 1.0', metrics)

        # Procedure 3: b and c lose their disks; a alone has no leader.
        await self.ingest(4)
        await self.converged("before the quorum loss")
        for n in ("b", "c"):
            self.nodes[n].kill9()
            await self.nodes[n].waitForExit(10)
            shutil.rmtree(self.dataDir(n))

        async def leaderless() -> bool:
            code, body = await self.getJSON("a", "/readyz")
            lost = [r for r in body["reasons"] if "no raft leader known" in r]
            return code == 503 and len(lost) == len(PARTITIONS)

        await self.nodes["a"].waitFor(leaderless, "a to report no leader", timeout=30, interval=0.3)
        unacknowledged = self.batch("retry")
        r = await treq.post(cluster.admin("a") + "/ingest", json=unacknowledged, agent=self.agent, timeout=15)
        self.assertEqual(r.code, 503, await r.content())
        for n in ("b", "c"):
            self.startNode(n)
        await self.allReady("every node ready after the quorum loss")
        await self.nodes["a"].waitForLog("the most complete copy left")
        # Clients resend what was not acknowledged (duplicates are dropped).
        await self.ingest(1, unacknowledged)
        await self.ingest(2)
        await self.converged("b and c rebuilt from a")

    # -- helpers ----------------------------------------------------------

    def dataDir(self, name: str) -> str:
        return os.path.join(self.cluster.base, "data", name)

    def startNode(self, name: str) -> None:
        self.nodes[name] = DaemonProcess(
            self,
            twistdArgs("ceptra"),
            env=self.cluster.env(name, CEPTRA_SNAPSHOT_THRESHOLD="5"),
            name=f"ceptra-{name}",
            cwd=self.cluster.base,
        ).start()

    async def get(self, name: str, path: str) -> str:
        r = await treq.get(self.cluster.admin(name) + path, agent=self.agent, timeout=5)
        return (await r.content()).decode()

    async def getJSON(self, name: str, path: str) -> tuple[int, Any]:
        r = await treq.get(self.cluster.admin(name) + path, agent=self.agent, timeout=5)
        return r.code, json.loads(await r.content())

    async def partitions(self, name: str) -> dict[str, Any]:
        _, body = await self.getJSON(name, "/partitions")
        return body["partitions"]

    async def allReady(self, what: str) -> None:
        async def ready() -> bool:
            for n in NAMES:
                try:
                    code, _ = await self.getJSON(n, "/readyz")
                except Exception:
                    return False
                if code != 200:
                    return False
            return True

        await self.nodes["a"].waitFor(ready, what, timeout=60, interval=0.3)

    def batch(self, tag: str) -> list[dict[str, Any]]:
        n = len(self.acked)
        return [
            {
                "event_id": f"{tag}-{n + i}",
                "key": f"user-{self.rng.randrange(30)}",
                "ts": 1000 + n + i,
                "fields": {"amount": i % 7},
            }
            for i in range(BATCH)
        ]

    async def ingest(self, batches: int, resend: list[dict[str, Any]] | None = None) -> None:
        """
        Send C{batches} new batches (or C{resend}), each resent until acknowledged.
        """
        for _ in range(batches):
            events = resend or self.batch("ev")
            for attempt in range(100):
                target = NAMES[attempt % len(NAMES)]
                try:
                    r = await treq.post(
                        self.cluster.admin(target) + "/ingest", json=events, agent=self.agent, timeout=10
                    )
                    answer = json.loads(await r.content())
                except Exception:
                    await sleep(0.2)
                    continue
                if r.code == 200:
                    self.assertEqual(answer["events"], BATCH)
                    self.acked.extend(events)
                    break
                self.assertEqual(r.code, 503, answer)
                await sleep(0.2)
            else:
                self.fail("a batch was never acknowledged")

    async def converged(self, what: str) -> dict[str, Any]:
        """
        Wait until every replica of every partition has the same applied
        index and state hash, and together they hold each acknowledged event
        once; return one replica's view per partition.
        """
        cluster: CeptraCluster = self.cluster

        async def check() -> dict[str, Any] | None:
            views: dict[str, list[dict[str, Any]]] = {}
            for n in NAMES:
                try:
                    parts = await self.partitions(n)
                except Exception:
                    return None
                for pid, st in parts.items():
                    views.setdefault(pid, []).append(st)
            if sorted(views) != sorted(PARTITIONS):
                return None
            for pid, sts in views.items():
                if len(sts) != len(cluster.placement[pid]) or any("stateHash" not in s for s in sts):
                    return None
                if len({(s["appliedIndex"], s["stateHash"]) for s in sts}) != 1:
                    return None
            if sum(sts[0]["cep"]["events"] for sts in views.values()) != len(self.acked):
                return None
            return {pid: sts[0] for pid, sts in views.items()}

        result: dict[str, Any] = await self.nodes["a"].waitFor(
            check, f"replicas to converge ({what})", timeout=60, interval=0.3
        )
        return result
