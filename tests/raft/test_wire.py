"""
Message encoding, the frame protocol and the transport's rejections.
"""

from __future__ import annotations

from typing import Any

import msgpack
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.raft.interfaces import IRaftTransport
from suite.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    MalformedMessage,
    Message,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
    decodeMessage,
    encodeMessage,
)
from suite.raft.transport import (
    LENGTH,
    FrameProtocol,
    InboundRaftProtocol,
    OutboundRaftProtocol,
    RaftTransport,
    WriteCoalescer,
)

SAMPLES: list[Message] = [
    RequestVote("a", "b", 3, 10, 2, preVote=True),
    RequestVoteResponse("b", "a", 3, True, preVote=True),
    AppendEntries("a", "b", 3, 9, 2, (Entry(3, 10, 0, b"cmd", "c", 4), Entry(3, 11, 1)), 8),
    AppendEntriesResponse("b", "a", 3, False, 0, 9, 2, 7),
    Heartbeat("a", "b", 3, 8, 5),
    HeartbeatResponse("b", "a", 3, 5, 11),
    InstallSnapshot("a", "b", 3, SnapshotMeta(7, 2, Configuration(frozenset({"a", "b"}))), 0, b"xy", True, 2),
    InstallSnapshotResponse("b", "a", 3, 7, 2, True),
    TimeoutNow("a", "b", 3),
]


class EncodingTests(SynchronousTestCase):
    """
    L{encodeMessage} / L{decodeMessage}.
    """

    def test_roundTrip(self) -> None:
        """
        Every message type survives encoding.
        """
        for m in SAMPLES:
            self.assertEqual(decodeMessage(encodeMessage(m)), m)

    def test_malformed(self) -> None:
        """
        Garbage, unknown types, wrong arity and wrong field types are all
        L{MalformedMessage}.
        """
        bad = [
            b"\xc1\xc1",
            msgpack.packb([99, "a"]),
            msgpack.packb([9, "a", "b"]),
            msgpack.packb([9, "a", "b", "three"]),
            msgpack.packb([9, "a", "b", True]),
            msgpack.packb({"type": 1}),
            msgpack.packb([3, "a", "b", 1, 0, 0, [[1, 2, 3]], 0]),
        ]
        for frame in bad:
            self.assertRaises(MalformedMessage, decodeMessage, frame)


class InboundTests(SynchronousTestCase):
    """
    L{InboundRaftProtocol} on a StringTransport.
    """

    def setUp(self) -> None:
        self.owner = RaftTransport("b", Clock(), lambda a, f: None, {"a": "127.0.0.1:1"}, secure=False)
        self.received: list[Message] = []
        self.owner.setReceiver(self.received.append)
        self.proto = InboundRaftProtocol(self.owner)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def frame(self, payload: bytes) -> bytes:
        return LENGTH.pack(len(payload)) + payload

    def test_verifyTransport(self) -> None:
        """
        L{RaftTransport} provides L{IRaftTransport}.
        """
        self.assertTrue(verifyObject(IRaftTransport, self.owner))

    def test_deliversFramesSplitAnyhow(self) -> None:
        """
        Frames arriving a byte at a time are reassembled.
        """
        data = b"".join(self.frame(encodeMessage(m)) for m in SAMPLES[:3])
        for i in range(len(data)):
            self.proto.dataReceived(data[i : i + 1])
        self.assertEqual(self.received, SAMPLES[:3])

    def test_oversizedFrameClosesConnection(self) -> None:
        """
        A length prefix over the limit drops the connection without reading it.
        """
        self.proto.dataReceived(LENGTH.pack(self.owner.maxFrameBytes + 1) + b"x" * 10)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.received, [])

    def test_malformedFrameRejected(self) -> None:
        """
        A malformed frame is counted and dropped; the next good one is delivered.
        """
        self.proto.dataReceived(self.frame(b"\x93\x01\x02") + self.frame(encodeMessage(SAMPLES[0])))
        self.assertEqual(self.owner.rejected, 1)
        self.assertEqual(self.received, [SAMPLES[0]])

    def test_impersonationRejected(self) -> None:
        """
        On an authenticated connection, a message whose source is another
        node is rejected.
        """
        self.proto.peerId = "c"
        self.proto.dataReceived(self.frame(encodeMessage(SAMPLES[0])))
        self.assertEqual(self.received, [])
        self.assertEqual(self.owner.rejected, 1)

    def test_unknownCertificateRejected(self) -> None:
        """
        A secure transport closes a connection whose certificate names no
        known node.
        """
        self.owner.secure = True
        proto = InboundRaftProtocol(self.owner)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.handshakeCompleted()
        self.assertTrue(transport.disconnecting)
        proto.dataReceived(self.frame(encodeMessage(SAMPLES[0])))
        self.assertEqual(self.received, [])

    def test_noDelayThroughWrappers(self) -> None:
        """
        Frames turn Nagle's algorithm off on the TCP transport, also when it
        sits under a wrapper (as TLS does).
        """
        calls: list[bool] = []

        class TCP(StringTransport):
            def setTcpNoDelay(self, enabled: bool) -> None:
                calls.append(enabled)

        class Wrapper(StringTransport):
            def __init__(self, inner: StringTransport) -> None:
                super().__init__()
                self.transport = inner

        InboundRaftProtocol(self.owner).makeConnection(Wrapper(TCP()))
        self.assertEqual(calls, [True])


