"""
The peer's side of the Lua workers: a small pool of worker processes, each
running one call at a time, fed over a pipe.

Each worker is driven by a machine::

    inputs:  started, dispatched(job), answered(message), deadlinePassed,
             exited(reason), stopRequested
    outputs: write the job, start/cancel the wall-clock timer, kill the
             process, fire the job's Deferred, tell the pool (idle / gone)
    states:  Starting, Idle, Busy (state data: the job and its timer), Gone

A job past its wall-clock limit (its time plus a grace) gets its worker
killed and replaced, and the caller gets C{{"ok": false, "error": "time limit
exceeded"}}.  The reactor only writes a line and reads lines: it never waits
on Lua.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IWriteDescriptor
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.goop.lua.errors import TIME_LIMIT

__all__ = ["WorkerPool", "WorkerMachine", "WorkerCore", "Job", "JobPipe", "MAX_ANSWER_BYTES"]

log = Logger()
MAX_ANSWER_BYTES = 2 * 1024 * 1024
MAX_STDERR_BYTES = 16 * 1024
_encode = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


@dataclass
class Job:
    """One call: the message for the worker and the Deferred of its answer."""

    message: dict[str, Any]
    limit: float
    result: Deferred[dict[str, Any]] = field(default_factory=Deferred)


class WorkerInputs(Protocol):
    def started(self) -> None:
        "The worker said it is ready."

    def dispatched(self, job: Job) -> None:
        "The pool hands this worker a job."

    def answered(self, message: dict[str, Any]) -> None:
        "The worker wrote its answer to the current job."

    def deadlinePassed(self) -> None:
        "The wall-clock limit of the current job passed."

    def exited(self, reason: str) -> None:
        "The worker process ended."

    def stopRequested(self) -> None:
        "The peer is stopping."


class IWorkerHost(Protocol):
    """What a worker's machine needs around it."""

    def write(self, data: bytes) -> None: ...
    def kill(self) -> None: ...
    def idle(self) -> None: ...
    def gone(self, wasReady: bool) -> None: ...


@dataclass
class WorkerCore:
    host: IWorkerHost
    clock: Any
    grace: float


@dataclass
class BusyData:
    job: Job
    timer: IDelayedCall


def _fail(job: Job, reason: str) -> None:
    job.result.callback({"ok": False, "error": reason})


def _build() -> TypeMachine[WorkerInputs, WorkerCore]:
    b = TypeMachineBuilder(WorkerInputs, WorkerCore)
    starting = b.state("Starting")
    idle = b.state("Idle")

    def busyFactory(inputs: WorkerInputs, core: WorkerCore, job: Job) -> BusyData:
        return BusyData(job, core.clock.callLater(job.limit + core.grace, inputs.deadlinePassed))

    busy = b.state("Busy", busyFactory)
    gone = b.state("Gone")

    @starting.upon(WorkerInputs.started).to(idle)
    def becameReady(inputs: WorkerInputs, core: WorkerCore) -> None:
        core.host.idle()

    @starting.upon(WorkerInputs.exited).to(gone)
    def diedStarting(inputs: WorkerInputs, core: WorkerCore, reason: str) -> None:
        log.warn("a Lua worker exited before it was ready: {reason}", reason=reason)
        core.host.gone(False)

    @starting.upon(WorkerInputs.dispatched).loop()
    def notReady(inputs: WorkerInputs, core: WorkerCore, job: Job) -> None:
        _fail(job, "no Lua worker is ready")

    @idle.upon(WorkerInputs.dispatched).to(busy)
    def send(inputs: WorkerInputs, core: WorkerCore, job: Job) -> None:
        core.host.write(_encode(job.message).encode() + b"\n")

    @idle.upon(WorkerInputs.exited).to(gone)
    def diedIdle(inputs: WorkerInputs, core: WorkerCore, reason: str) -> None:
        log.warn("an idle Lua worker exited: {reason}", reason=reason)
        core.host.gone(True)

    @idle.upon(WorkerInputs.answered).to(gone)
    def unexpected(inputs: WorkerInputs, core: WorkerCore, message: dict[str, Any]) -> None:
        core.host.kill()
        core.host.gone(True)

    @busy.upon(WorkerInputs.answered).to(idle)
    def deliver(inputs: WorkerInputs, core: WorkerCore, data: BusyData, message: dict[str, Any]) -> None:
        data.timer.cancel()
        data.job.result.callback(message)
        core.host.idle()

    @busy.upon(WorkerInputs.deadlinePassed).to(gone)
    def overtime(inputs: WorkerInputs, core: WorkerCore, data: BusyData) -> None:
        core.host.kill()
        log.warn(
            "Lua function {function} passed its time limit; its worker was killed",
            function=data.job.message.get("function"),
        )
        _fail(data.job, TIME_LIMIT)
        core.host.gone(True)

    @busy.upon(WorkerInputs.exited).to(gone)
    def diedBusy(inputs: WorkerInputs, core: WorkerCore, data: BusyData, reason: str) -> None:
        data.timer.cancel()
        _fail(data.job, f"the Lua worker ended during the call ({reason})")
        core.host.gone(True)

    @busy.upon(WorkerInputs.stopRequested).to(gone)
    def stopBusy(inputs: WorkerInputs, core: WorkerCore, data: BusyData) -> None:
        data.timer.cancel()
        core.host.kill()
        _fail(data.job, "the peer is stopping")

    @busy.upon(WorkerInputs.dispatched).loop()
    def alreadyBusy(inputs: WorkerInputs, core: WorkerCore, data: BusyData, job: Job) -> None:
        _fail(job, "the Lua worker is busy")

    @gone.upon(WorkerInputs.dispatched).loop()
    def noWorker(inputs: WorkerInputs, core: WorkerCore, job: Job) -> None:
        _fail(job, "the Lua worker has ended")

    @starting.upon(WorkerInputs.stopRequested).to(gone)
    def stopStarting(inputs: WorkerInputs, core: WorkerCore) -> None:
        core.host.kill()

    @idle.upon(WorkerInputs.stopRequested).to(gone)
    def stopIdle(inputs: WorkerInputs, core: WorkerCore) -> None:
        core.host.kill()

    starting.upon(WorkerInputs.answered).loop().returns(None)
    starting.upon(WorkerInputs.deadlinePassed).loop().returns(None)
    idle.upon(WorkerInputs.started).loop().returns(None)
    idle.upon(WorkerInputs.deadlinePassed).loop().returns(None)
    busy.upon(WorkerInputs.started).loop().returns(None)
    for i in (
        WorkerInputs.started,
        WorkerInputs.answered,
        WorkerInputs.deadlinePassed,
        WorkerInputs.exited,
        WorkerInputs.stopRequested,
    ):
        gone.upon(i).loop().returns(None)
    return b.build()


