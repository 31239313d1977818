"""
The metric-name lint (tests/support/metriclint.py) catches what
C{promtool check metrics} and the suite's naming rule forbid; the daemons'
real expositions are linted where they run (tests/test_demo.py scrapes every
daemon of the demo) and here for the surfaces built in-process.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support.metriclint import GUIDE_NAMES, lintExposition, promtool


def _expose(build: Any) -> str:
    registry = CollectorRegistry()
    build(registry)
    return generate_latest(registry).decode()


class LintTests(SynchronousTestCase):
    """
    Each rule fires on a metric that breaks it, and only then.
    """

    def assertProblem(self, text: str, daemon: str, needle: str) -> None:
        problems = lintExposition(text, daemon)
        self.assertTrue(any(needle in p for p in problems), problems)

    def test_clean(self) -> None:
        """
        Prefixed, helped, base-unit metrics of every type pass.
        """

        def build(r: CollectorRegistry) -> None:
            Counter("goop_things", "Things.", registry=r).inc()
            Gauge("goop_size_bytes", "Size.", ["kind"], registry=r).labels("a").set(1)
            Histogram("goop_wait_seconds", "Wait.", registry=r).observe(0.1)

        self.assertEqual(lintExposition(_expose(build), "goop"), [])

    def test_rules(self) -> None:
        """
        Missing help, counters without _total, gauges with it or named for
        a count of events, camelCase,
        non-base and abbreviated units, the type in the name, reserved
        suffixes, ':' and a missing prefix are each reported.
        """
        cases = [
            ("# TYPE goop_a gauge\ngoop_a 1\n", "no help text"),
            ("# HELP goop_a x\n# TYPE goop_a counter\ngoop_a 1\n", 'should have "_total"'),
            ("# HELP goop_a_total x\n# TYPE goop_a_total gauge\ngoop_a_total 1\n", "should not have"),
            ("# HELP goop_fooBar x\n# TYPE goop_fooBar gauge\ngoop_fooBar 1\n", "snake_case"),
            (
                "# HELP goop_t_milliseconds x\n# TYPE goop_t_milliseconds gauge\ngoop_t_milliseconds 1\n",
                "base unit",
            ),
            ("# HELP goop_t_ms x\n# TYPE goop_t_ms gauge\ngoop_t_ms 1\n", "abbreviated"),
            ("# HELP goop_x_gauge x\n# TYPE goop_x_gauge gauge\ngoop_x_gauge 1\n", "include type"),
            ("# HELP goop_x_bucket x\n# TYPE goop_x_bucket gauge\ngoop_x_bucket 1\n", "_bucket"),
            ("# HELP goop:x x\n# TYPE goop:x gauge\ngoop:x 1\n", "':'"),
            ("# HELP peers x\n# TYPE peers gauge\npeers 1\n", "not prefixed"),
            ("# HELP goop_writes x\n# TYPE goop_writes gauge\ngoop_writes 1\n", "count of events"),
        ]
        for text, needle in cases:
            self.assertProblem(text, "goop", needle)

    def test_guideNames(self) -> None:
        """
        The guides' names (and their _ms units) are allowed for their daemon
        only; CEPtra and Clustor publish milliseconds by their guide.
        """
        text = "# HELP heartbeat_latency_ms x\n# TYPE heartbeat_latency_ms gauge\nheartbeat_latency_ms 1\n"
        self.assertEqual(lintExposition(text, "spacecomms"), [])
        self.assertProblem(text, "specter", "abbreviated")
        ms = "# HELP ceptra_apply_ms x\n# TYPE ceptra_apply_ms gauge\nceptra_apply_ms 1\n"
        self.assertEqual(lintExposition(ms, "ceptra"), [])
        self.assertIn("heartbeat_latency_ms", GUIDE_NAMES["spacecomms"])

    def test_promtool(self) -> None:
        """
        When promtool is installed, it agrees with the lint on a clean and a
        bad exposition.
        """
        clean = "# HELP goop_a_total x\n# TYPE goop_a_total counter\ngoop_a_total 1\n"
        result = promtool(clean)
        if result is None:
            raise self.skipTest("promtool is not installed (Debian package prometheus)")
        self.assertEqual(result, [])
        self.assertNotEqual(promtool("# HELP goop_a x\n# TYPE goop_a counter\ngoop_a 1\n"), [])


class InProcessSurfacesTests(SynchronousTestCase):
    """
    Expositions built in-process pass the lint.
    """

    def test_spacecomms(self) -> None:
        """
        SpaceComms: the guide's five names, everything else spacecomms_.
        """
        from suite.spacecomms.metrics import NodeMetrics

        class Store:
            def count(self, kind: str, active: bool) -> int:
                return 3

        class Node:
            links: dict[str, Any] = {}
            store = Store()

            def now(self) -> float:
                return 0.0

        metrics = NodeMetrics(Node())  # type: ignore[arg-type]
        metrics.received()
        metrics.error()
        metrics.invalidCDM()
        metrics.cdmProcessed(0.002)
        text = metrics.render().decode()
        self.assertEqual(lintExposition(text, "spacecomms"), [])
        self.assertIn("spacecomms_cdms_active 3.0", text)
        self.assertEqual(promtool(text, GUIDE_NAMES["spacecomms"]) or [], [])

    def test_constellationDNS(self) -> None:
        """
        Constellation's DNS writer counts: counters with _total.
        """
        from suite.constellation.dns import DNSCollector, DNSWriter

        writer = DNSWriter(None, Clock(), lambda: None, dict)
        writer.writes, writer.failures = 3, 2
        registry = CollectorRegistry(auto_describe=True)
        registry.register(DNSCollector(writer))
        text = generate_latest(registry).decode()
        self.assertIn("# TYPE constellation_dns_writes_total counter", text)
        self.assertIn("constellation_dns_writes_total 3.0", text)
        self.assertIn("constellation_dns_failures_total 2.0", text)
        self.assertEqual(lintExposition(text, "constellation"), [])
        self.assertEqual(promtool(text) or [], [])
        wrong = CollectorRegistry()
        Gauge("constellation_dns_writes", "Old.", registry=wrong).set(3)
        self.assertNotEqual(lintExposition(generate_latest(wrong).decode(), "constellation"), [])

    def test_goopHub(self) -> None:
        """
        The hub's /metrics registry: goop_ names only.
        """
        from suite.goop.metrics import HubCollector
        from suite.goop.rendezvous.hub import RendezvousHub

        hub = RendezvousHub(Clock(), templatesDir=self.mktemp())
        registry = CollectorRegistry(auto_describe=True)
        registry.register(HubCollector(hub))
        text = generate_latest(registry).decode()
        self.assertIn("goop_hub_peers 0.0", text)
        self.assertEqual(lintExposition(text, "goop"), [])
        self.assertEqual(promtool(text) or [], [])
