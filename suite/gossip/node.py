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

The node's own lifecycle (start, leave, stop) is the machine of
L{suite.gossip.lifecycle}; C{running} and C{leaving} read the phase it names.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.gossip import pushpull
from suite.gossip.codec import Codec
from suite.gossip.delegation import GuardedDelegate
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
from suite.gossip.lifecycle import DEPARTING, UP, LifecycleCore, LifecycleInputs, LifecycleMachine
from suite.gossip.member import Member, Status
from suite.gossip.merge import MemberUpdates
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
        self.listener = None if listener is None else IMembershipListener(listener)
        self.delegation = GuardedDelegate(delegate)
        self.meta = checkMeta(meta or {}, self.settings.maxMetaBytes)
        self.rng = rng or random.Random()
        # memberlist ignores a new member's alive at incarnation 0.
        self.incarnation = 1
        self.stats: dict[str, int] = {}
        self.seeds: list[Address] = []
        self.lifecycleCore = LifecycleCore(
            self,
            name,
            clock,
            self.settings.leavePropagateDelay / 2 if self.settings.serfLeaveIntent else 0.0,
            self.settings.leavePropagateDelay,
        )
        self.lifecycle: LifecycleInputs = LifecycleMachine(self.lifecycleCore)
        self.roster = Roster(clock, self.rng)
        self.prober = Prober(self)
        self.dissemination = Disseminator(self.settings, self.codec, self.transport, self.roster, self._count)
        self._calls: set[IDelayedCall] = set()
        self.drops = _DropLog(clock)
        self.updates = MemberUpdates(
            self,
            self.settings,
            clock,
            self.roster,
            self.dissemination,
            self.listener,
            self.drops,
            self._count,
        )
        self._introduced: dict[str, float] = {}

    @property
    def delegate(self) -> IGossipDelegate | None:
        """
        The daemon's delegate, if any.
        """
        return self.delegation.delegate

    @delegate.setter
    def delegate(self, delegate: IGossipDelegate | None) -> None:
        self.delegation.delegate = delegate

    @property
    def running(self) -> bool:
        """
        Whether this node takes part in the protocol (running or leaving),
        as its lifecycle machine says.
        """
        return self.lifecycleCore.phase in UP

    @property
    def leaving(self) -> bool:
        """
        Whether this node has announced its leave, as its lifecycle machine
        says.
        """
        return self.lifecycleCore.phase in DEPARTING

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
        try:
            return self.lifecycle.start(self.seeds)
        except Exception:  # clean up and re-raise
            self.lifecycle.listenFailed()
            raise

    def listen(self) -> None:
        """
        Start the transport listening (for the lifecycle machine).
        """
        self.transport.startListening(self)

    def begin(self, seeds: Sequence[Address]) -> Deferred[int]:
        """
        Start the protocol timers and join through C{seeds} (for the
        lifecycle machine).
        """
        s = self.settings
        self._later(self.rng.uniform(0, s.probeInterval), self._probeTick)
        self._later(self.rng.uniform(0, s.gossipInterval), self._gossipTick)
        self._later(s.pushPullInterval * self.rng.uniform(0.5, 1.0), self._pushPullTick)
        self._later(s.reconnectInterval * self.rng.uniform(0.5, 1.0), self._reconnectTick)
        log.info("gossip node {name} started on {address}", name=self.name, address=_fmt(self.address))
        return self.join(seeds)

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
        C{leavePropagateDelay}, then stop (see L{suite.gossip.lifecycle}).
        """
        waiter: Deferred[None] = Deferred()
        self.lifecycle.leave(waiter)
        return waiter

    def stop(self) -> Deferred[None]:
        """
        Stop every timer and the transport (no leave message: use L{leave}).
        """
        waiter: Deferred[None] = Deferred()
        self.lifecycle.stop(waiter)
        return waiter

    def sendLeaveIntent(self) -> None:
        """
        Tell Serf agents this node leaves, when configured to (for the
        lifecycle machine): Serf shows a member as left (not failed) only
        when its leave intent arrives before memberlist's leave message.
        """
        if not self.settings.serfLeaveIntent:
            return
        intent = User(serfLeaveIntent(self.name, self.incarnation + 1))
        for core in self.roster.pick(self.settings.gossipNodes * 2, LIVE):
            self._send(core.address, intent)
        self.dissemination.userMessages.queue("serf-leave", encodeMessage(intent))

    def announceLeft(self) -> None:
        """
        Gossip this node's leave message (for the lifecycle machine).
        """
        message = Left(self.name, self.incarnation)
        self.dissemination.queueUpdate(self.name, encodeMessage(message))
        for core in self.roster.pick(self.settings.gossipNodes, LIVE):
            self._send(core.address, message)

    def endService(self) -> Deferred[None]:
        """
        Stop every timer and the transport, forget the cluster (for the
        lifecycle machine).
        """
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
            self._dropMalformed("packetsDropped", "packet", source, e)
            return
        self._count("packetsReceived")
        # Updates first, so that an ack sent for a probe in this packet
        # already carries what the updates taught us (e.g. a refutation).
        for m in sorted(messages, key=lambda m: isinstance(m, Ping | IndirectPing | Ack | Nack)):
            self._handle(m)

    def _dropMalformed(self, counter: str, what: str, source: tuple[str, int], e: MalformedPacket) -> None:
        """
        Count and log a C{what} (packet or stream) from C{source} that failed
        to decode or authenticate.
        """
        self._count(counter)
        self.drops.drop(
            f"unauthenticated {what}" if isinstance(e, BadMAC) else f"malformed {what}", _fmt(source), str(e)
        )

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
            self._dropMalformed("statesDropped", "stream", source, e)
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
            self.updates.alive(m)
        elif isinstance(m, Suspect):
            self.updates.suspect(m)
        elif isinstance(m, Dead):
            self.updates.dead(m)
        elif isinstance(m, User):
            self._onUser(m.data)
        else:
            self.updates.left(m)

    # -- the delegate ----------------------------------------------------

    def _onUser(self, data: bytes) -> None:
        self._count("userMessages")
        self.delegation.notifyMsg(data)

    def userState(self, join: bool) -> bytes:
        """
        The delegate's state for a push-pull.
        """
        return self.delegation.localState(join)

    def mergeUserState(self, data: bytes, join: bool) -> None:
        """
        Hand a peer's push-pull user state to the delegate.
        """
        self.delegation.mergeRemoteState(data, join)

    # -- this node, as others see it (see L{suite.gossip.merge}) ------------

    def mergeStates(self, states: Iterable[MemberState], source: str) -> None:
        """
        Merge the member states a push-pull from C{source} carried.
        """
        self.updates.mergeStates(states, source)

    def accused(self, incarnation: int) -> None:
        """
        Someone suspects this node or declares it dead at C{incarnation}.
        """
        if self.leaving:
            return
        if incarnation >= self.incarnation:
            self.refute(incarnation, unhealthy=True)
        else:
            # The sender has a stale view: say again who we are, so the
            # reply to its probe (or the next gossip) carries it.
            self._queueSelf()

    def refute(self, incarnation: int, unhealthy: bool) -> None:
        """
        Answer a stale view of this node with a higher incarnation.
        """
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
        self.updates.rebroadcast(Alive(self.name, self.incarnation, self.address, dict(self.meta), self.vsn))

    def localStates(self) -> list[MemberState]:
        """
        Every member's state as push-pull carries it, this node first.
        """
        me = MemberState(
            self.name,
            self.address,
            self.incarnation,
            Status.LEFT if self.leaving else Status.ALIVE,
            self.meta,
            self.vsn,
        )
        return [me, *self.updates.memberStates()]

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
        return self.updates.protocolVersion(name)

    def suspectMember(self, message: Suspect) -> None:
        """
        Handle a suspicion raised by this node's own probe.
        """
        self.updates.suspect(message)

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
