"""
The container images built and run for real (docs/containers.md): the base
made offline from Debian's packages, every family's image built by
C{containers/build.py} on a private Docker engine (L{DockerEngine}), each
daemon run as the guides run it (read-only root, a tmpfs C{/tmp}, no
capabilities, no privilege gain, the image's non-root user), healthy by the
image's own HEALTHCHECK, answering from the host, and stopped within its
grace period with exit status 0.  The compose example's Goop² hub runs
through Debian's C{docker-compose} when it is installed.

One test does it all, so that one pytest-xdist worker builds the images
once (about a minute and a half on two cores).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support.dockerd import DockerEngine
from tests.support.process import WaitTimeout, freePort, pollUntil

SRC = Path(__file__).resolve().parents[2]
UID = 10001

#: The guides' container security settings (SpaceComms guide, "Container Security").
HARDENING = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


@dataclass
class Family:
    """
    One running container and how to check it from the host.
    """

    name: str
    check: Callable[[], None]
    #: Seconds C{docker stop} allows (the guides' stop_grace_period).
    grace: int = 10
    failures: list[str] = field(default_factory=list)


def _get(url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        assert response.status == 200, (url, response.status)
        body: bytes = response.read()
        return body


def _mtls(cert: str, key: str, trust: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=trust)
    context.load_cert_chain(cert, key)
    return context


def _own(path: Path) -> None:
    """
    Give a prepared directory to the image's user (uid 10001).
    """
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), UID, UID)
    os.chown(path, UID, UID)


class ImageTests(SynchronousTestCase):
    """
    Build every image offline, run every family, stop them cleanly.
    """

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)

    def buildImages(self, engine: DockerEngine) -> None:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(SRC / "containers" / "build.py")],
            env=dict(os.environ, DOCKER_HOST="unix://" + engine.socket),
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr[-4000:])
        print(f"images built in {time.monotonic() - started:.1f} s:\n{done.stderr}")

    def start(
        self,
        engine: DockerEngine,
        name: str,
        image: str,
        *args: str,
        env: dict[str, str],
        volumes: Sequence[str] = (),
        entrypoint: str | None = None,
    ) -> None:
        """
        C{docker run -d} with the guides' hardening, on the host's network
        (the daemons bind loopback test ports), probing every 2 s.
        """
        argv = ["run", "-d", "--name", name, "--network", "host", *HARDENING, "--health-interval", "2s"]
        for k, v in sorted(env.items()):
            argv += ["-e", f"{k}={v}"]
        for v in volumes:
            argv += ["-v", v]
        if entrypoint:
            argv += ["--entrypoint", entrypoint]
        engine.docker(*argv, image, *args)

    # -- the families --------------------------------------------------

    def spacecomms(self, engine: DockerEngine) -> Family:
        """
        The guide's `docker run ... spacecomms:latest start --config
        /etc/spacecomms/config.yaml`, config read-only, data writable.
        """
        from tests.spacecomms.support import ADMIN, NodeSpec, env

        etc, data = self.base / "sc-etc", self.base / "sc-data"
        etc.mkdir()
        data.mkdir()
        spec = NodeSpec(str(etc), "n1", None)
        spec.configPath = str(etc / "config.yaml")
        spec.storePath = "/var/lib/spacecomms/data"
        spec.write()
        _own(data)
        port = spec.apiPort
        self.start(
            engine,
            "spacecomms",
            "spacecomms:latest",
            "start",
            "--config",
            "/etc/spacecomms/config.yaml",
            env={**env(), "HEALTH_URL": f"http://127.0.0.1:{port}/health"},
            volumes=[f"{etc}:/etc/spacecomms:ro", f"{data}:/var/lib/spacecomms"],
        )

        def check() -> None:
            health = json.loads(_get(f"http://127.0.0.1:{port}/health"))
            assert health["status"] == "healthy", health
            objects = json.loads(
                _get(f"http://127.0.0.1:{port}/objects", headers={"Authorization": f"Bearer {ADMIN}"})
            )
            assert isinstance(objects, (list, dict)), objects
            assert os.listdir(data), "nothing written to the data volume"

        return Family("spacecomms", check, grace=60)

    def goop(self, engine: DockerEngine) -> list[Family]:
        """
        A Goop² hub (`goop2 rendezvous /data`, the image's default command)
        and a peer (`goop2 peer /data`, the guide's container pattern 4)
        publishing itself to it, each with its own /data.
        """
        hubData, peerData = self.base / "goop-hub", self.base / "goop-peer"
        hubPort, viewerPort = freePort(), freePort()
        hubURL = f"http://127.0.0.1:{hubPort}"
        hub = {"presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": hubPort}}
        peer = {
            "p2p": {"listen_port": freePort(), "mdns_tag": ""},
            "presence": {"rendezvous_wan": hubURL, "heartbeat_seconds": 1, "ttl_seconds": 10},
            "viewer": {"http_addr": f"127.0.0.1:{viewerPort}"},
        }
        for data, doc in ((hubData, hub), (peerData, peer)):
            data.mkdir()
            (data / "goop.json").write_text(json.dumps(doc))
            _own(data)
        self.start(
            engine,
            "goop-hub",
            "goop2:latest",
            env={"HEALTH_URL": f"{hubURL}/healthz"},
            volumes=[f"{hubData}:/data"],
        )
        self.start(
            engine,
            "goop-peer",
            "goop2:latest",
            "peer",
            "/data",
            env={"HEALTH_URL": f"http://127.0.0.1:{viewerPort}/healthz"},
            volumes=[f"{peerData}:/data"],
        )

        def checkHub() -> None:
            peers = json.loads(_get(f"{hubURL}/peers.json"))
            assert isinstance(peers, list), peers

        def checkPeer() -> None:
            pollUntil(
                lambda: [p.get("peer_id") for p in json.loads(_get(f"{hubURL}/peers.json"))],
                "the peer to appear at the hub",
                30,
                0.5,
            )
            assert (peerData / "identity.key").exists(), "the peer wrote nothing to /data"

        return [Family("goop-peer", checkPeer), Family("goop-hub", checkHub)]

    def specter(self, engine: DockerEngine) -> Family:
        """
        A Specter seed node, data in the image's volume, stopped with the
        compose file's stop_grace_period (120 s).
        """
        from suite.pki.ca import initBundle

        certs = self.base / "specter-tls"
        initBundle(str(certs), ["127.0.0.1"])
        _own(certs)
        internal = freePort()
        self.start(
            engine,
            "specter",
            "specter:latest",
            "server",
            "--data",
            "/var/lib/specter",
            "--cert",
            "/etc/specter/tls",
            "--listen-tcp",
            f"127.0.0.1:{freePort()}",
            "--listen-rpc",
            f"tcp://127.0.0.1:{freePort()}",
            "--listen-internal",
            f"tcp://127.0.0.1:{internal}",
            env={"HEALTH_URL": f"http://127.0.0.1:{internal}/healthz"},
            volumes=[f"{certs}:/etc/specter/tls:ro"],
        )

        def check() -> None:
            metrics = _get(f"http://127.0.0.1:{internal}/metrics").decode()
            assert "# TYPE" in metrics, metrics[:500]

        return Family("specter", check, grace=120)

    def constellation(self, engine: DockerEngine) -> Family:
        """
        The Constellation agent, Raft data in the image's volume.
        """
        provider = freePort()
        self.start(
            engine,
            "constellation",
            "constellation-agent:latest",
            "--bind-addr",
            "127.0.0.1",
            "--bind-port",
            str(freePort()),
            "--raft-port",
            str(freePort()),
            env={
                "CONSTELLATION_HTTP_PROVIDER": f"tcp:{provider}:interface=127.0.0.1",
                "HEALTH_URL": f"http://127.0.0.1:{provider}/healthz",
                "TS_HOSTNAME": "container1",
                "PUBLIC_IP": "127.0.0.1",
            },
        )

        def check() -> None:
            state = json.loads(_get(f"http://127.0.0.1:{provider}/api/state"))
            assert isinstance(state, dict), state

        return Family("constellation", check)

    def ceptra(self, engine: DockerEngine) -> list[Family]:
        """
        clustor-cp (the ceptra image, `--entrypoint clustor-cp`) with mTLS
        and a CEPtra node fed by it; both probes present their own identity.
        """
        from tests.ceptra.support import SPIFFE
        from tests.clustor.certs import CertAuthority
        from tests.clustor.helpers import STATE_YAML, writeState

        tls = self.base / "ceptra-tls"
        ca = CertAuthority(str(tls))
        ca.identity("node-1", SPIFFE)
        ca.identity("control-plane", "spiffe://example.org/clustor/cp")
        writeState(str(tls), STATE_YAML.replace("spiffe://example.org/ceptra/a", SPIFFE))
        _own(tls)
        inside = "/etc/suite/ceptra/tls"
        cpPort, adminPort = freePort(), freePort()
        self.start(
            engine,
            "clustor-cp",
            "ceptra:latest",
            env={
                "CLUSTOR_CP_STATE": f"{inside}/state.yaml",
                "CLUSTOR_CP_LISTEN": f"tcp:{cpPort}:interface=127.0.0.1",
                "CLUSTOR_CP_TLS_IDENTITY_CERT": f"{inside}/control-plane.crt",
                "CLUSTOR_CP_TLS_IDENTITY_KEY": f"{inside}/control-plane.key",
                "CLUSTOR_CP_TLS_TRUST_BUNDLE": f"{inside}/trust.pem",
                "HEALTH_URL": f"https://127.0.0.1:{cpPort}/healthz",
            },
            volumes=[f"{tls}:{inside}:ro"],
            entrypoint="clustor-cp",
        )
        self.start(
            engine,
            "ceptra",
            "ceptra:latest",
            env={
                "CEPTRA_CONTROL_PLANE_URL": f"https://127.0.0.1:{cpPort}",
                "CEPTRA_TLS_IDENTITY_CERT": f"{inside}/node-1.crt",
                "CEPTRA_TLS_IDENTITY_KEY": f"{inside}/node-1.key",
                "CEPTRA_TLS_TRUST_BUNDLE": f"{inside}/trust.pem",
                "CEPTRA_NODE_SPIFFE": SPIFFE,
                "CEPTRA_ADMIN_BIND": f"127.0.0.1:{adminPort}",
                "CEPTRA_RAFT_BIND": f"127.0.0.1:{freePort()}",
                "HEALTH_URL": f"https://127.0.0.1:{adminPort}/healthz",
            },
            volumes=[f"{tls}:{inside}:ro"],
        )
        node = _mtls(str(tls / "node-1.crt"), str(tls / "node-1.key"), str(tls / "trust.pem"))

        def checkControlPlane() -> None:
            routing = json.loads(_get(f"https://127.0.0.1:{cpPort}/routing", node))
            assert isinstance(routing, dict), routing

        def checkNode() -> None:
            metrics = _get(f"https://127.0.0.1:{adminPort}/metrics", node).decode()
            assert "clustor_feed_staleness_ms" in metrics, metrics[:500]

        return [Family("clustor-cp", checkControlPlane), Family("ceptra", checkNode)]

    def composeHub(self, engine: DockerEngine) -> Family | None:
        """
        The compose example's first Goop² hub, through Debian's
        docker-compose: the file as shipped plus an override naming a test
        port and directory; its peer database in the shared named volume.
        """
        compose = shutil.which("docker-compose")
        if compose is None:
            print("docker-compose is not installed: the compose example is only validated")
            return None
        data = self.base / "compose-8787"
        data.mkdir()
        port = freePort()
        presence = {
            "rendezvous_only": True,
            "rendezvous_host": True,
            "rendezvous_port": port,
            "peer_db_path": "/opt/goop/shared/peers.db",
        }
        (data / "goop.json").write_text(json.dumps({"presence": presence}))
        _own(data)
        envFile = self.base / "spacecomms.env"
        envFile.write_text("SPACECOMMS_ADMIN_TOKEN=x\n")
        override = {
            "services": {
                "goop-8787": {
                    "environment": {"HEALTH_URL": f"http://127.0.0.1:{port}/healthz"},
                    "volumes": [f"{data}:/data"],
                    "healthcheck": {"interval": "2s"},
                }
            },
            # The default network is never used by this service; naming an
            # existing one keeps compose from allocating a bridge subnet.
            "networks": {"default": {"external": True, "name": "host"}},
        }
        (self.base / "override.yaml").write_text(yaml.safe_dump(override))
        project = f"suite{os.getpid()}"
        argv = [
            compose, "--project-name", project, "--project-directory", str(SRC / "containers"),
            "--file", str(SRC / "containers" / "compose.yaml"), "--file", str(self.base / "override.yaml"),
        ]  # fmt: skip
        env = dict(os.environ, DOCKER_HOST="unix://" + engine.socket, SPACECOMMS_ENV_FILE=str(envFile))

        def composeRun(*args: str) -> None:
            done = subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, f"docker-compose {' '.join(args)}: {done.stdout}{done.stderr}"

        composeRun("up", "--detach", "--no-deps", "goop-8787")
        self.addCleanup(composeRun, "down", "--volumes", "--timeout", "10")
        name = engine.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}")
        engine.docker("rename", name, "compose-goop-8787")

        def check() -> None:
            peers = json.loads(_get(f"http://127.0.0.1:{port}/peers.json"))
            assert isinstance(peers, (list, dict)), peers
            shared = engine.docker("exec", "compose-goop-8787", "ls", "/opt/goop/shared")
            assert "peers.db" in shared.split(), shared

        return Family("compose-goop-8787", check)

    # -- the test -------------------------------------------------------

    def waitHealthy(self, engine: DockerEngine, names: list[str], timeout: float = 180.0) -> dict[str, str]:
        """
        Poll every container's health at once; a container that exits or
        turns unhealthy is reported at once with its log tail.
        """
        pending = set(names)
        problems: dict[str, str] = {}

        def settled() -> bool:
            if not pending:
                return True
            out = engine.docker(
                "inspect",
                "-f",
                "{{.Name}} {{.State.Status}} {{.State.Health.Status}}",
                *sorted(pending),
                check=False,
            )
            for line in out.splitlines():
                name, status, health = (line.lstrip("/").split() + ["", ""])[:3]
                if health == "healthy":
                    pending.discard(name)
                elif status != "running" or health == "unhealthy":
                    pending.discard(name)
                    problems[name] = f"{status}/{health}: {self.logs(engine, name)}"
            return not pending

        try:
            pollUntil(settled, "every container to be healthy", timeout, 0.5)
        except WaitTimeout:
            for name in pending:
                problems[name] = f"not healthy after {timeout} s: {self.logs(engine, name)}"
        return problems

    def logs(self, engine: DockerEngine, name: str) -> str:
        result = subprocess.run(
            ["docker", "-H", "unix://" + engine.socket, "logs", "--tail", "30", name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        health = engine.docker("inspect", "-f", "{{json .State.Health}}", name, check=False)
        return (result.stdout + result.stderr)[-3000:] + "\nhealth: " + health[-1000:]

    def checkConfinement(self, engine: DockerEngine, name: str) -> None:
        """
        The process runs as uid 10001 on a read-only root filesystem, and
        the image's own HEALTHCHECK command made it healthy.
        """
        self.assertEqual(engine.docker("exec", name, "id", "-u"), str(UID), name)
        result = subprocess.run(
            ["docker", "-H", "unix://" + engine.socket, "exec", name, "python3", "-c", "open('/opt/x', 'w')"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertNotEqual(result.returncode, 0, name)
        self.assertIn("Read-only file system", result.stderr, name)
        test = json.loads(engine.docker("inspect", "-f", "{{json .Config.Healthcheck.Test}}", name))
        self.assertEqual(
            test, ["CMD", "/opt/suite/venv/bin/python", "-I", "-S", "/opt/suite/healthcheck.py"], name
        )
        log = json.loads(engine.docker("inspect", "-f", "{{json .State.Health.Log}}", name))
        # one slow probe on a loaded host (exit -1: over the timeout) is not
        # a failure; Docker needs three in a row
        self.assertIn(0, [entry["ExitCode"] for entry in log], name)

    def stop(self, engine: DockerEngine, family: Family) -> None:
        """
        `docker stop` with the family's grace period: SIGTERM, a clean
        shutdown, exit status 0 well before the grace period ends.
        """
        started = time.monotonic()
        engine.docker("stop", "-t", str(family.grace), family.name, timeout=family.grace + 60)
        took = time.monotonic() - started
        code = engine.docker("inspect", "-f", "{{.State.ExitCode}}", family.name)
        self.assertEqual(code, "0", f"{family.name}: {self.logs(engine, family.name)}")
        self.assertLess(took, family.grace, family.name)
        logs = self.logs(engine, family.name)
        self.assertNotIn("Traceback", logs, family.name)

    def test_everyFamily(self) -> None:
        """
        Each family's image, built offline, runs hardened, turns healthy by
        its HEALTHCHECK, answers a real request from the host, and stops
        cleanly with exit status 0 within its grace period.
        """
        engine = DockerEngine.shared(__name__, storageDriver="overlay2")
        self.buildImages(engine)
        for image in ("spacecomms", "goop2", "specter", "constellation-agent", "ceptra"):
            user = engine.docker("image", "inspect", "-f", "{{.Config.User}}", f"{image}:latest")
            self.assertEqual(user, "10001:10001", image)
        families = [
            self.spacecomms(engine),
            *self.goop(engine),
            self.specter(engine),
            self.constellation(engine),
            *self.ceptra(engine),
        ]
        hub = self.composeHub(engine)
        if hub is not None:
            families.append(hub)
        self.addCleanup(engine.remove, *(f.name for f in families))
        problems = self.waitHealthy(engine, [f.name for f in families])
        failures = [f"{name}: {problem}" for name, problem in sorted(problems.items())]
        for family in families:
            if family.name in problems:
                continue
            try:
                self.checkConfinement(engine, family.name)
                family.check()
                self.stop(engine, family)
            except (AssertionError, OSError, RuntimeError) as e:
                failures.append(f"{family.name}: {e}")
        self.assertEqual(failures, [], "\n\n".join(failures))


class ComposeTests(SynchronousTestCase):
    """
    containers/compose.yaml as Debian's docker-compose (1.29) reads it.
    """

    def compose(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        compose = shutil.which("docker-compose")
        if compose is None:
            raise SkipTest("docker-compose is not installed (Debian package docker-compose)")
        envFile = Path(self.mktemp()).resolve()
        envFile.write_text("SPACECOMMS_ADMIN_TOKEN=x\n")
        return subprocess.run(
            [
                compose,
                "--project-directory",
                str(SRC / "containers"),
                "-f",
                str(SRC / "containers/compose.yaml"),
                *args,
            ],
            env=dict(os.environ, SPACECOMMS_ENV_FILE=str(envFile), **(env or {})),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_config(self) -> None:
        """
        `docker-compose config` accepts the file and resolves every service
        hardened, with the guide's stop_grace_period for Specter.
        """
        done = self.compose("config")
        self.assertEqual(done.returncode, 0, done.stderr)
        doc = yaml.safe_load(done.stdout)
        self.assertEqual(
            sorted(doc["services"]), ["goop-8787", "goop-8788", "goop-8789", "spacecomms", "specter"]
        )
        for name, svc in doc["services"].items():
            self.assertIs(svc["read_only"], True, name)
            self.assertEqual(svc["cap_drop"], ["ALL"], name)
            self.assertEqual(svc["tmpfs"], ["/tmp"], name)
        self.assertEqual(doc["services"]["specter"]["stop_grace_period"], "120s")
        self.assertEqual(doc["services"]["spacecomms"]["stop_grace_period"], "60s")
