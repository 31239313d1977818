"""
Operator-guide conformance of C{specter server} start-up and shutdown: one
process per data directory, and a process whose listeners cannot bind
never enters the ring.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.daemon import ConfigError, StartupBarrier
from suite.pki.ca import initBundle
from suite.specter.datadir import LOCK_FILE, DataDirLock
from suite.specter.options import Options


def _options(base: str, *extra: str) -> Any:
    o = Options(environ={})
    o.parseOptions(
        [
            "server",
            "--data",
            os.path.join(base, "data"),
            "--cert",
            os.path.join(base, "cert"),
            "--virtual",
            "2",
            "--listen-tcp",
            "127.0.0.1:7443",
            *extra,
        ]
    )
    return o.subOptions


def _releaseAtEnd(test: SynchronousTestCase, root: Any) -> None:
    lock = root.dataLock
    assert isinstance(lock, DataDirLock)
    test.addCleanup(lock.release)


class DataDirLockTests(SynchronousTestCase):
    """
    Two processes on one C{--data-dir} would replay, append to and compact
    the same files and announce the same vnode ids: the second stops at
    start-up naming the flag and the holder.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        initBundle(os.path.join(self.base, "cert"), ["127.0.0.1"])

    def test_secondNodeOnOneDirectoryRefused(self) -> None:
        """
        A second server built on a data directory a running one holds fails
        with one L{ConfigError} naming C{--data-dir}, the directory and the
        holder's pid; no store of the second one is opened.
        """
        from suite.specter.service import makeServerService

        first = makeServerService(_options(self.base), MemoryReactorClock())
        _releaseAtEnd(self, first)
        data = os.path.join(self.base, "data")
        before = {
            name: os.stat(os.path.join(data, "0", name)).st_mtime_ns
            for name in os.listdir(os.path.join(data, "0"))
        }
        e = self.assertRaises(ConfigError, makeServerService, _options(self.base), MemoryReactorClock())
        self.assertTrue(str(e).startswith("--data-dir: "), str(e))
        self.assertIn(f"{data} is in use by another process (pid {os.getpid()})", str(e))
        after = {
            name: os.stat(os.path.join(data, "0", name)).st_mtime_ns
            for name in os.listdir(os.path.join(data, "0"))
        }
        self.assertEqual(before, after)

    def test_releasedOnStop(self) -> None:
        """
        The lock is the process's until it gives it up; then another takes it.
        """
        data = os.path.join(self.base, "d")
        os.makedirs(data)
        lock = DataDirLock("--data-dir", data)
        with open(os.path.join(data, LOCK_FILE)) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")
        self.assertRaises(ConfigError, DataDirLock, "--data-dir", data)
        lock.release()
        DataDirLock("--data-dir", data).release()

    def test_unopenable(self) -> None:
        """
        A lock file that cannot be opened is one error naming the flag.
        """
        data = os.path.join(self.base, "d")
        os.makedirs(os.path.join(data, LOCK_FILE))  # a directory where the file goes
        e = self.assertRaises(ConfigError, DataDirLock, "--data-dir", data)
        self.assertTrue(str(e).startswith("--data-dir: cannot open"), str(e))


