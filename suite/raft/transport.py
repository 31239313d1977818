"""
Node-to-node transport: length-prefixed msgpack frames over mutually
authenticated TLS.

A frame is a 4-byte big-endian length and that many bytes of msgpack
(L{suite.raft.messages.encodeMessage}); frames over C{maxFrameBytes} close
the connection.  Each node dials one outbound connection per peer for what
it sends and accepts inbound connections for what it receives.  A peer's
node id is the common name of its certificate: frames whose C{src} differs,
or from a certificate naming no known node, are logged and rejected.

Without TLS (C{secure=False}: development, tests, Constellation without a
gossip key) nothing authenticates a connection, so time bounds it instead:
an accepted connection must deliver a complete frame within
C{firstFrameTimeout} (10 s, as the TLS listeners' handshake deadline) and
then one at least every C{idleTimeout} (60 s), or it is closed.  Bytes of a
frame that never completes do not count.  Healthy links never go that
quiet: the leader's heartbeats reach each follower several times a second
with the suite's settings, and a link with nothing to say (a follower's
link to another follower between elections) sends an empty keepalive frame
after C{keepaliveInterval} (5 s) without a frame, twelve times within the
idle timeout.  Inbound connections ignore empty frames.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from suite.netutil import dropConnection, noDelay
from suite.raft.interfaces import IRaftTransport
from suite.raft.messages import MalformedMessage, Message, decodeMessage, encodeMessage

log = Logger()
LENGTH = struct.Struct(">I")
DEFAULT_MAX_FRAME = 8 * 1024 * 1024
#: Without TLS: seconds from accepting a connection to its first complete frame.
FIRST_FRAME_SECONDS = 10.0
#: Without TLS: seconds without a complete frame before an inbound
#: connection is closed.
IDLE_SECONDS = 60.0
#: Without TLS: seconds without a frame sent before an outbound link sends
#: an empty keepalive frame.
KEEPALIVE_SECONDS = 5.0
_KEEPALIVE = b""


class WriteCoalescer:
    """
    Collects the connections that queued frames during a reactor turn and
    flushes them all from one C{callLater(0)}: each connection's frames of
    the turn leave in one transport write, at the cost of one timer per
    turn however many connections wrote.

    Off by default (C{--coalesce-writes}): Twisted's TLS layer already
    buffers a connection's writes until the end of the turn and encrypts
    them as one record batch, so over TLS this saves little and adds one
    reactor iteration before the bytes reach the socket (measured in
    docs/performance.md); on plain TCP it saves one C{write} per frame.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._dirty: list[FrameProtocol] = []
        self._call: Any = None

    def queued(self, proto: FrameProtocol) -> None:
        self._dirty.append(proto)
        if self._call is None:
            self._call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        self._call = None
        dirty, self._dirty = self._dirty, []
        for proto in dirty:
            proto.flushFrames()


class FrameProtocol(Protocol):
    """
    Split a byte stream into size-limited frames.
    """

    maxFrameBytes = DEFAULT_MAX_FRAME
    #: When set, L{sendFrame} coalesces: the frames sent during a reactor
    #: turn are queued and written together when the coalescer flushes.
    coalescer: WriteCoalescer | None = None

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._unsent: list[bytes] = []

    def makeConnection(self, transport: Any) -> None:
        noDelay(transport)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if not self._buffer and len(data) >= 4:
            # The common case on request/response links: exactly one whole
            # frame arrived; hand it on without buffering and copying.
            (length,) = LENGTH.unpack_from(data)
            if length == len(data) - 4 and length <= self.maxFrameBytes:
                self.frameReceived(data[4:])
                return
        self._buffer.extend(data)
        buf = self._buffer
        offset = 0
        while len(buf) - offset >= 4:
            (length,) = LENGTH.unpack_from(buf, offset)
            if length > self.maxFrameBytes:
                log.warn(
                    "closing connection from {peer}: frame of {length} bytes exceeds the {limit}-byte limit",
                    peer=self.describePeer(),
                    length=length,
                    limit=self.maxFrameBytes,
                )
                del buf[:]
                self.flushFrames()
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            if len(buf) - offset - 4 < length:
                break
            frame = bytes(buf[offset + 4 : offset + 4 + length])
            offset += 4 + length
            self.frameReceived(frame)
            if self.transport is None or getattr(self.transport, "disconnecting", False):
                break
        del buf[:offset]

    def sendFrame(self, frame: bytes) -> None:
        coalescer = self.coalescer
        if coalescer is None:
            self.transport.write(LENGTH.pack(len(frame)) + frame)  # type: ignore[union-attr]
            return
        unsent = self._unsent
        if not unsent:
            coalescer.queued(self)
        unsent.append(LENGTH.pack(len(frame)))
        unsent.append(frame)

    def flushFrames(self) -> None:
        """
        Write the queued frames now (one transport write).
        """
        if not self._unsent:
            return
        data = b"".join(self._unsent)
        self._unsent.clear()
        if self.transport is not None:
            self.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self._unsent.clear()

    def frameReceived(self, frame: bytes) -> None:
        raise NotImplementedError

    def describePeer(self) -> str:
        try:
            return str(self.transport.getPeer())  # type: ignore[union-attr]
        except Exception:  # only names the peer in log lines
            return "unknown peer"


