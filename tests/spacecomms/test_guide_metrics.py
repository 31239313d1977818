"""
The metrics the guide sets thresholds on: message_queue_depth in messages
(bytes as spacecomms_message_queue_bytes) and a single recent p99 of CDM processing.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Config, PeerConfig, Policies
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.session import PeerProtocol
from suite.spacecomms.store import MemoryStore

TOKEN = "metrics-token-1234"


def _node(name: str, peer: str, clock: Clock) -> SpaceNode:
    cfg = Config(
        node_id=name,
        node_name=name,
        peers=(PeerConfig(peer, f"https://{peer}:1", peer, 1, TOKEN, Policies()),),
        heartbeat_interval_seconds=1,
        session_timeout_seconds=3,
    )
    node = SpaceNode(cfg, MemoryStore(), clock)
    node.start()
    return node


def _gauge(text: bytes, name: str) -> float:
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


class GuideMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.a = _node("A", "B", self.clock)
        self.b = _node("B", "A", self.clock)
        self.addCleanup(self.a.stop)
        self.addCleanup(self.b.stop)

    def test_recentP99(self) -> None:
        """
        The p99 gauge is the nearest-rank 99th percentile of the last 60 s
        of processing times, and falls to 0 once they age out; the
        histogram keeps everything.
        """
        m = self.a.metrics
        self.assertEqual(m.recentP99(), 0.0)
        for i in range(100):
            m.cdmProcessed((i + 1) / 1000.0)  # 1 .. 100 ms
        self.assertEqual(m.recentP99(), 99.0)
        self.assertEqual(_gauge(m.render(), "spacecomms_cdm_processing_time_p99_ms"), 99.0)
        self.clock.advance(30)
        m.cdmProcessed(2.5)  # one slow CDM: 2,500 ms
        self.assertEqual(m.recentP99(), 100.0)
        self.clock.advance(31)
        self.assertEqual(m.recentP99(), 2500.0)
        self.clock.advance(30)
        self.assertEqual(m.recentP99(), 0.0)
        self.assertEqual(_gauge(m.render(), "cdm_processing_time_ms_count"), 101.0)

    def test_queueDepthCountsMessages(self) -> None:
        """
        message_queue_depth counts frames not yet wholly sent, from the
        bytes still buffered; spacecomms_message_queue_bytes is those bytes.
        """

        def client() -> PeerProtocol:
            return PeerProtocol(self.a, "A", self.clock, "B", 1, 3, 64 * 1024, self.a.helloPayload)

        def server() -> PeerProtocol:
            return PeerProtocol(self.b, "B", self.clock, None, 1, 3, 64 * 1024, self.b.helloPayload)

        c, s, pump = iosim.connectedServerAndClient(server, client, clock=self.clock)
        pump.flush()
        self.assertEqual(sorted(self.a.links), ["B"])
        self.assertEqual(c.queuedMessages(), 0)
        start = c._sentBytes
        for i in range(3):
            self.a.ingestCDM(sampleCDM(f"Q-{i}"))
        written = c._sentBytes - start
        self.assertGreater(written, 0)
        ends = [e - start for e in c._frameEnds]
        self.assertGreaterEqual(len(ends), 3)
        # Pretend the whole burst is still buffered, then half of the last frame.
        c.queueDepth = lambda: written  # type: ignore[method-assign]
        self.assertEqual(c.queuedMessages(), len(ends))
        text = self.a.metrics.render()
        self.assertEqual(_gauge(text, "message_queue_depth"), len(ends))
        self.assertEqual(_gauge(text, "spacecomms_message_queue_bytes"), written)
        c.queueDepth = lambda: 1  # type: ignore[method-assign]
        self.assertEqual(c.queuedMessages(), 1)
        c.queueDepth = lambda: 0  # type: ignore[method-assign]
        self.assertEqual(c.queuedMessages(), 0)
        pump.flush()
        assert c.transport is not None
        c.transport.loseConnection()
        pump.flush()