class StartAfterListenersTests(SynchronousTestCase):
    """
    The ring node enters the ring only once every listener listens: a
    process that cannot bind its port (often a second copy of a running
    node, with its address and so its vnode ids) must not join, hand off or
    leave vnodes in the live node's name.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        initBundle(os.path.join(self.base, "cert"), ["127.0.0.1"])
        self.events: list[LogEvent] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def _root(self) -> tuple[Any, StartupBarrier, MemoryReactorClock]:
        from suite.specter.service import makeServerService

        reactor = MemoryReactorClock()
        root = makeServerService(_options(self.base, "--kv", "memory"), reactor)
        _releaseAtEnd(self, root)

        def stopPools() -> None:
            # the node's leave never ends on a memory reactor: stop its threads here
            for pool in root.pools:
                if pool.started:
                    pool.stop()

        self.addCleanup(stopPools)
        barrier = StartupBarrier("server", reactor).attach(root)
        return root, barrier, reactor

    def _starting(self) -> list[LogEvent]:
        return [e for e in self.events if "starting {count} vnodes" in e.get("log_format", "")]

    def test_failedBindNeverStartsTheNode(self) -> None:
        """
        A listener that cannot bind: no vnode starts joining, and stopping
        hands nothing off.
        """
        root, barrier, reactor = self._root()
        root.startService()
        barrier.fail("--listen-tcp", "cannot listen on 127.0.0.1:7443: address already in use")
        reactor.run()
        self.assertEqual(self._starting(), [])
        self.assertEqual([v.phase.name for v in root.node.vnodes], ["INACTIVE", "INACTIVE"])
        d = root.stopService()
        self.successResultOf(d)
        self.assertFalse(any("leaving the ring" in e.get("log_format", "") for e in self.events))
        self.assertFalse(os.path.exists(os.path.join(self.base, "data", "ring.json")))

    def test_startsOnceListening(self) -> None:
        """
        Once every listener listens, the vnodes start joining.
        """
        root, barrier, reactor = self._root()
        root.startService()
        self.assertEqual(self._starting(), [])
        reactor.run()  # the barrier seals; every (memory) bind succeeded
        self.assertEqual(len(self._starting()), 1)
        self.assertNotIn("INACTIVE", [v.phase.name for v in root.node.vnodes])


class KeyStatsTests(SynchronousTestCase):
    """
    C{/_internal/chord/stats?key=K}: bad input is a 400 with the reason, a
    lookup that fails a 503 saying why.
    """

    def _render(self, node: Any, key: bytes) -> Any:
        from twisted.web.test.requesthelper import DummyRequest

        from suite.specter.web import _KeyStats

        request = DummyRequest([b""])
        request.args = {b"key": [key]}
        result = _KeyStats(node).render_GET(request)
        if isinstance(result, bytes):
            request.write(result)
            request.finish()
        return request

    def test_emptyKey400(self) -> None:
        """
        An empty key (the ring refuses one) is a 400 naming C{key}.
        """
        request = self._render(object(), b"")
        self.assertEqual(request.responseCode, 400)
        self.assertIn(b'"key: must not be empty"', b"".join(request.written))

    def test_failedLookupSaysWhy(self) -> None:
        """
        A node out of its ring answers 503 with the error code and its reason.
        """
        from twisted.internet.defer import fail

        from suite.specter.chord.errors import RemoteError

        class Node:
            def lookupVersions(self, key: bytes) -> Any:
                return fail(RemoteError("not-in-ring", "no peer of 127.0.0.1:7440 answers"))

        request = self._render(Node(), b"k")
        self.assertEqual(request.responseCode, 503)
        body = json.loads(b"".join(request.written))
        self.assertEqual(body, {"error": "not-in-ring", "reason": "no peer of 127.0.0.1:7440 answers"})

    def test_visitorGone(self) -> None:
        """
        An answer that comes after the visitor left is dropped, not written.
        """
        from twisted.internet.defer import Deferred
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        pending: Deferred[Any] = Deferred()

        class Node:
            def lookupVersions(self, key: bytes) -> Any:
                return pending

        request = self._render(Node(), b"k")
        request.processingFailed(Failure(ConnectionDone("the visitor left")))
        pending.errback(Exception("late"))
        self.assertEqual(request.written, [])


class EnvironmentErrorTests(SynchronousTestCase):
    """
    A bad value taken from an environment variable names that variable
    (and its flag), so the operator looks in the right place.
    """

    def test_listenEnvNamed(self) -> None:
        for name, flag in (
            ("LISTEN_ADDR", "--listen-addr"),
            ("LISTEN_TCP", "--listen-tcp"),
            ("LISTEN_UDP", "--listen-udp"),
        ):
            for command in (["server", "--data", "d", "--cert", "c", "--apex", "example.com"], ["dns"]):
                o = Options(environ={name: "127.0.0.1:1, 127.0.0.1:99999"})
                args = command + ["--acme", "acme://a@b.example@zone", "--acme-ns", "ns1.zone/192.0.2.1"]
                if command[0] == "server":
                    args = command
                e = self.assertRaises(ConfigError, o.parseOptions, args)
                self.assertTrue(str(e).startswith(f"{name} ({flag}): '127.0.0.1:99999'"), str(e))
        o = Options(environ={"LISTEN_ADDR": "127.0.0.1:99999"})
        e = self.assertRaises(
            ConfigError,
            o.parseOptions,
            ["server", "--data", "d", "--cert", "c", "--listen-addr", "127.0.0.1:0"],
        )
        self.assertTrue(str(e).startswith("--listen-addr: "), str(e))


class SIGINTTests(TestCase):
    """
    The guide: the process traps SIGINT and SIGTERM and leaves the ring.
    """

    async def test_sigintWhenStartedIgnored(self) -> None:
        """
        A node started with SIGINT ignored (a background job of a script)
        still leaves the ring and exits on SIGINT.
        """
        import signal
        import sys

        from tests.support.process import DaemonProcess, freePort, scriptArgs

        base = os.path.abspath(self.mktemp())
        initBundle(os.path.join(base, "cert"), ["127.0.0.1"])
        ignoring = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
        argv = scriptArgs(
            "specter",
            "server",
            "--data",
            os.path.join(base, "data"),
            "--cert",
            os.path.join(base, "cert"),
            "--virtual",
            "1",
            "--kv",
            "memory",
            "--listen-tcp",
            f"127.0.0.1:{freePort()}",
            "--listen-rpc",
            f"tcp://127.0.0.1:{freePort()}",
            "--listen-internal",
            f"tcp://127.0.0.1:{freePort()}",
        )
        node = DaemonProcess(self, [sys.executable, "-c", ignoring, *argv], name="node").start()
        await node.waitForLog(r"active with \d+ successors")
        node.sendSignal(signal.SIGINT)
        # twistd ends by re-raising the signal that stopped it
        self.assertIn(await node.waitExit(30), (0, -signal.SIGINT))
        self.assertIn("Received SIGINT", node.output())
        self.assertIn("left the ring", node.output())
