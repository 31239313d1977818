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

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.gossip import pushpull
from suite.gossip.codec import Codec
from suite.gossip.dissemination import Disseminator
from suite.gossip.fields import (
    PROTOCOL_CURRENT,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    Address,
    BadMAC,
    Incomplete,
    MalformedPacket,
    checkMeta,
)
from suite.gossip.interfaces import (
    IGossipDelegate,
    IGossipTransport,
    IMembership,
    IMembershipListener,
    IPacketReceiver,
)
from suite.gossip.member import Member, MemberCore, Status, Suspicion, newMemberMachine
from suite.gossip.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Left,
    MemberState,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    Update,
    User,
    encodeMessage,
)
from suite.gossip.prober import Prober
from suite.gossip.roster import LIVE, Roster
from suite.gossip.security import Keyring
from suite.gossip.settings import GossipSettings
from suite.netutil import isIPAddress

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
        if not isIPAddress(address[0]):
            raise ValueError(f"a gossip node's address must be an IP address, not {address[0]!r}")
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
        self.listener = None if listener is None else IMembershipListener(listener)
        self.delegate = None if delegate is None else IGossipDelegate(delegate)
        self.meta = checkMeta(meta or {}, self.settings.maxMetaBytes)
        self.rng = rng or random.Random()
        # memberlist ignores a new member's alive at incarnation 0.
        self.incarnation = 1
        self.stats: dict[str, int] = {}
        self.seeds: list[Address] = []
        self.running = False
        self.leaving = False
        self.roster = Roster(clock, self.rng)
        self.prober = Prober(self)
        self.dissemination = Disseminator(self.settings, self.codec, self.transport, self.roster, self._count)
        self._calls: set[IDelayedCall] = set()
        self.drops = _DropLog(clock)
        self._introduced: dict[str, float] = {}

    @property
    def awareness(self) -> int:
        """
        The Lifeguard local health score (0 is healthy).
        """
        return self.prober.awareness

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
            self.name,
            self.address,
            Status.LEFT if self.leaving else Status.ALIVE,
            self.incarnation,
            dict(self.meta),
        )
        return [me, *self.roster.snapshots()]

    def member(self, name: str) -> Member | None:
        """
        One member by name, or None.
        """
        if name == self.name:
            return self.members()[0]
        return self.roster.snapshot(name)

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
        self.dissemination.queueUser(data)

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
            for core in self.roster.pick(self.settings.gossipNodes * 2, LIVE):
                self._send(core.address, intent)
            self.dissemination.userMessages.queue("serf-leave", encodeMessage(intent))
            delay = self.settings.leavePropagateDelay / 2

        def announce() -> None:
            message = Left(self.name, self.incarnation)
            self.dissemination.queueUpdate(self.name, encodeMessage(message))
            for core in self.roster.pick(self.settings.gossipNodes, LIVE):
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
        self.prober.stop()
        self.roster.removeAll()
        self.dissemination.clear()
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
            self.drops.drop(
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
            self.drops.drop(
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
        return pushpull.serve(self, message, source)

    def _handle(self, m: Message) -> None:
        if isinstance(m, Ping):
            if m.target in ("", self.name):
                self._send(m.address, Ack(m.seq))
                if m.source:
                    self._introduce(m.source, m.address)
            else:
                self._count("misdirectedPings")
        elif isinstance(m, IndirectPing):
            self.prober.relay(m)
        elif isinstance(m, Ack):
            self.prober.ackReceived(m.seq)
        elif isinstance(m, Nack):
            self.prober.nackReceived(m.seq)
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

    def userState(self, join: bool) -> bytes:
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

    def mergeUserState(self, data: bytes, join: bool) -> None:
        if self.delegate is None or not data:
            return
        try:
            self.delegate.mergeRemoteState(data, join)
        except Exception:
            log.failure("gossip delegate failed to merge a remote state")

    # -- merging updates -------------------------------------------------

    def _onAlive(self, m: Alive) -> None:
        if m.vsn[0] > PROTOCOL_CURRENT or m.vsn[1] < PROTOCOL_CURRENT:
            self.drops.drop("incompatible alive", m.name, f"protocol versions {list(m.vsn[:3])}")
            return
        if m.name == self.name:
            if m.incarnation > self.incarnation and not self.leaving:
                # An older life of this node, or someone else's stale view.
                self._refute(m.incarnation, unhealthy=False)
            return
        entry = self.roster.get(m.name)
        if entry is None or not self.roster.known(m.name):
            try:
                meta = checkMeta(m.meta, self.settings.maxMetaBytes)
            except ValueError:
                self._count("oversizedMeta")
                return
            self._remember(m)
            core = MemberCore(m.name, m.address, m.incarnation, meta, self, clock=self.clock)
            self.roster.add(core, newMemberMachine(core))
            self.rebroadcast(m)
            self.notify("joined", core.snapshot(Status.ALIVE))
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
            self.dissemination.oldProtocol.add(m.address)
        else:
            self.dissemination.oldProtocol.discard(m.address)

    def _onSuspect(self, m: Suspect) -> None:
        if m.name == self.name:
            self._selfAccused(m.incarnation)
            return
        entry = self.roster.get(m.name)
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
        entry = self.roster.get(m.name)
        if entry is not None and m.incarnation >= entry[0].incarnation:
            entry[1].declaredDead(m.incarnation, m.source)

    def _onLeft(self, m: Left) -> None:
        if m.name == self.name:
            if m.incarnation >= self.incarnation and not self.leaving:
                self._refute(m.incarnation, unhealthy=False)
            return
        entry = self.roster.get(m.name)
        if entry is not None and m.incarnation >= entry[0].incarnation:
            entry[1].departed(m.incarnation)

    def mergeStates(self, states: Iterable[MemberState], source: str) -> None:
        for s in states:
            known = s.name == self.name or self.roster.known(s.name)
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
            self.prober.adjustAwareness(+1)
        self._count("refutations")
        log.info(
            "gossip node {name} refutes a stale view of itself; incarnation now {incarnation}",
            name=self.name,
            incarnation=self.incarnation,
        )
        self._queueSelf()

    def _queueSelf(self) -> None:
        self.rebroadcast(Alive(self.name, self.incarnation, self.address, dict(self.meta), self.vsn))

    def localStates(self) -> list[MemberState]:
        me = MemberState(
            self.name,
            self.address,
            self.incarnation,
            Status.LEFT if self.leaving else Status.ALIVE,
            self.meta,
            self.vsn,
        )
        rest = [
            MemberState(
                c.name,
                c.address,
                c.incarnation,
                standing.status,
                c.meta,
                self._vsn.get(c.name, self.vsn),
                self._rawMeta.get(c.name),
            )
            for c, _, standing in self.roster.current()
        ]
        return [me, *rest]

    # -- MemberActions (called by member machines) -------------------------

    def notify(self, event: str, member: Member) -> None:
        """
        Record a member's state change in the roster, log it and tell the
        listener.
        """
        self.roster.observe(member)
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
        self.dissemination.queueUpdate(message.name, encodeMessage(message))

    def newSuspicion(self, core: MemberCore, source: str, expire: Callable[[], None]) -> Suspicion:
        """
        A suspicion timer sized for the current cluster.
        """
        low, high, expected = self.settings.suspicionBounds(self.roster.liveCount())
        return Suspicion(self.clock, low, high, expected, source, expire, self.name)

    # -- probing (see L{suite.gossip.prober}) ------------------------------

    def _probeTick(self) -> None:
        target = self.roster.nextProbeTarget()
        scale = self.awareness + 1
        if target is not None:
            self.prober.probe(*target, scale)
        self._later(self.settings.probeInterval * scale, self._probeTick)

    def send(self, address: Address, message: Message, *extra: Message) -> None:
        """
        Send C{message} (and C{extra}) to C{address} with piggybacked updates.
        """
        self._send(address, message, *extra)

    def protocolVersion(self, name: str) -> int:
        """
        The highest memberlist protocol member C{name} speaks.
        """
        return self._vsn.get(name, self.vsn)[1]

    def suspectMember(self, message: Suspect) -> None:
        """
        Handle a suspicion raised by this node's own probe.
        """
        self._onSuspect(message)

    def count(self, what: str) -> None:
        """
        Count one C{what} in L{stats}.
        """
        self._count(what)

    def _introduce(self, name: str, address: Address) -> None:
        # A member that probes us knows us, but we missed its alive (its
        # retransmissions ran out): sync with it now rather than at the
        # next push-pull, at most once per reconnect interval.
        if name == self.name or self.roster.known(name):
            return
        now = self.clock.seconds()
        if (
            now - self._introduced.get(name, -self.settings.reconnectInterval)
            < self.settings.reconnectInterval
        ):
            return
        self._introduced[name] = now
        self._pushPull(address, join=False)

    # -- gossip, push-pull, reconnect ----------------------------------------

    def _gossipTick(self) -> None:
        self.dissemination.gossipRound()
        self._later(self.settings.gossipInterval, self._gossipTick)

    def _pushPullTick(self) -> None:
        peers = self.roster.pick(1, frozenset({Status.ALIVE}))
        if peers:
            self._pushPull(peers[0].address, join=False)
        self._later(self.settings.pushPullInterval, self._pushPullTick)

    def _reconnectTick(self) -> None:
        self.roster.reap(self.settings.reapAfter)
        if not self.roster.pick(1, LIVE):
            if self.seeds:
                self.join(self.seeds)
        else:
            dead = self.roster.pick(1, frozenset({Status.DEAD}))
            if dead:
                self._pushPull(dead[0].address, join=False)
        self._later(self.settings.reconnectInterval, self._reconnectTick)

    def _pushPull(self, address: Address, join: bool) -> Deferred[bool]:
        return pushpull.exchange(self, address, join)

    # -- helpers ---------------------------------------------------------

    def _send(self, address: Address, message: Message, *extra: Message) -> None:
        self.dissemination.send(address, message, *extra)

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
    body: bytes = msgpack.packb({"LTime": ltime, "Node": name, "Prune": False}, use_bin_type=False)
    return b"\x00" + body


_fmt = pushpull.formatAddress
