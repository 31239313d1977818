"""
The real agent process on loopback.
"""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import treq
from twisted.trial.unittest import TestCase

from tests.constellation.support import agentArgs, startAgent
from tests.support.process import DaemonProcess, freePort, scriptArgs


class AgentProcessTests(TestCase):
    """
    What an operator and Traefik see.
    """

    async def test_provider(self) -> None:
        """
        /healthz, the empty Traefik configuration and the guide's success line.
        """
        agent = startAgent(self, "cloudserver7", profile=None, procName="constellation")
        proc, base = agent.proc, agent.url
        await proc.waitForHTTP(base + "/healthz")
        await proc.waitForLog("Constellation Agent started successfully")
        r = await treq.get(base + "/api/http/routers", persistent=False)
        self.assertEqual((r.code, json.loads(await r.content())), (200, {}))
        r = await treq.get(base + "/", persistent=False)
        self.assertEqual(json.loads(await r.content()), {})
        r = await treq.get(base + "/api/state", persistent=False)
        self.assertEqual(json.loads(await r.content())["nodes"][0]["priority"], 10)
        self.assertIn("Initializing gossip cluster...", proc.output())
        self.assertIn("Initializing Raft consensus...", proc.output())

    async def test_declarationSurvivesRestart(self) -> None:
        """
        A declaration handed to the agent (POST /api/deploy, as
        C{constellation deploy} does) is still there after the agent
        restarts, although the cluster state lives in memory.
        """
        agent = startAgent(self, "cloudserver7", extra=["--docker", "unix:/nonexistent/docker.sock"])
        await agent.proc.waitForHTTP(agent.url + "/healthz")
        # No web page may hand over a declaration (it runs containers): not
        # a page on another site posting to the loopback port, nor one whose
        # name was rebound to 127.0.0.1 (its own name in Host).
        port = agent.url.rpartition(":")[2]
        evil = json.dumps({"stack": "evil", "file": "services:\n  a: {image: busybox}\n", "env": {}})
        headers: Any
        for headers, code in (
            ({"Content-Type": ["text/plain"], "Origin": ["https://evil.example"]}, 403),
            ({"Host": [f"evil.example:{port}"], "Origin": [f"http://evil.example:{port}"]}, 421),
            ({"Host": [f"evil.example:{port}"]}, 421),
        ):
            r = await treq.post(agent.url + "/api/deploy", evil.encode(), headers=headers, persistent=False)
            self.assertEqual(r.code, code, headers)
            self.assertIn("error", json.loads(await r.content()))
        rebound: Any = {"Host": ["evil.example"]}
        r = await treq.get(agent.url + "/api/state", headers=rebound, persistent=False)
        self.assertEqual(r.code, 421)
        await r.content()
        declaration = {"stack": "media", "file": "services:\n  a: {image: busybox}\n", "env": {}}
        r = await treq.post(agent.url + "/api/deploy", json=declaration, persistent=False)
        self.assertEqual(r.code, 202)
        digest = json.loads(await r.content())["digest"]
        await agent.proc.stop()
        agent.restart(self)
        await agent.proc.waitForHTTP(agent.url + "/healthz")
        r = await treq.get(agent.url + "/api/deploy", persistent=False)
        declarations = json.loads(await r.content())["declarations"]
        self.assertEqual(declarations["media"]["digest"], digest)
        self.assertNotIn("evil", declarations)
        self.assertIn("deploy: 1 declaration(s) kept from the last run (media)", agent.proc.output())

    def test_zoneWithoutToken(self) -> None:
        """
        CLOUDFLARE_ZONE_ID without a token file: one line naming the file, exit 2.
        """
        secrets = self.mktemp()
        result = subprocess.run(
            scriptArgs("constellation", *agentArgs(freePort(), freePort(), freePort(), profile=None)),
            capture_output=True,
            text=True,
            timeout=60,
            env={
                "CLOUDFLARE_ZONE_ID": "0123456789abcdef0123456789abcdef",
                "SECRETS_PATH": secrets,
                "PATH": "/usr/bin:/bin",
            },
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        self.assertEqual(len(errors), 1, result.stderr)
        self.assertIn("cf-api-token.txt", errors[0])
        self.assertNotIn("Traceback", result.stderr)


class ClusterTests(TestCase):
    """
    Three agents on loopback form one gossip cluster; the catalog (and so
    /api/state) follows crashes and graceful leaves.
    """

    timeout = 90

    def _agent(self, name: str, gossipPort: int, join: int | None) -> tuple[DaemonProcess, str]:
        agent = startAgent(
            self,
            name,
            gossip=gossipPort,
            join=[f"127.0.0.1:{join}"] if join is not None else [],
            env={"PUBLIC_IP": "127.0.0.1"},
        )
        return agent.proc, agent.url

    async def _nodes(self, base: str) -> dict[str, str]:
        r = await treq.get(base + "/api/state", persistent=False)
        return {n["name"]: n["status"] for n in json.loads(await r.content())["nodes"]}

    async def test_membership(self) -> None:
        ports = [freePort() for _ in range(3)]
        names = ["cloudserver1", "edge2", "edge3"]
        agents = [self._agent(names[0], ports[0], None)]
        await agents[0][0].waitForLog("Constellation Agent started successfully")
        agents += [self._agent(names[i], ports[i], ports[0]) for i in (1, 2)]
        everyoneAlive = {n: "alive" for n in names}
        for proc, base in agents:
            await proc.waitForHTTP(base + "/healthz")

        for proc, base in agents:

            async def converged(base: str = base) -> bool:
                return await self._nodes(base) == everyoneAlive

            await proc.waitFor(converged, "three alive members in /api/state", timeout=30)
        r = await treq.get(agents[1][1] + "/api/state", persistent=False)
        state = json.loads(await r.content())
        self.assertEqual({n["name"]: n["priority"] for n in state["nodes"]}["cloudserver1"], 10)
        await agents[1][0].waitForLog("node cloudserver1 joined the cluster")

        agents[2][0].kill9()
        for proc, base in agents[:2]:

            async def dead(base: str = base) -> bool:
                return (await self._nodes(base)).get("edge3") == "dead"

            await proc.waitFor(dead, "edge3 declared dead", timeout=30)
        await agents[0][0].waitForLog("node edge3 failed")

        agents[1][0].sendSignal(signal.SIGTERM)
        await agents[1][0].waitExit(30)

        async def left() -> bool:
            return (await self._nodes(agents[0][1])).get("edge2") == "left"

        await agents[0][0].waitFor(left, "edge2 seen as left", timeout=30)
        r = await treq.get(agents[0][1] + "/metrics", persistent=False)
        self.assertIn(b'constellation_gossip_members{state="left"} 1.0', await r.content())
