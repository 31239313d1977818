"""
Peer sessions over in-memory connections (twisted.test.iosim): handshake,
heartbeats, timeouts, malformed input and the interfaces.
"""

from __future__ import annotations

import struct
from typing import Any, cast

import msgpack
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Config, PeerConfig, Policies
from suite.spacecomms.envelope import Envelope, decodeEnvelope
from suite.spacecomms.interfaces import IMessageSink, IPeerLink, IRecordStore
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.session import PeerProtocol
from suite.spacecomms.store import MemoryStore
from tests.spacecomms.sim import stored

TOKEN = "session-token-1234"


def _node(
    name: str, peer: str, clock: Clock, token: str = TOKEN, heartbeat: float = 1, timeout: float = 3
) -> SpaceNode:
    cfg = Config(
        node_id=name,
        node_name=name,
        peers=(PeerConfig(peer, f"https://{peer}:1", peer, 1, token, Policies()),),
        heartbeat_interval_seconds=heartbeat,
        session_timeout_seconds=timeout,
    )
    node = SpaceNode(cfg, MemoryStore(), clock)
    node.start()
    return node


def _frames(data: bytes) -> list[Envelope]:
    out = []
    while len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        out.append(decodeEnvelope(data[4 : 4 + n]))
        data = data[4 + n :]
    return out


@implementer(IMessageSink)
class RecordingSink:
    """
    An L{IMessageSink} that records what a session hands it; it admits the
    peers in C{admit} and refuses others with C{UNAUTHORIZED}.
    """

    def __init__(self, nodeId: str, admit: tuple[str, ...]) -> None:
        self.nodeId = nodeId
        self.admit = admit
        self.events: list[tuple[str, Any]] = []

    def checkHello(self, hello: Envelope, expectedPeer: str | None) -> tuple[str, str] | None:
        peer = hello.payload["node_id"]
        self.events.append(("hello", peer))
        return None if peer in self.admit else ("UNAUTHORIZED", f"not {peer}")

    def sessionEstablished(self, link: IPeerLink) -> None:
        self.events.append(("established", link.peerId))

    def sessionLost(self, link: IPeerLink, reason: str) -> None:
        self.events.append(("lost", link.peerId))

    def envelopeReceived(self, link: IPeerLink, envelope: Envelope) -> None:
        self.events.append((envelope.message_type, link.peerId))

    def heartbeatCounts(self) -> dict[str, int]:
        return {"cdm_count": 7, "object_count": 0}

    def helloPayload(self, peerId: str | None) -> dict[str, Any]:
        return {
            "node_id": self.nodeId,
            "node_name": self.nodeId,
            "versions": ["1.0"],
            "capabilities": ["cdm"],
            "auth_token": TOKEN,
        }


def fake(protocol: PeerProtocol) -> iosim.FakeTransport:
    """
    The in-memory transport iosim connected C{protocol} with.
    """
    assert isinstance(protocol.transport, iosim.FakeTransport)
    return protocol.transport