def certificateName(transport: Any) -> str | None:
    """
    The common name of the peer's certificate, or None.
    """
    from suite.pki.peer import peerIdentity
    from suite.pki.verify import VerificationError

    try:
        return peerIdentity(transport).commonName
    except VerificationError:  # no certificate, or unparsable names
        return None


@implementer(IHandshakeListener)
class InboundRaftProtocol(FrameProtocol):
    """
    Receives Raft messages from one authenticated peer.
    """

    def __init__(self, owner: RaftTransport) -> None:
        super().__init__()
        self.owner = owner
        self.peerId: str | None = None
        self.maxFrameBytes = owner.maxFrameBytes
        #: Without TLS: the deadline of the next complete frame, and when
        #: the last one arrived (None before the first).
        self._deadline: Any = None
        self._lastFrame: float | None = None

    def handshakeCompleted(self) -> None:
        name = certificateName(self.transport) if self.owner.secure else None
        if self.owner.secure and (name is None or name not in self.owner.knownNodes()):
            log.warn(
                "rejecting Raft connection from {peer}: certificate names unknown node {name}",
                peer=self.describePeer(),
                name=name,
            )
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.peerId = name

    def connectionMade(self) -> None:
        if not self.owner.secure:
            self.peerId = ""
            self._deadline = self.owner.clock.callLater(self.owner.firstFrameTimeout, self._frameLate)

    def _frameLate(self) -> None:
        """
        No complete frame in time: close, unless one arrived since the
        deadline was set (then it moves to the idle timeout after that one).
        """
        self._deadline = None
        owner = self.owner
        if self._lastFrame is not None:
            remaining = self._lastFrame + owner.idleTimeout - owner.clock.seconds()
            if remaining > 0:
                self._deadline = owner.clock.callLater(remaining, self._frameLate)
                return
            why = f"no complete frame for {owner.idleTimeout:g} seconds"
        else:
            why = f"no complete frame within {owner.firstFrameTimeout:g} seconds of connecting"
        log.warn("closing Raft connection from {peer}: {why}", peer=self.describePeer(), why=why)
        dropConnection(self.transport)

    def connectionLost(self, reason: Any = None) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        super().connectionLost(reason)

    def frameReceived(self, frame: bytes) -> None:
        if self._deadline is not None:
            self._lastFrame = self.owner.clock.seconds()
        if frame == _KEEPALIVE:
            return
        if self.peerId is None:
            log.warn("dropping Raft frame from {peer} before authentication", peer=self.describePeer())
            return
        try:
            message = decodeMessage(frame)
        except MalformedMessage as e:
            log.warn(
                "rejecting malformed Raft frame from {peer}: {reason}",
                peer=self.describePeer(),
                reason=str(e),
            )
            self.owner.rejected += 1
            return
        if self.peerId and message.src != self.peerId:
            log.warn(
                "rejecting Raft message claiming to be from {src} on a connection authenticated as {peer}",
                src=message.src,
                peer=self.peerId,
            )
            self.owner.rejected += 1
            return
        self.owner.deliver(message)


@implementer(IHandshakeListener)
class OutboundRaftProtocol(FrameProtocol):
    """
    Carries Raft messages to one peer.
    """

    def __init__(self, owner: RaftTransport, peer: str) -> None:
        super().__init__()
        self.owner, self.peer = owner, peer
        #: Without TLS: the keepalive timer, and whether a frame was sent
        #: since it last ran.
        self._keepalive: Any = None
        self._sent = False

    def handshakeCompleted(self) -> None:
        name = certificateName(self.transport)
        if name != self.peer:
            log.warn(
                "peer at {addr} presented certificate {name}, expected {peer}",
                addr=self.describePeer(),
                name=name,
                peer=self.peer,
            )
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.owner.connected(self.peer, self)

    def connectionMade(self) -> None:
        if not self.owner.secure:
            self._keepalive = self.owner.clock.callLater(self.owner.keepaliveInterval, self._idle)
            self.owner.connected(self.peer, self)

    def sendFrame(self, frame: bytes) -> None:
        self._sent = True
        super().sendFrame(frame)

    def _idle(self) -> None:
        """
        Without TLS: send an empty frame if nothing was sent since the last
        run, so the peer's idle timeout never closes a link that is only
        quiet.
        """
        if not self._sent:
            self.sendFrame(_KEEPALIVE)
        self._sent = False
        self._keepalive = self.owner.clock.callLater(self.owner.keepaliveInterval, self._idle)

    def frameReceived(self, frame: bytes) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None
        super().connectionLost(reason)
        self.owner.disconnected(self.peer, self)


