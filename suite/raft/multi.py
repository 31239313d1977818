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

Outbound dials are driven by L{DialPolicy}: a connect timeout, and after a
failure an exponential backoff from C{backoff} seconds; after C{attempts}
consecutive failures a warning is logged once and the backoff stays at its
ceiling until the peer answers again.

    multi = MultiRaftTransport("a", reactor, connect, {"b": "10.0.0.2:26021"})
    node = RaftNode("a", reactor, storage, multi.group("p0"), stateMachine, bootstrap)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from suite.raft.interfaces import IRaftTransport
from suite.raft.messages import (
    AppendEntries,
    Heartbeat,
    MalformedMessage,
    Message,
    decodeMessage,
    encodeMessage,
)
from suite.raft.transport import DEFAULT_MAX_FRAME, FrameProtocol, certificateName

__all__ = [
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
        #: While true, inbound messages of this group are dropped (e.g. until
        #: the group's node has loaded its storage; Raft resends).
        self.paused = False

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
        self._nextDial: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._dialing: set[str] = set()
        self.rejected = 0
        self.rejectedLinks = 0
        self.unknownGroup = 0
        self.framesSent = 0
        self.framesReceived = 0
        self.dials = 0
        self.closed = False

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
        self._dialing.discard(peer)
        if self._failures.get(peer, 0) >= self.dial.attempts:
            log.info("Raft peer {peer} is reachable again", peer=peer)
        self._failures.pop(peer, None)
        self._nextDial.pop(peer, None)
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
        address = self.peers.get(peer)
        if address is None or peer in self._dialing:
            return
        now = self.clock.seconds()
        if self._nextDial.get(peer, -1.0) > now:
            return
        self._dialing.add(peer)
        self.dials += 1
        factory: Factory = Factory.forProtocol(lambda: PeerLink(self, peer))
        factory.noisy = False

        # Success is reported by the link once authenticated (linkUp); a
        # link closing before that reports a failure (dialFailed).
        d = self.connect(address, factory, self.dial.timeout)
        d.addErrback(lambda f: self.dialFailed(peer, f.getErrorMessage()))

    def dialFailed(self, peer: str, why: str) -> None:
        """
        An attempt to reach C{peer} failed: back off before the next one.
        """
        if peer not in self._dialing:
            return
        self._dialing.discard(peer)
        failures = self._failures.get(peer, 0) + 1
        self._failures[peer] = failures
        self._nextDial[peer] = self.clock.seconds() + self.dial.delay(failures)
        if failures == self.dial.attempts:
            log.warn(
                "Raft peer {peer} at {address} unreachable after {n} attempts: {why}",
                peer=peer,
                address=self.peers.get(peer),
                n=failures,
                why=why,
            )

    def deliver(self, group: str, peer: str, body: bytes) -> None:
        self.framesReceived += 1
        target = self.groups.get(group)
        if target is None:
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
        if isinstance(message, (AppendEntries, Heartbeat)) and message.commit > target.leaderCommit:
            target.leaderCommit = message.commit
        if target.receiver is not None and not target.paused:
            target.receiver(message)

    def close(self) -> None:
        self.closed = True
        for link in list(self.links.values()):
            if link.transport is not None:
                link.transport.loseConnection()
        self.links.clear()
