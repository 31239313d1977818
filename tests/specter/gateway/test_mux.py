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
        connection and both sides forget the stream.
        """
        stream = self.opener.openStream({})
        side, visitor = _local(stream)
        self.pump()
        ((remote, _),) = self.acceptor.opened
        _, target = _local(remote)
        stream.localLost()
        self.pump()
        self.assertTrue(target.disconnecting)
        self.assertEqual(self.opener.streams, {})

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
        from suite.specter.gateway.h2 import _Outbound
        from suite.specter.gateway.listener import _Dispatch

        link = _Opener()
        link.makeConnection(StringTransport())
        stream = link.openStream({})
        self.assertTrue(verifyObject(IPushProducer, link))
        self.assertTrue(verifyObject(IPushProducer, stream))
        self.assertTrue(verifyObject(IPushProducer, _Outbound(stream, None)))  # type: ignore[arg-type]
        self.assertTrue(verifyObject(IHandshakeListener, _Dispatch(None)))  # type: ignore[arg-type]
        self.assertTrue(verifyObject(IHandshakeListener, _Splice(None)))  # type: ignore[arg-type]
        self.assertTrue(
            verifyObject(IOpenSSLClientConnectionCreator, _InsecureCreator("a.example.test", b"x"))
        )
