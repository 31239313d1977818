"""
One asynchronous job at a time, coalescing: a job asked for while it runs
is run once more after it ends (however many times it was asked), never
twice at once.  For reconcilers, health checks, file reloads and saves of a
value that changes while it is written.

  inputs:  request() - run the job now (after the start delay), or once
             more after the run in progress;
           poll() - run the job if nothing is scheduled or running, else
             nothing (a periodic tick that must not pile up);
           due() - (private) the start delay elapsed;
           finished(result) - (private) the run's Deferred fired, with its
             result or a Failure;
           retryLater(delay) - (private) the run that just ended asks to
             be retried (C{retry(result)} gave a delay);
           stop(waiter) - take no more requests; C{waiter} fires when the
             run in progress (if any) has ended.  A re-run asked for while it ran
             is dropped; a scheduled start or retry is cancelled.
  outputs: startJob (the job is called; a Failure it ends with is logged),
           cancelTimer, cancelRetry, fireStopped (the stop waiters).
  states:  Idle (initial), Scheduled (a start is due after C{delay()};
           with no delay the start follows at once, in the same call),
           Running, RunningAgain (asked for again while running; when
           the run ends it goes back to Idle and asks again at once),
           Retrying (a run ended asking to be retried: it starts again when
           its delay elapses, or sooner, as any start, on a request; a poll
           leaves the retry be), Stopping (stop asked for while running),
           Stopped (final).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["SerialInputs", "SerialCore", "SerialMachine", "SerialJob"]

_log = Logger(namespace="suite.serial")


class SerialInputs(Protocol):
    """
    Inputs of the serial-job machine.
    """

    def request(self) -> None:
        """
        Run the job: now (after the start delay) when idle, once more after
        the run in progress otherwise.
        """

    def poll(self) -> None:
        """
        Run the job only if it is neither scheduled nor running.
        """

    def due(self) -> None:
        """
        (Private) the start delay elapsed.
        """

    def finished(self, result: object) -> None:
        """
        (Private) the run's Deferred fired with C{result} (maybe a Failure).
        """

    def retryLater(self, delay: float) -> None:
        """
        (Private) the run that just ended is to be retried after C{delay} seconds.
        """

    def stop(self, waiter: Deferred[None]) -> None:
        """
        Take no more requests; C{waiter} fires once no run is in progress.
        """


@dataclass
class SerialCore:
    """
    The job and how to start it.

    @ivar job: starts one run; its Deferred (or plain value) ends the run.
    @ivar name: what the job is, for the log line of a failed run.
    @ivar clock: schedules delayed starts (needed only with C{delay}).
    @ivar delay: seconds to wait before each start (a rate limit), asked
        when the start is scheduled; C{None} starts at once.
    @ivar retry: given the result of a run that ended with nothing asked for
        during it (the value, or the Failure), the seconds after which to run
        again (a retry with backoff), or C{None} for no retry; needs C{clock}.
    """

    job: Callable[[], object]
    name: str
    clock: IReactorTime | None = None
    delay: Callable[[], float] | None = None
    log: Logger = field(default_factory=lambda: _log)
    retry: Callable[[object], float | None] | None = None

    def start(self, inputs: SerialInputs) -> None:
        maybeDeferred(self.job).addBoth(inputs.finished)

    def report(self, result: object) -> None:
        if isinstance(result, Failure):
            self.log.failure("{what} failed", result, what=self.name)

    def retryIn(self, result: object) -> float | None:
        if self.retry is None or self.clock is None:
            return None
        return self.retry(result)


@dataclass
class ScheduledData:
    """
    The pending start: C{None} when it follows at once.
    """

    timer: IDelayedCall | None


@dataclass
class RetryingData:
    """
    The pending retry.
    """

    timer: IDelayedCall


@dataclass
class StoppingData:
    """
    Who waits for the run in progress to end.
    """

    waiters: list[Deferred[None]]


def _build() -> TypeMachine[SerialInputs, SerialCore]:
    b = TypeMachineBuilder(SerialInputs, SerialCore)
    idle = b.state("Idle")

    def schedule(inputs: SerialInputs, core: SerialCore) -> ScheduledData:
        if core.delay is None or core.clock is None:
            # Delivered as soon as this transition completes (automat
            # queues inputs fed from inside a transition).
            inputs.due()
            return ScheduledData(None)
        return ScheduledData(core.clock.callLater(max(0.0, core.delay()), inputs.due))

    scheduled = b.state("Scheduled", schedule)
    running = b.state("Running")
    runningAgain = b.state("RunningAgain")

    def scheduleRetry(inputs: SerialInputs, core: SerialCore, delay: float) -> RetryingData:
        assert core.clock is not None  # retryIn gives no delay without one
        return RetryingData(core.clock.callLater(max(0.0, delay), inputs.due))

    retrying = b.state("Retrying", scheduleRetry)

    def waitForRun(inputs: SerialInputs, core: SerialCore, waiter: Deferred[None]) -> StoppingData:
        return StoppingData([waiter])

    stopping = b.state("Stopping", waitForRun)
    stopped = b.state("Stopped")

    def stoppedNow(inputs: SerialInputs, core: SerialCore, waiter: Deferred[None]) -> None:
        waiter.callback(None)

    # Idle
    idle.upon(SerialInputs.request).to(scheduled).returns(None)
    idle.upon(SerialInputs.poll).to(scheduled).returns(None)
    idle.upon(SerialInputs.due).loop().returns(None)  # no timer runs: impossible
    idle.upon(SerialInputs.finished).loop().returns(None)  # no run: impossible
    idle.upon(SerialInputs.retryLater).to(retrying).returns(None)  # the delay goes to Retrying's data
    idle.upon(SerialInputs.stop).to(stopped)(stoppedNow)

    # Scheduled
    scheduled.upon(SerialInputs.request).loop().returns(None)
    scheduled.upon(SerialInputs.poll).loop().returns(None)
    scheduled.upon(SerialInputs.finished).loop().returns(None)  # no run: impossible
    scheduled.upon(SerialInputs.retryLater).loop().returns(None)  # only after a run: impossible

    @scheduled.upon(SerialInputs.due).to(running)
    def startJob(inputs: SerialInputs, core: SerialCore, data: ScheduledData) -> None:
        core.start(inputs)

    @scheduled.upon(SerialInputs.stop).to(stopped)
    def cancelTimer(
        inputs: SerialInputs, core: SerialCore, data: ScheduledData, waiter: Deferred[None]
    ) -> None:
        if data.timer is not None and data.timer.active():
            data.timer.cancel()
        waiter.callback(None)

    # Running
    running.upon(SerialInputs.request).to(runningAgain).returns(None)
    running.upon(SerialInputs.poll).loop().returns(None)
    running.upon(SerialInputs.due).loop().returns(None)  # the timer fired already: impossible
    running.upon(SerialInputs.stop).to(stopping).returns(None)  # the waiter goes to Stopping's data

    running.upon(SerialInputs.retryLater).loop().returns(None)  # only after a run: impossible

    @running.upon(SerialInputs.finished).to(idle)
    def ended(inputs: SerialInputs, core: SerialCore, result: object) -> None:
        core.report(result)
        delay = core.retryIn(result)
        if delay is not None:
            # Delivered in Idle as soon as this transition completes.
            inputs.retryLater(delay)

    # RunningAgain
    runningAgain.upon(SerialInputs.request).loop().returns(None)
    runningAgain.upon(SerialInputs.poll).loop().returns(None)
    runningAgain.upon(SerialInputs.due).loop().returns(None)  # impossible, as in Running
    runningAgain.upon(SerialInputs.stop).to(stopping).returns(None)  # the re-run is dropped
    runningAgain.upon(SerialInputs.retryLater).loop().returns(None)  # only after a run: impossible

    @runningAgain.upon(SerialInputs.finished).to(idle)
    def endedThenAgain(inputs: SerialInputs, core: SerialCore, result: object) -> None:
        core.report(result)
        # Delivered in Idle as soon as this transition completes, before
        # any other input: schedules the next start.
        inputs.request()

    # Retrying
    retrying.upon(SerialInputs.poll).loop().returns(None)  # a start is due already
    retrying.upon(SerialInputs.finished).loop().returns(None)  # no run: impossible
    retrying.upon(SerialInputs.retryLater).loop().returns(None)  # no run: impossible

    @retrying.upon(SerialInputs.due).to(running)
    def retryJob(inputs: SerialInputs, core: SerialCore, data: RetryingData) -> None:
        core.start(inputs)

    @retrying.upon(SerialInputs.request).to(scheduled)
    def cancelRetry(inputs: SerialInputs, core: SerialCore, data: RetryingData) -> None:
        # Asked for now: the retry's wait ends (Scheduled applies the start delay).
        if data.timer.active():
            data.timer.cancel()

    @retrying.upon(SerialInputs.stop).to(stopped)
    def cancelRetryAndStop(
        inputs: SerialInputs, core: SerialCore, data: RetryingData, waiter: Deferred[None]
    ) -> None:
        if data.timer.active():
            data.timer.cancel()
        waiter.callback(None)

    # Stopping
    stopping.upon(SerialInputs.request).loop().returns(None)
    stopping.upon(SerialInputs.poll).loop().returns(None)
    stopping.upon(SerialInputs.due).loop().returns(None)  # impossible
    stopping.upon(SerialInputs.retryLater).loop().returns(None)  # no retry once stopping

    @stopping.upon(SerialInputs.stop).loop()
    def alsoWait(inputs: SerialInputs, core: SerialCore, data: StoppingData, waiter: Deferred[None]) -> None:
        data.waiters.append(waiter)

    @stopping.upon(SerialInputs.finished).to(stopped)
    def fireStopped(inputs: SerialInputs, core: SerialCore, data: StoppingData, result: object) -> None:
        core.report(result)
        waiters, data.waiters = data.waiters, []
        for d in waiters:
            d.callback(None)

    # Stopped
    stopped.upon(SerialInputs.request).loop().returns(None)
    stopped.upon(SerialInputs.poll).loop().returns(None)
    stopped.upon(SerialInputs.due).loop().returns(None)  # impossible
    stopped.upon(SerialInputs.finished).loop().returns(None)  # impossible
    stopped.upon(SerialInputs.retryLater).loop().returns(None)  # impossible
    stopped.upon(SerialInputs.stop).loop()(stoppedNow)

    return b.build()


#: Build one per job: C{SerialMachine(SerialCore(job, name, ...))}.
SerialMachine = _build()


class SerialJob:
    """
    Run C{job} one at a time, coalescing requests made while it runs (see
    the module docstring); a run that fails is logged as C{"<name> failed"}
    (callers that report failures their own way handle them in C{job}).

    @param delay: with C{clock}, the seconds to wait before each start.
    @param retry: with C{clock}, given a run's result (value or Failure),
        the seconds after which to run again, or C{None}; a request during
        the wait starts the job sooner, a poll does not.
    """

    def __init__(
        self,
        job: Callable[[], object],
        name: str,
        *,
        clock: IReactorTime | None = None,
        delay: Callable[[], float] | None = None,
        log: Logger | None = None,
        retry: Callable[[object], float | None] | None = None,
    ) -> None:
        if delay is not None and clock is None:
            raise ValueError(f"{name}: a start delay needs a clock")
        if retry is not None and clock is None:
            raise ValueError(f"{name}: retries need a clock")
        self._machine = SerialMachine(SerialCore(job, name, clock, delay, log or _log, retry))

    def request(self) -> None:
        """
        Run the job now (after the delay), or once more after the run in progress.
        """
        self._machine.request()

    def poll(self) -> None:
        """
        Run the job unless it is already scheduled or running.
        """
        self._machine.poll()

    def stop(self) -> Deferred[None]:
        """
        Take no more requests (a pending re-run is dropped, a scheduled start
        cancelled); the Deferred fires once the run in progress has ended.
        """
        waiter: Deferred[None] = Deferred()
        self._machine.stop(waiter)
        return waiter
