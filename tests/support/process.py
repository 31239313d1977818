"""
Run real daemon processes from trial tests and always clean them up.

    proc = DaemonProcess(self, twistdArgs("specter", "server", ...))
    proc.start()
    await proc.waitForHTTP("http://127.0.0.1:%d/healthz" % port)

Processes are started with L{subprocess.Popen} (output goes to a file in the
test's temporary directory, shown when a wait fails) and waited on by polling
on the reactor, so the reactor is never blocked.  A cleanup registered on the
test case sends SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

T = TypeVar("T")

BIN = os.path.dirname(sys.executable)
_SETPRIV = shutil.which("setpriv")


def withParentDeath(argv: Sequence[str], sig: str = "KILL") -> list[str]:
    """
    C{argv} run so that the kernel sends it C{sig} when the test process
    dies, even by SIGKILL (util-linux C{setpriv --pdeathsig}): a test run
    that is killed leaves no daemon or engine behind.  Unchanged where
    C{setpriv} is missing.
    """
    if _SETPRIV is None:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", sig, "--", *argv]


#: Ports handed out by L{freePort}: below the kernel's ephemeral range
#: (32768-60999 on Linux), so no port-0 bind or outgoing connection of
#: another test can take one between the check and the daemon's bind, and
#: split into one block per pytest-xdist worker so parallel workers never
#: hand out the same port.  C{SUITE_TEST_PORT_SLOT=N} moves a whole run to
#: blocks of its own, so several checkouts can run their tests side by side.
PORT_BASE, PORT_BLOCK, PORT_BLOCKS = 20000, 700, 18
_portCursor: list[int] = []


def _workerIndex() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(c for c in worker if c.isdigit())
    slot = int(os.environ.get("SUITE_TEST_PORT_SLOT", "0") or 0)
    return (int(digits or 0) + 2 * slot) % PORT_BLOCKS


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def freePort(kind: int = socket.SOCK_STREAM) -> int:
    """
    A loopback port that is free for both TCP and UDP (daemons such as the
    gateway use one port number for both), taken from this worker's block.

    @param kind: kept for callers that name the socket type; every port
        returned is checked for both.
    """
    del kind
    start = PORT_BASE + _workerIndex() * PORT_BLOCK
    if not _portCursor:
        _portCursor.append(random.Random(os.getpid()).randrange(PORT_BLOCK))
    for _ in range(PORT_BLOCK):
        offset = _portCursor[0]
        _portCursor[0] = (offset + 1) % PORT_BLOCK
        if _bindable(start + offset):
            return start + offset
    raise RuntimeError(f"no free port in {start}-{start + PORT_BLOCK - 1}")


def twistdArgs(plugin: str, *args: str) -> list[str]:
    """
    The argv that runs C{twistd -n PLUGIN ARGS} from this virtualenv with
    the suite's JSON logger.
    """
    return [
        os.path.join(BIN, "twistd"),
        "--nodaemon",
        "--pidfile=",
        "--logger=suite.logging.observer",
        plugin,
        *args,
    ]


def scriptArgs(script: str, *args: str) -> list[str]:
    """
    The argv that runs one of the suite's console scripts from this virtualenv.
    """
    return [os.path.join(BIN, script), *args]


async def sleep(seconds: float) -> None:
    """
    Yield to the reactor for C{seconds} (for polling real processes only).
    """
    await deferLater(reactor, seconds, lambda: None)


class WaitTimeout(AssertionError):
    pass


def pollUntil(
    check: Callable[[], T], what: str | Callable[[], str], timeout: float, interval: float = 0.1
) -> T:
    """
    Call C{check()} until it returns a true value and return that value;
    raise L{WaitTimeout} naming C{what} (text, or a callable giving it, so it
    may describe the last state seen) once C{timeout} seconds have passed.

    This blocks: it is for code that runs without the reactor (C{setUpClass},
    the Docker engine fixture, synchronous image tests).  Code on the reactor
    uses L{DaemonProcess.waitFor}.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            description = what() if callable(what) else what
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {description}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def waitUntil(
    predicate: Callable[[], Any],
    what: str | Callable[[], str],
    timeout: float = 30.0,
    interval: float = 0.05,
) -> Any:
    """
    Poll C{predicate()} (which may return a Deferred or coroutine) on the
    reactor until it gives a true value, and return that value.  An
    exception counts as "not yet"; once C{timeout} seconds have passed,
    raise L{WaitTimeout} naming C{what} (text, or a callable giving it) and
    the last exception seen.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = predicate()
            if hasattr(result, "__await__") or hasattr(result, "addCallback"):
                result = await result
        except Exception as e:
            last, result = e, None
        if result:
            return result
        if time.monotonic() >= deadline:
            description = what() if callable(what) else what
            error = f" (last error: {last.__class__.__name__}: {last})" if last is not None else ""
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {description}{error}")
        await sleep(interval)


class DaemonProcess:
    """
    One real process owned by a test.
    """

    def __init__(
        self,
        testCase: TestCase,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str = "daemon",
        stopTimeout: float = 15.0,
    ) -> None:
        self.testCase = testCase
        self.argv = list(argv)
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            self.env.update(env)
        self.cwd = cwd
        self.name = name
        self.stopTimeout = stopTimeout
        self.proc: subprocess.Popen[bytes] | None = None
        base = testCase.mktemp()
        os.makedirs(base, exist_ok=True)
        self.logPath = os.path.join(base, f"{name}.log")

    def start(self) -> DaemonProcess:
        self._log = open(self.logPath, "ab")
        self.proc = subprocess.Popen(
            withParentDeath(self.argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        self.testCase.addCleanup(self._cleanup)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        try:
            with open(self.logPath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _fail(self, what: str) -> None:
        tail = self.output()[-4000:]
        raise WaitTimeout(f"{self.name}: {what}\n--- {self.name} output (tail) ---\n{tail}")

    async def waitFor(self, predicate: Any, what: str, timeout: float = 30.0, interval: float = 0.05) -> Any:
        """
        Poll C{predicate()} (which may return a Deferred/coroutine) until it
        returns a true value; fail with the process output on timeout or exit.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = predicate()
                if hasattr(result, "__await__") or hasattr(result, "addCallback"):
                    result = await result
            except Exception:
                result = None
            if result:
                return result
            if self.proc is not None and self.proc.poll() is not None:
                self._fail(f"exited with code {self.proc.returncode} while waiting for {what}")
            if time.monotonic() > deadline:
                self._fail(f"timed out after {timeout}s waiting for {what}")
            await sleep(interval)

    async def waitForPort(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        def check() -> bool:
            with socket.socket() as s:
                s.settimeout(0.2)
                return s.connect_ex((host, port)) == 0

        await self.waitFor(check, f"{host}:{port} to accept connections", timeout)

    async def waitForLog(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        rx = re.compile(pattern)
        return await self.waitFor(lambda: rx.search(self.output()), f"log matching {pattern!r}", timeout)

    async def waitForHTTP(self, url: str, timeout: float = 30.0, code: int = 200, **kw: Any) -> Any:
        import treq

        async def check() -> Any:
            r = await treq.get(url, timeout=2, persistent=False, **kw)
            await r.content()
            return r if r.code == code else None

        return await self.waitFor(check, f"HTTP {code} from {url}", timeout, interval=0.1)

    def sendSignal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.sendSignal(signal.SIGKILL)

    async def waitExit(self, timeout: float | None = None) -> int:
        await self.waitForExit(timeout if timeout is not None else self.stopTimeout)
        assert self.proc is not None and self.proc.returncode is not None
        return self.proc.returncode

    async def waitForExit(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.proc is not None and self.proc.poll() is None:
            if time.monotonic() > deadline:
                self._fail(f"did not exit within {timeout}s")
            await sleep(0.05)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> int:
        """
        Send C{sig} and wait for the exit code.
        """
        self.sendSignal(sig)
        return await self.waitExit(timeout)

    def _cleanup(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.proc.wait(self.stopTimeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait(5)
        self._log.close()