class CountingTransport(StringTransport):
    """
    A StringTransport that remembers each write.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class CoalescingTests(SynchronousTestCase):
    """
    L{FrameProtocol.sendFrame} with and without a L{WriteCoalescer}.
    """

    def connect(self, clock: Clock | None) -> tuple[FrameProtocol, CountingTransport]:
        proto = FrameProtocol()
        proto.coalescer = WriteCoalescer(clock) if clock is not None else None
        transport = CountingTransport()
        proto.makeConnection(transport)
        return proto, transport

    def test_immediateWithoutClock(self) -> None:
        """
        Without a clock every frame is written at once, on its own.
        """
        proto, transport = self.connect(None)
        proto.sendFrame(b"one")
        proto.sendFrame(b"two")
        self.assertEqual(transport.writes, [LENGTH.pack(3) + b"one", LENGTH.pack(3) + b"two"])

    def test_oneWritePerTurn(self) -> None:
        """
        With a clock, the frames of one turn leave together in one write
        when the turn ends (C{callLater(0)}), in the order they were sent;
        the next turn's frames make the next write.
        """
        clock = Clock()
        proto, transport = self.connect(clock)
        proto.sendFrame(b"one")
        proto.sendFrame(b"two")
        self.assertEqual(transport.writes, [])
        clock.advance(0)
        self.assertEqual(transport.writes, [LENGTH.pack(3) + b"one" + LENGTH.pack(3) + b"two"])
        proto.sendFrame(b"three")
        clock.advance(0)
        self.assertEqual(transport.writes[1:], [LENGTH.pack(5) + b"three"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_flushNow(self) -> None:
        """
        L{FrameProtocol.flushFrames} writes at once; the turn's end then
        has nothing left to write for it, and flushing with nothing queued
        writes nothing.
        """
        clock = Clock()
        proto, transport = self.connect(clock)
        proto.sendFrame(b"x")
        proto.flushFrames()
        self.assertEqual(transport.writes, [LENGTH.pack(1) + b"x"])
        clock.advance(0)
        proto.flushFrames()
        self.assertEqual(len(transport.writes), 1)

    def test_oneTimerForManyConnections(self) -> None:
        """
        Connections sharing a coalescer share one scheduled flush per turn;
        each gets one write.
        """
        clock = Clock()
        coalescer = WriteCoalescer(clock)
        links = []
        for _ in range(3):
            proto = FrameProtocol()
            proto.coalescer = coalescer
            transport = CountingTransport()
            proto.makeConnection(transport)
            links.append((proto, transport))
        for proto, _ in links:
            proto.sendFrame(b"a")
            proto.sendFrame(b"b")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual([t.writes for _, t in links], [[LENGTH.pack(1) + b"a" + LENGTH.pack(1) + b"b"]] * 3)

    def test_lostConnectionDropsQueue(self) -> None:
        """
        Frames queued when the connection is lost are dropped.
        """
        clock = Clock()
        proto, transport = self.connect(clock)
        proto.sendFrame(b"x")
        proto.connectionLost(None)
        clock.advance(0)
        self.assertEqual(transport.writes, [])

    def test_outboundLinksCoalesceWhenAsked(self) -> None:
        """
        L{RaftTransport} gives its outbound links its clock when
        C{coalesce} is true (two messages to a peer in one turn: one
        write) and writes each message at once when it is false.
        """
        for coalesce, expected in ((True, 1), (False, 2)):
            clock = Clock()
            owner = RaftTransport(
                "a", clock, lambda a, f: None, {"b": "127.0.0.1:1"}, secure=False, coalesce=coalesce
            )
            link = OutboundRaftProtocol(owner, "b")
            transport = CountingTransport()
            link.makeConnection(transport)
            self.assertIs(owner.outbound["b"], link)
            owner.send(Heartbeat("a", "b", 3, 8, 5))
            owner.send(Heartbeat("a", "b", 3, 8, 6))
            clock.advance(0)
            self.assertEqual(len(transport.writes), expected)
            received: list[Message] = []
            inbound = RaftTransport("b", Clock(), lambda a, f: None, {"a": "127.0.0.1:1"}, secure=False)
            inbound.setReceiver(received.append)
            proto = InboundRaftProtocol(inbound)
            proto.makeConnection(StringTransport())
            proto.dataReceived(transport.value())
            self.assertEqual([m.context for m in received], [5, 6])  # type: ignore[attr-defined]
            owner.close()


class PlainDeadlineTests(SynchronousTestCase):
    """
    Without TLS an accepted connection must deliver a complete frame within
    10 s and then one at least every 60 s; quiet outbound links send empty
    keepalive frames every 5 s, so a healthy link is never cut.
    """

    def setUp(self) -> None:
        from twisted.logger import globalLogPublisher

        self.clock = Clock()
        self.owner = RaftTransport("b", self.clock, lambda a, f: None, {"a": "127.0.0.1:1"}, secure=False)
        self.received: list[Message] = []
        self.owner.setReceiver(self.received.append)
        self.events: list[dict[str, object]] = []
        observer: Any = self.events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def accept(self) -> tuple[InboundRaftProtocol, StringTransport]:
        proto = InboundRaftProtocol(self.owner)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def closedLines(self) -> list[str]:
        return [str(e["why"]) for e in self.events if "closing Raft connection" in str(e.get("log_format"))]

    def frame(self, message: Message) -> bytes:
        payload = encodeMessage(message)
        return LENGTH.pack(len(payload)) + payload

    def test_silentConnectionClosed(self) -> None:
        """
        A connection that sends nothing is closed 10 s after the accept,
        with one line saying why.
        """
        proto, transport = self.accept()
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.closedLines(), ["no complete frame within 10 seconds of connecting"])
        proto.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_partialFrameStallClosed(self) -> None:
        """
        The bytes of a frame that never completes do not count: a first
        frame trickled but never finished is closed at 10 s; after a good
        frame, a partial one and silence are closed 60 s after the good one.
        """
        proto, transport = self.accept()
        data = self.frame(SAMPLES[4])
        for i in range(9):
            proto.dataReceived(data[i : i + 1])
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.received, [])

        proto, transport = self.accept()
        proto.dataReceived(data)
        self.assertEqual(self.received, [SAMPLES[4]])
        proto.dataReceived(data[:-1])
        for _ in range(59):
            self.clock.advance(1)
            self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.closedLines()[-1], "no complete frame for 60 seconds")

    def test_heartbeatsKeepConnection(self) -> None:
        """
        Frames at the heartbeat interval (here Constellation's default of
        200 ms) and keepalive frames every 5 s keep a connection for as long
        as they come; keepalives are not delivered and not counted as
        malformed.
        """
        proto, transport = self.accept()
        for _ in range(3000):  # ten minutes of heartbeats
            proto.dataReceived(self.frame(SAMPLES[4]))
            self.clock.advance(0.2)
        for _ in range(120):  # ten minutes of keepalives
            proto.dataReceived(LENGTH.pack(0))
            self.clock.advance(5)
        self.assertFalse(transport.disconnecting)
        self.assertEqual((len(self.received), self.owner.rejected), (3000, 0))
        self.clock.advance(55)
        self.assertTrue(transport.disconnecting)

    def test_quietLinkKeptAlive(self) -> None:
        """
        An outbound link with nothing to send (a follower's link to another
        follower between elections) sends an empty frame after 5 s without
        one, and none while it sends messages; the receiving side keeps it
        for an hour of silence and delivers the next message.
        """
        from twisted.test.iosim import connect, makeFakeClient, makeFakeServer

        sender = RaftTransport("a", self.clock, lambda a, f: None, {"b": "127.0.0.1:1"}, secure=False)
        inbound = InboundRaftProtocol(self.owner)
        outbound = OutboundRaftProtocol(sender, "b")
        server, client = makeFakeServer(inbound), makeFakeClient(outbound)
        pump = connect(inbound, server, outbound, client, greet=False)
        self.assertIs(sender.outbound["b"], outbound)
        written: list[bytes] = []
        original = client.write

        def write(data: bytes) -> None:
            written.append(data)
            original(data)

        client.write = write
        for _ in range(720):
            self.clock.advance(5)
            pump.flush()
        self.assertFalse(server.disconnecting)
        self.assertEqual(written, [LENGTH.pack(0)] * 720)
        del written[:]
        for _ in range(100):
            sender.send(Heartbeat("a", "b", 3, 8, 5))
            self.clock.advance(1)
            pump.flush()
        self.assertEqual(len(written), 100)
        self.assertEqual(len(self.received), 100)
        self.assertEqual(self.closedLines(), [])
        outbound.transport.loseConnection()  # type: ignore[union-attr]
        pump.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_tlsConnectionsNotTimed(self) -> None:
        """
        With TLS the handshake deadline and certificates guard a
        connection (L{suite.pki.endpoints}); no frame deadline or keepalive
        runs.
        """
        owner = RaftTransport("b", self.clock, lambda a, f: None, {"a": "127.0.0.1:1"}, secure=True)
        proto = InboundRaftProtocol(owner)
        proto.makeConnection(StringTransport())
        link = OutboundRaftProtocol(owner, "a")
        link.makeConnection(StringTransport())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_keepaliveBelowTimeouts(self) -> None:
        """
        A keepalive interval that would let the peer's deadlines pass is
        refused.
        """
        for kw in ({"keepaliveInterval": 60.0}, {"keepaliveInterval": 0.0}, {"firstFrameTimeout": 5.0}):
            self.assertRaises(
                ValueError, RaftTransport, "b", self.clock, lambda a, f: None, {}, secure=False, **kw
            )
