"""
Backpressure on the frame connections (L{suite.specter.chord.wire}): a
peer that sends calls and does not read the answers, or keeps too many
calls in flight, is no longer read from; the answers all arrive, in order,
once it reads, and the bytes held for it stay bounded.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import clientFromString, connectProtocol, serverFromString
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.specter.chord import wire
from suite.specter.chord.pacing import ReadingCore, ReadingInputs, ReadingMachine
from suite.specter.chord.wire import (
    CALL_WEIGHT,
    IN_FLIGHT_BUDGET,
    MAX_IN_FLIGHT,
    MAX_UNSENT,
    ChordServerFactory,
    FrameProtocol,
    pack,
    unpack,
)
from suite.specter.interfaces import IRing
from suite.specter.rpc import RPCFactory, RPCServerProtocol

TOKEN = b"0123456789abcdef" * 4
VALUE = b"v" * 65536


def frame(value: Any) -> bytes:
    data = pack(value)
    return struct.pack(">I", len(data)) + data


def frames(data: bytes) -> list[Any]:
    out = []
    offset = 0
    while offset < len(data):
        (n,) = struct.unpack(">I", data[offset : offset + 4])
        out.append(unpack(data[offset + 4 : offset + 4 + n]))
        offset += 4 + n
    return out


class SendBuffer(StringTransport):
    """
    A transport whose write buffer behaves as Twisted's: it tells its
    streaming producer to pause once more than L{MARK} bytes wait, and to
    resume once the peer has read them all.  C{producerState} is the
    reading side the protocol pauses.
    """

    MARK = 65536

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.peak = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        waiting = len(self.io.getvalue())
        self.peak = max(self.peak, waiting)
        if waiting > self.MARK and not self.full and self.producer is not None:
            self.full = True
            self.producer.pauseProducing()

    def peerReads(self) -> bytes:
        data = self.value()
        self.clear()
        if self.full and self.producer is not None:
            self.full = False
            self.producer.resumeProducing()
        return data


@implementer(IRing)
class HeldRing:
    """
    A ring whose C{get} answers a value (64 KiB by default) at once, and
    whose C{put} answers when the test says so.
    """

    def __init__(self, size: int = len(VALUE)) -> None:
        self.held: list[Deferred[Any]] = []
        self.value = b"v" * size

    def kv(self, op: str, key: bytes, args: list[Any]) -> Deferred[Any]:
        if op == "get":
            return succeed(self.value)
        d: Deferred[Any] = Deferred()
        self.held.append(d)
        return d

    def stats(self) -> dict[str, Any]:
        return {}

    def lookup(self, key: bytes) -> Deferred[Any]:
        raise NotImplementedError

    def lookupVersions(self, key: bytes) -> Deferred[Any]:
        raise NotImplementedError

    def holders(self, key: bytes) -> Deferred[Any]:
        raise NotImplementedError


class RPCBackpressureTests(SynchronousTestCase):
    """
    An authenticated RPC connection over L{SendBuffer}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.ring = HeldRing()
        self.factory = RPCFactory(self.ring, self.clock, token=TOKEN, uid=1000)
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert isinstance(proto, RPCServerProtocol)
        self.proto = proto
        self.transport = SendBuffer()
        proto.makeConnection(self.transport)
        proto.dataReceived(frame([0, 1, None, "auth", [TOKEN]]))
        self.clock.advance(0)
        self.assertEqual(frames(self.transport.peerReads()), [[1, 1, True, True]])

    def test_producer(self) -> None:
        """
        The protocol is its transport's streaming producer.
        """
        self.assertIs(self.transport.producer, self.proto)
        self.assertTrue(self.transport.streaming)
        self.assertTrue(verifyObject(IPushProducer, self.proto))

    def test_unreadAnswers(self) -> None:
        """
        A client pipelining gets of 64 KiB values without reading: the
        server stops reading once MAX_UNSENT bytes of answers wait, holds at
        most the transport's mark plus MAX_UNSENT plus one answer, and
        resumes each time the client reads; every answer arrives in order.
        """
        count = 300
        self.proto.dataReceived(
            b"".join(frame([0, 2 + i, None, "kv", ["get", b"k", []]]) for i in range(count))
        )
        self.clock.advance(0)
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(self.transport.producerState, "paused")
        answered = self.factory.requests
        self.assertLess(answered, count)
        self.assertGreaterEqual(answered * len(VALUE), MAX_UNSENT)
        # the client still does not read: nothing more is served
        self.clock.advance(0)
        self.assertEqual(self.factory.requests, answered)

        answers: list[Any] = []
        pauses = 0
        while len(answers) < count:
            pauses += self.transport.producerState == "paused"
            answers.extend(frames(self.transport.peerReads()))
            self.clock.advance(0)
        self.assertGreater(pauses, 2)
        self.assertEqual([a[1] for a in answers], list(range(2, 2 + count)))
        self.assertTrue(all(a[2] is True and a[3] == VALUE for a in answers))
        oneAnswer = len(frame([1, 2, True, VALUE]))
        self.assertLessEqual(self.transport.peak, SendBuffer.MARK + MAX_UNSENT + oneAnswer)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.proto.unsent, 0)

    def test_inFlight(self) -> None:
        """
        At MAX_IN_FLIGHT unanswered small calls the server stops reading
        (the rest of the pipelined frames wait unparsed); it resumes once
        the calls in flight weigh half the budget, and then serves the rest;
        answers keep the order they are given.
        """
        self.assertEqual(MAX_IN_FLIGHT, 1024)
        extra = 100
        total = MAX_IN_FLIGHT + extra
        call = [frame([0, 2 + i, None, "kv", ["put", b"k", [b"x"]]]) for i in range(total)]
        self.proto.dataReceived(b"".join(call))
        self.assertEqual(len(self.ring.held), MAX_IN_FLIGHT)
        self.assertEqual(self.proto.inFlight, sum(len(c) - 4 + CALL_WEIGHT for c in call[:MAX_IN_FLIGHT]))
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(self.proto._unprocessed, b"".join(call[MAX_IN_FLIGHT:]))

        resumedAt = None
        for i in range(MAX_IN_FLIGHT):
            self.assertEqual(self.transport.producerState, "paused")
            self.ring.held[i].callback(None)
            if self.transport.producerState == "producing":
                resumedAt = i + 1
                break
        assert resumedAt is not None
        # resumed at the first answer that left at most half the budget
        weights = [len(c) - 4 + CALL_WEIGHT for c in call[:MAX_IN_FLIGHT]]
        expected = next(k for k in range(MAX_IN_FLIGHT) if sum(weights[k:]) <= IN_FLIGHT_BUDGET // 2)
        self.assertEqual(resumedAt, expected)
        self.assertIn(MAX_IN_FLIGHT - resumedAt, range(MAX_IN_FLIGHT // 2 - 16, MAX_IN_FLIGHT // 2 + 1))
        self.assertEqual(len(self.ring.held), total)
        self.assertEqual(self.proto._unprocessed, b"")
        for d in self.ring.held[resumedAt:]:
            d.callback(None)
        self.clock.advance(0)
        answers = frames(self.transport.peerReads())
        self.assertEqual([a[1] for a in answers], list(range(2, 2 + total)))
        self.assertEqual(self.proto.inFlight, 0)

    def test_inFlightBytes(self) -> None:
        """
        Calls whose request frames are large stop reading sooner: here a
        budget of 4 MiB and 1 MiB puts (the default budget is 64 MiB);
        reading resumes at half.
        """
        self.patch(wire, "IN_FLIGHT_BUDGET", 4 * 2**20)
        value = b"x" * 2**20
        self.proto.dataReceived(
            b"".join(frame([0, 2 + i, None, "kv", ["put", b"k", [value]]]) for i in range(5))
        )
        self.assertEqual(len(self.ring.held), 4)
        self.assertEqual(self.transport.producerState, "paused")
        self.ring.held[0].callback(None)
        self.ring.held[1].callback(None)
        self.assertEqual(self.transport.producerState, "paused")
        self.ring.held[2].callback(None)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.ring.held), 5)

    def test_lostWhilePaused(self) -> None:
        """
        A connection lost while not read from fails nothing and writes
        nothing afterwards; the transport's stopProducing is harmless.
        """
        self.proto.dataReceived(
            b"".join(frame([0, 2 + i, None, "kv", ["put", b"k", [b"x"]]]) for i in range(MAX_IN_FLIGHT))
        )
        self.assertEqual(self.transport.producerState, "paused")
        self.proto.stopProducing()
        self.proto.connectionLost()
        for d in self.ring.held:
            d.callback(None)
        self.clock.advance(0)
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.proto.inFlight, 0)


