"""
Groups: a host peer relays messages among its members over
C{/goop/group/1.0.0}.

Member -> host: C{join}, C{msg}, C{state}, C{leave}, C{ping}.
Host -> member: C{welcome}, C{members}, C{msg}, C{state}, C{leave},
C{close}, C{pong}, C{error}.  The host stamps C{from} itself (a member
cannot speak for another), relays the sender's signature of each C{msg} and
C{state} (L{signedBytes}), and hands a joining member the group state with
the signature of the member who set it (C{stateSignature} in the
C{welcome}), so the member can check that the host did not forge the
snapshot; a welcome whose snapshot signature does not hold is refused
(logged, never joined: the welcome timer runs out and the member retries).
It keeps a bounded queue per member that is filled
only while that member's connection pushes back, and drops a member whose
queue overflows, so a slow member never delays the others.

Each membership is an automat machine (inputs, outputs, states below).
A joined member's heartbeat ticks every second (C{PING_SECONDS}): each tick
pings the host, or declares it lost once nothing (pong or any other
message) has come from it for more than 10 s (C{SILENCE_SECONDS}), so a
host that falls silent is declared lost at the first tick more than 10 s
after its last message: within 11 s (exactly 11 s when that message landed
on a tick).  The member then reconnects with backoff.

  inputs:  start, welcomed, connectFailed, connectionLost, hostSilent,
           hostClosed, retryDue, leave
  outputs: connect, sendJoin, startHeartbeat, stopHeartbeat, scheduleRetry,
           cancelRetry, sendLeave, notify
  states:  Idle -> Connecting -> Joined -> Waiting -> Connecting ...; Left

Each state's timer is its state data, created on entering it and stopped by
the transition that leaves: Connecting holds the welcome timer (a host that
accepts the stream but never welcomes counts as silent), Joined the
heartbeat, Waiting the retry timer, whose delay comes from the
membership's L{Backoff} (reset on each welcome).

The host side dispatches each member message through a table of handlers,
one per message type.  Its link to each member (L{HostLinkMachine}) is a
machine too, fed by the connection's flow control:

  inputs:  send, paused, resumed, closed, stopped; private: drain, drained,
           overflowed
  outputs: write (straight out, or queued), writeNext, dropSlowMember,
           closeLink
  states:  Writable -> Paused -> Draining -> Writable ...; Dropped (final)

The backlog (L{HostLinkCore}'s queue, bounded by C{maxQueue}) fills only in
Paused and Draining; Draining writes it one message per C{drain}, so a
connection that pushes back mid-way stops it.  A message that takes it past
the limit drops the member (closed, and its groups told it left).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from suite.backoff import Backoff
from suite.goop.identity import verifySignature

__all__ = [
    "GroupService",
    "HostGroup",
    "HostLinkCore",
    "HostLinkInputs",
    "HostLinkMachine",
    "HostMember",
    "MemberCore",
    "memberMachine",
    "MemberInputs",
]

log = Logger()
#: A joined member's heartbeat period (a ping, or the silence check).
PING_SECONDS = 1.0
SILENCE_SECONDS = 10.0
MAX_QUEUE = 1000
MAX_MEMBERS = 256
MAX_GROUPS = 64
INBOX = 100
#: How far a signed message's C{seq} (microseconds) may lie from the
#: receiver's clock: older ones are refused as replays.
SIGNED_WINDOW_SECONDS = 300.0


def signedBytes(host: str, group: str, kind: str, seq: int, data: Any) -> bytes:
    """
    What a member signs for one C{msg} or C{state}: the group (by host and
    name), the kind, the sequence and the data, as canonical JSON.  Binding
    the host and group keeps a signature from being replayed elsewhere.
    """
    doc = {"data": data, "group": group, "host": host, "seq": seq, "type": kind}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _signature(msg: dict[str, Any]) -> dict[str, Any]:
    """The signature fields of a member's message that a host relays."""
    out: dict[str, Any] = {}
    seq, key, sig = msg.get("seq"), msg.get("key"), msg.get("sig")
    if (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and isinstance(key, str)
        and len(key) <= 64
        and isinstance(sig, str)
        and len(sig) <= 128
    ):
        out = {"seq": seq, "key": key, "sig": sig}
    return out


# -- the host's link to one member --------------------------------------------


