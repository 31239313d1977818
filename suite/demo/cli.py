"""
C{python -m suite.demo}: start every daemon of the suite on 127.0.0.1 with
embedded defaults, print where to reach each one, and stop them all cleanly
on Ctrl-C (SIGINT/SIGTERM are forwarded as SIGTERM, then SIGKILL after a
grace period).

State lives under C{var/demo} in the working directory (override with
C{--dir}); a private CA is generated there on first start.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol, task

from suite.demo.plan import DemoDaemon, plan


@dataclass
class Running:
    spec: DemoDaemon
    transport: Any = None
    ended: defer.Deferred[int] = field(default_factory=defer.Deferred)


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
    running: list[Running] = []
    for spec in daemons:
        r = Running(spec)
        argv = [os.path.join(bindir, spec.argv[0]), *spec.argv[1:]]
        env = dict(os.environ)
        env.update(spec.env)
        r.transport = reactor.spawnProcess(_Output(r, args.verbose), argv[0], argv, env=env, path=base)
        running.append(r)
        r.ended.addCallback(_reportExit, spec.name)
    print(f"demo state in {base}")
    for spec in daemons:
        for label, url in spec.urls:
            print(f"  {spec.name:14} {label:22} {url}")
    print("Ctrl-C stops everything.")
    sys.stdout.flush()

    stopping: defer.Deferred[None] = defer.Deferred()

    def onSignal(signum: int, frame: Any) -> None:
        if not stopping.called:
            reactor.callFromThread(stopping.callback, None)

    signal.signal(signal.SIGINT, onSignal)
    signal.signal(signal.SIGTERM, onSignal)
    allEnded = defer.DeferredList([r.ended for r in running], consumeErrors=True)
    first: Any = await defer.DeferredList([stopping, allEnded], fireOnOneCallback=True, consumeErrors=True)
    del first
    print("stopping ...")
    for r in running:
        if not r.ended.called:
            try:
                r.transport.signalProcess("TERM")
            except Exception:
                pass
    deadline = reactor.callLater(20, _killAll, running)
    await allEnded
    if deadline.active():
        deadline.cancel()
    print("all daemons stopped")
    return 0


def _reportExit(code: int, name: str) -> int:
    if code not in (0, None):
        print(f"{name} exited with code {code} (run with --verbose to see its log)")
    return code


def _killAll(running: list[Running]) -> None:
    for r in running:
        if not r.ended.called:
            try:
                r.transport.signalProcess("KILL")
            except Exception:
                pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m suite.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", default=os.path.join("var", "demo"), help="state directory (default var/demo)"
    )
    parser.add_argument("--verbose", action="store_true", help="show every daemon's log lines")
    parser.add_argument("--port-base", type=int, default=0, help="offset added to every demo port")
    args = parser.parse_args(argv)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(_run(reactor, args)))
