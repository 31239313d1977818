"""
The start-up barrier (L{suite.daemon.StartupBarrier}): unit tests on a
memory reactor, and every daemon started for real with one of its ports
already taken, which must end the process with exit status 1 and one line
naming the flag or key and the address.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from suite.daemon import (
    GuardedEndpointService,
    StartupBarrier,
    barrierFor,
    listenFailureReason,
    watchListening,
)
from suite.startup import boundDescription
from tests.clustor.helpers import captureLogs
from tests.constellation.support import agentArgs
from tests.support.process import freePort, scriptArgs, twistdArgs


class _Endpoint:
    def __init__(self, result: Deferred[Any]) -> None:
        self.result = result

    def listen(self, factory: Any) -> Deferred[Any]:
        return self.result


class _Port:
    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class _BoundPort(_Port):
    """
    A listening port whose C{getHost()} has a port number.
    """

    def __init__(self, number: int) -> None:
        self.number = number

    def getHost(self) -> Any:
        return IPv4Address("TCP", "127.0.0.1", self.number)


class _RecordingReactor:
    running = True

    def __init__(self) -> None:
        self.stopped = 0
        self.triggers: list[tuple[str, str, tuple[Any, ...]]] = []

    def stop(self) -> None:
        self.stopped += 1

    def addSystemEventTrigger(self, phase: str, event: str, f: Any, *args: Any) -> None:
        self.triggers.append((phase, event, args))


def _levels(events: list[dict[str, Any]], level: str) -> list[dict[str, Any]]:
    return [e for e in events if getattr(e.get("log_level"), "name", "") == level]


class BarrierTests(SynchronousTestCase):
    """
    The barrier waits for every registered listener once the reactor runs.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.running = True
        self.root = MultiService()
        self.barrier = StartupBarrier("demo", self.reactor, environ={}).attach(self.root)

    def test_startedOnceAllListen(self) -> None:
        """
        C{whenStarted} fires, and one C{started} line names every listener,
        only after the reactor runs and every bind succeeded.
        """
        events = captureLogs(self)
        pending: Deferred[Any] = Deferred()
        self.root.startService()
        self.barrier.expect("--a", "tcp:1", succeed(_Port()))
        self.barrier.expect("--b", "tcp:2", pending)
        started = self.barrier.whenStarted()
        self.reactor.advance(0)
        self.assertNoResult(started)
        pending.callback(_Port())
        self.assertEqual(self.successResultOf(started), ["tcp:1 (--a)", "tcp:2 (--b)"])
        lines = [e for e in events if "started" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertIn("tcp:2 (--b)", lines[0]["listeners"])
        self.assertIsNone(self.barrier.failed)

    def test_portZeroNamedWithTheBoundPort(self) -> None:
        """
        A listener that asked for port 0 is named in the C{started} line
        (and by C{whenStarted}) with the port it got; other descriptions,
        and ports that know no number, are unchanged.
        """
        events = captureLogs(self)
        self.root.startService()
        for what, description in (("--a", "tcp:0:interface=127.0.0.1"), ("--b", "[::1]:0")):
            self.barrier.expect(what, description, succeed(_BoundPort(4242)))
        self.barrier.expect("--c", "tcp:0", succeed(_Port()))
        self.barrier.expect("--d", "unix:/run/x.sock:mode=600", succeed(_BoundPort(0)))
        self.reactor.advance(0)
        named = [
            "tcp:4242:interface=127.0.0.1 (--a)",
            "[::1]:4242 (--b)",
            "tcp:0 (--c)",
            "unix:/run/x.sock:mode=600 (--d)",
        ]
        self.assertEqual(self.successResultOf(self.barrier.whenStarted()), named)
        (line,) = [e for e in events if "started" in e.get("log_format", "")]
        self.assertEqual(line["listeners"], ", ".join(named))

    def test_boundDescription(self) -> None:
        """
        Only a port 0 is replaced, in each shape a description takes.
        """
        port = _BoundPort(8000)
        for given, named in (
            ("tcp:0", "tcp:8000"),
            ("tcp6:0:interface=\\:\\:1", "tcp6:8000:interface=\\:\\:1"),
            ("tcp:port=0:interface=127.0.0.1", "tcp:port=8000:interface=127.0.0.1"),
            ("127.0.0.1:0", "127.0.0.1:8000"),
            ("tcp:10:interface=127.0.0.1", "tcp:10:interface=127.0.0.1"),
            ("127.0.0.1:10", "127.0.0.1:10"),
            ("unix:/tmp/a0", "unix:/tmp/a0"),
        ):
            self.assertEqual(boundDescription(given, port), named, given)

    def test_notStartedBeforeReactorRuns(self) -> None:
        """
        Listeners bound before the reactor runs do not make it started: a
        sibling started later may still register.
        """
        self.reactor = MemoryReactorClock()
        self.barrier = StartupBarrier("demo", self.reactor, environ={}).attach(self.root)
        started = self.barrier.whenStarted()
        self.root.startService()
        self.barrier.expect("--a", "tcp:1", succeed(_Port()))
        self.assertNoResult(started)
        self.reactor.running = True
        for call in self.reactor.whenRunningHooks:
            call[0](*call[1], **call[2])
        self.assertEqual(self.successResultOf(started), ["tcp:1 (--a)"])

    def test_failure(self) -> None:
        """
        A bind failure is one critical line naming the flag, the address and
        the reason; C{whenStarted} fails; a second failure is not reported.
        """
        events = captureLogs(self)
        self.root.startService()
        started = self.barrier.whenStarted()
        error = CannotListenError("127.0.0.1", 1, OSError(98, "Address already in use"))
        self.barrier.expect("--listen", "tcp:1", fail(error))
        self.barrier.expect("--other", "tcp:2", fail(error))
        self.failureResultOf(started, RuntimeError)
        critical = _levels(events, "critical")
        self.assertEqual(len(critical), 1)
        self.assertEqual(critical[0]["what"], "--listen")
        self.assertEqual(critical[0]["reason"], "cannot listen on tcp:1: address already in use")
        self.assertEqual(self.barrier.failed, "--listen: cannot listen on tcp:1: address already in use")
        self.failureResultOf(self.barrier.whenStarted(), RuntimeError)

    def test_fatalStopsWithExitStatus(self) -> None:
        """
        A fatal barrier stops the reactor and arranges exit status 1 after
        shutdown.
        """
        reactor = _RecordingReactor()
        barrier = StartupBarrier("demo", reactor, fatal=True, pidfile="/run/x.pid", environ={})
        captureLogs(self)
        barrier.fail("--x", "cannot listen on tcp:1: permission denied")
        self.assertEqual(reactor.stopped, 1)
        self.assertEqual(reactor.triggers, [("after", "shutdown", (1, "/run/x.pid"))])

    def test_nonFatalOnlyLogs(self) -> None:
        """
        A barrier built outside twistd (tests) only logs.
        """
        captureLogs(self)
        self.barrier.fail("--x", "boom")
        self.assertFalse(self.reactor.hasStopped)
        self.assertEqual(self.reactor.triggers, {})

    def test_systemdNotified(self) -> None:
        """
        With C{NOTIFY_SOCKET} set, the barrier sends C{READY=1} once started.
        """
        path = os.path.join(self.mktemp())
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(path)
        root = MultiService()
        captureLogs(self)
        StartupBarrier("demo", self.reactor, environ={"NOTIFY_SOCKET": path}).attach(root)
        root.startService()
        self.reactor.advance(0)
        self.assertEqual(receiver.recv(100), b"READY=1")

    def test_barrierFor(self) -> None:
        """
        A listener nested under the root finds the root's barrier.
        """
        middle = MultiService()
        middle.setServiceParent(self.root)
        leaf = MultiService()
        leaf.setServiceParent(middle)
        self.assertIs(barrierFor(leaf), self.barrier)
        self.assertIsNone(barrierFor(MultiService()))

    def test_guardedService(self) -> None:
        """
        A guarded endpoint service reports its bind to the barrier and stops
        its port on stop.
        """
        events = captureLogs(self)
        port = _Port()
        ok = GuardedEndpointService(_Endpoint(succeed(port)), Factory(), "--ok", "tcp:5")
        ok.setServiceParent(self.root)
        bad = GuardedEndpointService(
            _Endpoint(fail(CannotListenError("127.0.0.1", 6, OSError(13, "Permission denied")))),
            Factory(),
            "--bad",
            "tcp:6",
        )
        bad.setServiceParent(self.root)
        self.root.startService()
        self.assertEqual(self.barrier.failed, "--bad: cannot listen on tcp:6: permission denied")
        self.assertEqual(len(_levels(events, "critical")), 1)
        self.root.stopService()
        self.assertTrue(port.stopped)

    def test_watchWithoutBarrier(self) -> None:
        """
        Outside a daemon, a failed bind is logged and the given reactor stops.
        """
        events = captureLogs(self)
        self.reactor.running = True
        watchListening(MultiService(), "--x", "tcp:1", fail(OSError("nope")), self.reactor)
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(_levels(events, "critical")[0]["what"], "--x")

    def test_lockMeansInUse(self) -> None:
        """
        A unix socket another process holds reads as an address in use.
        """
        error = CannotListenError("/run/x.sock", None, "Cannot acquire lock")
        self.assertIn("address already in use", listenFailureReason(error))


class DaemonsFailLoudlyTests(SynchronousTestCase):
    """
    Every daemon started with a port already taken exits 1 with one line
    naming the flag or key and the address.
    """

    def setUp(self) -> None:
        self.busy = socket.socket()
        self.busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.busy.bind(("127.0.0.1", freePort()))
        self.busy.listen(1)
        self.addCleanup(self.busy.close)
        self.port = self.busy.getsockname()[1]

    def _startFails(self, argv: list[str], needle: str, env: dict[str, str] | None = None) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("CEPTRA_", "CLUSTOR_"))}
        environ.update(env or {})
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environ)
        self.assertEqual(r.returncode, 1, r.stderr[-3000:])
        self.assertNotIn("Traceback", r.stdout + r.stderr)
        fatal = []
        for line in (r.stdout + r.stderr).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                if "cannot listen" in line:
                    fatal.append(line)
                continue
            if event.get("level") == "critical":
                fatal.append(event.get("msg", ""))
        self.assertEqual(len(fatal), 1, r.stderr[-3000:])
        self.assertIn(needle, fatal[0])
        self.assertIn(str(self.port), fatal[0])

    def test_clustor(self) -> None:
        """
        clustor-cp with its --listen port taken.
        """
        from tests.clustor.helpers import writeState

        state = writeState(self.mktemp())
        self._startFails(
            twistdArgs("clustor-cp", "--state", state, "--listen", f"tcp:{self.port}:interface=127.0.0.1"),
            "--listen",
        )

    def test_constellationProvider(self) -> None:
        """
        constellation with its Traefik provider port taken.
        """
        self._startFails(
            scriptArgs(
                "constellation",
                *agentArgs(
                    self.port, freePort(), freePort(), profile=None, extra=["--data-dir", self.mktemp()]
                ),
            ),
            "--http-provider",
        )

    def test_constellationGossip(self) -> None:
        """
        constellation with its gossip port taken.
        """
        self._startFails(
            scriptArgs(
                "constellation",
                *agentArgs(
                    freePort(), self.port, freePort(), profile=None, extra=["--data-dir", self.mktemp()]
                ),
            ),
            "--bind-port",
        )

    def test_spacecomms(self) -> None:
        """
        spacecomms start with its API port taken.
        """
        from tests.spacecomms.support import NodeSpec, env

        spec = NodeSpec(self.mktemp(), "n1", None)
        os.makedirs(spec.base)
        spec.apiPort = self.port
        spec.write()
        self._startFails(scriptArgs("spacecomms", "start", "--config", spec.configPath), "server.port", env())

    def test_spacecommsPeers(self) -> None:
        """
        spacecomms with its peer port taken.
        """
        from tests.spacecomms.support import NodeSpec, env

        spec = NodeSpec(self.mktemp(), "n1", None)
        os.makedirs(spec.base)
        spec.peerPort = self.port
        spec.write()
        self._startFails(twistdArgs("spacecomms", "--config", spec.configPath), "server.peer_port", env())

    def test_specterInternal(self) -> None:
        """
        specter server with --listen-internal taken (it used to keep running).
        """
        from suite.pki.ca import initBundle

        base = self.mktemp()
        initBundle(os.path.join(base, "cert"), ["127.0.0.1"])
        self._startFails(
            scriptArgs(
                "specter",
                "server",
                "--data",
                os.path.join(base, "d"),
                "--cert",
                os.path.join(base, "cert"),
                "--listen-tcp",
                f"127.0.0.1:{freePort()}",
                "--listen-rpc",
                f"tcp://127.0.0.1:{freePort()}",
                "--listen-internal",
                f"tcp://127.0.0.1:{self.port}",
            ),
            "--listen-internal",
        )

    def test_manholeSocketInUse(self) -> None:
        """
        A manhole unix socket another daemon listens on: address in use.
        """
        from tests.clustor.helpers import writeState

        path = os.path.join(self.mktemp())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.bind(path)
        holder.listen(1)
        self.addCleanup(holder.close)
        lock = path + ".lock"
        os.symlink(str(os.getpid()), lock)
        self.addCleanup(os.unlink, lock)
        state = writeState(self.mktemp())
        self.port = os.path.basename(path)
        self._startFails(
            twistdArgs(
                "clustor-cp",
                "--state",
                state,
                "--listen",
                f"tcp:{freePort()}:interface=127.0.0.1",
                "--manhole",
                f"unix:{path}",
            ),
            "address already in use",
        )

    def _goopDirectory(self, doc: dict[str, Any]) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "goop.json"), "w") as f:
            json.dump(doc, f)
        return directory

    def test_goopHub(self) -> None:
        """
        goop rendezvous with the hub's port taken.
        """
        directory = self._goopDirectory(
            {"presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": self.port}}
        )
        self._startFails(twistdArgs("goop", "rendezvous", directory), "presence.rendezvous_port")

    def test_goopPeerViewer(self) -> None:
        """
        goop peer with its viewer's address taken (the P2P port is free).
        """
        directory = self._goopDirectory(
            {
                "p2p": {"listen_port": 0, "mdns_tag": ""},
                "viewer": {"http_addr": f"127.0.0.1:{self.port}"},
            }
        )
        self._startFails(scriptArgs("goop2", "peer", directory), "viewer.http_addr")

    def test_goopPeerStreams(self) -> None:
        """
        goop peer with its P2P stream port taken.
        """
        directory = self._goopDirectory(
            {
                "p2p": {"listen_port": self.port, "mdns_tag": ""},
                "viewer": {"http_addr": f"127.0.0.1:{freePort()}"},
            }
        )
        self._startFails(twistdArgs("goop", "peer", directory), "p2p.listen_port")
