"""
Combining concurrent ingest requests into one Raft entry per partition.

The leader of a partition holds the shares of the requests that arrive in
one reactor turn (or within C{delay} seconds of the first one) and proposes
them as one C{E2} entry (L{suite.ceptra.machine.eventsEntry}), which carries
each request's event count; the engine reports accepted, duplicate and
rejected events per request, and each request is answered once the entry
is committed and applied.  Deduplication by C{event_id} is the engine's, as
for separate entries: an event repeated by a later request of the same
entry counts as a duplicate of that request.

One machine per partition (L{CombineInputs}):

  - inputs: C{shareArrived(share)}, C{delayElapsed()}, C{filled()};
  - states: Idle, Collecting (data: the L{Pending} shares and the timer that
    ends the collection);
  - output: C{propose}: one entry for the pending shares; its result (or
    failure) is handed to each share's Deferred outside the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from suite.ceptra.machine import eventsEntry

__all__ = ["CombineInputs", "CombineMachine", "Combiner", "Pending", "Share"]

#: Events of one combined entry past which it is proposed at once.
MAX_COMBINED_EVENTS = 20_000


@dataclass
class Share:
    """
    One request's events for a partition and the Deferred of its answer.
    """

    events: list[dict[str, Any]]
    done: Deferred[dict[str, Any]] = field(default_factory=Deferred)


@dataclass
class Pending:
    """
    State data of Collecting: the shares held and the timer ending it.
    """

    timer: IDelayedCall
    shares: list[Share] = field(default_factory=list)
    events: int = 0


class CombineInputs(Protocol):
    def shareArrived(self, share: Share) -> None:
        """
        A request's share of events for this partition arrived (this node
        leads the partition).
        """

    def delayElapsed(self) -> None:
        """
        The turn (or the configured delay) that collects shares is over.
        """

    def filled(self) -> None:
        """
        The shares held reached the size of one entry.
        """


@dataclass
class CombineCore:
    """
    What the machine's output acts on.
    """

    pid: str
    clock: IReactorTime
    delay: float
    maxEvents: int
    propose: Callable[[str, bytes], Deferred[Any]]

    def send(self, shares: list[Share]) -> None:
        try:
            entry = eventsEntry(*[s.events for s in shares])
        except Exception:  # handed to every share's waiter
            failure = Failure()
            self.clock.callLater(0, _fail, shares, failure)
            return
        d = self.propose(self.pid, entry)
        d.addCallbacks(_answer, _fail, callbackArgs=(shares,), errbackArgs=(shares,))


def _answer(result: Any, shares: list[Share]) -> None:
    if not isinstance(result, dict):
        result = {"result": result}
    segments = result.get("segments")
    if len(shares) == 1 or segments is None:
        parts = [{k: v for k, v in result.items() if k != "segments"}] * len(shares)
    else:
        parts = [{"index": result.get("index"), **segment} for segment in segments]
    for share, part in zip(shares, parts, strict=False):
        share.done.callback(dict(part))


def _fail(failure: Failure, shares: list[Share]) -> None:
    for share in shares:
        share.done.errback(failure)


def _buildCombineMachine() -> TypeMachine[CombineInputs, CombineCore]:
    builder = TypeMachineBuilder(CombineInputs, CombineCore)
    idle = builder.state("Idle")

    def collect(inputs: CombineInputs, core: CombineCore, share: Share) -> Pending:
        pending = Pending(core.clock.callLater(core.delay, inputs.delayElapsed))
        pending.shares.append(share)
        pending.events = len(share.events)
        if pending.events >= core.maxEvents:
            inputs.filled()
        return pending

    collecting = builder.state("Collecting", collect)

    idle.upon(CombineInputs.shareArrived).to(collecting).returns(None)
    idle.upon(CombineInputs.delayElapsed).loop().returns(None)
    idle.upon(CombineInputs.filled).loop().returns(None)

    @collecting.upon(CombineInputs.shareArrived).loop()
    def add(inputs: CombineInputs, core: CombineCore, pending: Pending, share: Share) -> None:
        pending.shares.append(share)
        pending.events += len(share.events)
        if pending.events >= core.maxEvents:
            inputs.filled()

    @collecting.upon(CombineInputs.delayElapsed).to(idle)
    def elapsed(inputs: CombineInputs, core: CombineCore, pending: Pending) -> None:
        core.send(pending.shares)

    @collecting.upon(CombineInputs.filled).to(idle)
    def full(inputs: CombineInputs, core: CombineCore, pending: Pending) -> None:
        if pending.timer.active():
            pending.timer.cancel()
        core.send(pending.shares)

    return builder.build()


#: One per led partition: C{CombineMachine(CombineCore(...))}.
CombineMachine = _buildCombineMachine()


class Combiner:
    """
    The combining machines of a node's partitions.

    @param propose: C{propose(partition, entry) -> Deferred} of the
        machine's answer (L{suite.ceptra.partitions.PartitionManager.propose}).
    @param delay: seconds to collect shares after the first one (0: the
        reactor turn it arrived in).
    """

    def __init__(
        self,
        propose: Callable[[str, bytes], Deferred[Any]],
        clock: IReactorTime,
        delay: float = 0.0,
        maxEvents: int = MAX_COMBINED_EVENTS,
    ) -> None:
        self.propose = propose
        self.clock = clock
        self.delay = delay
        self.maxEvents = maxEvents
        self.machines: dict[str, CombineInputs] = {}
        #: Entries proposed, and requests they carried (for metrics).
        self.entries = 0
        self.requests = 0

    def _propose(self, pid: str, entry: bytes) -> Deferred[Any]:
        self.entries += 1
        return self.propose(pid, entry)

    def submit(self, pid: str, events: list[dict[str, Any]]) -> Deferred[dict[str, Any]]:
        """
        Commit C{events} in C{pid} together with the other requests of this
        turn; fires with this request's C{{"index", "accepted",
        "duplicates"[, "rejected"]}}, or fails as the proposal does.
        """
        machine = self.machines.get(pid)
        if machine is None:
            machine = self.machines[pid] = CombineMachine(
                CombineCore(pid, self.clock, self.delay, self.maxEvents, self._propose)
            )
        share = Share(events)
        self.requests += 1
        machine.shareArrived(share)
        return share.done