WorkerMachine = _build()


@implementer(IWriteDescriptor)
class JobPipe:
    """
    The peer's end of a worker's stdin.  A job is written to the pipe at once,
    in the turn that dispatches it: the worker has read every earlier job
    before answering it, so the pipe has room for all of a job up to its
    capacity (64 KiB), and nothing waits for a later turn of the reactor.  A
    longer job's remainder is written as the pipe drains.
    """

    def __init__(self, reactor: Any, fd: int) -> None:
        self.reactor = reactor
        self.fd = fd
        self.pending = b""
        os.set_blocking(fd, False)

    def send(self, data: bytes) -> None:
        if self.fd < 0:
            return
        if not self.pending:
            try:
                data = data[os.write(self.fd, data) :]
            except BlockingIOError:
                pass
            except OSError:
                # The worker is gone; its end is reported by the process.
                self.close()
                return
            if data:
                self.reactor.addWriter(self)
        self.pending += data

    def doWrite(self) -> None:
        try:
            self.pending = self.pending[os.write(self.fd, self.pending) :]
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not self.pending:
            self.reactor.removeWriter(self)

    def close(self) -> None:
        if self.fd >= 0:
            self.reactor.removeWriter(self)
            os.close(self.fd)
            self.fd = -1
            self.pending = b""

    def fileno(self) -> int:
        return self.fd

    def connectionLost(self, reason: Failure) -> None:
        self.close()

    def logPrefix(self) -> str:
        return "LuaWorkerStdin"


