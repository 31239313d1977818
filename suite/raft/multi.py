"""
Multi-Raft transport: many Raft groups over one listener and, in the
common case, one connection per pair of nodes.

Each frame is C{[u8 group-id length][group id, UTF-8][encoded message]}
(L{suite.raft.messages.encodeMessage}) inside the usual 4-byte length
prefix of L{suite.raft.transport.FrameProtocol}.  The group id C{""} is
reserved for the C{hello} frame that names the sending node.

A link is symmetric: whichever node dials, both ends send and receive on
the same connection, so a pair of nodes shares one connection for every
group they have in common (if both dial at the same moment they may end up
with two, which is harmless).  The peer's node id comes from
C{identify(transport)} once the TLS handshake is done (by default the
certificate's common name; a daemon may map SPIFFE IDs to node ids); an
outbound link whose peer is not the node that was dialled is closed, and a
message whose C{src} differs from the link's authenticated peer is rejected.
Commit queries and their answers (L{suite.raft.commitproof}) are not
delivered to a group's node: they go to the transport's C{onQuery}
handler, whatever their group id (the asker no longer hosts the group).

Outbound dials are driven by L{DialPolicy}: a connect timeout, and after a
failure an exponential backoff from C{backoff} seconds; after C{attempts}
consecutive failures a warning is logged once and the backoff stays at its
ceiling until the peer answers again.  Each peer dialled has a dial machine
(L{DialMachine}):

  inputs (L{DialInputs}): C{needed}, C{failed(why)}, C{reached}, C{stop};
      its own steps C{dial(backoff)}, C{backOff(backoff, why)},
      C{elapsed(backoff)}.
  outputs: connect (one attempt), warn once at C{attempts} failures, log
      the peer reachable again; cancel the attempt or the timer on leaving.
  states: Idle -> Dialing (data: the attempt, the failures before it) ->
      BackingOff (data: the failures, the timer) -> Unreached (data: the
      failures; the next needed message dials again) -> Dialing ...;
      Dialing/BackingOff/Unreached -> Idle when a link is authenticated;
      any -> Stopped when the transport closes.

A link's authentication is the link machine's (L{LinkMachine}): Pending ->
Open or Closed.

    multi = MultiRaftTransport("a", reactor, connect, {"b": "10.0.0.2:26021"})
    node = RaftNode("a", reactor, storage, multi.group("p0"), stateMachine, bootstrap)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from suite.backoff import Backoff
from suite.raft.interfaces import IRaftTransport
from suite.raft.messages import (
    AppendEntries,
    CommitAnswer,
    CommitQuery,
    Heartbeat,
    MalformedMessage,
    Message,
    decodeMessage,
    encodeMessage,
)
from suite.raft.transport import DEFAULT_MAX_FRAME, FrameProtocol, certificateName

__all__ = [
    "DialCore",
    "DialInputs",
    "DialMachine",
    "DialPolicy",
    "GroupTransport",
    "LinkCore",
    "LinkInputs",
    "LinkMachine",
    "MultiRaftTransport",
    "PeerLink",
    "decodeFrame",
    "encodeFrame",
]

log = Logger()
MAX_GROUP_ID = 255


class FrameError(ValueError):
    """
    A multi-Raft frame without a well-formed group header.
    """


def encodeFrame(group: str, body: bytes) -> bytes:
    """
    Prefix C{body} with the group header.
    """
    raw = group.encode("utf-8")
    if len(raw) > MAX_GROUP_ID:
        raise FrameError(f"group id {group!r} is longer than {MAX_GROUP_ID} bytes")
    return bytes([len(raw)]) + raw + body


def decodeFrame(frame: bytes) -> tuple[str, bytes]:
    """
    Split a frame into its group id and body.

    @raise FrameError: a truncated header or a group id that is not UTF-8.
    """
    if not frame:
        raise FrameError("empty frame")
    n = frame[0]
    if len(frame) < 1 + n:
        raise FrameError("frame shorter than its group header")
    try:
        group = frame[1 : 1 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("group id is not UTF-8") from None
    return group, frame[1 + n :]


@dataclass(frozen=True)
class DialPolicy:
    """
    How outbound connections are attempted (seconds).

    @ivar timeout: connect (and TLS handshake) timeout of one attempt.
    @ivar attempts: consecutive failures after which the peer is reported
        unreachable (dialling continues at the backoff ceiling).
    @ivar backoff: delay after the first failure; doubles per failure up to
        C{backoff * 2 ** (attempts - 1)}.
    """

    timeout: float = 2.0
    attempts: int = 3
    backoff: float = 0.1

    def delay(self, failures: int) -> float:
        """
        How long to wait before the next attempt after C{failures}
        consecutive failures.
        """
        if failures <= 0:
            return 0.0
        return float(self.backoff * 2 ** (min(failures, max(self.attempts, 1)) - 1))

    def newBackoff(self) -> Backoff:
        """
        The delays of this policy as a L{Backoff} (no jitter): its n-th
        delay is C{delay(n)}.
        """
        return Backoff(self.backoff, self.delay(max(self.attempts, 1)), jitter=False)


class DialInputs(Protocol):
    """
    Inputs of the machine dialling one peer (L{DialMachine}).  C{needed},
    C{failed}, C{reached} and C{stop} come from the transport; C{dial},
    C{backOff} and C{elapsed} are the machine's own steps, carrying the
    peer's L{Backoff} (its count of consecutive failures) from state to
    state.
    """

    def needed(self) -> None:
        """
        A message waits for the peer and no link carries it.
        """

    def dial(self, backoff: Backoff) -> None:
        """
        Start an attempt; C{backoff} counts the failures before it.
        """

    def failed(self, why: str) -> None:
        """
        The attempt failed: the connection was refused or timed out, or it
        closed (or was refused) before the peer was authenticated.
        """

    def backOff(self, backoff: Backoff, why: str) -> None:
        """
        Wait before the next attempt; C{backoff} counts this failure too.
        """

    def elapsed(self, backoff: Backoff) -> None:
        """
        The wait after a failure is over.
        """

    def reached(self) -> None:
        """
        A link to the peer (dialled by either side) was authenticated.
        """

    def stop(self) -> None:
        """
        The transport closed.
        """


@dataclass
class DialCore:
    """
    What the dial machine's outputs act on: the transport and the peer.
    """

    owner: MultiRaftTransport
    peer: str

    def connect(self, inputs: DialInputs) -> Deferred[Any]:
        """
        One connection attempt to the peer's address; its failure feeds
        C{failed}.  Success is reported by the link once authenticated.
        """
        owner = self.owner
        address = owner.peers.get(self.peer)
        owner.dials += 1
        peer = self.peer
        factory: Factory = Factory.forProtocol(lambda: PeerLink(owner, peer))
        factory.noisy = False
        attempt: Deferred[Any]
        if address is None:
            attempt = fail(ValueError(f"no address for {peer}"))
        else:
            attempt = owner.connect(address, factory, owner.dial.timeout)
        attempt.addErrback(lambda f: inputs.failed(f.getErrorMessage()))
        return attempt

    def reachable(self, backoff: Backoff) -> None:
        if backoff.failures >= self.owner.dial.attempts:
            log.info("Raft peer {peer} is reachable again", peer=self.peer)


@dataclass
class Dialing:
    """
    State data of C{Dialing}: the attempt in flight and the failures
    before it.
    """

    backoff: Backoff
    attempt: Deferred[Any]


@dataclass
class BackingOff:
    """
    State data of C{BackingOff}: the consecutive failures and the timer
    ending the wait.
    """

    backoff: Backoff
    timer: IDelayedCall

    def cancel(self) -> None:
        if self.timer.active():
            self.timer.cancel()


@dataclass
class Unreached:
    """
    State data of C{Unreached}: the consecutive failures so far (the next
    needed message dials again).
    """

    backoff: Backoff


def _buildDialMachine() -> TypeMachine[DialInputs, DialCore]:
    D = DialInputs
    builder = TypeMachineBuilder(DialInputs, DialCore)
    idle = builder.state("Idle")

    def dialingData(inputs: DialInputs, core: DialCore, backoff: Backoff) -> Dialing:
        return Dialing(backoff, core.connect(inputs))

    dialing = builder.state("Dialing", dialingData)

    def backingOffData(inputs: DialInputs, core: DialCore, backoff: Backoff, why: str) -> BackingOff:
        return BackingOff(backoff, core.owner.clock.callLater(backoff.next(), inputs.elapsed, backoff))

    backingOff = builder.state("BackingOff", backingOffData)

    def unreachedData(inputs: DialInputs, core: DialCore, backoff: Backoff) -> Unreached:
        return Unreached(backoff)

    unreached = builder.state("Unreached", unreachedData)
    stopped = builder.state("Stopped")

    # Idle: no failure since the peer was last reached.
    @idle.upon(D.needed).loop()
    def dialFirst(inputs: DialInputs, core: DialCore) -> None:
        inputs.dial(core.owner.dial.newBackoff())

    idle.upon(D.dial).to(dialing).returns(None)
    for name in ("failed", "backOff", "elapsed", "reached"):
        idle.upon(getattr(D, name)).loop().returns(None)
    idle.upon(D.stop).to(stopped).returns(None)

    # Dialing: one attempt in flight.
    for name in ("needed", "dial", "elapsed"):
        dialing.upon(getattr(D, name)).loop().returns(None)

    @dialing.upon(D.failed).loop()
    def attemptFailed(inputs: DialInputs, core: DialCore, data: Dialing, why: str) -> None:
        inputs.backOff(data.backoff, why)

    @dialing.upon(D.backOff).to(backingOff)
    def wait(inputs: DialInputs, core: DialCore, data: Dialing, backoff: Backoff, why: str) -> None:
        if backoff.failures == core.owner.dial.attempts:
            log.warn(
                "Raft peer {peer} at {address} unreachable after {n} attempts: {why}",
                peer=core.peer,
                address=core.owner.peers.get(core.peer),
                n=backoff.failures,
                why=why,
            )

    @dialing.upon(D.reached).to(idle)
    def dialReached(inputs: DialInputs, core: DialCore, data: Dialing) -> None:
        data.attempt.cancel()
        core.reachable(data.backoff)

    @dialing.upon(D.stop).to(stopped)
    def stopDialing(inputs: DialInputs, core: DialCore, data: Dialing) -> None:
        data.attempt.cancel()

    # BackingOff: waiting out the delay after a failure.
    for name in ("needed", "dial", "failed", "backOff"):
        backingOff.upon(getattr(D, name)).loop().returns(None)

    @backingOff.upon(D.elapsed).to(unreached)
    def waited(inputs: DialInputs, core: DialCore, data: BackingOff, backoff: Backoff) -> None:
        data.cancel()

    @backingOff.upon(D.reached).to(idle)
    def reachedWaiting(inputs: DialInputs, core: DialCore, data: BackingOff) -> None:
        data.cancel()
        core.reachable(data.backoff)

    @backingOff.upon(D.stop).to(stopped)
    def stopWaiting(inputs: DialInputs, core: DialCore, data: BackingOff) -> None:
        data.cancel()

    # Unreached: the wait is over; the next needed message dials again.
    @unreached.upon(D.needed).loop()
    def redial(inputs: DialInputs, core: DialCore, data: Unreached) -> None:
        inputs.dial(data.backoff)

    unreached.upon(D.dial).to(dialing).returns(None)
    for name in ("failed", "backOff", "elapsed"):
        unreached.upon(getattr(D, name)).loop().returns(None)

    @unreached.upon(D.reached).to(idle)
    def reachedUnreached(inputs: DialInputs, core: DialCore, data: Unreached) -> None:
        core.reachable(data.backoff)

    unreached.upon(D.stop).to(stopped).returns(None)

    for name in ("needed", "dial", "failed", "backOff", "elapsed", "reached", "stop"):
        stopped.upon(getattr(D, name)).loop().returns(None)
    return builder.build()


#: One per peer dialled: C{DialMachine(DialCore(transport, peer))}.
DialMachine = _buildDialMachine()


class LinkInputs(Protocol):
    """
    Inputs of a link's authentication machine.
    """

    def identified(self, name: str | None) -> None:
        """
        The peer's identity is known: from its certificate after the TLS
        handshake, from the dialled name (plain TCP, outbound), or from its
        hello (plain TCP, inbound).
        """

    def accepted(self, name: str) -> None:
        """
        The identity passed the checks.
        """

    def refused(self, reason: str) -> None:
        """
        The identity (or a hello contradicting it) failed the checks.
        """

    def hello(self, name: str) -> None:
        """
        A hello frame naming the sender arrived.
        """

    def frame(self, group: str, body: bytes) -> None:
        """
        A group frame arrived.
        """

    def lost(self) -> None:
        """
        The connection closed.
        """


@dataclass
class LinkCore:
    """
    What the link machine's outputs act on.
    """

    link: PeerLink

    @property
    def owner(self) -> MultiRaftTransport:
        return self.link.owner

    def verdict(self, name: str | None) -> str | None:
        owner, expected = self.owner, self.link.expected
        if name is None or name not in owner.knownNodes() or name == owner.nodeId:
            return f"its identity names no known peer node ({name})"
        if expected is not None and name != expected:
            return f"it presented the identity of {name}, expected {expected}"
        return None


@dataclass
class OpenLink:
    """
    State data of an authenticated link: the peer's node id.
    """

    peer: str


def _buildLinkMachine() -> TypeMachine[LinkInputs, LinkCore]:
    builder = TypeMachineBuilder(LinkInputs, LinkCore)
    pending = builder.state("Pending")

    def openData(inputs: LinkInputs, core: LinkCore, name: str) -> OpenLink:
        return OpenLink(name)

    opened = builder.state("Open", openData)
    closed = builder.state("Closed")

    @pending.upon(LinkInputs.identified).loop()
    def check(inputs: LinkInputs, core: LinkCore, name: str | None) -> None:
        why = core.verdict(name)
        if why is None:
            assert name is not None
            inputs.accepted(name)
        else:
            inputs.refused(why)

    @pending.upon(LinkInputs.accepted).to(opened)
    def up(inputs: LinkInputs, core: LinkCore, name: str) -> None:
        core.owner.linkUp(name, core.link)

    @pending.upon(LinkInputs.refused).to(closed)
    def refuse(inputs: LinkInputs, core: LinkCore, reason: str) -> None:
        log.warn("rejecting Raft link with {peer}: {why}", peer=core.link.describePeer(), why=reason)
        core.owner.rejectedLinks += 1
        if core.link.expected is not None:
            core.owner.dialFailed(core.link.expected, reason)
        core.link.close()

    @pending.upon(LinkInputs.hello).loop()
    def helloFirst(inputs: LinkInputs, core: LinkCore, name: str) -> None:
        # Only a plain-TCP inbound link learns its peer from the hello; a
        # TLS link is identified by its certificate.
        if not core.owner.secure and core.link.expected is None:
            inputs.identified(name)

    @pending.upon(LinkInputs.frame).loop()
    def early(inputs: LinkInputs, core: LinkCore, group: str, body: bytes) -> None:
        core.owner.rejected += 1

    @pending.upon(LinkInputs.lost).to(closed)
    def lostPending(inputs: LinkInputs, core: LinkCore) -> None:
        if core.link.expected is not None:
            core.owner.dialFailed(
                core.link.expected, "the connection closed before the peer was authenticated"
            )

    opened.upon(LinkInputs.identified).loop().returns(None)
    opened.upon(LinkInputs.accepted).loop().returns(None)

    @opened.upon(LinkInputs.hello).loop()
    def helloAgain(inputs: LinkInputs, core: LinkCore, data: OpenLink, name: str) -> None:
        if name != data.peer:
            inputs.refused(f"peer authenticated as {data.peer} says it is {name}")

    @opened.upon(LinkInputs.frame).loop()
    def deliver(inputs: LinkInputs, core: LinkCore, data: OpenLink, group: str, body: bytes) -> None:
        core.owner.deliver(group, data.peer, body)

    @opened.upon(LinkInputs.refused).to(closed)
    def refuseOpen(inputs: LinkInputs, core: LinkCore, data: OpenLink, reason: str) -> None:
        log.warn("closing Raft link with {peer}: {why}", peer=core.link.describePeer(), why=reason)
        core.owner.rejectedLinks += 1
        core.owner.linkDown(data.peer, core.link)
        core.link.close()

    @opened.upon(LinkInputs.lost).to(closed)
    def down(inputs: LinkInputs, core: LinkCore, data: OpenLink) -> None:
        core.owner.linkDown(data.peer, core.link)

    for name in ("identified", "accepted", "refused", "hello", "frame", "lost"):
        closed.upon(getattr(LinkInputs, name)).loop().returns(None)
    return builder.build()


#: One per link: C{LinkMachine(LinkCore(link))}.
LinkMachine = _buildLinkMachine()


@implementer(IHandshakeListener)
class PeerLink(FrameProtocol):
    """
    One connection between two nodes, carrying frames of every group both
    ways.  Authentication is the link machine's (Pending, Open, Closed).

    @param expected: the node dialled (outbound links), or C{None} for an
        inbound link.
    """

    def __init__(self, owner: MultiRaftTransport, expected: str | None) -> None:
        super().__init__()
        self.owner = owner
        self.expected = expected
        self.maxFrameBytes = owner.maxFrameBytes
        self.machine = LinkMachine(LinkCore(self))

    def connectionMade(self) -> None:
        super().connectionMade()
        if not self.owner.secure:
            self._sendHello()
            if self.expected is not None:
                self.machine.identified(self.expected)

    def handshakeCompleted(self) -> None:
        self._sendHello()
        self.machine.identified(self.owner.identify(self.transport))

    def _sendHello(self) -> None:
        self.sendFrame(encodeFrame("", self.owner.nodeId.encode("utf-8")))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def frameReceived(self, frame: bytes) -> None:
        try:
            group, body = decodeFrame(frame)
        except FrameError as e:
            self.machine.refused(str(e))
            self.owner.rejected += 1
            self.close()
            return
        if group == "":
            self.machine.hello(body.decode("utf-8", "replace"))
        else:
            self.machine.frame(group, body)

    def connectionLost(self, reason: Any = None) -> None:
        self.machine.lost()


@implementer(IRaftTransport)
class GroupTransport:
    """
    The L{IRaftTransport} one group's node uses: frames tagged with the
    group id over the shared links.
    """

    def __init__(self, owner: MultiRaftTransport, group: str) -> None:
        self.owner, self.group = owner, group
        self.receiver: Callable[[Message], None] | None = None
        #: The highest commit index a leader of this group announced to us
        #: (AppendEntries and Heartbeat carry it): how far the group has
        #: committed, as this replica last heard.
        self.leaderCommit = 0

    def send(self, message: Message) -> None:
        self.owner.send(self.group, message)

    def setReceiver(self, receiver: Callable[[Message], None]) -> None:
        self.receiver = receiver

    def updatePeers(self, addresses: Mapping[str, str]) -> None:
        self.owner.updatePeers(addresses)

    def close(self) -> None:
        self.owner.dropGroup(self.group)


class MultiRaftTransport:
    """
    Shared links for every Raft group of one node.

    @param connect: C{connect(address, factory, timeout) -> Deferred}.
    @param peers: node id -> C{host:port} of its Raft listener.
    @param identify: C{identify(transport) -> node id or None} after the TLS
        handshake (default: the certificate's common name).
    @param secure: C{False} for plain TCP (development, simulation): the
        peer's node id is then taken from the dialled name or its hello.
    """

    def __init__(
        self,
        nodeId: str,
        clock: IReactorTime,
        connect: Callable[[str, Factory, float], Any],
        peers: Mapping[str, str] | None = None,
        *,
        identify: Callable[[Any], str | None] | None = None,
        secure: bool = True,
        dial: DialPolicy | None = None,
        maxFrameBytes: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.nodeId = nodeId
        self.clock = clock
        self.connect = connect
        self.peers: dict[str, str] = dict(peers or {})
        self.identify = identify or certificateName
        self.secure = secure
        self.dial = dial or DialPolicy()
        self.maxFrameBytes = maxFrameBytes
        self.groups: dict[str, GroupTransport] = {}
        self.links: dict[str, PeerLink] = {}
        #: One dial machine per peer dialled (L{DialMachine}).
        self.dialers: dict[str, DialInputs] = {}
        self.rejected = 0
        self.rejectedLinks = 0
        self.unknownGroup = 0
        self.framesSent = 0
        self.framesReceived = 0
        self.dials = 0
        self.closed = False
        #: Where commit queries and their answers go
        #: (L{suite.raft.commitproof}), C{onQuery(group, message)}, once
        #: the link's peer is checked to be their C{src}: for any group
        #: id, hosted here or not.  C{None}: dropped.
        self.onQuery: Callable[[str, CommitQuery | CommitAnswer], None] | None = None

    # -- groups and peers -------------------------------------------------

    def group(self, group: str) -> GroupTransport:
        """
        The transport of C{group} (created on first use).
        """
        encodeFrame(group, b"")  # validates the id
        if not group:
            raise FrameError("the empty group id is reserved")
        transport = self.groups.get(group)
        if transport is None:
            transport = self.groups[group] = GroupTransport(self, group)
        return transport

    def dropGroup(self, group: str) -> None:
        """
        Forget C{group}: its frames are dropped from now on.
        """
        self.groups.pop(group, None)

    def knownNodes(self) -> set[str]:
        return set(self.peers) | {self.nodeId}

    def updatePeers(self, addresses: Mapping[str, str]) -> None:
        """
        Learn (or change) peers' addresses.
        """
        for peer, address in addresses.items():
            if peer != self.nodeId and address:
                self.peers[peer] = address

    def setPeers(self, addresses: Mapping[str, str]) -> None:
        """
        Replace the peer table (placement changed): links to nodes no longer
        listed are closed.
        """
        self.peers = {p: a for p, a in addresses.items() if p != self.nodeId and a}
        for peer in [p for p in self.links if p not in self.peers]:
            link = self.links.pop(peer)
            if link.transport is not None:
                link.transport.loseConnection()

    # -- links ------------------------------------------------------------

    def serverFactory(self) -> Factory:
        """
        The factory of the shared Raft listener.
        """
        factory: Factory = Factory.forProtocol(lambda: PeerLink(self, None))
        factory.noisy = False
        return factory

    def linkUp(self, peer: str, link: PeerLink) -> None:
        dialer = self.dialers.get(peer)
        if dialer is not None:
            dialer.reached()
        current = self.links.get(peer)
        if current is None or current.transport is None or getattr(current.transport, "disconnecting", False):
            self.links[peer] = link

    def linkDown(self, peer: str, link: PeerLink) -> None:
        if self.links.get(peer) is link:
            del self.links[peer]

    def send(self, group: str, message: Message) -> None:
        if self.closed:
            return
        link = self.links.get(message.dst)
        if link is not None and link.transport is not None:
            link.sendFrame(encodeFrame(group, encodeMessage(message)))
            self.framesSent += 1
            return
        self._dial(message.dst)

    def _dial(self, peer: str) -> None:
        if peer not in self.peers:
            return
        dialer = self.dialers.get(peer)
        if dialer is None:
            dialer = self.dialers[peer] = DialMachine(DialCore(self, peer))
        dialer.needed()

    def dialFailed(self, peer: str, why: str) -> None:
        """
        An attempt to reach C{peer} failed: back off before the next one.
        """
        dialer = self.dialers.get(peer)
        if dialer is not None:
            dialer.failed(why)

    def deliver(self, group: str, peer: str, body: bytes) -> None:
        self.framesReceived += 1
        target = self.groups.get(group)
        if target is None and self.onQuery is None:
            self.unknownGroup += 1
            return
        try:
            message = decodeMessage(body)
        except MalformedMessage as e:
            log.warn("rejecting malformed Raft frame from {peer}: {why}", peer=peer, why=str(e))
            self.rejected += 1
            return
        if message.src != peer:
            log.warn(
                "rejecting Raft message claiming to be from {src} on a link authenticated as {peer}",
                src=message.src,
                peer=peer,
            )
            self.rejected += 1
            return
        if isinstance(message, (CommitQuery, CommitAnswer)):
            # (a stopped replica's group is gone here, but it still hears
            # the answers to its queries)
            if self.onQuery is not None and message.dst == self.nodeId:
                self.onQuery(group, message)
            return
        if target is None:
            self.unknownGroup += 1
            return
        if isinstance(message, (AppendEntries, Heartbeat)) and message.commit > target.leaderCommit:
            target.leaderCommit = message.commit
        if target.receiver is not None:
            target.receiver(message)

    def close(self) -> None:
        self.closed = True
        for dialer in self.dialers.values():
            dialer.stop()
        for link in list(self.links.values()):
            if link.transport is not None:
                link.transport.loseConnection()
        self.links.clear()
