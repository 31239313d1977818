"""
A private, real Docker engine for tests (needs root and Debian's
C{docker.io} and C{busybox-static}; tests are skipped without them).

    class MyTests(TestCase):
        @classmethod
        def setUpClass(cls) -> None:
            cls.engine = DockerEngine.shared(__name__)

One engine per test module (L{DockerEngine.shared}; stopped at interpreter
exit or by L{DockerEngine.stop}): its own C{--data-root}, C{--exec-root}
and socket in a temporary directory, C{--storage-driver=vfs} (or, asked
for, C{overlay2}, much faster for large images, falling back to vfs where
the kernel or filesystem lacks it), no iptables,
no IP forwarding, no default bridge, so it touches nothing of the host's.
The image L{IMAGE} is built offline with C{docker import} from a rootfs
holding only the static busybox (C{sh}, C{httpd}, C{wget}, C{sleep}, ...).

Containers run with C{--network host} serve on loopback ports, which the
test process, Traefik and the agents all reach:

    cid = engine.run("web1", labels={"app": "x"}, httpPort=port, health="test -f /tmp/ok")
    engine.docker("exec", cid, "rm", "/tmp/ok")        # turns unhealthy
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence

from twisted.trial.unittest import SkipTest

from tests.support.process import WaitTimeout, pollUntil, withParentDeath

__all__ = ["DockerEngine", "IMAGE"]

IMAGE = "local/busybox:1"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "sleep", "true", "false", "test", "touch", "rm", "httpd", "wget", "echo", "cat", "mkdir")

_shared: dict[str, DockerEngine] = {}


class DockerEngine:
    """
    One private C{dockerd} and its C{docker} CLI.
    """

    def __init__(self, storageDriver: str = "vfs") -> None:
        #: C{--storage-driver}: C{vfs} (copies every layer; works anywhere)
        #: or C{overlay2}.
        self.storageDriver = storageDriver
        self.dir = tempfile.mkdtemp(prefix="dk")
        self.socket = os.path.join(self.dir, "docker.sock")
        #: The C{--docker} value for this engine.
        self.endpoint = "unix:" + self.socket
        self.process: subprocess.Popen[bytes] | None = None
        self.log = os.path.join(self.dir, "dockerd.log")

    @classmethod
    def shared(cls, key: str, storageDriver: str = "vfs") -> DockerEngine:
        """
        The engine of C{key} (a module name), started on first use.

        @raise SkipTest: without root, C{dockerd} or C{busybox}.
        """
        engine = _shared.get(key)
        if engine is None:
            engine = cls(storageDriver)
            _shared[key] = engine
            atexit.register(engine.stop)
            engine.start()
        if engine.process is None:
            raise SkipTest("the test Docker engine did not start")
        return engine

    def start(self, timeout: float = 60.0) -> None:
        """
        Start C{dockerd}, wait for its socket, import L{IMAGE}.
        """
        if os.geteuid() != 0:
            raise SkipTest("a private Docker engine needs root")
        dockerd, docker = shutil.which("dockerd"), shutil.which("docker")
        if not dockerd or not docker or not os.path.exists(BUSYBOX):
            raise SkipTest("dockerd, docker or /bin/busybox missing (Debian docker.io, busybox-static)")
        args = [
            dockerd,
            "--data-root",
            os.path.join(self.dir, "root"),
            "--exec-root",
            os.path.join(self.dir, "exec"),
            "-H",
            "unix://" + self.socket,
            "--pidfile",
            os.path.join(self.dir, "docker.pid"),
            "--storage-driver=" + self.storageDriver,
            "--iptables=false",
            "--ip-forward=false",
            "--bridge=none",
        ]
        with open(self.log, "wb") as out:
            process = subprocess.Popen(
                withParentDeath(args, "TERM"), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

        def answeredOrExited() -> bool:
            if process.poll() is not None:
                return True
            if not os.path.exists(self.socket):
                return False
            result = subprocess.run(
                [docker, "-H", "unix://" + self.socket, "version"], capture_output=True, timeout=30
            )
            return result.returncode == 0

        try:
            pollUntil(answeredOrExited, "dockerd to answer", timeout)
        except WaitTimeout as e:
            process.kill()
            raise RuntimeError(f"{e}: {self.logTail()}") from None
        if process.poll() is not None:
            if self.storageDriver != "vfs":
                # overlay2 unsupported here (the log says why): vfs works anywhere
                self.storageDriver = "vfs"
                shutil.rmtree(os.path.join(self.dir, "root"), ignore_errors=True)
                return self.start(timeout)
            raise RuntimeError(f"dockerd exited with {process.returncode}: {self.logTail()}")
        self.process = process
        self._importImage()

    def _importImage(self) -> None:
        rootfs = os.path.join(self.dir, "rootfs")
        for d in ("bin", "tmp", "www"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        shutil.copy(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
        for applet in APPLETS:
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        tar = os.path.join(self.dir, "rootfs.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
        self.docker("import", tar, IMAGE)

    def logTail(self, n: int = 2000) -> str:
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def docker(self, *args: str, check: bool = True, timeout: float = 60.0) -> str:
        """
        Run C{docker ARGS} against this engine; its standard output, stripped.
        """
        result = subprocess.run(
            ["docker", "-H", "unix://" + self.socket, *args], capture_output=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed: {result.stderr.decode('utf-8', 'replace').strip()}"
            )
        return result.stdout.decode("utf-8", "replace").strip()

    def run(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        httpPort: int | None = None,
        health: str | None = None,
        healthInterval: str = "1s",
        command: Sequence[str] = (),
        network: str = "host",
    ) -> str:
        """
        Start a detached busybox container; return its id.

        @param httpPort: serve C{/www} (whose index.html is the container's
            name) on C{127.0.0.1:httpPort}; otherwise run C{command} (or sleep).
        @param health: a healthcheck shell command; C{/tmp/ok} exists at
            start, so C{test -f /tmp/ok} passes until it is removed.
        """
        args = ["run", "-d", "--name", name, "--network", network]
        for k, v in sorted((labels or {}).items()):
            args += ["--label", f"{k}={v}"]
        if health:
            args += [
                "--health-cmd",
                health,
                "--health-interval",
                healthInterval,
                "--health-retries",
                "1",
                "--health-timeout",
                "2s",
            ]
        if httpPort is not None:
            script = (
                f"touch /tmp/ok; echo {name} > /www/index.html; exec httpd -f -p 127.0.0.1:{httpPort} -h /www"
            )
        elif command:
            script = " ".join(command)
        else:
            script = "touch /tmp/ok; exec sleep 3600"
        args += [IMAGE, "sh", "-c", script]
        return self.docker(*args)

    def remove(self, *names: str) -> None:
        """
        Remove containers (running or not); unknown names are ignored.
        """
        if names:
            self.docker("rm", "-f", *names, check=False)

    def waitHealth(self, name: str, status: str, timeout: float = 30.0) -> None:
        """
        Block until C{name}'s health is C{status} (a short wait: the
        healthchecks here run every second).
        """
        got = [""]

        def reached() -> bool:
            got[0] = self.docker("inspect", "-f", "{{.State.Health.Status}}", name, check=False)
            return got[0] == status

        pollUntil(reached, lambda: f"container {name} to be {status!r} (it is {got[0]!r})", timeout, 0.2)

    def stop(self) -> None:
        """
        Stop the engine (it stops its containers and its containerd) and
        delete its directory.
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                self.docker("rm", "-f", *self.docker("ps", "-aq").split(), check=False, timeout=30)
            except Exception:
                pass
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        for mountpoint in reversed(_mountsUnder(self.dir)):
            subprocess.run(["umount", "-l", mountpoint], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _mountsUnder(path: str) -> list[str]:
    """
    Mount points below C{path} (the engine leaves its network namespace
    mounted under its exec root), shallowest first.
    """
    try:
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f]
    except OSError:
        return []
    prefix = path.rstrip("/") + "/"
    return sorted((p for p in points if p.startswith(prefix)), key=len)