class HostLinkInputs(Protocol):
    def send(self, message: dict[str, Any]) -> None:
        """The host has a message for the member."""

    def paused(self) -> None:
        """The member's connection pushes back."""

    def resumed(self) -> None:
        """The member's connection takes writes again."""

    def drain(self) -> None:
        """(Private) write the next queued message."""

    def drained(self) -> None:
        """(Private) the queue is empty."""

    def overflowed(self) -> None:
        """(Private) the queue grew past its limit."""

    def closed(self) -> None:
        """The host closes the member's connection."""

    def stopped(self) -> None:
        """The connection went away (the transport stopped its producer)."""


@dataclass
class HostLinkCore:
    """
    One member connection as the host sees it: how to write to it and close
    it, and its bounded backlog (filled only while the connection pushes
    back; it never exceeds C{maxQueue} while the link lives).
    """

    peerId: str
    write: Callable[[dict[str, Any]], None]
    close: Callable[[], None]
    maxQueue: int = MAX_QUEUE
    onOverflow: Callable[[], None] | None = None
    queue: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)

    def enqueue(self, inputs: HostLinkInputs, message: dict[str, Any]) -> None:
        self.queue.append(message)
        if len(self.queue) > self.maxQueue:
            inputs.overflowed()


def _buildHostLink() -> TypeMachine[HostLinkInputs, HostLinkCore]:
    b = TypeMachineBuilder(HostLinkInputs, HostLinkCore)
    writable = b.state("Writable")
    paused = b.state("Paused")

    draining = b.state("Draining")
    dropped = b.state("Dropped")

    # Writable: the backlog is empty; messages go straight out.
    @writable.upon(HostLinkInputs.send).loop()
    def writeNow(inputs: HostLinkInputs, core: HostLinkCore, message: dict[str, Any]) -> None:
        core.write(message)

    writable.upon(HostLinkInputs.paused).to(paused).returns(None)
    writable.upon(HostLinkInputs.resumed).loop().returns(None)
    writable.upon(HostLinkInputs.drain).loop().returns(None)  # stale: impossible
    writable.upon(HostLinkInputs.drained).loop().returns(None)  # stale: impossible
    writable.upon(HostLinkInputs.overflowed).loop().returns(None)  # impossible

    def queueMessage(inputs: HostLinkInputs, core: HostLinkCore, message: dict[str, Any]) -> None:
        core.enqueue(inputs, message)

    # Paused: messages wait in the backlog.
    paused.upon(HostLinkInputs.send).loop()(queueMessage)
    paused.upon(HostLinkInputs.paused).loop().returns(None)

    @paused.upon(HostLinkInputs.resumed).to(draining)
    def startDraining(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        # Delivered once this transition completes: the backlog goes out one
        # message at a time, so a connection that pushes back again mid-way
        # stops the drain (its pause arrives before the next drain).
        inputs.drain()

    paused.upon(HostLinkInputs.drain).loop().returns(None)  # paused mid-drain: wait
    paused.upon(HostLinkInputs.drained).loop().returns(None)  # paused as the drain ended

    # Draining: the backlog goes out in order; new messages queue behind it.
    draining.upon(HostLinkInputs.send).loop()(queueMessage)
    draining.upon(HostLinkInputs.paused).to(paused).returns(None)
    draining.upon(HostLinkInputs.resumed).loop().returns(None)

    @draining.upon(HostLinkInputs.drain).loop()
    def writeNext(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        if core.queue:
            core.write(core.queue.popleft())
        if core.queue:
            inputs.drain()
        else:
            inputs.drained()

    draining.upon(HostLinkInputs.drained).to(writable).returns(None)

    @paused.upon(HostLinkInputs.overflowed).to(dropped)
    @draining.upon(HostLinkInputs.overflowed).to(dropped)
    def dropSlowMember(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        log.info("dropping slow group member {peer}", peer=core.peerId[:16])
        core.queue.clear()
        core.close()
        if core.onOverflow is not None:
            core.onOverflow()

    def closeLink(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        core.queue.clear()
        core.close()

    def forgetLink(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        core.queue.clear()

    for st in (writable, paused, draining):
        st.upon(HostLinkInputs.closed).to(dropped)(closeLink)
        st.upon(HostLinkInputs.stopped).to(dropped)(forgetLink)

    # Dropped: final; nothing is written or queued again.
    for name in ("send", "paused", "resumed", "drain", "drained", "overflowed", "closed", "stopped"):
        dropped.upon(getattr(HostLinkInputs, name)).loop().returns(None)
    return b.build()


#: The host's link to one member: C{HostLinkMachine(HostLinkCore(...))}.
HostLinkMachine = _buildHostLink()


@implementer(IPushProducer)
class HostMember:
    """
    The host's handle on one member connection: the connection's producer,
    feeding its flow control to the link machine (L{HostLinkMachine}).
    """

    def __init__(
        self,
        peerId: str,
        send: Callable[[dict[str, Any]], None],
        close: Callable[[], None],
        transport: Any,
        clock: Any,
        maxQueue: int = MAX_QUEUE,
        onOverflow: Callable[[], None] | None = None,
    ) -> None:
        self.peerId = peerId
        self.core = HostLinkCore(peerId, send, close, maxQueue, onOverflow)
        self.link: HostLinkInputs = HostLinkMachine(self.core)
        self.lastHeard = clock.seconds()
        if transport is not None and hasattr(transport, "registerProducer"):
            try:
                transport.registerProducer(self, True)
            except RuntimeError:
                pass

    def sendMessage(self, message: dict[str, Any]) -> None:
        self.link.send(message)

    def close(self) -> None:
        self.link.closed()

    def pauseProducing(self) -> None:
        self.link.paused()

    def resumeProducing(self) -> None:
        self.link.resumed()

    def stopProducing(self) -> None:
        self.link.stopped()


class HostGroup:
    """One hosted group: its members and shared state."""

    def __init__(self, name: str, hostId: str) -> None:
        self.name = name
        self.hostId = hostId
        self.members: dict[str, HostMember] = {}
        self.state: Any = None
        #: who set L{state} and their signature of it (empty when unsigned)
        self.stateSignature: dict[str, Any] = {}

    def broadcast(self, message: dict[str, Any], exclude: str | None = None) -> None:
        for pid, m in list(self.members.items()):
            if pid != exclude:
                m.sendMessage(message)

    def memberList(self) -> list[str]:
        return sorted(self.members)

    def announce(self) -> None:
        self.broadcast({"type": "members", "group": self.name, "members": self.memberList()})

    def remove(self, peerId: str) -> None:
        if self.members.pop(peerId, None) is not None:
            self.broadcast({"type": "leave", "group": self.name, "from": peerId})
            self.announce()


class HostSession:
    """The host's end of one member stream."""

    def __init__(
        self,
        service: GroupService,
        peerId: str,
        send: Callable[[dict[str, Any]], None],
        close: Callable[[], None],
        transport: Any,
    ) -> None:
        self.service = service
        self.member = HostMember(peerId, send, close, transport, service.clock, onOverflow=self.lost)
        self.groups: set[str] = set()

    def received(self, msg: dict[str, Any]) -> None:
        m = self.member
        m.lastHeard = self.service.clock.seconds()
        kind = msg.get("type")
        if kind == "ping":
            m.sendMessage({"type": "pong"})
            return
        name = msg.get("group")
        group = self.service.hosted.get(name) if isinstance(name, str) else None
        if group is None:
            m.sendMessage({"type": "error", "group": name, "error": "no such group"})
            return
        if kind == "join":
            self._join(group)
            return
        handler = self._MEMBER_HANDLERS.get(kind) if isinstance(kind, str) else None
        if m.peerId not in group.members:
            m.sendMessage({"type": "error", "group": name, "error": "join first"})
        elif handler is None:
            m.sendMessage({"type": "error", "error": "unknown message type"})
        else:
            handler(self, group, msg)

    def _join(self, group: HostGroup) -> None:
        m = self.member
        if len(group.members) >= MAX_MEMBERS:
            m.sendMessage({"type": "error", "group": group.name, "error": "group is full"})
            return
        group.members[m.peerId] = m
        self.groups.add(group.name)
        welcome = {
            "type": "welcome",
            "group": group.name,
            "host": group.hostId,
            "members": group.memberList(),
            "state": group.state,
        }
        if group.stateSignature:
            welcome["stateSignature"] = dict(group.stateSignature)
        m.sendMessage(welcome)
        group.announce()

    def _msg(self, group: HostGroup, msg: dict[str, Any]) -> None:
        peerId = self.member.peerId
        group.broadcast(
            {"type": "msg", "group": group.name, "from": peerId, "data": msg.get("data"), **_signature(msg)},
            exclude=peerId,
        )

    def _state(self, group: HostGroup, msg: dict[str, Any]) -> None:
        group.state = msg.get("data")
        signature = _signature(msg)
        group.stateSignature = {"from": self.member.peerId, **signature} if signature else {}
        group.broadcast(
            {
                "type": "state",
                "group": group.name,
                "from": self.member.peerId,
                "data": group.state,
                **signature,
            }
        )

    def _leave(self, group: HostGroup, msg: dict[str, Any]) -> None:
        self.groups.discard(group.name)
        group.remove(self.member.peerId)

    #: what a member of the group may send, by message type
    _MEMBER_HANDLERS: dict[str, Callable[[HostSession, HostGroup, dict[str, Any]], None]] = {
        "msg": _msg,
        "state": _state,
        "leave": _leave,
    }

    def lost(self) -> None:
        for name in list(self.groups):
            g = self.service.hosted.get(name)
            if g is not None and g.members.get(self.member.peerId) is self.member:
                g.remove(self.member.peerId)
        self.groups.clear()


# -- the member machine ------------------------------------------------------


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


class GroupService:
    """Hosted groups and this peer's memberships."""

    def __init__(
        self, clock: Any, selfId: str, openStream: Callable[[str], Deferred[Any]], identity: Any = None
    ) -> None:
        self.clock = clock
        self.selfId = selfId
        self.openStream = openStream
        #: signs this peer's msg/state (an L{suite.goop.identity.Identity});
        #: None sends them unsigned
        self.identity = identity
        self.hosted: dict[str, HostGroup] = {}
        self.memberships: dict[str, tuple[MemberInputs, MemberCore]] = {}
        self.inbox: dict[str, collections.deque[dict[str, Any]]] = {}
        self._lastSent = 0
        #: per membership and sender, the highest signed seq accepted
        self._lastSeen: dict[str, dict[str, int]] = {}

    def createGroup(self, name: str) -> HostGroup:
        if name not in self.hosted:
            if len(self.hosted) >= MAX_GROUPS:
                raise ValueError("too many groups")
            self.hosted[name] = HostGroup(name, self.selfId)
        return self.hosted[name]

    def closeGroup(self, name: str) -> None:
        g = self.hosted.pop(name, None)
        if g is not None:
            g.broadcast({"type": "close", "group": name})

    def hostSession(
        self,
        peerId: str,
        send: Callable[[dict[str, Any]], None],
        close: Callable[[], None],
        transport: Any = None,
    ) -> HostSession:
        return HostSession(self, peerId, send, close, transport)

    def join(
        self, hostId: str, name: str, onEvent: Callable[[dict[str, Any]], None] | None = None
    ) -> MemberInputs:
        """Join C{name} hosted by C{hostId}; events go to C{onEvent} and the inbox."""
        key = f"{hostId}/{name}"
        if key in self.memberships:
            return self.memberships[key][0]
        if len(self.memberships) >= MAX_GROUPS:
            raise ValueError(f"too many group memberships (at most {MAX_GROUPS})")
        inbox = self.inbox.setdefault(key, collections.deque(maxlen=INBOX))
        seen = self._lastSeen.setdefault(key, {})

        def deliver(event: dict[str, Any]) -> None:
            inbox.append(event)
            if onEvent is not None:
                onEvent(event)

        def verify(event: dict[str, Any]) -> bool:
            kind = event.get("type")
            if kind in ("msg", "state"):
                return self._verify(hostId, name, event, seen)
            if kind == "welcome":
                return self._verifyWelcome(hostId, name, event, seen)
            return True

        core = MemberCore(self.clock, name, lambda: self.openStream(hostId), deliver, verify=verify)
        machine = memberMachine(core)
        core.machine = machine
        self.memberships[f"{hostId}/{name}"] = (machine, core)
        machine.start()
        return machine

    def send(self, hostId: str, name: str, data: Any, kind: str = "msg") -> None:
        entry = self.memberships.get(f"{hostId}/{name}")
        if entry is None:
            return
        message: dict[str, Any] = {"type": kind, "group": name, "data": data}
        if self.identity is not None:
            seq = max(self._lastSent + 1, int(self.clock.seconds() * 1e6))
            self._lastSent = seq
            message.update(
                seq=seq,
                key=self.identity.publicB64,
                sig=self.identity.sign(signedBytes(hostId, name, kind, seq, data)),
            )
        entry[1].send(message)

    def _verify(self, hostId: str, name: str, event: dict[str, Any], seen: dict[str, int]) -> bool:
        """
        Mark a relayed msg/state C{verified} when its sender signed it (for
        this host and group, recently, not seen before); drop it, logged,
        when it carries a signature that does not hold (a host forging or
        replaying a member's words).  Unsigned messages pass unverified.
        """
        sender = event.get("from")
        if "sig" not in event:
            event["verified"] = False
            return True
        seq = event.get("seq")
        reason = None
        try:
            signer = verifySignature(
                str(event.get("key")),
                str(event.get("sig")),
                signedBytes(hostId, name, str(event.get("type")), int(seq or 0), event.get("data")),
            )
        except (ValueError, TypeError) as e:
            reason = str(e)
        else:
            if signer != sender:
                reason = "signed by another peer than its sender"
            elif not isinstance(seq, int) or abs(seq / 1e6 - self.clock.seconds()) > SIGNED_WINDOW_SECONDS:
                reason = "seq outside the replay window"
            elif seq <= seen.get(signer, 0):
                reason = "replayed (seq not above the last one)"
        if reason is not None:
            log.warn(
                "group {group} at {host}: dropped a {kind} relayed as from {sender}: {reason}",
                group=name,
                host=hostId[:16],
                kind=event.get("type"),
                sender=str(sender)[:16],
                reason=reason,
            )
            return False
        assert isinstance(signer, str) and isinstance(seq, int)
        seen[signer] = seq
        for k in ("key", "sig"):
            event.pop(k, None)
        event["verified"] = True
        return True

    def _verifyWelcome(self, hostId: str, name: str, event: dict[str, Any], seen: dict[str, int]) -> bool:
        """
        Check the group state snapshot of a welcome against the signature of
        the member who set it (C{stateSignature}: C{from}, C{seq}, C{key},
        C{sig} over L{signedBytes} of this host, group, C{"state"}, C{seq}
        and the state): mark the welcome C{verified}, or refuse it, logged,
        when the signature does not hold (a host forging or altering the
        snapshot).  A snapshot may be old, so no replay window applies, but
        a C{seq} from the future is refused.  A welcome without a signature
        (no state, or one set unsigned) passes unverified.
        """
        proof = event.get("stateSignature")
        if proof is None:
            event["verified"] = False
            return True
        reason = None
        signer = None
        seq = proof.get("seq") if isinstance(proof, dict) else None
        if not isinstance(proof, dict) or not isinstance(seq, int) or isinstance(seq, bool):
            reason = "malformed state signature"
        else:
            try:
                signer = verifySignature(
                    str(proof.get("key")),
                    str(proof.get("sig")),
                    signedBytes(hostId, name, "state", seq, event.get("state")),
                )
            except (ValueError, TypeError) as e:
                reason = f"state signature: {e}"
            else:
                if signer != proof.get("from"):
                    reason = "state signed by another peer than the one named"
                elif seq / 1e6 - self.clock.seconds() > SIGNED_WINDOW_SECONDS:
                    reason = "state seq from the future"
        if reason is not None:
            log.warn(
                "group {group} at {host}: refused the welcome: {reason}",
                group=name,
                host=hostId[:16],
                reason=reason,
            )
            return False
        assert isinstance(signer, str) and isinstance(seq, int)
        seen[signer] = max(seen.get(signer, 0), seq)
        event.pop("stateSignature", None)
        event["stateFrom"] = signer
        event["verified"] = True
        return True

    def leave(self, hostId: str, name: str) -> None:
        self._lastSeen.pop(f"{hostId}/{name}", None)
        entry = self.memberships.pop(f"{hostId}/{name}", None)
        if entry is not None:
            entry[0].leave()

    def describe(self) -> dict[str, Any]:
        """Hosted groups with their members, memberships with their recent events."""
        return {
            "hosted": {n: g.memberList() for n, g in self.hosted.items()},
            "memberships": [
                {
                    "host": k.split("/", 1)[0],
                    "group": k.split("/", 1)[1],
                    "events": list(self.inbox.get(k, ())),
                }
                for k in self.memberships
            ],
        }

    def stop(self) -> None:
        for machine, _ in self.memberships.values():
            machine.leave()
        for name in list(self.hosted):
            self.closeGroup(name)
