"""
Three real agents (encrypted gossip, Raft on mTLS from the gossip key) with
Raft leases writing a real BIND 9 over RFC 2136:
exactly one DNS writer; a frozen (SIGSTOP) writer is replaced and never
writes after it resumes; kill -9 of the writer moves the lease and bind9
serves the new apex within 10 s; SIGTERM hands over within one renewal.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from typing import Any

import treq
from twisted.trial.unittest import TestCase

from tests.constellation.support import Agent
from tests.constellation.support import startAgent as startAgentProcess
from tests.support.bind9 import Bind9Server
from tests.support.process import waitUntil

DOMAIN = "example.test"
LEASE_SECONDS = 5.0
IPS = {"cloudserver1": "192.0.2.1", "edge2": "192.0.2.2", "edge3": "192.0.2.3"}


def startAgent(
    test: TestCase,
    server: Bind9Server,
    name: str,
    join: list[int],
    extra: list[str] = (),  # type: ignore[assignment]
) -> Agent:
    return startAgentProcess(
        test,
        name,
        extra=[
            "--dns-server",
            f"127.0.0.1:{server.port}",
            "--tsig-key-file",
            server.keyFile,
            "--raft-election-ms",
            "300",
            "--lease-seconds",
            str(LEASE_SECONDS),
            "--raft-bootstrap-wait",
            "2",
            "--raft-remove-after",
            "600",
            *extra,
        ],
        join=[f"127.0.0.1:{p}" for p in join],
        env={
            "CONSTELLATION_GOSSIP_KEY_FILE": gossipKeyFile(test),
            "DOMAIN": DOMAIN,
            "PUBLIC_IP": IPS[name],
        },
    )


def gossipKeyFile(test: TestCase) -> str:
    """
    One shared gossip key per test: gossip is encrypted and Raft runs on
    mTLS with the identity derived from it.
    """
    path = getattr(test, "_gossipKey", None)
    if path is None:
        path = test.mktemp()
        with open(path, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        test._gossipKey = path  # type: ignore[attr-defined]
    return path


async def waitFor(predicate: Any, what: str, timeout: float, agents: list[Agent]) -> Any:
    def described() -> str:
        tails = "\n".join(f"--- {a.name}\n{a.proc.output()[-3000:]}" for a in agents)
        return f"{what}\n{tails}"

    return await waitUntil(predicate, described, timeout)


async def startCluster(test: TestCase) -> tuple[Bind9Server, dict[str, Agent]]:
    server = Bind9Server(test, DOMAIN)
    await server.start()
    first = startAgent(test, server, "cloudserver1", [], ["--bootstrap"])
    agents = {"cloudserver1": first}
    for name in ("edge2", "edge3"):
        agents[name] = startAgent(test, server, name, [first.gossip])
    everyone = list(agents.values())

    async def formed() -> bool:
        for a in everyone:
            s = await a.state()
            if len(s["raft"]["voters"]) != 3 or s["raft"]["leader"] is None:
                return False
        return True

    await waitFor(formed, "a three-voter Raft group", 60, everyone)
    return server, agents


async def apex(server: Bind9Server) -> list[str]:
    return await server.query(DOMAIN, "A")


async def writers(agents: list[Agent]) -> list[str]:
    out = []
    for a in agents:
        s = await a.state()
        if s["raft"]["leases"]["dns_writer"]["actingHere"]:
            out.append(a.name)
    return out


class LeaseClusterTests(TestCase):
    timeout = 240

    async def test_writerFailover(self) -> None:
        server, agents = await startCluster(self)
        everyone = list(agents.values())

        async def apexIs(ip: str) -> bool:
            return await apex(server) == [ip]

        # One writer, the preferred node, and the records it wrote.
        await waitFor(lambda: apexIs(IPS["cloudserver1"]), "apex -> cloudserver1", 30, everyone)
        self.assertEqual(await writers(everyone), ["cloudserver1"])
        self.assertEqual(await server.query(f"*.{DOMAIN}", "A"), [IPS["cloudserver1"]])
        self.assertEqual(await server.query(f"x.edge3.{DOMAIN}", "A"), [IPS["edge3"]])
        self.assertIn("acquired DNS writer lease", agents["cloudserver1"].proc.output())
        self.assertIn("acquired LB leader lease", agents["cloudserver1"].proc.output())
        self.assertIn("Initializing Raft consensus...", agents["edge2"].proc.output())
        self.assertRegex(
            agents["edge2"].proc.output(),
            r"Raft on 127\.0\.0\.1:\d+: mTLS with an identity derived from the gossip key",
        )
        self.assertNotIn("acquired DNS writer lease", agents["edge2"].proc.output())
        state = await agents["edge3"].state()
        self.assertEqual(state["raft"]["leases"]["dns_writer"]["holder"], "cloudserver1")
        self.assertEqual(state["dns"]["plan"][DOMAIN], [IPS["cloudserver1"]])

        # Freeze the writer (a minority of one): the others take over; once
        # it resumes it never writes DNS until it holds a new lease.
        holder = agents["cloudserver1"]
        holder.proc.sendSignal(signal.SIGSTOP)
        rest = [agents["edge2"], agents["edge3"]]
        await waitFor(lambda: apexIs(IPS["edge2"]), "apex -> edge2 while cloudserver1 is frozen", 20, rest)
        before = holder.proc.output()
        holder.proc.sendSignal(signal.SIGCONT)
        await waitFor(lambda: apexIs(IPS["cloudserver1"]), "cloudserver1 back as writer", 40, everyone)
        after = holder.proc.output()[len(before) :]
        reacquired = after.find("acquired DNS writer lease")
        self.assertNotEqual(reacquired, -1)
        self.assertNotIn("DNS updated", after[:reacquired])

        # SIGTERM the writer: the lease moves without a gap longer than one renewal.
        tokenBefore = (await agents["edge2"].state())["raft"]["leases"]["dns_writer"]["token"]
        stopped = time.monotonic()
        holder.proc.sendSignal(signal.SIGTERM)

        async def edge2Acts() -> bool:
            return await writers([agents["edge2"]]) == ["edge2"]

        await waitFor(edge2Acts, "edge2 acting after SIGTERM of cloudserver1", 10, rest)
        gap = time.monotonic() - stopped
        self.assertIn(await holder.proc.waitExit(15), (0, -signal.SIGTERM))  # twistd re-raises the signal
        self.assertIn("releasing DNS writer lease", holder.proc.output())
        self.assertLess(gap, LEASE_SECONDS / 5, f"handover took {gap:.2f}s")
        state = await agents["edge2"].state()
        self.assertGreater(state["raft"]["leases"]["dns_writer"]["token"], tokenBefore)

        # Restarted from its data directory, cloudserver1 rejoins and takes the leases back.
        holder.restart(self)
        await waitFor(lambda: apexIs(IPS["cloudserver1"]), "restarted cloudserver1 as writer", 40, everyone)

        # kill -9 the writer: bind9 serves the new apex within 10 s.
        started = time.monotonic()
        holder.proc.kill9()
        await waitFor(lambda: apexIs(IPS["edge2"]), "apex -> edge2 after kill -9", 10, rest)
        self.assertLess(time.monotonic() - started, 10.0)
        self.assertEqual(await writers(rest), ["edge2"])
        r = await treq.get(f"{agents['edge3'].url}/readyz", timeout=2, persistent=False)
        self.assertEqual(r.code, 200, (await r.content()).decode())
