"""
The serial-job machine (suite.serial): every input in every state, then
the behaviours its callers rely on, all on a L{task.Clock}.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.serial import SerialCore, SerialJob, SerialMachine

#: The retry delay of L{Env}'s failed runs (longer than its 1 s start delay).
RETRY = 5.0


class Env:
    """
    A job whose runs the test ends by hand, a clock, and a record of what
    happened: C{"start"} (a run began), C{"failed"} (a failed run was
    logged), C{"stopped"} (a stop waiter fired).  A failed run is retried
    after L{RETRY} seconds.
    """

    def __init__(self, delay: float | None = 1.0) -> None:
        self.clock = Clock()
        self.runs: list[Deferred[None]] = []
        self.events: list[str] = []
        self.logged: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            self.logged.append(event)
            if event.get("log_failure") is not None:
                self.events.append("failed")

        self.log = Logger(observer=LogPublisher(cast(ILogObserver, observe)))
        self.machine: Any = SerialMachine(
            SerialCore(
                self.job,
                "test job",
                self.clock,
                None if delay is None else (lambda: delay),
                self.log,
                retry=lambda result: RETRY if isinstance(result, Failure) else None,
            )
        )

    def job(self) -> Deferred[None]:
        self.events.append("start")
        d: Deferred[None] = Deferred()
        self.runs.append(d)
        return d

    def stop(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        waiter.addCallback(lambda _: self.events.append("stopped"))
        self.machine.stop(waiter)
        return waiter

    def inFlight(self) -> Deferred[None] | None:
        return self.runs[-1] if self.runs and not self.runs[-1].called else None


def inState(state: str) -> Env:
    """
    A fresh machine driven into C{state} (a 1 s start delay), with its
    record cleared.
    """
    env = Env()
    m = env.machine
    if state != "Idle" and state != "Stopped":
        m.request()
    if state in ("Running", "RunningAgain", "Stopping", "Retrying"):
        env.clock.advance(1.0)
    if state == "RunningAgain":
        m.request()
    if state in ("Stopping", "Stopped"):
        env.stop()
    if state == "Retrying":
        env.runs[-1].errback(RuntimeError("boom"))
    env.events.clear()
    return env


def stateOf(env: Env) -> str:
    """
    Tell the state from behaviour alone (this drives the machine on).
    """
    before = len(env.events)
    timers = env.clock.getDelayedCalls()
    if timers:
        # only Scheduled (1 s start delay) and Retrying (RETRY) keep a timer
        return "Retrying" if timers[0].getTime() - env.clock.seconds() > 1.0 else "Scheduled"

    def moved() -> bool:
        return bool(env.clock.getDelayedCalls()) or "start" in env.events[before:]

    run = env.inFlight()
    if run is not None:
        run.callback(None)
        if moved():
            return "RunningAgain"  # the next run is scheduled at once
        env.machine.request()
        return "Running" if moved() else "Stopping"
    env.machine.request()
    return "Idle" if moved() else "Stopped"


def feed(env: Env, state: str, input: str) -> None:
    m = env.machine
    run = env.inFlight()
    if input == "request":
        m.request()
    elif input == "poll":
        m.poll()
    elif input == "due":
        timers = env.clock.getDelayedCalls()
        if state in ("Scheduled", "Retrying"):
            env.clock.advance(timers[0].getTime() - env.clock.seconds())  # the real timer feeds it
        else:
            m.due()
    elif input == "retryLater":
        m.retryLater(RETRY)
    elif input in ("finished", "failed"):
        result: object = None if input == "finished" else Failure(RuntimeError("boom"))
        if run is None:
            m.finished(result)  # no run: only a stray call can feed it
        elif input == "finished":
            run.callback(None)
        else:
            run.errback(RuntimeError("boom"))
    elif input == "stop":
        env.stop()
    else:
        raise AssertionError(input)


#: (state, input) -> (what happened, next state)
TABLE: dict[tuple[str, str], tuple[list[str], str]] = {
    ("Idle", "request"): ([], "Scheduled"),
    ("Idle", "poll"): ([], "Scheduled"),
    ("Idle", "due"): ([], "Idle"),
    ("Idle", "finished"): ([], "Idle"),
    ("Idle", "failed"): ([], "Idle"),
    ("Idle", "stop"): (["stopped"], "Stopped"),
    ("Scheduled", "request"): ([], "Scheduled"),
    ("Scheduled", "poll"): ([], "Scheduled"),
    ("Scheduled", "due"): (["start"], "Running"),
    ("Scheduled", "finished"): ([], "Scheduled"),
    ("Scheduled", "failed"): ([], "Scheduled"),
    ("Scheduled", "stop"): (["stopped"], "Stopped"),
    ("Running", "request"): ([], "RunningAgain"),
    ("Running", "poll"): ([], "Running"),
    ("Running", "due"): ([], "Running"),
    ("Running", "finished"): ([], "Idle"),
    ("Running", "failed"): (["failed"], "Retrying"),
    ("Running", "stop"): ([], "Stopping"),
    ("RunningAgain", "request"): ([], "RunningAgain"),
    ("RunningAgain", "poll"): ([], "RunningAgain"),
    ("RunningAgain", "due"): ([], "RunningAgain"),
    ("RunningAgain", "finished"): ([], "Scheduled"),
    ("RunningAgain", "failed"): (["failed"], "Scheduled"),
    ("RunningAgain", "stop"): ([], "Stopping"),
    ("Stopping", "request"): ([], "Stopping"),
    ("Stopping", "poll"): ([], "Stopping"),
    ("Stopping", "due"): ([], "Stopping"),
    ("Stopping", "finished"): (["stopped"], "Stopped"),
    ("Stopping", "failed"): (["failed", "stopped"], "Stopped"),
    ("Stopping", "stop"): ([], "Stopping"),
    ("Stopped", "request"): ([], "Stopped"),
    ("Stopped", "poll"): ([], "Stopped"),
    ("Stopped", "due"): ([], "Stopped"),
    ("Stopped", "finished"): ([], "Stopped"),
    ("Stopped", "failed"): ([], "Stopped"),
    ("Stopped", "stop"): (["stopped"], "Stopped"),
    ("Idle", "retryLater"): ([], "Retrying"),
    ("Scheduled", "retryLater"): ([], "Scheduled"),
    ("Running", "retryLater"): ([], "Running"),
    ("RunningAgain", "retryLater"): ([], "RunningAgain"),
    ("Stopping", "retryLater"): ([], "Stopping"),
    ("Stopped", "retryLater"): ([], "Stopped"),
    ("Retrying", "request"): ([], "Scheduled"),
    ("Retrying", "poll"): ([], "Retrying"),
    ("Retrying", "due"): (["start"], "Running"),
    ("Retrying", "finished"): ([], "Retrying"),
    ("Retrying", "failed"): ([], "Retrying"),
    ("Retrying", "retryLater"): ([], "Retrying"),
    ("Retrying", "stop"): (["stopped"], "Stopped"),
}

STATES = ["Idle", "Scheduled", "Running", "RunningAgain", "Retrying", "Stopping", "Stopped"]
INPUTS = ["request", "poll", "due", "finished", "failed", "retryLater", "stop"]


class SerialMachineTests(SynchronousTestCase):
    """
    Every state answers every input as L{TABLE} says.
    """

    def test_tableCoversEverything(self) -> None:
        """
        The table has a row for every state and input, and nothing else.
        """
        self.assertEqual(set(TABLE), {(s, i) for s in STATES for i in INPUTS})

    def test_fixturesReachTheirStates(self) -> None:
        """
        L{inState} and L{stateOf} agree, so the table checks what it says.
        """
        for state in STATES:
            self.assertEqual(stateOf(inState(state)), state)

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state has exactly the table's effect.
        """
        for (state, input), (events, after) in sorted(TABLE.items()):
            env = inState(state)
            feed(env, state, input)
            happened = list(env.events)
            self.assertEqual((happened, stateOf(env)), (events, after), f"{input} in {state}")

    def test_stopWaitersFireOnce(self) -> None:
        """
        Every stop asked for while a run ends fires once, when it ends.
        """
        env = inState("Running")
        first, second = env.stop(), env.stop()
        self.assertNoResult(first)
        self.assertNoResult(second)
        env.runs[-1].callback(None)
        self.assertEqual(env.events, ["stopped", "stopped"])
        self.assertEqual(env.clock.getDelayedCalls(), [])

    def test_failureIsLoggedWithTheJobName(self) -> None:
        """
        A failed run is logged with the job's name and its failure.
        """
        env = inState("Running")
        env.runs[-1].errback(RuntimeError("disk full"))
        [event] = [e for e in env.logged if e.get("log_failure") is not None]
        self.assertEqual(event["what"], "test job")
        self.assertIsInstance(event["log_failure"].value, RuntimeError)