@implementer(IRaftTransport)
class RaftTransport:
    """
    L{IRaftTransport} over TCP+TLS endpoints.

    @param connect: C{connect(address, protocolFactory) -> Deferred}; how to
        dial a peer's address (an mTLS client endpoint in production).
    @param firstFrameTimeout: without TLS, seconds from accepting a
        connection to its first complete frame.
    @param idleTimeout: without TLS, seconds without a complete frame
        before an inbound connection is closed.
    @param keepaliveInterval: without TLS, seconds without a frame sent
        before an outbound link sends an empty frame; below C{idleTimeout}
        and C{firstFrameTimeout}.
    """

    def __init__(
        self,
        nodeId: str,
        clock: IReactorTime,
        connect: Callable[[str, Factory], Any],
        peers: dict[str, str],
        secure: bool = True,
        maxFrameBytes: int = DEFAULT_MAX_FRAME,
        maxQueuedBytes: int = 32 * 1024 * 1024,
        coalesce: bool = False,
        firstFrameTimeout: float = FIRST_FRAME_SECONDS,
        idleTimeout: float = IDLE_SECONDS,
        keepaliveInterval: float = KEEPALIVE_SECONDS,
    ) -> None:
        if not 0 < keepaliveInterval < min(idleTimeout, firstFrameTimeout):
            raise ValueError(
                f"keepaliveInterval ({keepaliveInterval}) must be positive and below idleTimeout "
                f"({idleTimeout}) and firstFrameTimeout ({firstFrameTimeout})"
            )
        self.firstFrameTimeout = firstFrameTimeout
        self.idleTimeout = idleTimeout
        self.keepaliveInterval = keepaliveInterval
        self.nodeId = nodeId
        self.clock = clock
        self.connect = connect
        self.peers = dict(peers)
        self.secure = secure
        self.maxFrameBytes = maxFrameBytes
        self.maxQueuedBytes = maxQueuedBytes
        self.coalescer = WriteCoalescer(clock) if coalesce else None
        self.receiver: Callable[[Message], None] | None = None
        self.outbound: dict[str, OutboundRaftProtocol] = {}
        self.dialing: dict[str, float] = {}
        self.rejected = 0

    def knownNodes(self) -> set[str]:
        return set(self.peers) | {self.nodeId}

    def setReceiver(self, receiver: Callable[[Message], None]) -> None:
        self.receiver = receiver

    def updatePeers(self, addresses: Mapping[str, str]) -> None:
        for peer, address in addresses.items():
            if peer != self.nodeId and address:
                self.peers[peer] = address

    def deliver(self, message: Message) -> None:
        if self.receiver is not None:
            self.receiver(message)

    def serverFactory(self) -> Factory:
        """
        The factory for the inbound listener.
        """
        return Factory.forProtocol(lambda: InboundRaftProtocol(self))

    def send(self, message: Message) -> None:
        proto = self.outbound.get(message.dst)
        if proto is not None and proto.transport is not None:
            frame = encodeMessage(message)
            proto.sendFrame(frame)
            return
        self._dial(message.dst)

    def _dial(self, peer: str) -> None:
        address = self.peers.get(peer)
        if address is None:
            return
        now = self.clock.seconds()
        if self.dialing.get(peer, -1.0) > now:
            return
        self.dialing[peer] = now + 0.1
        factory: Factory = Factory.forProtocol(lambda: OutboundRaftProtocol(self, peer))
        d = self.connect(address, factory)
        d.addErrback(
            lambda f: log.debug(
                "cannot reach {peer} at {address}: {why}", peer=peer, address=address, why=f.getErrorMessage()
            )
        )

    def connected(self, peer: str, proto: OutboundRaftProtocol) -> None:
        self.dialing.pop(peer, None)
        proto.coalescer = self.coalescer
        old = self.outbound.get(peer)
        if old is not None and old is not proto and old.transport is not None:
            old.transport.loseConnection()
        self.outbound[peer] = proto

    def disconnected(self, peer: str, proto: OutboundRaftProtocol) -> None:
        if self.outbound.get(peer) is proto:
            del self.outbound[peer]

    def close(self) -> None:
        for proto in list(self.outbound.values()):
            if proto.transport is not None:
                proto.flushFrames()
                proto.transport.loseConnection()
        self.outbound.clear()