class RingBackpressureTests(SynchronousTestCase):
    """
    The ring's accepting side is the same protocol; an end with calls of
    its own awaiting responses never stops reading.
    """

    def test_ringServer(self) -> None:
        """
        A peer process that keeps calling without reading is no longer read
        from once MAX_IN_FLIGHT calls wait.
        """
        held: list[Deferred[Any]] = []

        def dispatch(vid: Any, method: str, args: list[Any]) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            held.append(d)
            return d

        proto = ChordServerFactory(dispatch, Clock()).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = SendBuffer()
        proto.makeConnection(transport)
        proto.dataReceived(b"".join(frame([0, i, None, "ping", []]) for i in range(MAX_IN_FLIGHT + 1)))
        self.assertEqual(len(held), MAX_IN_FLIGHT)
        self.assertEqual(transport.producerState, "paused")

    def test_ownCallsKeepReading(self) -> None:
        """
        An end awaiting a response keeps reading however backed up its
        answers are; calling on a paused connection resumes reading, and the
        response is read.
        """
        clock = Clock()
        held: list[Deferred[Any]] = []

        def dispatch(vid: Any, method: str, args: list[Any]) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            held.append(d)
            return d

        proto = FrameProtocol(dispatch, clock)
        transport = SendBuffer()
        proto.makeConnection(transport)
        proto.dataReceived(b"".join(frame([0, i, None, "ping", []]) for i in range(MAX_IN_FLIGHT)))
        self.assertEqual(transport.producerState, "paused")
        result = proto.request(None, "ping", [])
        self.assertEqual(transport.producerState, "producing")
        clock.advance(0)
        self.assertEqual(frames(transport.peerReads()), [[0, 1, None, "ping", []]])
        # more calls to serve arrive; still read, since a response is due
        proto.dataReceived(frame([0, MAX_IN_FLIGHT, None, "ping", []]))
        self.assertEqual(len(held), MAX_IN_FLIGHT + 1)
        self.assertEqual(transport.producerState, "producing")
        proto.dataReceived(frame([1, 1, True, "pong"]))
        self.assertEqual(self.successResultOf(result), "pong")
        # the next call served pauses again
        proto.dataReceived(frame([0, MAX_IN_FLIGHT + 1, None, "ping", []]))
        self.assertEqual(transport.producerState, "paused")

    def test_unsentPausesOnlyAnswers(self) -> None:
        """
        Requests an end writes itself, however many wait in the transport,
        never stop its reading.
        """
        proto = FrameProtocol(None, None)
        transport = SendBuffer()
        proto.makeConnection(transport)
        for _ in range(200):
            proto.request(None, "put", [VALUE])
        self.assertTrue(transport.full)
        self.assertEqual(proto.unsent, 0)
        self.assertEqual(transport.producerState, "producing")