class SinkSeamTests(SynchronousTestCase):
    """
    A session knows its node only as an L{IMessageSink}: two sessions
    between recording sinks, no node at all.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def connect(
        self, admit: tuple[str, ...]
    ) -> tuple[RecordingSink, RecordingSink, PeerProtocol, iosim.IOPump]:
        a = RecordingSink("A", ("B",))
        b = RecordingSink("B", admit)
        self.assertTrue(verifyObject(IMessageSink, a))

        def client() -> PeerProtocol:
            return PeerProtocol(a, "A", self.clock, "B", 1, 3, 64 * 1024, a.helloPayload)

        def server() -> PeerProtocol:
            return PeerProtocol(b, "B", self.clock, None, 1, 3, 64 * 1024, b.helloPayload)

        c, _, pump = iosim.connectedServerAndClient(server, client, clock=self.clock)
        pump.flush()
        return a, b, c, pump

    def test_sessionThroughTheSink(self) -> None:
        """
        The handshake asks each sink, both report the session, heartbeats
        carry the sink's counts and arrive as envelopes, and closing
        reports the loss on both sides.
        """
        a, b, c, pump = self.connect(admit=("A",))
        self.assertEqual(a.events, [("hello", "B"), ("established", "B")])
        self.assertEqual(b.events, [("hello", "A"), ("established", "A")])
        self.clock.advance(1)
        pump.flush()
        self.assertIn(("HEARTBEAT", "A"), b.events)
        self.assertIn(("HEARTBEAT", "B"), a.events)
        c.close("test over")
        pump.flush()
        self.assertEqual(a.events[-1], ("lost", "B"))
        self.assertEqual(b.events[-1], ("lost", "A"))

    def test_refusedByTheSink(self) -> None:
        """
        A HELLO the sink refuses ends the connection; no session is reported.
        """
        a, b, c, pump = self.connect(admit=())
        self.assertEqual(b.events, [("hello", "A")])
        self.assertNotIn(("established", "B"), a.events)
        self.assertTrue(fake(c).disconnected or fake(c).disconnecting)


class HeartbeatLatencyTests(SynchronousTestCase):
    """
    heartbeat_latency_ms from the echo of this side's heartbeat: half the
    round trip on this node's clock, whatever the peer's clock says.
    """

    def test_echoedRoundTrip(self) -> None:
        from twisted.internet.testing import StringTransport

        clock = Clock()
        clock.advance(1_700_000_000)
        sink = RecordingSink("A", ("B",))
        p = PeerProtocol(sink, "A", clock, "B", 30, 120, 64 * 1024, sink.helloPayload)
        p.makeConnection(StringTransport())
        p.sendHeartbeat()  # A's heartbeat 1
        clock.advance(0.2)

        def heartbeat(payload: dict[str, Any]) -> Envelope:
            # B's clock is an hour ahead: its timestamps say nothing here.
            return Envelope("HEARTBEAT", "B", payload, timestamp=clock.seconds() + 3600, path=("B",))

        # B held A's heartbeat 150 ms before its own went out: 200 - 150 = 50 ms
        # round trip, 25 ms each way.
        self.assertAlmostEqual(
            cast(float, p.heartbeatLatency(heartbeat({"sequence": 7, "echo": [1, 150.0]}))), 25.0, 3
        )
        # No echo (or of a heartbeat A does not remember): no figure.
        self.assertIsNone(p.heartbeatLatency(heartbeat({"sequence": 8})))
        self.assertIsNone(p.heartbeatLatency(heartbeat({"sequence": 9, "echo": [99, 1.0]})))
        # A's next heartbeat echoes B's last one and how long A held it.
        clock.advance(0.5)
        p.sendHeartbeat()
        frames = [f for f in _frames(cast(Any, p.transport).value()) if f.message_type == "HEARTBEAT"]
        self.assertNotIn("echo", frames[0].payload)
        self.assertEqual(frames[1].payload["echo"], [9, 500.0])

    def test_metricBetweenNodes(self) -> None:
        """
        Between two nodes of this version the figure comes from the echo:
        with no delay on the wire it is 0, however far apart their
        heartbeats' timestamps are; from a peer that does not echo, the
        age of its heartbeat is used.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        a, b = _node("A", "B", clock), _node("B", "A", clock)
        self.addCleanup(a.stop)
        self.addCleanup(b.stop)
        c, s, pump = iosim.connectedServerAndClient(
            lambda: PeerProtocol(b, "B", clock, None, 1, 3, 64 * 1024, b.helloPayload),
            lambda: PeerProtocol(a, "A", clock, "B", 1, 3, 64 * 1024, a.helloPayload),
            clock=clock,
        )
        pump.flush()
        for _ in range(4):
            clock.advance(1)
            pump.flush()
        self.assertEqual((a.metrics.latency["B"], b.metrics.latency["A"]), (0.0, 0.0))
        a.peers.caps["B"] = frozenset({"cdm"})  # as from an older node
        old = Envelope("HEARTBEAT", "B", {"sequence": 99}, timestamp=clock.seconds() - 2.5, path=("B",))
        a.envelopeReceived(c, old)
        self.assertEqual(a.metrics.latency["B"], 2500.0)
        fake(c).loseConnection()
        pump.flush()


