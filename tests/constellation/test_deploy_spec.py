"""
The deployment file's validation and resolution, and placement.
"""

from __future__ import annotations

import io
import os
import subprocess
from typing import Any, cast

import yaml
from twisted.internet.defer import Deferred
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from suite.constellation.deploy.cli import DeployOptions
from suite.constellation.deploy.placement import choose, clusterPlacer, localPlacer
from suite.constellation.deploy.spec import (
    LABEL_HASH,
    LABEL_SPEC,
    SpecError,
    loadStack,
    parseBytes,
    parseDuration,
    parseStack,
)
from tests.support.process import scriptArgs

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "conf", "constellation", "stack.yml")


class SpecTests(SynchronousTestCase):
    """
    L{parseStack}: every error names the service (or network) and the field.
    """

    def setUp(self) -> None:
        self.secrets = self.mktemp()
        os.makedirs(self.secrets)
        with open(os.path.join(self.secrets, "token.txt"), "w") as f:
            f.write("tok-123\n")
        self.env = {"TZ": "Europe/Paris"}

    def parse(self, services: dict[str, Any], **top: Any) -> Any:
        return parseStack(
            {"services": services, **top}, "t", self.env, self.secrets, "/srv/vol", "example.org"
        )

    def error(self, services: dict[str, Any], **top: Any) -> str:
        with self.assertRaises(SpecError) as caught:
            self.parse(services, **top)
        return str(caught.exception)

    def test_unknownKey(self) -> None:
        """
        An unknown key is refused, naming the service and the key.
        """
        self.assertEqual(
            self.error({"web": {"image": "x", "imagee": "y"}}).split(" (known")[0],
            "service web: unknown key 'imagee'",
        )
        self.assertIn(
            "service web: healthcheck: unknown key 'intervall'",
            self.error({"web": {"image": "x", "healthcheck": {"test": "true", "intervall": "1s"}}}),
        )
        self.assertIn("file: unknown key 'service'", self.error({"web": {"image": "x"}}, service={}))

    def test_badPort(self) -> None:
        """
        Ports out of range or not numbers are refused, naming the field.
        """
        self.assertEqual(
            self.error({"web": {"image": "x", "expose": {"port": 70000}}}),
            "service web: expose.port: 70000 is not a port (1-65535)",
        )
        self.assertEqual(
            self.error({"web": {"image": "x", "expose": {"port": "http"}}}),
            "service web: expose.port: 'http' is not a port",
        )
        self.assertIn("service web: ports[0]", self.error({"web": {"image": "x", "ports": ["80:0"]}}))

    def test_missingSecret(self) -> None:
        """
        A secret file that does not exist is refused, naming the variable
        and the file; one that exists is read (its trailing newline dropped)
        and shown only by name.
        """
        message = self.error({"web": {"image": "x", "environment": {"PW": {"secret": "nope.txt"}}}})
        self.assertTrue(message.startswith("service web: environment.PW: cannot read secret file"), message)
        self.assertIn(os.path.join(self.secrets, "nope.txt"), message)
        stack = self.parse({"web": {"image": "x", "environment": {"PW": {"secret": "token.txt"}}}})
        spec = stack.service("web")
        self.assertEqual(spec.config["Env"], ["PW=tok-123"])
        self.assertEqual(spec.display["environment"], {"PW": "<secret token.txt>"})
        self.assertNotIn("tok-123", spec.containerConfig("t", "n")["Labels"][LABEL_SPEC])
        self.assertIn(
            "must be a file name in SECRETS_PATH",
            self.error({"web": {"image": "x", "environment": {"PW": {"secret": "../etc/passwd"}}}}),
        )

    def test_environment(self) -> None:
        """
        C{${VAR}} comes from the environment, C{${VAR:-default}} falls back,
        C{$$} is a dollar; an unset variable without default is an error.
        """
        stack = self.parse(
            {"a": {"image": "x", "environment": {"TZ": "${TZ}", "D": "${NOPE:-d}", "P": "$$1"}}}
        )
        self.assertEqual(stack.service("a").config["Env"], ["D=d", "P=$1", "TZ=Europe/Paris"])
        self.assertEqual(
            self.error({"a": {"image": "x", "environment": {"X": "${NOPE}"}}}),
            "service a: environment.X: ${NOPE} is not set in the environment",
        )

    def test_command(self) -> None:
        """
        A command string is split as a shell would (quotes kept together);
        a list is taken as it is.
        """
        spec = self.parse({"a": {"image": "x", "command": "sh -c 'echo ${TZ}; sleep 1'"}}).service("a")
        self.assertEqual(spec.config["Cmd"], ["sh", "-c", "echo Europe/Paris; sleep 1"])
        spec = self.parse({"a": {"image": "x", "entrypoint": ["/bin/x", "a b"]}}).service("a")
        self.assertEqual(spec.config["Entrypoint"], ["/bin/x", "a b"])
        self.assertIn("service a: command:", self.error({"a": {"image": "x", "command": "sh -c 'open"}}))

    def test_volumes(self) -> None:
        """
        Relative sources live under CONFIG_PATH; escaping it is refused.
        """
        stack = self.parse({"a": {"image": "x", "volumes": ["a/conf:/config:ro", "/srv/vol/b:/b"]}})
        self.assertEqual(
            stack.service("a").config["HostConfig"]["Binds"], ["/srv/vol/a/conf:/config:ro", "/srv/vol/b:/b"]
        )
        self.assertIn("outside CONFIG_PATH", self.error({"a": {"image": "x", "volumes": ["../x:/x"]}}))
        self.assertIn("outside CONFIG_PATH", self.error({"a": {"image": "x", "volumes": ["/etc:/x"]}}))
        self.assertIn("volumes[0]", self.error({"a": {"image": "x", "volumes": ["noColon"]}}))

    def test_healthcheckAndLimits(self) -> None:
        """
        Healthcheck durations become nanoseconds; a string test is a shell
        command; limits become the engine's fields; bad values are named.
        """
        spec = self.parse(
            {
                "a": {
                    "image": "x",
                    "healthcheck": {
                        "test": "curl -f localhost",
                        "interval": "1m30s",
                        "timeout": "500ms",
                        "retries": 2,
                        "start_period": 10,
                    },
                    "resources": {"cpus": 1.5, "memory": "1g", "pids": 100},
                }
            }
        ).service("a")
        hc = spec.config["Healthcheck"]
        self.assertEqual(hc["Test"], ["CMD-SHELL", "curl -f localhost"])
        self.assertEqual(
            (hc["Interval"], hc["Timeout"], hc["StartPeriod"], hc["Retries"]), (90e9, 5e8, 10e9, 2)
        )
        host = spec.config["HostConfig"]
        self.assertEqual((host["NanoCpus"], host["Memory"], host["PidsLimit"]), (1_500_000_000, 1 << 30, 100))
        self.assertEqual(
            self.error({"a": {"image": "x", "healthcheck": {"test": "true", "interval": "3x"}}}),
            "service a: healthcheck.interval: '3x' is not a duration (like 30s, 1m30s, 500ms)",
        )
        self.assertIn(
            "healthcheck.test: required", self.error({"a": {"image": "x", "healthcheck": {"retries": 1}}})
        )
        self.assertIn("resources.memory", self.error({"a": {"image": "x", "resources": {"memory": "lots"}}}))
        self.assertIn("restart:", self.error({"a": {"image": "x", "restart": "sometimes"}}))
        self.assertEqual(parseDuration("2h", "d"), 7200.0)
        self.assertEqual(parseBytes("512MiB", "m"), 512 << 20)

    def test_networks(self) -> None:
        """
        A service may only join declared networks; the first is its network
        mode, the others are attached after creation; host mode excludes networks.
        """
        nets = {"front": {}, "back": {"internal": True, "subnet": "10.9.0.0/24"}}
        stack = self.parse({"a": {"image": "x", "networks": ["front", "back"]}}, networks=nets)
        spec = stack.service("a")
        self.assertEqual(spec.config["HostConfig"]["NetworkMode"], "front")
        self.assertEqual(spec.networks, ("back",))
        back = [n for n in stack.networks if n.name == "back"][0]
        self.assertEqual(back.engineConfig("t")["IPAM"], {"Config": [{"Subnet": "10.9.0.0/24"}]})
        self.assertTrue(back.engineConfig("t")["Internal"])
        self.assertEqual(
            self.error({"a": {"image": "x", "networks": ["nope"]}}, networks=nets),
            "service a: networks: 'nope' is not declared under networks",
        )
        self.assertIn(
            "cannot be used with networks",
            self.error({"a": {"image": "x", "network_mode": "host", "networks": ["front"]}}, networks=nets),
        )
        self.assertIn(
            "network back: unknown key 'internel'",
            self.error({"a": {"image": "x"}}, networks={"back": {"internel": True}}),
        )

    def test_expose(self) -> None:
        """
        C{expose} becomes Traefik router and service labels (a bare host
        name gets DOMAIN appended), reading the service's network.
        """
        spec = self.parse(
            {
                "jellyfin": {
                    "image": "x",
                    "networks": ["publicnet"],
                    "expose": {"port": 8096, "certresolver": "letsencrypt", "middlewares": ["auth"]},
                }
            },
            networks={"publicnet": {}},
        ).service("jellyfin")
        labels = spec.config["Labels"]
        self.assertEqual(labels["traefik.http.routers.jellyfin.rule"], "Host(`jellyfin.example.org`)")
        self.assertEqual(labels["traefik.http.routers.jellyfin.service"], "jellyfin")
        self.assertEqual(labels["traefik.http.routers.jellyfin.tls.certresolver"], "letsencrypt")
        self.assertEqual(labels["traefik.http.routers.jellyfin.middlewares"], "auth")
        self.assertEqual(labels["traefik.http.services.jellyfin.loadbalancer.server.port"], "8096")
        self.assertEqual(labels["traefik.docker.network"], "publicnet")
        full = self.parse({"a": {"image": "x", "expose": {"host": "media.other.net", "port": 80}}}).service(
            "a"
        )
        self.assertEqual(full.config["Labels"]["traefik.http.routers.a.rule"], "Host(`media.other.net`)")

    def test_hash(self) -> None:
        """
        The content hash is stable for the same declaration and node and
        changes with any field, the secret's value, or the node.
        """
        base = {"image": "x", "command": "sleep 1", "environment": {"PW": {"secret": "token.txt"}}}
        one = self.parse({"a": base}).service("a").containerConfig("t", "n1")["Labels"][LABEL_HASH]
        self.assertEqual(
            one, self.parse({"a": dict(base)}).service("a").containerConfig("t", "n1")["Labels"][LABEL_HASH]
        )
        self.assertNotEqual(
            one, self.parse({"a": base}).service("a").containerConfig("t", "n2")["Labels"][LABEL_HASH]
        )
        changed = dict(base, command="sleep 2")
        self.assertNotEqual(
            one, self.parse({"a": changed}).service("a").containerConfig("t", "n1")["Labels"][LABEL_HASH]
        )
        with open(os.path.join(self.secrets, "token.txt"), "w") as f:
            f.write("tok-456")
        self.assertNotEqual(
            one, self.parse({"a": base}).service("a").containerConfig("t", "n1")["Labels"][LABEL_HASH]
        )

    def test_file(self) -> None:
        """
        L{loadStack}: bad YAML names the line; the stack is named after the
        file unless it says otherwise; the shipped example file is valid.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("services:\n  a: [\n")
        with self.assertRaises(SpecError) as caught:
            loadStack(path, {}, self.secrets, "/srv", None)
        self.assertIn("not valid YAML at line", str(caught.exception))
        with open(path, "w") as f:
            f.write("services: {a: " + "[" * 20_000 + "]" * 20_000 + "}\n")
        with self.assertRaises(SpecError) as caught:
            loadStack(path, {}, self.secrets, "/srv", None)
        self.assertIn("not valid YAML", str(caught.exception))
        self.assertIn("nest", str(caught.exception))
        with open(path, "w") as f:
            f.write("services:\n  a: {image: x}\n")
        self.assertEqual(loadStack(path, {}, self.secrets, "/srv", None).name, os.path.basename(path))
        with open(EXAMPLE) as f:
            document = yaml.safe_load(f)
        secrets = {
            v["secret"]
            for s in document["services"].values()
            for v in (s.get("environment") or {}).values()
            if isinstance(v, dict)
        }
        for name in secrets:
            with open(os.path.join(self.secrets, name), "w") as f:
                f.write("x")
        stack = loadStack(
            EXAMPLE, {"TZ": "UTC", "PUID": "1000", "PGID": "1000"}, self.secrets, "/srv", "bolabaden.org"
        )
        self.assertEqual([n.name for n in stack.networks], ["backend", "publicnet", "warp-nat-net"])
        self.assertIn("traefik", [s.name for s in stack.services])


class PlacementTests(SynchronousTestCase):
    """
    L{choose}: by node list order, else by priority, then name; live nodes only.
    """

    NODES = [
        {"name": "b", "priority": 50, "status": "alive"},
        {"name": "cloudserver1", "priority": 10, "status": "alive"},
        {"name": "a", "priority": 50, "status": "alive"},
        {"name": "dead", "priority": 10, "status": "dead"},
    ]

    def spec(self, placement: dict[str, Any]) -> Any:
        stack = parseStack(
            {"services": {"s": {"image": "x", "placement": placement}}}, "t", {}, "/", "/", None
        )
        return stack.service("s")

    def test_choose(self) -> None:
        """
        Priority order by default (lower number first, then name); C{low}
        reverses it; a node list keeps its own order and skips absent or
        dead nodes; C{all} takes every candidate.
        """
        self.assertEqual(choose(self.spec({}), self.NODES), ["cloudserver1"])
        self.assertEqual(choose(self.spec({"replicas": 2}), self.NODES), ["cloudserver1", "a"])
        self.assertEqual(choose(self.spec({"priority": "low", "replicas": 2}), self.NODES), ["a", "b"])
        self.assertEqual(choose(self.spec({"nodes": ["dead", "zz", "b", "a"]}), self.NODES), ["b"])
        self.assertEqual(choose(self.spec({"replicas": "all"}), self.NODES), ["cloudserver1", "a", "b"])
        self.assertIn("placement.replicas", str(self.assertRaises(SpecError, self.spec, {"replicas": 0})))

    def test_placers(self) -> None:
        """
        The cluster placer answers for the local node and says where a
        service runs; without an agent, a node list excludes other nodes.
        """
        placed = clusterPlacer(self.NODES, "a")
        self.assertEqual(placed(self.spec({})), (False, "on cloudserver1"))
        self.assertEqual(placed(self.spec({"nodes": ["a"]})), (True, "on a"))
        self.assertEqual(
            placed(self.spec({"nodes": ["dead"]})), (False, "no live node matches its placement")
        )
        local = localPlacer("a")
        self.assertEqual(local(self.spec({}))[0], True)
        self.assertEqual(local(self.spec({"nodes": ["b"]})), (False, "for b"))


class CommandTests(SynchronousTestCase):
    """
    The C{constellation deploy} console command's arguments and errors.
    """

    def test_optionsAfterFile(self) -> None:
        """
        Options may follow FILE, as in the guide's C{deploy FILE --dry-run};
        the environment gives the defaults.
        """
        options = DeployOptions(
            {"CONSTELLATION_DOCKER": "unix:/d.sock", "TS_HOSTNAME": "n1", "CONFIG_PATH": "/c"}
        )
        options.parseOptions(["stack.yml", "--dry-run", "--agent", "http://127.0.0.1:9/", "--prune"])
        self.assertEqual(
            (
                options["file"],
                options["dry-run"],
                options["prune"],
                options["agent"],
                options["agentExplicit"],
            ),
            ("stack.yml", True, True, "http://127.0.0.1:9", True),
        )
        self.assertEqual(
            (options["docker"], options["node"], options["config-path"]), ("unix:/d.sock", "n1", "/c")
        )
        defaults = DeployOptions({})
        defaults.parseOptions(["s.yml"])
        self.assertEqual((defaults["agent"], defaults["agentExplicit"]), ("http://127.0.0.1:8081", False))
        self.assertEqual((defaults["domain"], defaults["domain-set"]), ("example.org", False))
        for bad in ("notaurl", "ftp://x", "http://"):
            with self.assertRaises(UsageError) as caught:
                DeployOptions({}).parseOptions(["s.yml", "--agent", bad])
            self.assertIn("--agent (CONSTELLATION_AGENT)", str(caught.exception))

    def test_agentDomain(self) -> None:
        """
        Without DOMAIN, hosts are completed with the answering agent's
        domain, so what the command deploys is what the agents' reconcilers
        build from the same declaration; DOMAIN, when set, wins.
        """
        from twisted.internet.defer import succeed

        from suite.constellation.deploy import cli
        from suite.constellation.deploy.plan import DeployError

        path = self.mktemp()
        with open(path, "w") as f:
            f.write("services:\n  web:\n    image: nginx\n    expose: {host: web, port: 80}\n")
        state = {"node": "n1", "domain": "agent.example", "nodes": [{"name": "n1", "status": "alive"}]}
        self.patch(cli, "_agentState", lambda reactor, url: succeed(state))
        plans: list[Any] = []

        async def makePlan(engine: Any, stack: Any, *args: Any, **kw: Any) -> Any:
            plans.append(stack)
            raise DeployError("stop here")

        self.patch(cli, "makePlan", makePlan)
        for environ, domain in (({}, "agent.example"), ({"DOMAIN": "mine.example"}, "mine.example")):
            options = DeployOptions(environ)
            options.parseOptions([path, "--dry-run"])
            options["environ"] = environ
            self.successResultOf(
                Deferred.fromCoroutine(cli.deploy(None, options, io.StringIO(), engine=cast(Any, object())))
            )
            labels = plans[-1].service("web").containerConfig("s", "n1")["Labels"]
            self.assertEqual(labels["traefik.http.routers.web.rule"], f"Host(`web.{domain}`)")

    def test_oneLineErrors(self) -> None:
        """
        A bad file is one line on stderr and exit status 1; a missing FILE
        is a usage error (status 2); no traceback either way.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("services:\n  web: {image: x, expose: {port: 0}}\n")
        result = subprocess.run(
            scriptArgs("constellation", "deploy", path, "--no-agent"), capture_output=True, timeout=60
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode(),
            "constellation deploy: error: service web: expose.port: 0 is not a port (1-65535)\n",
        )
        result = subprocess.run(scriptArgs("constellation", "deploy"), capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertIn(b"expected one deployment FILE", result.stderr)
        self.assertNotIn(b"Traceback", result.stderr)
