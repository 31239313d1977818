"""
The Lua worker machine (every input in every state) and the pool around it,
with a fake process host and a Clock.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.interfaces import IWriteDescriptor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.goop.lua.pool import Job, JobPipe, WorkerCore, WorkerMachine, WorkerPool


class FakeHost:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def write(self, data: bytes) -> None:
        self.events.append(("write", data))

    def kill(self) -> None:
        self.events.append("kill")

    def idle(self) -> None:
        self.events.append("idle")

    def gone(self, wasReady: bool) -> None:
        self.events.append(("gone", wasReady))


def answer(job: Job) -> Any:
    results: list[Any] = []
    job.result.addCallback(results.append)
    return results[0] if results else None


class WorkerMachineTests(SynchronousTestCase):
    def machine(self, state: str) -> tuple[Any, FakeHost, Clock, Job | None]:
        host, clock = FakeHost(), Clock()
        m = WorkerMachine(WorkerCore(host, clock, 0.5))
        job = None
        if state in ("Idle", "Busy"):
            m.started()
        if state == "Busy":
            job = Job({"function": "f"}, 5.0)
            m.dispatched(job)
        if state == "Gone":
            m.stopRequested()
        host.events.clear()
        return m, host, clock, job

    def drive(self, state: str, name: str) -> tuple[list[Any], Any, Any, Clock]:
        """Feed one input in C{state}; the host events, the current job's answer, a new job's answer."""
        m, host, clock, job = self.machine(state)
        extra = None
        if name == "started":
            m.started()
        elif name == "dispatched":
            extra = Job({"function": "g"}, 5.0)
            m.dispatched(extra)
        elif name == "answered":
            m.answered({"ok": True, "result": 1})
        elif name == "deadlinePassed":
            m.deadlinePassed()
        elif name == "exited":
            m.exited("killed")
        elif name == "stopRequested":
            m.stopRequested()
        return host.events, answer(job) if job else None, answer(extra) if extra else None, clock

    INPUTS = ("started", "dispatched", "answered", "deadlinePassed", "exited", "stopRequested")

    def test_starting(self) -> None:
        """Starting: ready makes it idle; a death before that is reported as not ready; jobs are refused."""
        got = {i: self.drive("Starting", i)[:3] for i in self.INPUTS}
        self.assertEqual(got["started"], (["idle"], None, None))
        self.assertEqual(got["dispatched"], ([], None, {"ok": False, "error": "no Lua worker is ready"}))
        self.assertEqual(got["answered"], ([], None, None))
        self.assertEqual(got["deadlinePassed"], ([], None, None))
        self.assertEqual(got["exited"], ([("gone", False)], None, None))
        self.assertEqual(got["stopRequested"], (["kill"], None, None))

    def test_idle(self) -> None:
        """Idle: a job is written out; an unasked answer kills the worker; a death is reported."""
        got = {i: self.drive("Idle", i) for i in self.INPUTS}
        self.assertEqual(got["started"][:3], ([], None, None))
        events, _, extra, clock = got["dispatched"]
        self.assertEqual(events, [("write", b'{"function":"g"}\n')])
        self.assertIsNone(extra)
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [5.5])
        self.assertEqual(got["answered"][:3], (["kill", ("gone", True)], None, None))
        self.assertEqual(got["deadlinePassed"][:3], ([], None, None))
        self.assertEqual(got["exited"][:3], ([("gone", True)], None, None))
        self.assertEqual(got["stopRequested"][:3], (["kill"], None, None))

    def test_busy(self) -> None:
        """Busy: the answer goes to the job; past the wall-clock limit the worker is killed and the job gets "time limit exceeded"."""
        got = {i: self.drive("Busy", i) for i in self.INPUTS}
        self.assertEqual(got["started"][:3], ([], None, None))
        self.assertEqual(got["dispatched"][:3], ([], None, {"ok": False, "error": "the Lua worker is busy"}))
        events, result, _, clock = got["answered"]
        self.assertEqual((events, result), (["idle"], {"ok": True, "result": 1}))
        self.assertEqual(clock.getDelayedCalls(), [])
        events, result, _, clock = got["deadlinePassed"]
        self.assertEqual(
            (events, result), (["kill", ("gone", True)], {"ok": False, "error": "time limit exceeded"})
        )
        events, result, _, clock = got["exited"]
        self.assertEqual(events, [("gone", True)])
        self.assertEqual(result, {"ok": False, "error": "the Lua worker ended during the call (killed)"})
        self.assertEqual(clock.getDelayedCalls(), [])
        events, result, _, clock = got["stopRequested"]
        self.assertEqual((events, result), (["kill"], {"ok": False, "error": "the peer is stopping"}))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_busyTimerFires(self) -> None:
        """The wall-clock timer of a busy worker fires the deadline at the limit plus the grace."""
        m, host, clock, job = self.machine("Busy")
        assert job is not None
        clock.advance(5.4)
        self.assertEqual(host.events, [])
        clock.advance(0.2)
        self.assertEqual(host.events, ["kill", ("gone", True)])
        self.assertEqual(answer(job), {"ok": False, "error": "time limit exceeded"})

    def test_gone(self) -> None:
        """Gone: every input is ignored; a job handed to it fails at once."""
        got = {i: self.drive("Gone", i)[:3] for i in self.INPUTS}
        for i in self.INPUTS:
            if i == "dispatched":
                self.assertEqual(got[i], ([], None, {"ok": False, "error": "the Lua worker has ended"}))
            else:
                self.assertEqual(got[i], ([], None, None), i)


class PoolTests(SynchronousTestCase):
    def pool(self, **kw: Any) -> tuple[WorkerPool, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        spawned: list[Any] = []

        def spawnProcess(proto: Any, *args: Any, **kwargs: Any) -> None:
            spawned.append(proto)

        # MemoryReactorClock has no spawnProcess: the pool needs only this one.
        reactor.spawnProcess = spawnProcess  # type: ignore[attr-defined]
        p = WorkerPool(reactor, {}, **kw)
        p.spawned = spawned  # type: ignore[attr-defined]
        return p, reactor

    def test_queueBoundAndNotRunning(self) -> None:
        """Calls before start fail; calls beyond the queue bound fail with a reason; queued ones wait for a ready worker."""
        p, reactor = self.pool(size=1, maxQueue=2)
        early: list[Any] = []
        p.submit({}, 1.0).addCallback(early.append)
        self.assertEqual(early, [{"ok": False, "error": "Lua is not running"}])
        p.start()
        p.submit({"n": 1}, 1.0)
        p.submit({"n": 2}, 1.0)
        third = p.submit({"n": 3}, 1.0)
        got: list[Any] = []
        third.addCallback(got.append)
        self.assertEqual(got, [{"ok": False, "error": "too many Lua calls waiting; try again later"}])
        self.assertEqual(len(p.queue), 2)

    def test_replacedAfterDeath(self) -> None:
        """A worker that dies after being ready is replaced at once; three failed starts fail the queue."""
        p, reactor = self.pool(size=1)
        p.start()
        spawned = p.spawned  # type: ignore[attr-defined]
        self.assertEqual(len(spawned), 1)
        spawned[0].machine.started()
        spawned[0].machine.exited("crash")
        self.assertEqual(len(spawned), 2)
        pending = p.submit({}, 1.0)
        got: list[Any] = []
        pending.addCallback(got.append)
        for _ in range(3):
            spawned[-1].machine.exited("cannot start")
            reactor.advance(30)
        self.assertEqual(got, [{"ok": False, "error": "the Lua workers cannot start"}])
        spawned[-1].machine.exited("cannot start")
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        p.stop()
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_growsWhenAJobWaits(self) -> None:
        """
        C{start} starts one worker; a job waiting while it starts does not
        start another, a job waiting while every worker is busy does, up to
        C{size}; once started, workers are kept.
        """
        p, reactor = self.pool(size=2)
        spawned = p.spawned  # type: ignore[attr-defined]
        p.start()
        self.assertEqual(len(spawned), 1)
        first = p.submit({"n": 1}, 1.0)
        self.assertEqual(len(spawned), 1)
        spawned[0].jobs.close()
        spawned[0].jobs = FakeJobs()
        spawned[0].machine.started()
        self.assertEqual(spawned[0].jobs.data, [b'{"n":1}\n'])
        second = p.submit({"n": 2}, 1.0)
        self.assertEqual(len(spawned), 2)
        third = p.submit({"n": 3}, 1.0)
        self.assertEqual(len(spawned), 2)
        spawned[1].jobs.close()
        spawned[1].jobs = FakeJobs()
        spawned[1].machine.started()
        self.assertEqual(spawned[1].jobs.data, [b'{"n":2}\n'])
        spawned[0].childDataReceived(1, b'{"ok":true,"result":1}\n')
        self.assertEqual(answerOf(first), {"ok": True, "result": 1})
        self.assertEqual(spawned[0].jobs.data[-1], b'{"n":3}\n')
        spawned[1].childDataReceived(1, b'{"ok":true,"result":2}\n')
        spawned[0].childDataReceived(1, b'{"ok":true,"result":3}\n')
        self.assertEqual(
            (answerOf(second), answerOf(third)), ({"ok": True, "result": 2}, {"ok": True, "result": 3})
        )
        self.assertEqual((len(spawned), len(p.workers), len(p.ready)), (2, 2, 2))
        p.stop()

    def test_noGrowthWhileStartsFail(self) -> None:
        """
        While workers fail to start, a waiting job starts no extra worker:
        the one start retried after its backoff is all.
        """
        p, reactor = self.pool(size=2)
        spawned = p.spawned  # type: ignore[attr-defined]
        p.start()
        spawned[0].machine.exited("cannot start")
        self.assertEqual(len(spawned), 1)
        p.submit({"n": 1}, 1.0)
        p.submit({"n": 2}, 1.0)
        self.assertEqual(len(spawned), 1)
        reactor.advance(0.5)
        self.assertEqual(len(spawned), 2)
        p.stop()
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_dispatchedWithoutReactorTurn(self) -> None:
        """A queued job is written to a worker as it becomes ready, and a job for a ready worker at once."""
        p, reactor = self.pool(size=1)
        p.start()
        worker = p.spawned[0]  # type: ignore[attr-defined]
        sent = FakeJobs()
        worker.jobs.close()
        worker.jobs = sent
        first = p.submit({"n": 1}, 1.0)
        self.assertEqual(sent.data, [])
        worker.machine.started()
        self.assertEqual(sent.data, [b'{"n":1}\n'])
        second = p.submit({"n": 2}, 1.0)
        worker.childDataReceived(1, b'{"ok":true,"result":1}\n')
        self.assertEqual(answerOf(first), {"ok": True, "result": 1})
        self.assertEqual(sent.data, [b'{"n":1}\n', b'{"n":2}\n'])
        worker.childDataReceived(1, b'{"ok":true,"result":2}\n')
        self.assertEqual(answerOf(second), {"ok": True, "result": 2})
        third = p.submit({"n": 3}, 1.0)
        self.assertEqual(sent.data[-1], b'{"n":3}\n')
        self.assertIsNone(answerOf(third))
        p.stop()
        self.assertTrue(sent.closed)


class FakeJobs:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.data.append(data)

    def close(self) -> None:
        self.closed = True


def answerOf(d: Any) -> Any:
    got: list[Any] = []
    d.addCallback(got.append)
    return got[0] if got else None


class JobPipeTests(SynchronousTestCase):
    """The peer's end of a worker's stdin."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.readEnd, writeEnd = os.pipe()
        self.addCleanup(self.closeReadEnd)
        self.pipe = JobPipe(self.reactor, writeEnd)
        self.addCleanup(self.pipe.close)

    def closeReadEnd(self) -> None:
        if self.readEnd >= 0:
            os.close(self.readEnd)
            self.readEnd = -1

    def read(self) -> bytes:
        os.set_blocking(self.readEnd, False)
        chunks = []
        while True:
            try:
                chunk = os.read(self.readEnd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def test_interface(self) -> None:
        """The reactor can drive it as a write descriptor."""
        self.assertTrue(verifyObject(IWriteDescriptor, self.pipe))

    def test_smallJobWrittenAtOnce(self) -> None:
        """A job that fits the pipe is in it when send returns; no writer is registered."""
        self.pipe.send(b'{"n":1}\n')
        self.assertEqual(self.read(), b'{"n":1}\n')
        self.assertEqual(self.reactor.getWriters(), [])

    def test_largeJobWrittenAsThePipeDrains(self) -> None:
        """A job larger than the pipe is written in parts as the reader drains it, whole and in order."""
        job = bytes(range(256)) * 4096 + b"\n"  # 1 MiB
        self.pipe.send(job)
        self.assertEqual(self.reactor.getWriters(), [self.pipe])
        got = self.read()
        self.assertLess(len(got), len(job))
        while self.reactor.getWriters():
            self.pipe.doWrite()
            got += self.read()
        self.assertEqual(got, job)
        self.pipe.send(b"next\n")
        self.assertEqual(self.read(), b"next\n")

    def test_readerGone(self) -> None:
        """Writing after the worker's end closed closes ours quietly (the process's end says why)."""
        self.closeReadEnd()
        self.pipe.send(b"job\n")
        self.assertEqual(self.pipe.fileno(), -1)
        self.pipe.send(b"job\n")
        self.assertEqual(self.reactor.getWriters(), [])