class SessionTests(SynchronousTestCase):
    """
    Two nodes, A dialing B, over an iosim pump.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))
        self.events: list[dict] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def _connect(
        self, aToken: str = TOKEN, bToken: str = TOKEN
    ) -> tuple[SpaceNode, SpaceNode, PeerProtocol, PeerProtocol, iosim.IOPump]:
        a = _node("A", "B", self.clock, aToken)
        b = _node("B", "A", self.clock, bToken)
        self.addCleanup(a.stop)
        self.addCleanup(b.stop)

        def client() -> PeerProtocol:
            return PeerProtocol(a, "A", self.clock, "B", 1, 3, 64 * 1024, a.helloPayload)

        def server() -> PeerProtocol:
            return PeerProtocol(b, "B", self.clock, None, 1, 3, 64 * 1024, b.helloPayload)

        c, s, pump = iosim.connectedServerAndClient(server, client, clock=self.clock)
        pump.flush()
        return a, b, c, s, pump

    def _logged(self, text: str) -> list[dict]:
        return [e for e in self.events if text in e.get("log_format", "")]

    def test_interfaces(self) -> None:
        """
        The protocol is an IPeerLink, the node an IMessageSink, the stores
        IRecordStores.
        """
        a, b, c, s, pump = self._connect()
        self.assertTrue(verifyObject(IPeerLink, c))
        self.assertTrue(verifyObject(IMessageSink, a))
        self.assertTrue(verifyObject(IRecordStore, MemoryStore()))
        fake(c).loseConnection()
        pump.flush()

    def test_handshakeAndExchange(self) -> None:
        """
        Both sides establish (logging `peer session established`), exchange
        sync markers, and a CDM ingested at A is stored at B.
        """
        a, b, c, s, pump = self._connect()
        self.assertEqual(sorted(a.links), ["B"])
        self.assertEqual(sorted(b.links), ["A"])
        self.assertEqual(len(self._logged("peer session established")), 2)
        a.ingestCDM(sampleCDM("S-1"))
        pump.flush()
        self.assertTrue(stored(b.store, "cdm", "S-1").active)
        fake(c).loseConnection()
        pump.flush()
        self.assertEqual(a.links, {})
        self.assertEqual(b.links, {})
        self.assertEqual(len(self._logged("peer session lost")), 2)

    def test_debugFrames(self) -> None:
        """
        At logging level debug (SPACECOMMS_LOG_LEVEL=debug) every frame sent
        and received is one debug line naming the peer, type and id, never
        the payload (the HELLO's auth_token); at info none is emitted.
        """
        from twisted.logger import LogLevel

        from suite.spacecomms import logsetup

        before = dict(logsetup._settings)
        self.addCleanup(logsetup._settings.update, before)
        logsetup.configure("json", "info", "stderr")
        a, b, c, s, pump = self._connect()
        self.assertEqual(self._logged("frame {direction}"), [])
        logsetup.configure("json", "debug", "stderr")
        a.ingestCDM(sampleCDM("D-1"))
        pump.flush()
        frames = self._logged("frame {direction}")
        seen = {(e["direction"], e["peer"], e["message_type"]) for e in frames}
        self.assertIn(("to", "B", "CDM_ANNOUNCE"), seen)
        self.assertIn(("from", "A", "CDM_ANNOUNCE"), seen)
        self.assertTrue(all(e["log_level"] == LogLevel.debug for e in frames))
        fake(c).loseConnection()
        pump.flush()
        # The HELLO (with its auth_token) is logged by type only.
        logsetup.configure("json", "debug", "stderr")
        self.events.clear()
        a, b, c, s, pump = self._connect()
        hellos = [e for e in self._logged("frame {direction}") if e["message_type"] == "HELLO"]
        self.assertEqual(len(hellos), 4)  # each side sends one and receives one
        self.assertNotIn(TOKEN, repr(self.events))
        fake(c).loseConnection()
        pump.flush()

    def test_heartbeatsKeepSessionAlive(self) -> None:
        """
        Heartbeats every interval keep both sides up past the timeout and
        give a latency figure.
        """
        a, b, c, s, pump = self._connect()
        for _ in range(10):
            self.clock.advance(1)
            pump.flush()
        self.assertIn("A", b.links)
        self.assertIn("A", b.metrics.latency)
        self.assertIn("B", a.metrics.latency)
        fake(c).loseConnection()
        pump.flush()

    def test_differingTimingsKeepSessionUp(self) -> None:
        """
        Two operators configure different timings (A the guide's 30 s
        heartbeat and 120 s timeout, B 1 s and 3 s): each states its
        session timeout in HELLO and A heartbeats every third of B's, so
        neither side times the session out; A's heartbeats go out every
        second, never faster than the 50 ms floor however short a timeout a
        peer states.
        """
        from suite.spacecomms.session import heartbeatPeriod

        a = _node("A", "B", self.clock, heartbeat=30, timeout=120)
        b = _node("B", "A", self.clock, heartbeat=1, timeout=3)
        self.addCleanup(a.stop)
        self.addCleanup(b.stop)
        self.assertEqual(a.helloPayload("B")["session_timeout_seconds"], 120)
        c, s, pump = iosim.connectedServerAndClient(
            lambda: PeerProtocol(b, "B", self.clock, None, 1, 3, 64 * 1024, b.helloPayload),
            lambda: PeerProtocol(a, "A", self.clock, "B", 30, 120, 64 * 1024, a.helloPayload),
            clock=self.clock,
        )
        pump.flush()
        self.assertEqual((sorted(a.links), sorted(b.links)), (["B"], ["A"]))
        for _ in range(60):
            self.clock.advance(0.5)
            pump.flush()
        self.assertEqual((sorted(a.links), sorted(b.links)), (["B"], ["A"]))
        self.assertEqual(self._logged("no message for"), [])
        self.assertEqual(heartbeatPeriod(30, 3), 1)
        self.assertEqual(heartbeatPeriod(1, 120), 1)
        self.assertEqual(heartbeatPeriod(30, None), 30)
        self.assertEqual(heartbeatPeriod(30, 0.001), 0.05)
        fake(c).loseConnection()
        pump.flush()

    def test_unreadQueueClosesTheSession(self) -> None:
        """
        A peer that does not read what is sent to it (its heartbeats keep
        the session up) makes the queue grow: past MAX_QUEUE_BYTES the
        session is closed with one warning, once, and not from inside the
        send.
        """
        from suite.spacecomms.session import MAX_QUEUE_BYTES

        a, b, c, s, pump = self._connect()
        cast(Any, c).queueDepth = lambda: MAX_QUEUE_BYTES + 1
        c._nextQueueCheck = 0
        c.sendHeartbeat()
        c._nextQueueCheck = 0
        c.sendHeartbeat()
        self.assertEqual(sorted(a.links), ["B"])
        self.clock.advance(0)
        pump.flush()
        self.assertEqual((a.links, b.links), ({}, {}))
        [line] = self._logged("bytes queued and not read")
        self.assertEqual(line["peer"], "B")
        self.assertTrue(self._logged("peer session lost"))

    def test_storeFullKeepsSession(self) -> None:
        """
        A routed message the receiver cannot store (a full disk) is logged
        in one line, answered INTERNAL_ERROR, not kept; the session stays
        up, and the next re-sync brings it.
        """
        from suite.spacecomms.store import StoreWriteError

        a, b, c, s, pump = self._connect()

        def full(record: object) -> None:
            raise StoreWriteError("store B.db: cannot append (No space left on device)")

        self.patch(b.store, "put", full)
        a.ingestCDM(sampleCDM("FULL-1"))
        pump.flush()
        [line] = self._logged("not stored")
        self.assertEqual((line["peer"], line["message_type"]), ("A", "CDM_ANNOUNCE"))
        self.assertIsNone(b.store.get("cdm", "FULL-1"))
        self.assertEqual(self._logged("internal error handling"), [])
        self.assertEqual((sorted(a.links), sorted(b.links)), (["B"], ["A"]))
        fake(c).loseConnection()
        pump.flush()

    def test_timeout(self) -> None:
        """
        When nothing arrives for session_timeout_seconds the session closes.
        """
        a, b, c, s, pump = self._connect()
        self.clock.advance(3.5)
        self.assertTrue(self._logged("no message for {seconds}s"))
        pump.flush()
        self.assertEqual(a.links, {})
        self.assertEqual(b.links, {})

    def test_malformedMessageKeepsSession(self) -> None:
        """
        A malformed frame is answered with ERROR INVALID_MESSAGE naming the
        field, and the session stays up.
        """
        a, b, c, s, pump = self._connect()
        bad = msgpack.packb(
            {"protocol_version": "1.0", "message_id": "m1", "timestamp": 1, "source_node": "A"}
        )
        c.sendString(bad)
        c.sendString(b"\xc1 not msgpack")
        fake(s).getOutBuffer()
        pump.pump()
        out = _frames(fake(s).getOutBuffer())
        errors = [e for e in out if e.message_type == "ERROR"]
        self.assertEqual([e.payload["code"] for e in errors], ["INVALID_MESSAGE", "INVALID_MESSAGE"])
        self.assertIn("message_type", errors[0].payload["message"])
        self.assertEqual(errors[0].payload["ref_message_id"], "m1")
        pump.flush()
        self.assertIn("A", b.links)
        a.ingestCDM(sampleCDM("S-2"))
        pump.flush()
        self.assertIsNotNone(b.store.get("cdm", "S-2"))
        fake(c).loseConnection()
        pump.flush()

    def test_summaryOverTheSession(self) -> None:
        """
        Both sides announce sync_summary in their HELLOs, so each sends
        its summary first; a reconnection between nodes that agree then
        re-sends no entry.
        """
        a, b, c, s, pump = self._connect()
        a.ingestCDM(sampleCDM("S-3"))
        pump.flush()
        self.assertIn("sync_summary", a.peers.caps["B"])
        self.assertEqual(len(self._logged("sent a summary of {count} entries")), 2)
        fake(c).loseConnection()
        pump.flush()
        c2, s2, pump2 = self._reconnect(a, b)
        self.assertEqual(sorted(a.links), ["B"])
        # Without the summary A would re-send S-3 (count 1).
        self.assertEqual(
            [e["count"] for e in self._logged("re-sync to {peer}: sent {count} entries")], [0, 0, 0, 0]
        )
        fake(c2).loseConnection()
        pump2.flush()

    def _reconnect(self, a: SpaceNode, b: SpaceNode) -> tuple[PeerProtocol, PeerProtocol, iosim.IOPump]:
        def client() -> PeerProtocol:
            return PeerProtocol(a, "A", self.clock, "B", 1, 3, 64 * 1024, a.helloPayload)

        def server() -> PeerProtocol:
            return PeerProtocol(b, "B", self.clock, None, 1, 3, 64 * 1024, b.helloPayload)

        c, s, pump = iosim.connectedServerAndClient(server, client, clock=self.clock)
        pump.flush()
        return c, s, pump

    def test_badSummaryClosesTheSession(self) -> None:
        """
        A malformed SYNC_SUMMARY while the receiver waits for the summary
        is answered with ERROR INVALID_MESSAGE naming the fault, and the
        session is closed with that reason (no traceback).
        """
        a = _node("A", "B", self.clock)
        b = _node("B", "A", self.clock)
        self.addCleanup(a.stop)
        self.addCleanup(b.stop)

        def client() -> PeerProtocol:
            return PeerProtocol(a, "A", self.clock, "B", 1, 3, 64 * 1024, a.helloPayload)

        def server() -> PeerProtocol:
            return PeerProtocol(b, "B", self.clock, None, 1, 3, 64 * 1024, b.helloPayload)

        c, s, pump = iosim.connectedServerAndClient(server, client, clock=self.clock, greet=False)
        pump.pump()  # A's HELLO reaches B: B is up and waits for A's summary
        self.assertIn("A", b.links)
        bad = Envelope(
            "SYNC_SUMMARY", "A", {"entries": [["cdm", "S-1", "A", "x", True]], "more": False}, path=("A",)
        )
        c.sendString(bad.encode())
        fake(s).getOutBuffer()
        pump.pump()
        errors = [e for e in _frames(fake(s).getOutBuffer()) if e.message_type == "ERROR"]
        self.assertEqual([e.payload["code"] for e in errors], ["INVALID_MESSAGE"])
        self.assertIn("payload.entries[0]: sequence must be an integer", errors[0].payload["message"])
        pump.flush()
        self.assertEqual((a.links, b.links), ({}, {}))
        [line] = self._logged("re-sync to {peer} abandoned: {reason}")
        self.assertIn("sequence must be an integer", line["reason"])
        self.assertEqual([e for e in self.events if "log_failure" in e], [])

    def test_invalidCDMFromPeer(self) -> None:
        """
        A CDM_ANNOUNCE whose CDM fails validation is logged as
        `cdm validation failed`, answered INVALID_MESSAGE, and not stored.
        """
        a, b, c, s, pump = self._connect()
        doc = {"CCSDS_CDM_VERS": "1.0", "header": {}, "relative_metadata_data": {}, "segments": []}
        c.sendEnvelope(
            Envelope(
                "CDM_ANNOUNCE",
                "A",
                {"cdm_id": "BAD-1", "sequence": 1, "cdm": doc},
                timestamp=self.clock.seconds(),
                path=("A",),
            )
        )
        pump.pump()
        out = _frames(fake(s).getOutBuffer())
        self.assertEqual([e.payload["code"] for e in out if e.message_type == "ERROR"], ["INVALID_MESSAGE"])
        self.assertTrue(self._logged("cdm validation failed"))
        self.assertIsNone(b.store.get("cdm", "BAD-1"))
        pump.flush()
        self.assertIn("A", b.links)
        fake(c).loseConnection()
        pump.flush()

    def test_wrongToken(self) -> None:
        """
        A HELLO with the wrong auth token is refused with UNAUTHORIZED and
        the connection closed.
        """
        a, b, c, s, pump = self._connect(aToken="not-the-right-token")
        self.assertEqual(a.links, {})
        self.assertEqual(b.links, {})
        self.assertTrue(self._logged("peer session refused"))

    def test_unsupportedVersion(self) -> None:
        """
        A HELLO offering no common version is refused UNSUPPORTED_VERSION.
        """
        b = _node("B", "A", self.clock)
        self.addCleanup(b.stop)
        s = PeerProtocol(b, "B", self.clock, None, 1, 3, 64 * 1024, b.helloPayload)
        from twisted.internet.testing import StringTransport

        t = StringTransport()
        s.makeConnection(t)
        hello = Envelope(
            "HELLO",
            "A",
            {"node_id": "A", "versions": ["9.0"], "capabilities": [], "auth_token": TOKEN},
            timestamp=1.0,
            path=("A",),
        )
        s.dataReceived(struct.pack(">I", len(hello.encode())) + hello.encode())
        out = _frames(t.value())
        self.assertEqual(out[-1].payload["code"], "UNSUPPORTED_VERSION")
        self.assertTrue(t.disconnecting)

    def test_oversizedFrame(self) -> None:
        """
        A frame over the size limit is refused and the connection closed.
        """
        b = _node("B", "A", self.clock)
        self.addCleanup(b.stop)
        s = PeerProtocol(b, "B", self.clock, None, 1, 3, 1024, b.helloPayload)
        from twisted.internet.testing import StringTransport

        t = StringTransport()
        s.makeConnection(t)
        s.dataReceived(struct.pack(">I", 10_000) + b"x" * 100)
        self.assertTrue(t.disconnecting)
        self.assertIn(b"INVALID_MESSAGE", t.value())
        s.connectionLost(None)

    def test_httpHealthOnPeerPort(self) -> None:
        """
        `curl https://peer:8443/health` gets a JSON answer from the peer
        port; other paths get 404, other methods 405; the connection is
        closed either way.
        """
        b = _node("B", "A", self.clock)
        self.addCleanup(b.stop)
        from twisted.internet.testing import StringTransport

        answers = []
        requests = (
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /cdms HTTP/1.1\r\n\r\n",
            b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"DELETE /peers/x HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
        )
        for request in requests:
            s = PeerProtocol(b, "B", self.clock, None, 1, 3, 1024, b.helloPayload)
            t = StringTransport()
            s.makeConnection(t)
            s.dataReceived(request)
            self.assertTrue(t.disconnecting)
            answers.append(t.value())
            s.connectionLost(None)
        self.assertTrue(answers[0].startswith(b"HTTP/1.0 200 OK"), answers[0])
        self.assertIn(b'"node_id": "B"', answers[0])
        self.assertTrue(answers[1].startswith(b"HTTP/1.0 404"), answers[1])
        # Any other method is an HTTP 405 with the reason, not a binary
        # ERROR frame about a gigabyte-long "frame".
        for answer in answers[2:]:
            self.assertTrue(answer.startswith(b"HTTP/1.0 405"), answer)
            self.assertIn(b"only GET /health", answer)

    def test_oversizedEnvelopeNotSent(self) -> None:
        """
        An envelope larger than the frame limit is logged and not sent, so
        the peer never has to close the session over it.
        """
        b = _node("B", "A", self.clock)
        self.addCleanup(b.stop)
        s = PeerProtocol(b, "B", self.clock, None, 1, 3, 1024, b.helloPayload)
        from twisted.internet.testing import StringTransport

        t = StringTransport()
        s.makeConnection(t)
        s.sendEnvelope(
            Envelope(
                "OBJECT_STATE_ANNOUNCE", "B", {"object_id": "X", "sequence": 1, "state": {"x": "y" * 2000}}
            )
        )
        self.assertEqual(t.value(), b"")
        self.assertTrue(self._logged("exceeds the {limit}-byte frame limit"))
        s.connectionLost(None)

    def test_helloTimeout(self) -> None:
        """
        A connection that never says HELLO is closed after the timeout.
        """
        b = _node("B", "A", self.clock)
        self.addCleanup(b.stop)
        s = PeerProtocol(b, "B", self.clock, None, 1, 3, 1024, b.helloPayload)
        from twisted.internet.testing import StringTransport

        t = StringTransport()
        s.makeConnection(t)
        self.clock.advance(3.1)
        self.assertTrue(t.disconnecting)
        s.connectionLost(None)


class ReconnectBackoffTests(SynchronousTestCase):
    """
    The dialer's reconnect delays follow protocol.reconnect_initial_seconds,
    doubling up to reconnect_max_seconds (the guide's defaults 1 and 30).
    """

    def test_delays(self) -> None:
        """
        The first retry waits the initial delay, each next one twice as long,
        capped at the maximum; jitter only ever shortens it (by under 20%).
        """
        from suite.spacecomms.peers import reconnectDelay

        self.assertEqual(
            [reconnectDelay(n, 1.0, 30.0, 0.0) for n in range(1, 9)], [1, 2, 4, 8, 16, 30, 30, 30]
        )
        self.assertEqual(reconnectDelay(10_000, 1.0, 30.0, 0.0), 30.0)
        for n in (1, 3, 50):
            shortest = reconnectDelay(n, 1.0, 30.0, 0.999999)
            self.assertTrue(0.8 * reconnectDelay(n, 1.0, 30.0, 0.0) < shortest <= 30.0)

    def test_managerFollowsConfig(self) -> None:
        """
        A refused dial is retried after reconnect_initial_seconds (not twice
        that plus a second, as Twisted's stock policy would), and a reload's
        new timings apply to the running client.
        """
        import dataclasses

        from twisted.internet.error import ConnectionRefusedError
        from twisted.internet.testing import MemoryReactorClock
        from twisted.python.failure import Failure

        from suite.spacecomms.peers import PeerManager

        reactor = MemoryReactorClock()
        node = _node("A", "B", reactor)
        self.addCleanup(node.stop)
        node.config = dataclasses.replace(
            node.config, reconnect_initial_seconds=4.0, reconnect_max_seconds=60.0
        )
        manager = PeerManager(node, reactor)
        manager.startService()
        self.addCleanup(manager.stopService)

        def refuse() -> float:
            before = set(reactor.getDelayedCalls())
            factory = reactor.tcpClients[-1][2]
            factory.clientConnectionFailed(reactor.connectors[-1], Failure(ConnectionRefusedError()))
            (retry,) = [c for c in reactor.getDelayedCalls() if c not in before and c.active()]
            delay: float = retry.getTime() - reactor.seconds()
            dials = len(reactor.tcpClients)
            reactor.advance(delay)
            self.assertEqual(len(reactor.tcpClients), dials + 1)
            return delay

        first = refuse()
        self.assertTrue(3.2 < first <= 4.0, first)
        second = refuse()
        self.assertTrue(6.4 < second <= 8.0, second)
        node.config = dataclasses.replace(
            node.config, reconnect_initial_seconds=1.0, reconnect_max_seconds=2.0
        )
        third = refuse()
        self.assertTrue(1.6 < third <= 2.0, third)
