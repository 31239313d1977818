"""
C{python -m suite.demo}: start every daemon of the suite on 127.0.0.1 with
embedded defaults, print where to reach each one once every daemon listens,
and stop them all cleanly on Ctrl-C (SIGINT/SIGTERM are forwarded as
SIGTERM, then SIGKILL after a grace period).

Each daemon tells the demo it listens the way it tells systemd: its start-up
barrier sends C{READY=1} to the datagram socket named by C{NOTIFY_SOCKET}
(L{suite.daemon.StartupBarrier}); the URLs are printed only once every
daemon did.

State lives under C{var/demo} in the working directory (override with
C{--dir}); a private CA is generated there on first start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.error import ProcessExitedAlready

from suite.demo.plan import DemoDaemon, plan


@dataclass
class Running:
    spec: DemoDaemon
    transport: Any = None
    ended: defer.Deferred[int] = field(default_factory=defer.Deferred)
    ready: defer.Deferred[None] = field(default_factory=defer.Deferred)


class _Notify(protocol.DatagramProtocol):
    """
    The C{NOTIFY_SOCKET} of one daemon: C{READY=1} means all its listeners
    listen.
    """

    def __init__(self, running: Running) -> None:
        self.running = running

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if b"READY=1" in data.split(b"\n") and not self.running.ready.called:
            self.running.ready.callback(None)


async def _waitReady(reactor: Any, running: list[Running], stopping: defer.Deferred[None]) -> str | None:
    """
    Wait until every daemon is ready (return C{None}), one exits before it
    is (return why), or C{stopping} fires.  Every 15 s, say which daemons
    are still starting.
    """
    outcome: defer.Deferred[str | None] = defer.Deferred()

    def settle(value: str | None) -> None:
        if not outcome.called:
            outcome.callback(value)

    for r in running:

        def ended(result: Any, r: Running = r) -> Any:
            if not r.ready.called:
                settle(f"{r.spec.name} stopped before it listened")
            return result

        r.ended.addBoth(ended)
    defer.DeferredList([r.ready for r in running]).addCallback(lambda _: settle(None))
    stopping.addCallback(lambda _: settle("interrupted"))

    def progress() -> None:
        waiting = [r.spec.name for r in running if not r.ready.called]
        if waiting:
            print(f"waiting for {', '.join(waiting)} to listen ...")
            sys.stdout.flush()

    ticker = task.LoopingCall(progress)
    ticker.clock = reactor
    ticker.start(15, now=False)
    try:
        return await outcome
    finally:
        ticker.stop()


class _Output(protocol.ProcessProtocol):
    """
    Prefix each line a daemon writes with its name and copy it to our stderr.
    """

    def __init__(self, running: Running, verbose: bool) -> None:
        self.running = running
        self.verbose = verbose
        self.buffer = b""

    def _emit(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if not self.verbose:
            return
        for line in lines:
            sys.stderr.write(f"[{self.running.spec.name}] {line.decode('utf-8', 'replace')}\n")

    def outReceived(self, data: bytes) -> None:
        self._emit(data)

    def errReceived(self, data: bytes) -> None:
        self._emit(data)

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        if code is None and sig in (signal.SIGTERM, signal.SIGINT):
            # twistd re-raises the signal that stopped it once shutdown is
            # complete, so the exit status tells the signal: a clean stop.
            code = 0
        self.running.ended.callback(code if code is not None else -1)


async def _run(reactor: Any, args: argparse.Namespace) -> int:
    base = os.path.abspath(args.dir)
    os.makedirs(base, exist_ok=True)
    daemons = plan(base, args.port_base)
    bindir = os.path.dirname(sys.executable)
    # Short paths: a unix socket path is limited to 107 bytes.
    notifyDir = tempfile.mkdtemp(prefix="suite-demo-")
    running: list[Running] = []
    notifiers: list[Any] = []
    print(f"demo state in {base}; starting {len(daemons)} daemons ...")
    sys.stdout.flush()
    for spec in daemons:
        r = Running(spec)
        notifySocket = os.path.join(notifyDir, spec.name)
        notifiers.append(reactor.listenUNIXDatagram(notifySocket, _Notify(r)))
        argv = [os.path.join(bindir, spec.argv[0]), *spec.argv[1:]]
        env = dict(os.environ)
        env.update(spec.env)
        env["NOTIFY_SOCKET"] = notifySocket
        r.transport = reactor.spawnProcess(_Output(r, args.verbose), argv[0], argv, env=env, path=base)
        running.append(r)
        r.ended.addCallback(_reportExit, spec.name)

    stopping: defer.Deferred[None] = defer.Deferred()

    def onSignal(signum: int, frame: Any) -> None:
        if not stopping.called:
            reactor.callFromThread(stopping.callback, None)

    def installHandlers() -> None:
        signal.signal(signal.SIGINT, onSignal)
        signal.signal(signal.SIGTERM, onSignal)

    # The reactor installs its own SIGTERM handler (stop the reactor, leaving
    # the daemons running) once it runs; ours must replace it, so it goes in
    # both now and again after start-up.
    installHandlers()
    reactor.callWhenRunning(installHandlers)
    try:
        failed = await _waitReady(reactor, running, stopping)
    finally:
        for n in notifiers:
            n.stopListening()
        shutil.rmtree(notifyDir, ignore_errors=True)
    if failed is None:
        for spec in daemons:
            for label, url in spec.urls:
                print(f"  {spec.name:14} {label:22} {url}")
        print("Ctrl-C stops everything.")
    elif not stopping.called:
        print(f"{failed}; stopping the demo")
        stopping.callback(None)
    sys.stdout.flush()
    allEnded = defer.DeferredList([r.ended for r in running], consumeErrors=True)
    first: Any = await defer.DeferredList([stopping, allEnded], fireOnOneCallback=True, consumeErrors=True)
    del first
    print("stopping ...")
    _signalAll(running, "TERM")
    deadline = reactor.callLater(20, _signalAll, running, "KILL")
    await allEnded
    if deadline.active():
        deadline.cancel()
    print("all daemons stopped")
    return 0 if failed in (None, "interrupted") else 1


def _reportExit(code: int, name: str) -> int:
    if code not in (0, None):
        print(f"{name} exited with code {code} (run with --verbose to see its log)")
    return code


def _signalAll(running: list[Running], signalName: str) -> None:
    """Send C{signalName} (C{"TERM"}, C{"KILL"}) to each daemon still running."""
    for r in running:
        if not r.ended.called:
            try:
                r.transport.signalProcess(signalName)
            except ProcessExitedAlready:
                pass  # it ended meanwhile


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m suite.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", default=os.path.join("var", "demo"), help="state directory (default var/demo)"
    )
    parser.add_argument("--verbose", action="store_true", help="show every daemon's log lines")
    parser.add_argument(
        "--port-base",
        type=int,
        default=int(os.environ.get("SUITE_DEMO_PORT_BASE") or 0),
        help="offset added to every demo port, e.g. 18000 when the defaults are taken "
        "(default: $SUITE_DEMO_PORT_BASE or 0)",
    )
    args = parser.parse_args(argv)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(_run(reactor, args)))
