"""
One group membership as an automat machine (L{memberMachine} over a
L{MemberCore}):

  inputs:  start, welcomed, connectFailed, connectionLost, hostSilent,
           hostClosed, retryDue, leave
  outputs: connect, sendJoin, startHeartbeat, stopHeartbeat, scheduleRetry,
           cancelRetry, sendLeave, notify
  states:  Idle -> Connecting -> Joined -> Waiting -> Connecting ...; Left

A joined member's heartbeat ticks every second (C{PING_SECONDS}): each tick
pings the host, or declares it lost once nothing (pong or any other
message) has come from it for more than 10 s (C{SILENCE_SECONDS}), so a
host that falls silent is declared lost at the first tick more than 10 s
after its last message: within 11 s (exactly 11 s when that message landed
on a tick).  The member then reconnects with backoff.

Each state's timer is its state data, created on entering it and stopped by
the transition that leaves: Connecting holds the welcome timer (a host that
accepts the stream but never welcomes counts as silent), Joined the
heartbeat, Waiting the retry timer, whose delay comes from the
membership's L{Backoff} (reset on each welcome).  A host message that the
membership's C{verify} refuses (a welcome whose snapshot signature does not
hold) is dropped: never joined, the welcome timer runs out and the member
retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall

from suite.backoff import Backoff

__all__ = ["PING_SECONDS", "SILENCE_SECONDS", "MemberCore", "MemberInputs", "memberMachine"]

#: A joined member's heartbeat period (a ping, or the silence check).
PING_SECONDS = 1.0
#: How long a host may stay silent before a member declares it lost.
SILENCE_SECONDS = 10.0


class MemberInputs(Protocol):
    def start(self) -> None: ...
    def welcomed(self) -> None: ...
    def connectFailed(self) -> None: ...
    def connectionLost(self) -> None: ...
    def hostSilent(self) -> None: ...
    def hostClosed(self) -> None: ...
    def retryDue(self) -> None: ...
    def leave(self) -> None: ...


@dataclass
class MemberCore:
    """Collaborators and per-membership resources of one group membership."""

    clock: Any
    group: str
    open: Callable[[], Deferred[Any]]
    onEvent: Callable[[dict[str, Any]], None]
    machine: Any = None
    stream: Any = None
    lastHeard: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, maximum=30.0, jitter=False))
    events: list[str] = field(default_factory=list)
    #: whether a host message may be acted on (signatures hold); a refused
    #: welcome is not a welcome
    verify: Callable[[dict[str, Any]], bool] = lambda msg: True

    def send(self, message: dict[str, Any]) -> None:
        if self.stream is not None and not self.stream.closed:
            self.stream.send(message)

    def received(self, msg: dict[str, Any]) -> None:
        self.lastHeard = self.clock.seconds()
        kind = msg.get("type")
        if kind == "pong":
            return
        if not self.verify(msg):
            return
        if kind == "welcome":
            self.machine.welcomed()
        if kind == "close":
            self.machine.hostClosed()
        self.onEvent(msg)

    def tick(self) -> None:
        if self.clock.seconds() - self.lastHeard > SILENCE_SECONDS:
            self.machine.hostSilent()
        else:
            self.send({"type": "ping"})

    def dropStream(self) -> None:
        s, self.stream = self.stream, None
        if s is not None:
            s.onLost = None
            s.close()


@dataclass
class _Connecting:
    """Connecting's data: the timer for a host that never welcomes us."""

    welcome: IDelayedCall

    def stop(self) -> None:
        if self.welcome.active():
            self.welcome.cancel()


@dataclass
class _Joined:
    """Joined's data: the heartbeat (ping, or notice the host's silence)."""

    heartbeat: LoopingCall

    def stop(self) -> None:
        if self.heartbeat.running:
            self.heartbeat.stop()


@dataclass
class _Waiting:
    """Waiting's data: the timer for the next attempt."""

    retry: IDelayedCall

    def stop(self) -> None:
        if self.retry.active():
            self.retry.cancel()