class ReadingMachineTests(SynchronousTestCase):
    """
    Every input of the reading machine in every state.
    """

    def machine(self, state: str) -> tuple[ReadingInputs, list[str]]:
        done: list[str] = []
        m = ReadingMachine(
            ReadingCore(pause=lambda: done.append("pause"), resume=lambda: done.append("resume"))
        )
        if state in ("Paused", "Closed"):
            m.congested()
        if state == "Closed":
            m.lost()
        del done[:]
        return m, done

    def test_reading(self) -> None:
        """
        Reading: congestion pauses, relief changes nothing, loss closes.
        """
        m, done = self.machine("Reading")
        m.relieved()
        self.assertEqual(done, [])
        m.congested()
        self.assertEqual(done, ["pause"])
        m, done = self.machine("Reading")
        m.lost()
        m.congested()
        self.assertEqual(done, [])

    def test_paused(self) -> None:
        """
        Paused: more congestion changes nothing, relief resumes, loss
        closes.
        """
        m, done = self.machine("Paused")
        m.congested()
        self.assertEqual(done, [])
        m.relieved()
        self.assertEqual(done, ["resume"])
        m.congested()
        self.assertEqual(done, ["resume", "pause"])
        m, done = self.machine("Paused")
        m.lost()
        m.relieved()
        self.assertEqual(done, [])

    def test_closed(self) -> None:
        """
        Closed: nothing acts on the transport any more.
        """
        m, done = self.machine("Closed")
        m.congested()
        m.relieved()
        m.lost()
        m.relieved()
        self.assertEqual(done, [])