class _WorkerProcess(ProcessProtocol):
    """One worker process: the pipes, their framing, and its machine."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.jobs: JobPipe | None = None
        self.buffer = b""
        self.stderrSeen = 0
        self.killedBecause = ""
        self.ended: Deferred[None] = Deferred()
        self.machine = WorkerMachine(WorkerCore(self, pool.reactor, pool.grace))

    # IWorkerHost
    def write(self, data: bytes) -> None:
        assert self.jobs is not None
        self.jobs.send(data)

    def kill(self) -> None:
        if self.jobs is not None:
            self.jobs.close()
        if self.transport is None:
            return
        try:
            self.transport.signalProcess("KILL")
        except (ProcessExitedAlready, OSError):
            pass

    def idle(self) -> None:
        self.pool.workerIdle(self)

    def gone(self, wasReady: bool) -> None:
        self.pool.workerGone(self, wasReady)

    # ProcessProtocol
    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            if self.stderrSeen < MAX_STDERR_BYTES:
                text = data[: MAX_STDERR_BYTES - self.stderrSeen].decode("utf-8", "replace").rstrip()
                self.stderrSeen += len(data)
                if text:
                    log.warn("Lua worker stderr: {text}", text=text)
            return
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self._line(line)
        if len(self.buffer) > MAX_ANSWER_BYTES:
            self.buffer = b""
            self.killedBecause = "result larger than 2 MiB"
            self.kill()

    def _line(self, line: bytes) -> None:
        try:
            message = _decode(line.decode("utf-8"))
            assert isinstance(message, dict)
        except (ValueError, AssertionError):
            self.killedBecause = "unreadable answer"
            self.kill()
            return
        if "log" in message:
            try:
                level, text = message["log"]
                getattr(log, level if level in ("debug", "info", "warn", "error") else "info")(
                    "lua {text}", text=str(text)[:2100]
                )
            except (TypeError, ValueError):
                pass
        elif message.get("ready"):
            self.machine.started()
        else:
            self.machine.answered(message)

    def processEnded(self, reason: Failure) -> None:
        if self.jobs is not None:
            self.jobs.close()
        self.machine.exited(self.killedBecause or reason.getErrorMessage())
        self.ended.callback(None)


class WorkerPool:
    """
    Up to C{size} worker processes and a bounded queue of jobs waiting for
    one.

    L{start} starts one worker; another is started when a job has to wait
    while every worker is busy (or starting for an earlier job), until there
    are C{size}.  A peer whose calls never overlap so runs one worker
    process (about 13 MB resident, docs/performance.md) rather than
    C{size}; a worker that has started is kept, and replaced when it dies.
    """

    def __init__(
        self,
        reactor: Any,
        config: dict[str, Any],
        size: int = 2,
        grace: float = 0.5,
        maxQueue: int = 64,
        argv: list[str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.size = size
        self.grace = grace
        self.maxQueue = maxQueue
        self.argv = argv or [sys.executable, "-m", "suite.goop.lua.worker", json.dumps(config)]
        self.workers: list[_WorkerProcess] = []
        self.dying: list[_WorkerProcess] = []
        self.ready: collections.deque[_WorkerProcess] = collections.deque()
        #: Spawned, not ready yet: each will take a waiting job.
        self.starting: set[_WorkerProcess] = set()
        self.queue: collections.deque[Job] = collections.deque()
        self.running = False
        self.startFailures = 0
        self._respawns: list[IDelayedCall] = []
        self.replaced = 0

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        if self.size > 0:
            self._spawn()

    def stop(self) -> Deferred[None]:
        """Kill the workers; fires when every worker process has ended."""
        self.running = False
        ended = [w.ended for w in self.workers + self.dying]
        for call in self._respawns:
            if call.active():
                call.cancel()
        self._respawns = []
        for w in list(self.workers):
            w.machine.stopRequested()
        self.workers = []
        self.ready.clear()
        self.starting.clear()
        while self.queue:
            _fail(self.queue.popleft(), "the peer is stopping")
        self.dying = []
        return gatherResults(ended).addCallback(lambda _: None)

    def _spawn(self) -> None:
        w = _WorkerProcess(self)
        self.workers.append(w)
        self.starting.add(w)
        env = dict(os.environ)
        # The worker's stdin is a pipe of ours (see JobPipe), not one the reactor writes.
        readEnd, writeEnd = os.pipe()
        w.jobs = JobPipe(self.reactor, writeEnd)
        try:
            self.reactor.spawnProcess(
                w, self.argv[0], self.argv, env=env, childFDs={0: readEnd, 1: "r", 2: "r"}
            )
        except BaseException:
            w.jobs.close()
            raise
        finally:
            os.close(readEnd)

    def submit(self, message: dict[str, Any], limit: float) -> Deferred[dict[str, Any]]:
        """Queue one job; fires with the worker's answer (never fails)."""
        job = Job(message, limit)
        if not self.running:
            _fail(job, "Lua is not running")
        elif len(self.queue) >= self.maxQueue:
            _fail(job, "too many Lua calls waiting; try again later")
        else:
            self.queue.append(job)
            self._dispatch()
            self._grow()
        return job.result

    def _grow(self) -> None:
        # More jobs wait than workers are starting to take them: every
        # other worker is busy, so one more is started (up to size).  Not
        # while workers fail to start: those are retried with a backoff.
        if self.startFailures == 0 and len(self.queue) > len(self.starting) and len(self.workers) < self.size:
            self._spawn()

    def _dispatch(self) -> None:
        # At once, not on a later turn of the reactor.  Called from a worker's
        # own transition (it became idle), the dispatch to it runs when that
        # transition is over (the machine postpones reentrant inputs).
        while self.queue and self.ready:
            self.ready.popleft().machine.dispatched(self.queue.popleft())

    def workerIdle(self, w: _WorkerProcess) -> None:
        self.starting.discard(w)
        self.startFailures = 0
        self.ready.append(w)
        self._dispatch()

    def workerGone(self, w: _WorkerProcess, wasReady: bool) -> None:
        self.starting.discard(w)
        if w.jobs is not None:
            w.jobs.close()
        if w in self.workers:
            self.workers.remove(w)
            if not w.ended.called:
                self.dying.append(w)
                w.ended.addCallback(lambda _: self.dying.remove(w) if w in self.dying else None)
        if w in self.ready:
            self.ready.remove(w)
        if not self.running:
            return
        self.replaced += 1
        if wasReady:
            self._spawn()
            return
        self.startFailures += 1
        if self.startFailures >= 3 and not self.ready:
            while self.queue:
                _fail(self.queue.popleft(), "the Lua workers cannot start")
        self._respawns.append(self.reactor.callLater(min(30.0, 0.5 * self.startFailures), self._respawn))

    def _respawn(self) -> None:
        self._respawns = [c for c in self._respawns if c.active()]
        if self.running and len(self.workers) < self.size:
            self._spawn()
