"""
Unit tests of the tunnel frame format and the stream multiplexer.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.tunnel.frames import (
    CLOSE,
    CONTROL,
    DATA,
    OPEN,
    WINDOW,
    FrameDecoder,
    FrameError,
    encodeControl,
    encodeFrame,
)
from suite.specter.tunnel.mux import Link, LocalSide, Stream


class _Opener(Link):
    streamParity = 1


class _Acceptor(Link):
    streamParity = 2

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.opened: list[tuple[Stream, dict[str, Any]]] = []
        self.control: list[dict[str, Any]] = []

    def streamOpened(self, stream: Stream, meta: dict[str, Any]) -> None:
        self.opened.append((stream, meta))

    def controlReceived(self, message: dict[str, Any]) -> None:
        self.control.append(message)


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(data)
    return out


def _local(stream: Stream) -> tuple[LocalSide, StringTransport]:
    side = LocalSide()
    transport = StringTransport()
    side.makeConnection(transport)
    stream.attach(side)
    return side, transport


class FrameTests(SynchronousTestCase):
    def test_roundTripSplit(self) -> None:
        """
        Frames fed one byte at a time come out whole and in order.
        """
        data = encodeFrame(DATA, 3, b"hello") + encodeControl({"t": "ping"}) + encodeFrame(CLOSE, 3)
        out: list[tuple[int, int, bytes]] = []
        decoder = FrameDecoder(lambda k, s, p: out.append((k, s, p)))
        for i in range(len(data)):
            decoder.feed(data[i : i + 1])
        self.assertEqual([(k, s) for k, s, _ in out], [(DATA, 3), (CONTROL, 0), (CLOSE, 3)])
        self.assertEqual(out[0][2], b"hello")

    def test_oversizedFrameRefused(self) -> None:
        """
        A frame longer than the limit is a FrameError, before its payload arrives.
        """
        decoder = FrameDecoder(lambda k, s, p: None, maxPayload=10)
        self.assertRaises(FrameError, decoder.feed, encodeFrame(DATA, 1, b"x" * 11)[:9])

    def test_brokenLinkCloses(self) -> None:
        """
        A link receiving garbage closes its connection.
        """
        link = _Acceptor()
        transport = StringTransport()
        link.makeConnection(transport)
        link.dataReceived(b"\x09\x00\x00\x00\x01\xff\xff\xff\xff")
        self.assertTrue(transport.disconnecting)


class FlowControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = _Opener(window=1000, chunk=300)
        self.openerWire = StringTransport()
        self.opener.makeConnection(self.openerWire)
        self.acceptor = _Acceptor(window=1000, chunk=300)
        self.acceptorWire = StringTransport()
        self.acceptor.makeConnection(self.acceptorWire)

    def pump(self) -> None:
        """
        Move bytes both ways until both wires are empty.
        """
        while self.openerWire.value() or self.acceptorWire.value():
            a, b = self.openerWire.value(), self.acceptorWire.value()
            self.openerWire.clear()
            self.acceptorWire.clear()
            if a:
                self.acceptor.dataReceived(a)
            if b:
                self.opener.dataReceived(b)

    def test_openAndSplice(self) -> None:
        """
        Bytes written on one side come out of the other side's local
        connection, split into frames no larger than the chunk size.
        """
        stream = self.opener.openStream({"kind": "http"})
        _, visitor = _local(stream)
        frames = _frames(self.openerWire.value())
        self.assertEqual(frames[0][0], OPEN)
        self.pump()
        ((remote, meta),) = self.acceptor.opened
        self.assertEqual(meta, {"kind": "http"})
        _, target = _local(remote)
        stream.send(b"a" * 700)
        self.assertEqual(
            [len(p) for k, _, p in _frames(self.openerWire.value()) if k == DATA], [300, 300, 100]
        )
        self.pump()
        self.assertEqual(target.value(), b"a" * 700)
        remote.send(b"response")
        self.pump()
        self.assertEqual(visitor.value(), b"response")

    def test_windowExhaustedPausesSource(self) -> None:
        """
        A sender pauses its local reader once the peer's window is used up
        and keeps at most the excess of one read; a WINDOW frame resumes it.
        """
        stream = self.opener.openStream({})
        _, visitor = _local(stream)
        self.openerWire.clear()
        stream.send(b"x" * 1500)
        sent = sum(len(p) for k, _, p in _frames(self.openerWire.value()) if k == DATA)
        self.assertEqual(sent, 1000)
        self.assertEqual(len(stream.pending), 500)
        self.assertEqual(visitor.producerState, "paused")
        self.opener.dataReceived(encodeFrame(WINDOW, stream.sid, (600).to_bytes(4, "big")))
        self.assertEqual(stream.pending, b"")
        self.assertEqual(stream.sendWindow, 100)
        self.assertEqual(visitor.producerState, "producing")

    def test_slowReaderBackPressure(self) -> None:
        """
        When the receiving side's local connection stops reading (its
        transport pauses the stream), no window is granted, so the sender
        stops after one window: nothing buffers without bound.
        """
        stream = self.opener.openStream({})
        _, visitor = _local(stream)
        self.pump()
        ((remote, _),) = self.acceptor.opened
        _, target = _local(remote)
        remote.pauseProducing()  # the target's socket buffer is full
        for _ in range(10):
            stream.send(b"y" * 400)
            self.pump()
        self.assertEqual(len(target.value()), 1000)
        self.assertEqual(visitor.producerState, "paused")
        self.assertLessEqual(len(stream.pending), 400 * 10)
        remote.resumeProducing()
        self.pump()
        self.assertGreater(len(target.value()), 1000)

    def test_linkWritePausePausesStreams(self) -> None:
        """
        When the link's own connection is write-blocked, every stream's local
        reader pauses until it drains.
        """
        stream = self.opener.openStream({})
        _, visitor = _local(stream)
        self.opener.pauseProducing()
        self.assertEqual(visitor.producerState, "paused")
        self.opener.resumeProducing()
        self.assertEqual(visitor.producerState, "producing")

    def test_closePropagates(self) -> None:
        """
        Losing the local connection sends CLOSE; the peer closes its local
        connection, whose end sends CLOSE back; then both sides have
        forgotten the stream.  Bytes the peer sends in between are dropped.
        """
        stream = self.opener.openStream({})
        side, visitor = _local(stream)
        self.pump()
        ((remote, _),) = self.acceptor.opened
        _, target = _local(remote)
        stream.localLost()
        self.pump()
        self.assertTrue(target.disconnecting)
        self.assertEqual(list(self.opener.streams), [stream.sid])
        remote.send(b"late")
        self.pump()
        self.assertEqual(visitor.value(), b"")
        remote.localLost()  # the target's connection ended
        self.pump()
        self.assertEqual((self.opener.streams, self.acceptor.streams), ({}, {}))

    def test_linkLostClosesStreams(self) -> None:
        """
        A dead link closes every local connection spliced through it.
        """
        stream = self.opener.openStream({})
        _, visitor = _local(stream)
        self.opener.connectionLost()
        self.assertTrue(visitor.disconnecting)

    def test_peerMayNotOpenOwnParity(self) -> None:
        """
        An OPEN with the receiver's own stream parity breaks the link.
        """
        self.acceptor.dataReceived(encodeFrame(OPEN, 2, b"\x80"))
        self.assertTrue(self.acceptorWire.disconnecting)

    def test_control(self) -> None:
        """
        Control messages arrive decoded.
        """
        self.opener.sendControl({"t": "ping", "id": 7})
        self.pump()
        self.assertEqual(self.acceptor.control, [{"t": "ping", "id": 7}])


class InterfaceTests(SynchronousTestCase):
    def test_producers(self) -> None:
        """
        Streams and links are push producers; the gateway's dispatcher and
        the connect command's protocol listen for handshakes; the insecure
        connection creator creates client connections.
        """
        from twisted.internet.interfaces import (
            IHandshakeListener,
            IOpenSSLClientConnectionCreator,
            IPushProducer,
        )
        from zope.interface.verify import verifyObject

        from suite.specter.client.commands import _InsecureCreator, _Splice
        from suite.specter.gateway.exchange import Exchange
        from suite.specter.gateway.listener import _Dispatch

        link = _Opener()
        link.makeConnection(StringTransport())
        stream = link.openStream({})
        self.assertTrue(verifyObject(IPushProducer, link))
        self.assertTrue(verifyObject(IPushProducer, stream))
        pool: Any = type("Pool", (), {"heads": None})()
        self.assertTrue(verifyObject(IPushProducer, Exchange(pool, link, stream)))
        self.assertTrue(verifyObject(IHandshakeListener, _Dispatch(None)))  # type: ignore[arg-type]
        self.assertTrue(verifyObject(IHandshakeListener, _Splice(None)))  # type: ignore[arg-type]
        self.assertTrue(
            verifyObject(IOpenSSLClientConnectionCreator, _InsecureCreator("a.example.test", b"x"))
        )


class _FakeSocket:
    """
    A socket whose C{send} takes at most C{room} bytes (C{EAGAIN} at 0) or
    fails with C{error}.
    """

    def __init__(self, room: int = 1 << 20) -> None:
        self.room = room
        self.sent: list[bytes] = []
        self.error: int | None = None

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def send(self, data: Any) -> int:
        import errno

        if self.error is not None:
            raise OSError(self.error, "send failed")
        if self.room <= 0:
            raise BlockingIOError(errno.EAGAIN, "would block")
        taken = bytes(data[: self.room])
        self.room -= len(taken)
        self.sent.append(taken)
        return len(taken)


class _Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


class EagerWriteTests(SynchronousTestCase):
    """
    L{eagerWrites}: a write to an idle TCP connection is sent at once; what
    the kernel does not take goes through Twisted's buffered path.
    """

    def _connection(self, room: int = 1 << 20) -> tuple[Any, _FakeSocket, Any]:
        from twisted.internet import tcp
        from twisted.internet.protocol import Protocol
        from twisted.internet.testing import MemoryReactor

        from suite.specter.tunnel.twistedio import eagerWrites

        reactor = MemoryReactor()
        sock = _FakeSocket(room)
        conn = tcp.Connection(sock, Protocol(), reactor)  # type: ignore[arg-type]
        conn.connected = 1
        eagerWrites(conn)
        return conn, sock, reactor

    def test_idleWriteSentAtOnce(self) -> None:
        """
        A write to a connection with nothing buffered is one C{send()}, and
        the connection is not registered for writability.
        """
        conn, sock, reactor = self._connection()
        conn.write(b"hello")
        conn.write(b"world")
        self.assertEqual(sock.sent, [b"hello", b"world"])
        self.assertEqual(reactor.getWriters(), [])
        self.assertEqual(conn.dataBuffer, b"")
        self.assertEqual(conn._tempDataBuffer, [])

    def test_partialSendBuffersRest(self) -> None:
        """
        What C{send()} did not take is buffered and written, in order, when
        the socket is writable again; later writes queue behind it.
        """
        conn, sock, reactor = self._connection(room=3)
        conn.write(b"abcdef")
        conn.write(b"gh")
        self.assertEqual(sock.sent, [b"abc"])
        self.assertEqual(reactor.getWriters(), [conn])
        sock.room = 100
        conn.doWrite()
        self.assertEqual(b"".join(sock.sent), b"abcdefgh")
        self.assertEqual(reactor.getWriters(), [])
        conn.write(b"ij")
        self.assertEqual(sock.sent[-1], b"ij")

    def test_sendLimit(self) -> None:
        """
        One eager send offers the kernel at most Twisted's C{SEND_LIMIT};
        the rest is buffered.
        """
        from twisted.internet import tcp

        conn, sock, reactor = self._connection(room=1 << 20)
        conn.write(b"z" * (tcp.Connection.SEND_LIMIT + 10))
        self.assertEqual([len(s) for s in sock.sent], [tcp.Connection.SEND_LIMIT])
        self.assertEqual(reactor.getWriters(), [conn])
        conn.doWrite()
        self.assertEqual(len(b"".join(sock.sent)), tcp.Connection.SEND_LIMIT + 10)

    def test_wouldBlockBuffers(self) -> None:
        """
        A socket that takes nothing (C{EAGAIN}) leaves the whole write to the
        buffered path.
        """
        conn, sock, reactor = self._connection(room=0)
        conn.write(b"abc")
        self.assertEqual(sock.sent, [])
        self.assertEqual(conn._tempDataBuffer, [b"abc"])
        self.assertEqual(reactor.getWriters(), [conn])

    def test_backPressureStillPausesProducer(self) -> None:
        """
        A streaming producer is paused once the unsent part exceeds the
        connection's buffer size, and resumed when it drains.
        """
        conn, sock, reactor = self._connection(room=10)
        conn.bufferSize = 16
        producer = _Producer()
        conn.registerProducer(producer, True)
        conn.write(b"x" * 10)
        self.assertEqual(producer.paused, 0)
        conn.write(b"y" * 20)
        self.assertEqual(producer.paused, 1)
        sock.room = 100
        conn.doWrite()
        self.assertEqual(producer.resumed, 1)
        self.assertEqual(b"".join(sock.sent), b"x" * 10 + b"y" * 20)

    def test_errorLeftToReactor(self) -> None:
        """
        A failing C{send()} does not lose the connection inside C{write};
        the data is buffered and the reactor's C{doWrite} reports the loss.
        """
        import errno

        from twisted.internet import main

        conn, sock, reactor = self._connection()
        sock.error = errno.EPIPE
        conn.write(b"abc")
        self.assertEqual(reactor.getWriters(), [conn])
        self.assertIs(conn.doWrite(), main.CONNECTION_LOST)

    def test_closingConnectionBuffers(self) -> None:
        """
        Once C{loseConnection} was called, writes take Twisted's path.
        """
        conn, sock, reactor = self._connection()
        conn.loseConnection()
        conn.write(b"late")
        self.assertEqual(sock.sent, [])

    def test_foundThroughWrappers(self) -> None:
        """
        L{eagerWrites} finds the TCP connection under TLS-like wrappers,
        installs itself once, and ignores transports without a socket.
        """
        from suite.specter.tunnel.twistedio import _EagerWrite, eagerWrites

        conn, sock, reactor = self._connection()
        installed = conn.write

        class _Wrapper:
            transport = conn

        eagerWrites(_Wrapper())
        self.assertIs(conn.write, installed)
        self.assertIsInstance(installed, _EagerWrite)
        plain = StringTransport()
        eagerWrites(plain)
        self.assertNotIn("write", vars(plain))