class _Collector(Int32StringReceiver):
    """
    A client that writes calls and collects the answers.
    """

    MAX_LENGTH = 16 * 2**20

    def __init__(self, count: int) -> None:
        self.answers: list[Any] = []
        self.count = count
        self.done: Deferred[list[Any]] = Deferred()

    def stringReceived(self, data: bytes) -> None:
        self.answers.append(unpack(data))
        if len(self.answers) == self.count:
            self.done.callback(self.answers)


def _buffered(transport: Any) -> int:
    # a TCP transport's write buffer (twisted.internet.abstract.FileDescriptor)
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class RealSocketTests(TestCase):
    """
    Over a real loopback TCP connection, with the reactor's own write
    buffer telling the protocol when it fills.
    """

    timeout = 60

    async def test_clientNotReading(self) -> None:
        """
        A client writes 64 gets of 1 MiB values and reads nothing: the server
        stops reading, its write buffer never holds more than its mark plus
        MAX_UNSENT plus one answer; once the client reads, all the answers
        arrive, in order.
        """
        from twisted.internet import reactor

        ring = HeldRing(2**20)
        factory = RPCFactory(ring, reactor, token=TOKEN)
        peaks: list[int] = []
        stopped: Deferred[None] = Deferred()
        build = factory.buildProtocol

        def watched(addr: Any) -> Any:
            proto = build(addr)
            connect = proto.makeConnection

            def makeConnection(transport: Any) -> None:
                write, pause = transport.write, transport.pauseProducing

                def recordingWrite(data: bytes) -> None:
                    write(data)
                    peaks.append(_buffered(transport))

                def recordingPause() -> None:
                    pause()
                    if not stopped.called:
                        stopped.callback(None)

                transport.write, transport.pauseProducing = recordingWrite, recordingPause
                connect(transport)

            proto.makeConnection = makeConnection  # type: ignore[method-assign]
            return proto

        factory.buildProtocol = watched  # type: ignore[method-assign]
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        count = 64
        client = _Collector(count + 1)
        await connectProtocol(clientFromString(reactor, f"tcp:127.0.0.1:{port.getHost().port}"), client)
        transport: Any = client.transport
        self.addCleanup(transport.loseConnection)
        transport.pauseProducing()
        transport.write(
            frame([0, 1, None, "auth", [TOKEN]])
            + b"".join(frame([0, 2 + i, None, "kv", ["get", b"k", []]]) for i in range(count))
        )
        await stopped
        self.assertLess(factory.requests, count)
        transport.resumeProducing()
        answers = await client.done
        self.assertEqual([a[1] for a in answers], list(range(1, 2 + count)))
        self.assertTrue(all(a[3] == ring.value for a in answers[1:]))
        oneAnswer = len(frame([1, 2, True, ring.value]))
        self.assertLessEqual(max(peaks), 65536 + MAX_UNSENT + oneAnswer)
