"""
SWIM probing: one probe round per probe tick, relays of others' indirect
probes, the table of outstanding acks and Lifeguard's local health score.

The probe round machine (L{ProbeInputs}):

  - inputs: started, acked, nacked, probeTimedOut (no direct ack in time;
    carries the round's deadline timer to the next state), roundEnded,
    stopped.
  - outputs (L{ProbeActions}): sendIndirectPings, probeSucceeded,
    probeFailed.
  - states: Idle; Direct (data: the indirect-probe and deadline timers);
    Indirect (data: the deadline timer and the nacks expected and seen);
    Done.

The relay machine (L{RelayInputs}), for an indirect ping this node relays:

  - inputs: started, acked, nacked, timedOut, stopped.
  - outputs (L{RelayActions}): answer (an Ack, or a Nack when asked for).
  - states: Idle; Waiting (data: the timeout timer); Done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from suite.gossip.fields import Address
from suite.gossip.member import MemberCore, Status
from suite.gossip.messages import Ack, IndirectPing, Message, Nack, Ping, Suspect
from suite.gossip.roster import Roster
from suite.gossip.settings import GossipSettings

__all__ = [
    "AckWaiter",
    "ProbeActions",
    "ProbeCore",
    "ProbeInputs",
    "ProbeRound",
    "Prober",
    "RelayActions",
    "RelayCore",
    "RelayInputs",
    "RelayProbe",
]


class AckWaiter(Protocol):
    """
    What the ack table holds for each outstanding sequence number.
    """

    def acked(self) -> None:
        """
        The ack for this sequence number arrived.
        """

    def nacked(self) -> None:
        """
        A relay reported that it got no ack either.
        """

    def stopped(self) -> None:
        """
        The node stops: cancel every timer.
        """


class ProbeInputs(AckWaiter, Protocol):
    def started(self) -> None:
        """
        The direct ping was sent: start the round's timers.
        """

    def probeTimedOut(self, deadline: IDelayedCall) -> None:
        """
        No direct ack within the probe timeout; C{deadline} is the round's
        still-running deadline timer.
        """

    def roundEnded(self) -> None:
        """
        The round's deadline passed without an ack.
        """


class ProbeActions(Protocol):
    def sendIndirectPings(self, seq: int, target: MemberCore) -> int:
        """
        Ask others to ping C{target}; return how many nacks to expect.
        """

    def probeSucceeded(self, seq: int) -> None:
        """
        The target answered.
        """

    def probeFailed(self, seq: int, target: MemberCore, missingNacks: int) -> None:
        """
        The round ended without an ack; C{missingNacks} relays did not even
        nack.
        """


@dataclass
class ProbeCore:
    """
    One probe round's collaborators and parameters.
    """

    seq: int
    target: MemberCore
    clock: IReactorTime
    timeout: float
    roundLength: float
    actions: ProbeActions


@dataclass
class _Direct:
    indirect: IDelayedCall | None = None
    deadline: IDelayedCall | None = None

    def cancel(self) -> None:
        for call in (self.indirect, self.deadline):
            if call is not None and call.active():
                call.cancel()


@dataclass
class _Indirect:
    deadline: IDelayedCall
    expected: int
    nacks: int = 0

    def cancel(self) -> None:
        if self.deadline.active():
            self.deadline.cancel()


def _buildProbe() -> TypeMachine[ProbeInputs, ProbeCore]:
    b = TypeMachineBuilder(ProbeInputs, ProbeCore)
    idle = b.state("Idle")

    def directTimers(inputs: ProbeInputs, core: ProbeCore) -> _Direct:
        timers = _Direct()
        timers.indirect = core.clock.callLater(
            core.timeout, lambda: inputs.probeTimedOut(_required(timers.deadline))
        )
        timers.deadline = core.clock.callLater(core.roundLength, inputs.roundEnded)
        return timers

    def indirectData(inputs: ProbeInputs, core: ProbeCore, deadline: IDelayedCall) -> _Indirect:
        return _Indirect(deadline, core.actions.sendIndirectPings(core.seq, core.target))

    direct = b.state("Direct", directTimers)
    indirect = b.state("Indirect", indirectData)
    done = b.state("Done")

    def nothing(inputs: ProbeInputs, core: ProbeCore, *args: Any) -> None:
        pass

    def nothingWith(inputs: ProbeInputs, core: ProbeCore, data: object) -> None:
        pass

    def late(inputs: ProbeInputs, core: ProbeCore, deadline: IDelayedCall) -> None:
        pass

    def lateWith(inputs: ProbeInputs, core: ProbeCore, data: object, deadline: IDelayedCall) -> None:
        pass

    idle.upon(ProbeInputs.started).to(direct)(nothing)
    for i in (ProbeInputs.acked, ProbeInputs.nacked, ProbeInputs.roundEnded, ProbeInputs.stopped):
        idle.upon(i).to(done)(nothing)
    idle.upon(ProbeInputs.probeTimedOut).to(done)(late)

    @direct.upon(ProbeInputs.acked).to(done)
    def directAcked(inputs: ProbeInputs, core: ProbeCore, timers: _Direct) -> None:
        timers.cancel()
        core.actions.probeSucceeded(core.seq)

    @direct.upon(ProbeInputs.probeTimedOut).to(indirect)
    def goIndirect(inputs: ProbeInputs, core: ProbeCore, timers: _Direct, deadline: IDelayedCall) -> None:
        # The indirect timer has fired; the deadline carries on.
        pass

    @direct.upon(ProbeInputs.roundEnded).to(done)
    def directEnded(inputs: ProbeInputs, core: ProbeCore, timers: _Direct) -> None:
        timers.cancel()
        core.actions.probeFailed(core.seq, core.target, 0)

    @direct.upon(ProbeInputs.stopped).to(done)
    def directStopped(inputs: ProbeInputs, core: ProbeCore, timers: _Direct) -> None:
        timers.cancel()

    # Nacks come only from relays, which are asked only in Indirect.
    direct.upon(ProbeInputs.nacked).loop()(nothingWith)
    direct.upon(ProbeInputs.started).loop()(nothingWith)

    @indirect.upon(ProbeInputs.acked).to(done)
    def indirectAcked(inputs: ProbeInputs, core: ProbeCore, state: _Indirect) -> None:
        state.cancel()
        core.actions.probeSucceeded(core.seq)

    @indirect.upon(ProbeInputs.nacked).loop()
    def countNack(inputs: ProbeInputs, core: ProbeCore, state: _Indirect) -> None:
        state.nacks += 1

    @indirect.upon(ProbeInputs.roundEnded).to(done)
    def indirectEnded(inputs: ProbeInputs, core: ProbeCore, state: _Indirect) -> None:
        core.actions.probeFailed(core.seq, core.target, state.expected - state.nacks)

    @indirect.upon(ProbeInputs.stopped).to(done)
    def indirectStopped(inputs: ProbeInputs, core: ProbeCore, state: _Indirect) -> None:
        state.cancel()

    indirect.upon(ProbeInputs.started).loop()(nothingWith)
    indirect.upon(ProbeInputs.probeTimedOut).loop()(lateWith)

    for i in (ProbeInputs.started, ProbeInputs.acked, ProbeInputs.nacked, ProbeInputs.roundEnded):
        done.upon(i).loop()(nothing)
    done.upon(ProbeInputs.stopped).loop()(nothing)
    done.upon(ProbeInputs.probeTimedOut).loop()(late)
    return b.build()


def _required(call: IDelayedCall | None) -> IDelayedCall:
    assert call is not None
    return call


ProbeRound = _buildProbe()
"""
Factory: C{ProbeRound(core)} returns a L{ProbeInputs} in state Idle.
"""


class RelayInputs(AckWaiter, Protocol):
    def started(self) -> None:
        """
        The relayed ping was sent: start the timeout.
        """

    def timedOut(self) -> None:
        """
        The target did not answer within the probe timeout.
        """


class RelayActions(Protocol):
    def answer(self, seq: int, address: Address, message: Message | None) -> None:
        """
        Send the requester C{message} (its Ack or Nack; None: nothing, it
        asked for no nack); stop waiting for C{seq}.
        """


@dataclass
class RelayCore:
    """
    One relayed probe: the request, our sequence number and collaborators.
    """

    request: IndirectPing
    seq: int
    clock: IReactorTime
    timeout: float
    actions: RelayActions


@dataclass
class _Waiting:
    call: IDelayedCall | None = field(default=None)

    def cancel(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()


def _buildRelay() -> TypeMachine[RelayInputs, RelayCore]:
    b = TypeMachineBuilder(RelayInputs, RelayCore)
    idle = b.state("Idle")

    def timer(inputs: RelayInputs, core: RelayCore) -> _Waiting:
        return _Waiting(core.clock.callLater(core.timeout, inputs.timedOut))

    waiting = b.state("Waiting", timer)
    done = b.state("Done")

    def nothing(inputs: RelayInputs, core: RelayCore, *args: Any) -> None:
        pass

    def nothingWith(inputs: RelayInputs, core: RelayCore, data: object) -> None:
        pass

    idle.upon(RelayInputs.started).to(waiting)(nothing)
    for i in (RelayInputs.acked, RelayInputs.nacked, RelayInputs.timedOut, RelayInputs.stopped):
        idle.upon(i).to(done)(nothing)

    @waiting.upon(RelayInputs.acked).to(done)
    def relayAcked(inputs: RelayInputs, core: RelayCore, w: _Waiting) -> None:
        w.cancel()
        core.actions.answer(core.seq, core.request.address, Ack(core.request.seq))

    @waiting.upon(RelayInputs.timedOut).to(done)
    def relayTimedOut(inputs: RelayInputs, core: RelayCore, w: _Waiting) -> None:
        if core.request.wantNack:
            core.actions.answer(core.seq, core.request.address, Nack(core.request.seq))
        else:
            core.actions.answer(core.seq, core.request.address, None)

    @waiting.upon(RelayInputs.stopped).to(done)
    def relayStopped(inputs: RelayInputs, core: RelayCore, w: _Waiting) -> None:
        w.cancel()

    waiting.upon(RelayInputs.started).loop()(nothingWith)
    waiting.upon(RelayInputs.nacked).loop()(nothingWith)
    for i in (RelayInputs.started, RelayInputs.acked, RelayInputs.nacked, RelayInputs.timedOut):
        done.upon(i).loop()(nothing)
    done.upon(RelayInputs.stopped).loop()(nothing)
    return b.build()


RelayProbe = _buildRelay()
"""
Factory: C{RelayProbe(core)} returns a L{RelayInputs} in state Idle.
"""


class ProberHost(Protocol):
    """
    What the prober needs of its node.
    """

    name: str
    address: Address
    settings: GossipSettings
    clock: IReactorTime
    roster: Roster

    def send(self, address: Address, message: Message, *extra: Message) -> None: ...
    def protocolVersion(self, name: str) -> int: ...
    def suspectMember(self, message: Suspect) -> None: ...
    def count(self, what: str) -> None: ...


class Prober:
    """
    Probe rounds and relays, keyed by sequence number, and the Lifeguard
    health score they move.

    @ivar awareness: the local health score (0 is healthy).
    """

    def __init__(self, host: ProberHost) -> None:
        self.host = host
        self.awareness = 0
        self._seq = 0
        self._waiting: dict[int, AckWaiter] = {}

    def nextSeq(self) -> int:
        """
        A fresh sequence number.
        """
        self._seq = (self._seq + 1) % (2**32)
        return self._seq

    def adjustAwareness(self, delta: int) -> None:
        """
        Move the health score by C{delta}, within its bounds.
        """
        self.awareness = min(self.host.settings.awarenessMax - 1, max(0, self.awareness + delta))

    def probe(self, target: MemberCore, status: Status, scale: int) -> None:
        """
        Start a probe round on C{target} with timers stretched by C{scale}.
        """
        h, s = self.host, self.host.settings
        seq = self.nextSeq()
        h.count("probes")
        machine = ProbeRound(
            ProbeCore(seq, target, h.clock, s.probeTimeout * scale, s.probeInterval * scale * 0.9, self)
        )
        self._waiting[seq] = machine
        extra: list[Message] = []
        if status is Status.SUSPECT:
            # Lifeguard's buddy system: tell a suspect so it refutes at once.
            extra.append(Suspect(target.name, target.incarnation, h.name))
        h.send(target.address, Ping(seq, target.name, h.name, h.address), *extra)
        machine.started()

    def relay(self, m: IndirectPing) -> None:
        """
        Ping C{m}'s target for its requester.
        """
        h = self.host
        seq = self.nextSeq()
        machine = RelayProbe(RelayCore(m, seq, h.clock, h.settings.probeTimeout, self))
        self._waiting[seq] = machine
        h.send(m.targetAddress, Ping(seq, m.target, h.name, h.address))
        machine.started()

    def ackReceived(self, seq: int) -> None:
        """
        An ack for C{seq} arrived.
        """
        waiter = self._waiting.pop(seq, None)
        if waiter is not None:
            waiter.acked()

    def nackReceived(self, seq: int) -> None:
        """
        A nack for C{seq} arrived.
        """
        waiter = self._waiting.get(seq)
        if waiter is not None:
            waiter.nacked()

    def stop(self) -> None:
        """
        Stop every round and relay.
        """
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.stopped()

    # -- ProbeActions and RelayActions -------------------------------------

    def sendIndirectPings(self, seq: int, target: MemberCore) -> int:
        h = self.host
        relays = [
            c
            for c in h.roster.pick(h.settings.indirectChecks, frozenset({Status.ALIVE}))
            if c.name != target.name
        ]
        expected = 0
        for r in relays:
            # Members before protocol 4 send no nacks.
            wantNack = h.protocolVersion(r.name) >= 4
            expected += wantNack
            h.send(r.address, IndirectPing(seq, target.name, target.address, h.name, h.address, wantNack))
        return expected

    def probeSucceeded(self, seq: int) -> None:
        self.adjustAwareness(-1)

    def probeFailed(self, seq: int, target: MemberCore, missingNacks: int) -> None:
        self._waiting.pop(seq, None)
        self.host.count("probesFailed")
        if missingNacks > 0:
            self.adjustAwareness(+1)
        self.host.suspectMember(Suspect(target.name, target.incarnation, self.host.name))

    def answer(self, seq: int, address: Address, message: Message | None) -> None:
        self._waiting.pop(seq, None)
        if message is not None:
            self.host.send(address, message)