def recorder(runs: list[Deferred[None]]) -> Any:
    """
    A job that records each run's Deferred in C{runs}.
    """

    def job() -> Deferred[None]:
        d: Deferred[None] = Deferred()
        runs.append(d)
        return d

    return job


class SerialJobTests(SynchronousTestCase):
    """
    The behaviours the callers rely on.
    """

    def test_coalesces(self) -> None:
        """
        However often it is asked for during a run, the job runs once more.
        """
        runs: list[Deferred[None]] = []
        serial = SerialJob(recorder(runs), "job")
        serial.request()
        self.assertEqual(len(runs), 1)  # no delay: started in the call
        for _ in range(5):
            serial.request()
            serial.poll()
        self.assertEqual(len(runs), 1)
        runs[0].callback(None)
        self.assertEqual(len(runs), 2)
        runs[1].callback(None)
        self.assertEqual(len(runs), 2)

    def test_pollDoesNotPileUp(self) -> None:
        """
        A poll during a run asks for nothing more.
        """
        runs: list[Deferred[None]] = []
        serial = SerialJob(recorder(runs), "job")
        serial.poll()
        serial.poll()
        runs[0].callback(None)
        self.assertEqual(len(runs), 1)
        serial.poll()
        self.assertEqual(len(runs), 2)

    def test_synchronousJobs(self) -> None:
        """
        A job that ends within its call (or raises) leaves the machine idle,
        and a request it makes of itself runs once more, after it, not inside it.
        """
        calls: list[int] = []
        depth = [0]
        serial: SerialJob

        def job() -> Deferred[None]:
            depth[0] += 1
            calls.append(depth[0])
            if len(calls) == 1:
                serial.request()
            depth[0] -= 1
            return succeed(None)

        serial = SerialJob(job, "job")
        serial.request()
        self.assertEqual(calls, [1, 1])
        serial.request()
        self.assertEqual(calls, [1, 1, 1])

        events: list[dict[str, Any]] = []
        failing = SerialJob(
            lambda: 1 / 0, "divide", log=Logger(observer=LogPublisher(cast(ILogObserver, events.append)))
        )
        failing.request()
        failing.request()
        self.assertEqual(len([e for e in events if e.get("log_failure") is not None]), 2)

    def test_delay(self) -> None:
        """
        Each start waits C{delay()}, asked when the start is scheduled,
        including the re-run after a request made during a run.
        """
        clock = Clock()
        runs: list[Deferred[None]] = []
        gaps = iter([0.5, 2.0])
        serial = SerialJob(recorder(runs), "job", clock=clock, delay=lambda: next(gaps))
        serial.request()
        clock.advance(0.4)
        self.assertEqual(runs, [])
        clock.advance(0.1)
        self.assertEqual(len(runs), 1)
        serial.request()
        runs[0].callback(None)
        clock.advance(1.9)
        self.assertEqual(len(runs), 1)
        clock.advance(0.1)
        self.assertEqual(len(runs), 2)

    def test_stopWaitsForTheRunAndDropsTheRerun(self) -> None:
        """
        stop fires when the run in progress ends; the re-run asked for
        during it never starts, and nothing runs after.
        """
        runs: list[Deferred[None]] = []
        serial = SerialJob(recorder(runs), "job")
        serial.request()
        serial.request()
        stopped = serial.stop()
        self.assertNoResult(stopped)
        runs[0].callback(None)
        self.successResultOf(stopped)
        serial.request()
        self.assertEqual(len(runs), 1)
        self.successResultOf(serial.stop())

    def test_delayNeedsAClock(self) -> None:
        """
        A start delay without a clock is refused when the job is built.
        """
        with self.assertRaises(ValueError):
            SerialJob(lambda: None, "job", delay=lambda: 1.0)

    def test_stopCancelsAScheduledStart(self) -> None:
        """
        A start waiting for its delay is cancelled by stop.
        """
        clock = Clock()
        runs: list[int] = []
        serial = SerialJob(lambda: runs.append(1), "job", clock=clock, delay=lambda: 5.0)
        serial.request()
        self.successResultOf(serial.stop())
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertEqual(runs, [])

    def test_retry(self) -> None:
        """
        A run whose result asks for a retry runs again after the delay
        C{retry} gives for it; a poll during the wait changes nothing, a
        request starts it sooner (after the start delay), a stop cancels it;
        a run whose result asks for none leaves the job idle.  Retries need
        a clock.
        """
        clock = Clock()
        runs: list[Deferred[None]] = []
        asked: list[object] = []

        def retry(result: object) -> float | None:
            asked.append(result)
            return 3.0 if isinstance(result, Failure) else None

        quiet = Logger(observer=LogPublisher(cast(ILogObserver, lambda e: None)))
        serial = SerialJob(recorder(runs), "job", clock=clock, retry=retry, log=quiet)
        serial.request()
        runs[0].errback(RuntimeError("down"))
        self.assertIsInstance(asked[-1], Failure)
        serial.poll()
        clock.advance(2.9)
        self.assertEqual(len(runs), 1)
        clock.advance(0.1)
        self.assertEqual(len(runs), 2)
        runs[1].errback(RuntimeError("down"))
        clock.advance(1)
        serial.request()  # sooner than the retry
        self.assertEqual(len(runs), 3)
        runs[2].callback(None)
        self.assertIsNone(asked[-1])
        clock.advance(10)
        self.assertEqual((len(runs), clock.getDelayedCalls()), (3, []))
        serial.request()
        runs[3].errback(RuntimeError("down"))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.successResultOf(serial.stop())
        self.assertEqual(clock.getDelayedCalls(), [])
        with self.assertRaises(ValueError):
            SerialJob(lambda: None, "job", retry=lambda result: 1.0)