def _build() -> TypeMachine[MemberInputs, MemberCore]:
    b = TypeMachineBuilder(MemberInputs, MemberCore)
    idle = b.state("Idle")

    def welcomeTimer(inputs: MemberInputs, core: MemberCore) -> _Connecting:
        # A host that accepts the stream but never welcomes us counts as silent.
        return _Connecting(core.clock.callLater(SILENCE_SECONDS, inputs.hostSilent))

    def heartbeat(inputs: MemberInputs, core: MemberCore) -> _Joined:
        loop = LoopingCall(core.tick)
        loop.clock = core.clock
        loop.start(PING_SECONDS, now=False)
        return _Joined(loop)

    def retryTimer(inputs: MemberInputs, core: MemberCore) -> _Waiting:
        return _Waiting(core.clock.callLater(core.backoff.next(), inputs.retryDue))

    connecting = b.state("Connecting", welcomeTimer)
    joined = b.state("Joined", heartbeat)
    waiting = b.state("Waiting", retryTimer)
    left = b.state("Left")

    def _connect(inputs: MemberInputs, core: MemberCore) -> None:
        core.lastHeard = core.clock.seconds()

        def opened(stream: Any) -> None:
            core.stream = stream
            stream.onMessage = core.received
            stream.onLost = inputs.connectionLost
            stream.send({"type": "join", "group": core.group})

        d = core.open()
        d.addCallbacks(opened, lambda f: inputs.connectFailed())

    @idle.upon(MemberInputs.start).to(connecting)
    def connect(inputs: MemberInputs, core: MemberCore) -> None:
        _connect(inputs, core)

    @waiting.upon(MemberInputs.retryDue).to(connecting)
    def reconnect(inputs: MemberInputs, core: MemberCore, w: _Waiting) -> None:
        w.stop()
        _connect(inputs, core)

    @connecting.upon(MemberInputs.welcomed).to(joined)
    def startHeartbeat(inputs: MemberInputs, core: MemberCore, c: _Connecting) -> None:
        c.stop()
        core.backoff.reset()
        core.events.append("joined")

    def retryAfterConnecting(inputs: MemberInputs, core: MemberCore, c: _Connecting) -> None:
        c.stop()
        core.dropStream()

    @joined.upon(MemberInputs.hostSilent).to(waiting)
    def hostLost(inputs: MemberInputs, core: MemberCore, j: _Joined) -> None:
        core.events.append("host-lost")
        core.onEvent({"type": "host-lost", "group": core.group})
        j.stop()
        core.dropStream()

    @joined.upon(MemberInputs.connectionLost).to(waiting)
    def connectionDropped(inputs: MemberInputs, core: MemberCore, j: _Joined) -> None:
        core.events.append("disconnected")
        core.onEvent({"type": "host-lost", "group": core.group})
        j.stop()
        core.dropStream()

    connecting.upon(MemberInputs.connectFailed).to(waiting)(retryAfterConnecting)
    connecting.upon(MemberInputs.connectionLost).to(waiting)(retryAfterConnecting)
    connecting.upon(MemberInputs.hostSilent).to(waiting)(retryAfterConnecting)

    @connecting.upon(MemberInputs.leave).to(left)
    def leaveConnecting(inputs: MemberInputs, core: MemberCore, c: _Connecting) -> None:
        core.send({"type": "leave", "group": core.group})
        c.stop()
        core.dropStream()

    @joined.upon(MemberInputs.leave).to(left)
    def leaveJoined(inputs: MemberInputs, core: MemberCore, j: _Joined) -> None:
        core.send({"type": "leave", "group": core.group})
        j.stop()
        core.dropStream()

    @waiting.upon(MemberInputs.leave).to(left)
    def stopWaiting(inputs: MemberInputs, core: MemberCore, w: _Waiting) -> None:
        w.stop()
        core.dropStream()

    idle.upon(MemberInputs.leave).to(left).returns(None)

    @joined.upon(MemberInputs.hostClosed).to(left)
    def closed(inputs: MemberInputs, core: MemberCore, j: _Joined) -> None:
        core.events.append("closed")
        j.stop()
        core.dropStream()

    # Inputs that change nothing in a state.
    for st, names in (
        (idle, ("welcomed", "connectFailed", "connectionLost", "hostSilent", "hostClosed", "retryDue")),
        (connecting, ("start", "hostClosed", "retryDue")),
        (joined, ("start", "welcomed", "connectFailed", "retryDue")),
        (waiting, ("start", "welcomed", "connectFailed", "connectionLost", "hostSilent", "hostClosed")),
        (
            left,
            (
                "start",
                "welcomed",
                "connectFailed",
                "connectionLost",
                "hostSilent",
                "hostClosed",
                "retryDue",
                "leave",
            ),
        ),
    ):
        for n in names:
            st.upon(getattr(MemberInputs, n)).loop().returns(None)
    return b.build()


memberMachine = _build()
