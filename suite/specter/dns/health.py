"""
The optional loopback helper of C{specter dns} (C{--listen-internal}):
C{/healthz}, C{/readyz} (ready while the ring RPC answers) and C{/metrics}.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.specter.acmekeys import MANAGED
from suite.specter.dns.challenges import RingChallenges
from suite.specter.dns.server import ACMEDNSFactory
from suite.web.health import HealthReport
from suite.web.interfaces import IHealth

__all__ = ["RingRPCHealth", "DNSCollector"]


@implementer(IHealth)
class RingRPCHealth:
    """
    Ready when the TXT values of C{managed} can be read from the ring
    (answers are cached for a second, so scraping costs little).
    """

    name = "ring-rpc"

    def __init__(self, challenges: RingChallenges) -> None:
        self.challenges = challenges

    def check(self) -> Deferred[HealthReport]:
        def ok(values: list[bytes]) -> HealthReport:
            return HealthReport(True, (), {"rpc": self.challenges.description})

        def bad(f: Failure) -> HealthReport:
            return HealthReport(False, (f"ring RPC unavailable: {f.getErrorMessage()}",))

        return self.challenges.txt(MANAGED).addCallbacks(ok, bad)


class DNSCollector:
    """
    Prometheus metrics of the solver, read at scrape time.
    """

    def __init__(self, factory: ACMEDNSFactory, challenges: RingChallenges) -> None:
        self.factory = factory
        self.challenges = challenges

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.factory.stats
        queries = CounterMetricFamily("specter_dns_queries", "DNS queries received (not responses).")
        queries.add_metric([], stats["queries"])
        yield queries
        responses = CounterMetricFamily("specter_dns_responses", "DNS responses sent.", labels=["rcode"])
        for key, count in sorted(stats.items()):
            if key.startswith("rcode-"):
                code = int(key[len("rcode-") :])
                responses.add_metric([_RCODES.get(code, str(code))], count)
        yield responses
        dropped = CounterMetricFamily(
            "specter_dns_dropped", "Packets dropped without an answer.", labels=["reason"]
        )
        for reason in ("malformed", "dropped-response", "rate-limited", "tcp-refused"):
            dropped.add_metric([reason], stats[reason])
        yield dropped
        calls = CounterMetricFamily("specter_dns_ring_calls", "KV reads sent to the ring RPC.")
        calls.add_metric([], self.challenges.calls)
        yield calls
        failures = CounterMetricFamily("specter_dns_ring_failures", "KV reads or connections that failed.")
        failures.add_metric([], self.challenges.failures)
        yield failures
        up = GaugeMetricFamily("specter_dns_ring_up", "1 unless the ring RPC is in an outage.")
        up.add_metric([], 0 if self.challenges.down else 1)
        yield up


_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
