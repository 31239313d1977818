"""
One node of the gossip cluster: SWIM failure detection with Lifeguard's
refinements, piggybacked dissemination and periodic push-pull.

Timers (all on the injected clock, see L{GossipSettings}):

  - probe: every C{probeInterval} (times the local health multiplier) ping
    the next member of a shuffled round; no ack within C{probeTimeout}: ask
    C{indirectChecks} others to ping it (ping-req); still none when the
    round ends: suspect it.
  - gossip: every C{gossipInterval} send pending updates to C{gossipNodes}
    random members (recently dead ones included, so they can refute).
  - push-pull: every C{pushPullInterval} exchange full state with one
    random member over the transport's stream.
  - reconnect: every C{reconnectInterval} push-pull with one dead member, or
    with the seeds when no other member is alive (heals partitions).

Lifeguard: a local health score (0 .. C{awarenessMax}-1) rises when this
node misses nacks it expected or has to refute a suspicion, falls with each
successful probe, and stretches probe timers by score + 1; suspicion
timeouts start high and fall with independent confirmations
(L{suite.gossip.member.Suspicion}); a suspected member's probe carries the
suspicion so it can refute at once.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.gossip.broadcast import TransmitQueue
from suite.gossip.interfaces import (
    IGossipDelegate,
    IGossipTransport,
    IMembership,
    IMembershipListener,
    IPacketReceiver,
)
from suite.gossip.member import Member, MemberCore, MemberInputs, Suspicion, newMemberMachine
from suite.gossip.messages import (
    COMPOUND_ITEM_OVERHEAD,
    PROTOCOL_CURRENT,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    Ack,
    Address,
    Alive,
    BadMAC,
    Codec,
    Dead,
    ErrorReply,
    Incomplete,
    IndirectPing,
    Left,
    MalformedPacket,
    MemberState,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    Update,
    User,
    checkMeta,
    encodeMessage,
)
from suite.gossip.security import Keyring
from suite.gossip.settings import GossipSettings

__all__ = ["GossipNode"]

log = Logger()

_LISTENER_METHODS = {
    "joined": "memberJoined",
    "updated": "memberUpdated",
    "suspect": "memberSuspected",
    "dead": "memberDied",
    "left": "memberLeft",
}


class _DropLog:
    """
    At most one log line per C{interval} per kind of dropped packet.
    """

    def __init__(self, clock: IReactorTime, interval: float = 10.0) -> None:
        self.clock, self.interval = clock, interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def drop(self, kind: str, source: object, reason: str) -> None:
        now = self.clock.seconds()
        if now - self._last.get(kind, -self.interval) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        log.warn(
            "dropped {kind} from {source}: {reason} ({suppressed} more dropped since the last report)",
            kind=kind,
            source=str(source),
            reason=reason,
            suppressed=self._suppressed.pop(kind, 0),
        )


class _AckWaiter:
    def __init__(self, onAck: Callable[[], None], onNack: Callable[[], None] | None = None) -> None:
        self.onAck, self.onNack = onAck, onNack


@implementer(IPacketReceiver, IMembership)
class GossipNode:
    """
    This node's view of the cluster and the protocol that keeps it.

    @ivar incarnation: this node's incarnation number.
    @ivar awareness: the Lifeguard local health score (0 is healthy).
    @ivar stats: counters (packets sent/received/dropped, probes, ...).
    """

    def __init__(
        self,
        name: str,
        address: Address,
        transport: IGossipTransport,
        clock: IReactorTime,
        settings: GossipSettings | None = None,
        key: bytes | Sequence[bytes] | Keyring | None = None,
        listener: IMembershipListener | None = None,
        meta: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
        delegate: IGossipDelegate | None = None,
    ) -> None:
        self.name = name
        try:
            ipaddress.ip_address(address[0])
        except ValueError:
            raise ValueError(f"a gossip node's address must be an IP address, not {address[0]!r}") from None
        self.address = address
        self.transport = IGossipTransport(transport)
        self.clock = clock
        self.settings = settings or GossipSettings()
        if key is None or isinstance(key, Keyring):
            self.keyring = key
        elif isinstance(key, bytes):
            self.keyring = Keyring([key])
        else:
            self.keyring = Keyring(key)
        self.codec = Codec(
            self.keyring,
            self.settings.label,
            self.settings.maxIncomingPacketBytes,
            self.settings.maxStateBytes,
            self.settings.compressStreams,
        )
        self.vsn = bytes([PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_CURRENT, *self.settings.delegateVersions])
        self._vsn: dict[str, bytes] = {}
        self._rawMeta: dict[str, bytes] = {}
        self._oldProtocol: set[Address] = set()
        self.listener = None if listener is None else IMembershipListener(listener)
        self.delegate = None if delegate is None else IGossipDelegate(delegate)
        self.meta = checkMeta(meta or {}, self.settings.maxMetaBytes)
        self.rng = rng or random.Random()
        # memberlist ignores a new member's alive at incarnation 0.
        self.incarnation = 1
        self.awareness = 0
        self.stats: dict[str, int] = {}
        self.seeds: list[Address] = []
        self.running = False
        self.leaving = False
        self._members: dict[str, tuple[MemberCore, MemberInputs]] = {}
        self._queue = TransmitQueue(lambda: self.settings.retransmitLimit(self._liveCount()))
        self._userQueue = TransmitQueue(
            lambda: self.settings.retransmitLimit(self._liveCount()), self.settings.maxUserBroadcasts
        )
        self._userSeq = 0
        self._seq = 0
        self._acks: dict[int, _AckWaiter] = {}
        self._calls: set[IDelayedCall] = set()
        self._probeOrder: list[str] = []
        self._probeIndex = 0
        self._drops = _DropLog(clock)
        self._introduced: dict[str, float] = {}

    # -- the public API --------------------------------------------------

    def start(self, seeds: Iterable[Address] = ()) -> Deferred[int]:
        """
        Start listening and the protocol timers, then join through C{seeds}.

        @return: a L{Deferred} firing with the number of seeds that answered.
        """
        self.seeds = [(str(h), int(p)) for h, p in seeds if (h, p) != tuple(self.address)]
        self.transport.startListening(self)
        self.running = True
        s = self.settings
        self._later(self.rng.uniform(0, s.probeInterval), self._probeTick)
        self._later(self.rng.uniform(0, s.gossipInterval), self._gossipTick)
        self._later(s.pushPullInterval * self.rng.uniform(0.5, 1.0), self._pushPullTick)
        self._later(s.reconnectInterval * self.rng.uniform(0.5, 1.0), self._reconnectTick)
        log.info("gossip node {name} started on {address}", name=self.name, address=_fmt(self.address))
        return self.join(self.seeds)

    def join(self, seeds: Sequence[Address]) -> Deferred[int]:
        """
        Push-pull with each of C{seeds}; fire with how many answered.
        """
        if not seeds:
            return succeed(0)
        ds = [self._pushPull((str(h), int(p)), join=True) for h, p in seeds]
        d: Deferred[Any] = DeferredList(ds, consumeErrors=True)
        return d.addCallback(lambda results: sum(1 for ok, value in results if ok and value))

    def members(self) -> list[Member]:
        """
        Every known member, this node first.
        """
        me = Member(
            self.name, self.address, "left" if self.leaving else "alive", self.incarnation, dict(self.meta)
        )
        return [me] + [core.snapshot() for core, _ in self._members.values() if core.status != "removed"]

    def member(self, name: str) -> Member | None:
        """
        One member by name, or None.
        """
        if name == self.name:
            return self.members()[0]
        entry = self._members.get(name)
        if entry is None or entry[0].status == "removed":
            return None
        return entry[0].snapshot()

    def setMetadata(self, meta: Mapping[str, Any]) -> None:
        """
        Replace this node's metadata and gossip it at a new incarnation.

        @raise ValueError: if it is not a small string-keyed mapping.
        """
        self.meta = checkMeta(meta, self.settings.maxMetaBytes)
        self.incarnation += 1
        self._queueSelf()

    def queueBroadcast(self, data: bytes) -> None:
        """
        Queue a user message for the cluster (see
        L{IMembership.queueBroadcast}).

        @raise ValueError: if C{data} is not bytes or too large for a packet.
        """
        if not isinstance(data, bytes):
            raise ValueError("a user message must be bytes")
        encoded = encodeMessage(User(data))
        if len(encoded) > self._budget():
            raise ValueError(
                f"user message of {len(data)} bytes does not fit in a {self.settings.maxPacketBytes}-byte packet"
            )
        self._userSeq += 1
        self._userQueue.queue(str(self._userSeq), encoded)

    def leave(self) -> Deferred[None]:
        """
        Announce a graceful leave, keep gossiping it for
        C{leavePropagateDelay}, then stop.
        """
        if not self.running or self.leaving:
            return succeed(None)
        self.leaving = True
        log.info("gossip node {name} leaving", name=self.name)
        delay = 0.0
        if self.settings.serfLeaveIntent:
            # Serf shows a member as left (not failed) only when its leave
            # intent arrives before memberlist's leave message.
            intent = User(serfLeaveIntent(self.name, self.incarnation + 1))
            for core in self._pick(self.settings.gossipNodes * 2, ("alive", "suspect")):
                self._send(core.address, intent)
            self._userQueue.queue("serf-leave", encodeMessage(intent))
            delay = self.settings.leavePropagateDelay / 2

        def announce() -> None:
            message = Left(self.name, self.incarnation)
            self._queue.queue(self.name, encodeMessage(message))
            for core in self._pick(self.settings.gossipNodes, ("alive", "suspect")):
                self._send(core.address, message)

        d: Deferred[None] = Deferred()
        if delay:
            self._later(delay, announce)
        else:
            announce()
        self._later(delay + self.settings.leavePropagateDelay, lambda: self.stop().chainDeferred(d))
        return d

    def stop(self) -> Deferred[None]:
        """
        Stop every timer and the transport (no leave message: use L{leave}).
        """
        if not self.running:
            return succeed(None)
        self.running = False
        for call in list(self._calls):
            if call.active():
                call.cancel()
        self._calls.clear()
        self._acks.clear()
        for _, machine in self._members.values():
            machine.removed()
        self._queue.clear()
        self._userQueue.clear()
        result = self.transport.stopListening()
        if isinstance(result, Deferred):
            return result.addCallback(lambda _: None)
        return succeed(None)

    def summary(self) -> dict[str, Any]:
        """
        Counts of members by state (this node included), incarnation and
        local health, for health checks and metrics.
        """
        counts = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
        for m in self.members():
            counts[m.status] = counts.get(m.status, 0) + 1
        return {
            "name": self.name,
            "members": counts,
            "incarnation": self.incarnation,
            "healthScore": self.awareness,
            "running": self.running,
        }

    # -- receiving -------------------------------------------------------

    def packetReceived(self, data: bytes, source: tuple[str, int]) -> None:
        if not self.running:
            return
        try:
            messages = self.codec.unpackPacket(data, source)
        except MalformedPacket as e:
            self._count("packetsDropped")
            self._drops.drop(
                "unauthenticated packet" if isinstance(e, BadMAC) else "malformed packet",
                _fmt(source),
                str(e),
            )
            return
        self._count("packetsReceived")
        # Updates first, so that an ack sent for a probe in this packet
        # already carries what the updates taught us (e.g. a refutation).
        for m in sorted(messages, key=lambda m: isinstance(m, Ping | IndirectPing | Ack | Nack)):
            self._handle(m)

    def streamComplete(self, data: bytes) -> bool:
        try:
            self.codec.decodeStream(data)
        except Incomplete:
            return False
        except MalformedPacket:
            return True
        return True

    def stateReceived(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        if not self.running:
            return None
        try:
            message = self.codec.decodeStream(data, source)
        except MalformedPacket as e:
            self._count("statesDropped")
            self._drops.drop(
                "unauthenticated stream" if isinstance(e, BadMAC) else "malformed stream",
                _fmt(source),
                str(e),
            )
            return None
        if isinstance(message, Ping):
            # memberlist's fallback probe over TCP.
            if message.target not in ("", self.name):
                return None
            self._count("streamPings")
            return self.codec.encodeStream(Ack(message.seq))
        if isinstance(message, User):
            self._onUser(message.data)
            return None
        if not isinstance(message, PushPull):
            return None
        self._count("pushPullsServed")
        # Merge first, so that a refutation this causes is in the reply.
        self._merge(message.states, f"push-pull:{_fmt(source)}")
        self._mergeUserState(message.userState, message.join)
        return self.codec.encodeStream(PushPull(False, self._localStates(), self._userState(message.join)))

    def _handle(self, m: Message) -> None:
        if isinstance(m, Ping):
            if m.target in ("", self.name):
                self._send(m.address, Ack(m.seq))
                if m.source:
                    self._introduce(m.source, m.address)
            else:
                self._count("misdirectedPings")
        elif isinstance(m, IndirectPing):
            self._relayProbe(m)
        elif isinstance(m, Ack):
            waiter = self._acks.pop(m.seq, None)
            if waiter is not None:
                waiter.onAck()
        elif isinstance(m, Nack):
            waiter = self._acks.get(m.seq)
            if waiter is not None and waiter.onNack is not None:
                waiter.onNack()
        elif isinstance(m, Alive):
            self._onAlive(m)
        elif isinstance(m, Suspect):
            self._onSuspect(m)
        elif isinstance(m, Dead):
            self._onDead(m)
        elif isinstance(m, User):
            self._onUser(m.data)
        else:
            self._onLeft(m)

    # -- the delegate ----------------------------------------------------

    def _onUser(self, data: bytes) -> None:
        self._count("userMessages")
        if self.delegate is None:
            return
        try:
            self.delegate.notifyMsg(data)
        except Exception:
            log.failure("gossip delegate failed on a user message")

    def _userState(self, join: bool) -> bytes:
        if self.delegate is None:
            return b""
        try:
            state = self.delegate.localState(join)
        except Exception:
            log.failure("gossip delegate failed to give its local state")
            return b""
        if not isinstance(state, bytes):
            log.error("gossip delegate's local state is not bytes; sending none")
            return b""
        return state

    def _mergeUserState(self, data: bytes, join: bool) -> None:
        if self.delegate is None or not data:
            return
        try:
            self.delegate.mergeRemoteState(data, join)
        except Exception:
            log.failure("gossip delegate failed to merge a remote state")

    # -- merging updates -------------------------------------------------

    def _onAlive(self, m: Alive) -> None:
        if m.vsn[0] > PROTOCOL_CURRENT or m.vsn[1] < PROTOCOL_CURRENT:
            self._drops.drop("incompatible alive", m.name, f"protocol versions {list(m.vsn[:3])}")
            return
        if m.name == self.name:
            if m.incarnation > self.incarnation and not self.leaving:
                # An older life of this node, or someone else's stale view.
                self._refute(m.incarnation, unhealthy=False)
            return
        entry = self._members.get(m.name)
        if entry is None or entry[0].status == "removed":
            try:
                meta = checkMeta(m.meta, self.settings.maxMetaBytes)
            except ValueError:
                self._count("oversizedMeta")
                return
            self._remember(m)
            core = MemberCore(m.name, m.address, m.incarnation, meta, self, clock=self.clock)
            self._members[m.name] = (core, newMemberMachine(core))
            self._probeOrder.insert(self.rng.randint(self._probeIndex, len(self._probeOrder)), m.name)
            self.rebroadcast(m)
            self.notify("joined", core.snapshot())
            return
        core, machine = entry
        if m.incarnation > core.incarnation:
            self._remember(m)
            machine.aliveNewer(m.incarnation, m.address, m.meta)

    def _remember(self, m: Alive) -> None:
        # What memberlist needs passed on unchanged, and the versions that
        # decide how to talk to the member.
        self._vsn[m.name] = m.vsn
        if m.rawMeta is None:
            self._rawMeta.pop(m.name, None)
        else:
            self._rawMeta[m.name] = m.rawMeta
        if m.vsn[1] < 5:
            self._oldProtocol.add(m.address)
        else:
            self._oldProtocol.discard(m.address)

    def _onSuspect(self, m: Suspect) -> None:
        if m.name == self.name:
            self._selfAccused(m.incarnation)
            return
        entry = self._members.get(m.name)
        if entry is None:
            return
        if m.incarnation > entry[0].incarnation:
            entry[1].suspectedAgain(m.incarnation, m.source)
        elif m.incarnation == entry[0].incarnation:
            entry[1].suspected(m.incarnation, m.source)

    def _selfAccused(self, incarnation: int) -> None:
        if self.leaving:
            return
        if incarnation >= self.incarnation:
            self._refute(incarnation, unhealthy=True)
        else:
            # The sender has a stale view: say again who we are, so the
            # reply to its probe (or the next gossip) carries it.
            self._queueSelf()

    def _onDead(self, m: Dead) -> None:
        if m.name == self.name:
            self._selfAccused(m.incarnation)
            return
        entry = self._members.get(m.name)
        if entry is not None and m.incarnation >= entry[0].incarnation:
            entry[1].declaredDead(m.incarnation, m.source)

    def _onLeft(self, m: Left) -> None:
        if m.name == self.name:
            if m.incarnation >= self.incarnation and not self.leaving:
                self._refute(m.incarnation, unhealthy=False)
            return
        entry = self._members.get(m.name)
        if entry is not None and m.incarnation >= entry[0].incarnation:
            entry[1].departed(m.incarnation)

    def _merge(self, states: Iterable[MemberState], source: str) -> None:
        for s in states:
            known = s.name == self.name or (
                s.name in self._members and self._members[s.name][0].status != "removed"
            )
            if s.status == "alive":
                self._onAlive(Alive(s.name, s.incarnation, s.address, s.meta, s.vsn, s.rawMeta))
            elif s.status == "suspect":
                self._onAlive(Alive(s.name, s.incarnation, s.address, s.meta, s.vsn, s.rawMeta))
                self._onSuspect(Suspect(s.name, s.incarnation, source))
            elif s.status == "dead" and known:
                # Another node's verdict is only a suspicion here: the member
                # may be reachable from this side.
                self._onSuspect(Suspect(s.name, s.incarnation, source))
            elif s.status == "left" and known:
                self._onLeft(Left(s.name, s.incarnation))

    def _refute(self, incarnation: int, unhealthy: bool) -> None:
        self.incarnation = max(self.incarnation, incarnation) + 1
        if unhealthy:
            self._adjustAwareness(+1)
        self._count("refutations")
        log.info(
            "gossip node {name} refutes a stale view of itself; incarnation now {incarnation}",
            name=self.name,
            incarnation=self.incarnation,
        )
        self._queueSelf()

    def _queueSelf(self) -> None:
        self.rebroadcast(Alive(self.name, self.incarnation, self.address, dict(self.meta), self.vsn))

    def _localStates(self) -> list[MemberState]:
        me = MemberState(
            self.name,
            self.address,
            self.incarnation,
            "left" if self.leaving else "alive",
            self.meta,
            self.vsn,
        )
        rest = [
            MemberState(
                c.name,
                c.address,
                c.incarnation,
                c.status,
                c.meta,
                self._vsn.get(c.name, self.vsn),
                self._rawMeta.get(c.name),
            )
            for c, _ in self._members.values()
            if c.status != "removed"
        ]
        return [me, *rest]

    # -- MemberActions (called by member machines) -------------------------

    def notify(self, event: str, member: Member) -> None:
        """
        Log a member's state change and tell the listener.
        """
        fields = {"member": member.name, "address": _fmt(member.address), "incarnation": member.incarnation}
        if event == "dead":
            log.warn("member {member} at {address} is dead (incarnation {incarnation})", **fields)
        elif event == "joined":
            log.info("member {member} joined at {address} (incarnation {incarnation})", **fields)
        elif event == "suspect":
            log.info("member {member} at {address} is suspect (incarnation {incarnation})", **fields)
        elif event == "left":
            log.info("member {member} at {address} left (incarnation {incarnation})", **fields)
        else:
            log.info("member {member} at {address} updated (incarnation {incarnation})", **fields)
        if self.listener is not None:
            try:
                getattr(self.listener, _LISTENER_METHODS[event])(member)
            except Exception:
                log.failure(
                    "membership listener failed on {event} of {member}", event=event, member=member.name
                )

    def rebroadcast(self, message: Update) -> None:
        """
        Queue an update about a member for piggybacking.
        """
        if isinstance(message, Alive) and message.name in self._vsn:
            message = replace(message, vsn=self._vsn[message.name], rawMeta=self._rawMeta.get(message.name))
        self._queue.queue(message.name, encodeMessage(message))

    def newSuspicion(self, core: MemberCore, source: str, expire: Callable[[], None]) -> Suspicion:
        """
        A suspicion timer sized for the current cluster.
        """
        low, high, expected = self.settings.suspicionBounds(self._liveCount())
        return Suspicion(self.clock, low, high, expected, source, expire, self.name)

    # -- probing ---------------------------------------------------------

    def _probeTick(self) -> None:
        target = self._nextProbeTarget()
        scale = self.awareness + 1
        if target is not None:
            self._probe(target, scale)
        self._later(self.settings.probeInterval * scale, self._probeTick)

    def _nextProbeTarget(self) -> MemberCore | None:
        for _ in range(2):
            while self._probeIndex < len(self._probeOrder):
                name = self._probeOrder[self._probeIndex]
                self._probeIndex += 1
                entry = self._members.get(name)
                if entry is not None and entry[0].status in ("alive", "suspect"):
                    return entry[0]
            self._probeOrder = [n for n, (c, _) in self._members.items() if c.status != "removed"]
            self.rng.shuffle(self._probeOrder)
            self._probeIndex = 0
        return None

    def _probe(self, target: MemberCore, scale: int) -> None:
        s = self.settings
        seq = self._nextSeq()
        state = {"acked": False, "nacks": 0, "expected": 0}
        self._count("probes")

        def acked() -> None:
            state["acked"] = True
            self._adjustAwareness(-1)

        def nacked() -> None:
            state["nacks"] += 1

        def indirect() -> None:
            if state["acked"] or not self.running:
                return
            relays = [c for c in self._pick(s.indirectChecks, ("alive",)) if c.name != target.name]
            for r in relays:
                # Members before protocol 4 send no nacks.
                wantNack = self._vsn.get(r.name, self.vsn)[1] >= 4
                state["expected"] += wantNack
                self._send(
                    r.address,
                    IndirectPing(seq, target.name, target.address, self.name, self.address, wantNack),
                )

        def deadline() -> None:
            if state["acked"] or not self.running:
                return
            self._acks.pop(seq, None)
            self._count("probesFailed")
            missing = state["expected"] - state["nacks"]
            if missing > 0:
                self._adjustAwareness(+1)
            self._onSuspect(Suspect(target.name, target.incarnation, self.name))

        self._acks[seq] = _AckWaiter(acked, nacked)
        extra: list[Message] = []
        if target.status == "suspect":
            # Lifeguard's buddy system: tell a suspect so it refutes at once.
            extra.append(Suspect(target.name, target.incarnation, self.name))
        self._send(target.address, Ping(seq, target.name, self.name, self.address), *extra)
        self._later(s.probeTimeout * scale, indirect)
        self._later(s.probeInterval * scale * 0.9, deadline)

    def _introduce(self, name: str, address: Address) -> None:
        # A member that probes us knows us, but we missed its alive (its
        # retransmissions ran out): sync with it now rather than at the
        # next push-pull, at most once per reconnect interval.
        if name == self.name or (name in self._members and self._members[name][0].status != "removed"):
            return
        now = self.clock.seconds()
        if (
            now - self._introduced.get(name, -self.settings.reconnectInterval)
            < self.settings.reconnectInterval
        ):
            return
        self._introduced[name] = now
        self._pushPull(address, join=False)

    def _relayProbe(self, m: IndirectPing) -> None:
        seq = self._nextSeq()
        done = {"acked": False}

        def acked() -> None:
            done["acked"] = True
            self._send(m.address, Ack(m.seq))

        def timedOut() -> None:
            self._acks.pop(seq, None)
            if not done["acked"] and m.wantNack:
                self._send(m.address, Nack(m.seq))

        self._acks[seq] = _AckWaiter(acked)
        self._send(m.targetAddress, Ping(seq, m.target, self.name, self.address))
        self._later(self.settings.probeTimeout, timedOut)

    def _adjustAwareness(self, delta: int) -> None:
        self.awareness = min(self.settings.awarenessMax - 1, max(0, self.awareness + delta))

    # -- gossip, push-pull, reconnect ----------------------------------------

    def _gossipTick(self) -> None:
        s = self.settings
        if len(self._queue) or len(self._userQueue):
            for core in self._pick(s.gossipNodes, ("alive", "suspect", "dead"), recentDead=s.gossipToTheDead):
                encoded = self._piggyback(self._budget())
                if not encoded:
                    break
                self._sendRaw(core.address, encoded)
        self._later(s.gossipInterval, self._gossipTick)

    def _pushPullTick(self) -> None:
        peers = self._pick(1, ("alive",))
        if peers:
            self._pushPull(peers[0].address, join=False)
        self._later(self.settings.pushPullInterval, self._pushPullTick)

    def _reconnectTick(self) -> None:
        self._reap()
        if not self._pick(1, ("alive", "suspect")):
            if self.seeds:
                self.join(self.seeds)
        else:
            dead = self._pick(1, ("dead",))
            if dead:
                self._pushPull(dead[0].address, join=False)
        self._later(self.settings.reconnectInterval, self._reconnectTick)

    def _reap(self) -> None:
        now = self.clock.seconds()
        for name, (core, machine) in list(self._members.items()):
            if core.status in ("dead", "left") and now - core.since > self.settings.reapAfter:
                machine.removed()
                del self._members[name]

    def _pushPull(self, address: Address, join: bool) -> Deferred[bool]:
        self._count("pushPulls")
        payload = self.codec.encodeStream(PushPull(join, self._localStates(), self._userState(join)))
        d: Deferred[bytes] = self.transport.exchangeState(address, payload)  # type: ignore[assignment]
        d.addTimeout(self.settings.pushPullTimeout, self.clock)

        def merge(reply: bytes) -> bool:
            if not self.running:
                return False
            try:
                pp = self.codec.decodeStream(reply, address)
            except MalformedPacket as e:
                self._drops.drop("malformed state reply", _fmt(address), str(e))
                return False
            if isinstance(pp, ErrorReply):
                self._drops.drop("push-pull refused", _fmt(address), pp.error)
                return False
            if not isinstance(pp, PushPull):
                self._drops.drop("malformed state reply", _fmt(address), "not a push-pull reply")
                return False
            self._merge(pp.states, f"push-pull:{_fmt(address)}")
            self._mergeUserState(pp.userState, join)
            return True

        def failed(f: Failure) -> bool:
            self._count("pushPullsFailed")
            log.debug(
                "push-pull with {address} failed: {why}", address=_fmt(address), why=f.getErrorMessage()
            )
            return False

        return d.addCallbacks(merge, failed)

    # -- helpers ---------------------------------------------------------

    def _pick(self, k: int, statuses: tuple[str, ...], recentDead: float | None = None) -> list[MemberCore]:
        now = self.clock.seconds()
        candidates = [
            c
            for c, _ in self._members.values()
            if c.status in statuses
            and (c.status != "dead" or recentDead is None or now - c.since < recentDead)
        ]
        if len(candidates) <= k:
            self.rng.shuffle(candidates)
            return candidates
        return self.rng.sample(candidates, k)

    def _liveCount(self) -> int:
        return 1 + sum(1 for c, _ in self._members.values() if c.status in ("alive", "suspect"))

    def _nextSeq(self) -> int:
        self._seq = (self._seq + 1) % (2**32)
        return self._seq

    def _budget(self) -> int:
        return self.settings.maxPacketBytes - self.codec.overhead() - COMPOUND_ITEM_OVERHEAD

    def _send(self, address: Address, message: Message, *extra: Message) -> None:
        encoded = [encodeMessage(message)] + [encodeMessage(e) for e in extra]
        budget = self._budget() - sum(len(e) + COMPOUND_ITEM_OVERHEAD for e in encoded[1:]) - len(encoded[0])
        self._sendRaw(address, encoded + self._piggyback(budget))

    def _piggyback(self, budget: int) -> list[bytes]:
        # Membership updates first, then user messages in what is left.
        taken = self._queue.take(budget, COMPOUND_ITEM_OVERHEAD)
        left = budget - sum(len(e) + COMPOUND_ITEM_OVERHEAD for e in taken)
        return taken + self._userQueue.take(left, COMPOUND_ITEM_OVERHEAD)

    def _sendRaw(self, address: Address, encoded: list[bytes]) -> None:
        self._count("packetsSent")
        packet = self.codec.packPacket(
            encoded, crc=address not in self._oldProtocol, compressed=self.settings.compressPackets
        )
        self.transport.sendPacket(address, packet)

    def _later(self, delay: float, f: Callable[[], object]) -> IDelayedCall:
        def run() -> None:
            self._calls.discard(call)
            if self.running:
                f()

        call = self.clock.callLater(delay, run)
        self._calls.add(call)
        return call

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1


def serfLeaveIntent(name: str, ltime: int) -> bytes:
    """
    Serf's leave intent for member C{name} at Lamport time C{ltime}: its
    message type 0 and a msgpack C{{LTime, Node, Prune}}.
    """
    return b"\x00" + msgpack.packb({"LTime": ltime, "Node": name, "Prune": False}, use_bin_type=False)


def _fmt(address: object) -> str:
    if isinstance(address, tuple) and len(address) == 2:
        host, port = address
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
