"""
The tunnel stream machine: every input in every state, by what the stream
does (frames it writes, whether it forgets itself, closes its local
connection, tells its local side of a reset, still carries bytes).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.tunnel.frames import CLOSE, DATA, FRAME_NAMES, RESET, FrameDecoder, encodeFrame
from suite.specter.tunnel.mux import Link
from suite.specter.tunnel.stream import LocalSide, Stream

INPUTS = ("attached", "localEnded", "peerClosed", "peerReset", "resetRequested", "linkLost")
STATES = ("Unattached", "UnattachedPeerClosed", "Open", "PeerClosed", "LocalClosed", "Closed")

#: (state, input) -> (frames written, still known to the link, local
#: connection closed, local side told of a reset, still carries bytes)
EXPECTED: dict[tuple[str, str], tuple[tuple[str, ...], bool, bool, bool, bool]] = {
    ("Unattached", "attached"): ((), True, False, False, True),
    ("Unattached", "localEnded"): (("CLOSE",), True, False, False, False),
    ("Unattached", "peerClosed"): ((), True, False, False, True),
    ("Unattached", "peerReset"): ((), False, False, True, False),
    ("Unattached", "resetRequested"): (("RESET",), False, False, False, False),
    ("Unattached", "linkLost"): ((), True, False, True, False),
    ("UnattachedPeerClosed", "attached"): ((), True, True, False, True),
    ("UnattachedPeerClosed", "localEnded"): (("CLOSE",), False, False, False, False),
    ("UnattachedPeerClosed", "peerClosed"): ((), True, False, False, True),
    ("UnattachedPeerClosed", "peerReset"): ((), False, False, True, False),
    ("UnattachedPeerClosed", "resetRequested"): (("RESET",), False, False, False, False),
    ("UnattachedPeerClosed", "linkLost"): ((), True, False, True, False),
    ("Open", "attached"): ((), True, False, False, True),
    ("Open", "localEnded"): (("CLOSE",), True, False, False, False),
    ("Open", "peerClosed"): ((), True, True, False, True),
    ("Open", "peerReset"): ((), False, False, True, False),
    ("Open", "resetRequested"): (("RESET",), False, True, False, False),
    ("Open", "linkLost"): ((), True, False, True, False),
    ("PeerClosed", "attached"): ((), True, False, False, True),
    ("PeerClosed", "localEnded"): (("CLOSE",), False, False, False, False),
    ("PeerClosed", "peerClosed"): ((), True, False, False, True),
    ("PeerClosed", "peerReset"): ((), False, False, True, False),
    ("PeerClosed", "resetRequested"): (("RESET",), False, False, False, False),
    ("PeerClosed", "linkLost"): ((), True, False, True, False),
    ("LocalClosed", "attached"): ((), True, False, False, False),
    ("LocalClosed", "localEnded"): ((), True, False, False, False),
    ("LocalClosed", "peerClosed"): ((), False, False, False, False),
    ("LocalClosed", "peerReset"): ((), False, False, False, False),
    ("LocalClosed", "resetRequested"): ((), False, False, False, False),
    ("LocalClosed", "linkLost"): ((), True, False, False, False),
    ("Closed", "attached"): ((), False, False, False, False),
    ("Closed", "localEnded"): ((), False, False, False, False),
    ("Closed", "peerClosed"): ((), False, False, False, False),
    ("Closed", "peerReset"): ((), False, False, False, False),
    ("Closed", "resetRequested"): ((), False, False, False, False),
    ("Closed", "linkLost"): ((), False, False, False, False),
}


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(data)
    return out


class _Case:
    """
    A stream driven into one state, with what it acts on.
    """

    def __init__(self, state: str) -> None:
        self.link = Link(window=1000)
        self.wire = StringTransport()
        self.link.makeConnection(self.wire)
        self.stream = self.link.openStream({})
        self.resets: list[str] = []
        self.stream.onReset = self.resets.append
        self.local = LocalSide()
        self.local.transport = StringTransport()
        path = {
            "Unattached": [],
            "UnattachedPeerClosed": ["peerClosed"],
            "Open": ["attached"],
            "PeerClosed": ["attached", "peerClosed"],
            "LocalClosed": ["attached", "localEnded"],
            "Closed": ["attached", "peerReset"],
        }[state]
        for name in path:
            self.give(name)
        self.wire.clear()
        self.resets.clear()

    def give(self, name: str) -> None:
        stream = self.stream
        if name == "attached":
            stream.attach(self.local)
        elif name == "localEnded":
            stream.localLost()
        elif name == "peerClosed":
            stream.received(CLOSE, b"")
        elif name == "peerReset":
            stream.received(RESET, b"gone")
        elif name == "resetRequested":
            stream.reset("abort")
        else:
            stream.linkLost()

    def observe(self, name: str) -> tuple[tuple[str, ...], bool, bool, bool, bool]:
        closedBefore = self.local.transport.disconnecting
        self.give(name)
        frames = tuple(FRAME_NAMES[k] for k, _, _ in _frames(self.wire.value()))
        closed = self.local.transport.disconnecting and not closedBefore
        known = self.stream.sid in self.link.streams
        told = bool(self.resets)
        self.wire.clear()
        self.stream.send(b"x")
        carries = any(k == DATA for k, _, _ in _frames(self.wire.value()))
        return frames, known, closed, told, carries


class StreamMachineTests(SynchronousTestCase):
    def test_everyInputInEveryState(self) -> None:
        """
        Each state answers each input as the table says.
        """
        self.assertEqual(set(EXPECTED), {(s, i) for s in STATES for i in INPUTS})
        for (state, name), expected in EXPECTED.items():
            self.assertEqual(_Case(state).observe(name), expected, f"{name} in {state}")

    def test_bufferedUntilAttached(self) -> None:
        """
        Bytes the peer sends before the local side is attached are written
        to it on attaching (then the local connection is closed, when the
        peer had already closed); more than a window breaks the link.
        """
        case = _Case("Unattached")
        case.stream.received(DATA, b"early ")
        case.stream.received(DATA, b"bytes")
        case.stream.received(CLOSE, b"")
        case.stream.attach(case.local)
        self.assertEqual(case.local.transport.value(), b"early bytes")
        self.assertTrue(case.local.transport.disconnecting)
        over = _Case("Unattached")
        over.link.dataReceived(encodeFrame(DATA, over.stream.sid, b"z" * 1001))
        self.assertTrue(over.wire.disconnecting)

    def test_resetWithoutListener(self) -> None:
        """
        A stream whose local side did not ask to hear of resets closes its
        local connection instead.
        """
        case = _Case("Open")
        case.stream.onReset = None
        case.stream.received(RESET, b"gone")
        self.assertTrue(case.local.transport.disconnecting)

    def test_lateDataDropped(self) -> None:
        """
        After our CLOSE the peer's bytes are dropped and grant no window.
        """
        case = _Case("LocalClosed")
        case.stream.received(DATA, b"z" * 900)
        self.assertEqual((case.local.transport.value(), case.wire.value()), (b"", b""))

    def test_pendingSentWithClose(self) -> None:
        """
        Bytes waiting for window when the local side ends go out before
        the CLOSE.
        """
        case = _Case("Open")
        case.stream.send(b"p" * 1200)
        case.wire.clear()
        case.stream.localLost()
        frames = _frames(case.wire.value())
        self.assertEqual([(k, len(p)) for k, _, p in frames], [(DATA, 200), (CLOSE, 0)])

    def test_reentrantEnd(self) -> None:
        """
        A local side that ends while the stream closes it (its close is
        synchronous) sends CLOSE once and the stream is forgotten.
        """
        case = _Case("Open")
        transport: Any = case.local.transport
        close = transport.loseConnection

        def closeAndEnd() -> None:
            close()
            case.stream.localLost()

        transport.loseConnection = closeAndEnd
        case.stream.received(CLOSE, b"")
        self.assertEqual([k for k, _, _ in _frames(case.wire.value())], [CLOSE])
        self.assertEqual(case.link.streams, {})
        self.assertIsInstance(case.stream, Stream)


class BridgeTests(SynchronousTestCase):
    def test_closeCrossesTheBridge(self) -> None:
        """
        Two streams bridged by a gateway (overlay forwarding): a CLOSE from
        one peer ends both streams, each peer gets a CLOSE, and once the
        other peer answers both links have forgotten them.
        """
        from suite.specter.gateway.overlay import StreamBridge

        links, wires = [], []
        for _ in range(2):
            link = Link(window=1000)
            wire = StringTransport()
            link.makeConnection(wire)
            links.append(link)
            wires.append(wire)
        a, b = links[0].openStream({}), links[1].openStream({})
        StreamBridge(a, b)
        a.received(DATA, b"to b")
        self.assertEqual(_frames(wires[1].value())[-1], (DATA, b.sid, b"to b"))
        for wire in wires:
            wire.clear()
        a.received(CLOSE, b"")
        self.assertEqual([k for k, _, _ in _frames(wires[0].value())], [CLOSE])
        self.assertEqual([k for k, _, _ in _frames(wires[1].value())], [CLOSE])
        self.assertEqual(links[0].streams, {})
        b.received(CLOSE, b"")
        self.assertEqual(links[1].streams, {})
