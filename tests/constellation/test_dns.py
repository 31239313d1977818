"""
The DNS plan, the minimal diff and the writer's gating by the lease.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from suite.constellation.dns import DNSWriter, Fenced, diff, plan
from suite.constellation.interfaces import IDNSProvider


@implementer(IDNSProvider)
class _Provider:
    name = "memory"
    fencing = "exact"

    def __init__(self) -> None:
        self.zone: dict[str, list[str]] = {}
        self.applied: list[tuple[list[tuple[str, list[str]]], int]] = []
        self.fence = 0

    def records(self, names: Any) -> Any:
        return succeed({n: self.zone[n] for n in names if n in self.zone})

    def apply(self, changes: Any, token: int) -> Any:
        if token < self.fence:
            raise Fenced(f"fence at {self.fence}")
        self.fence = token
        self.applied.append((list(changes), token))
        for name, addrs in changes:
            self.zone[name] = list(addrs)
        return succeed(None)


class PlanTests(SynchronousTestCase):
    def test_plan(self) -> None:
        self.assertEqual(
            plan("example.org", "192.0.2.1", {"Edge2": "192.0.2.2", "edge3": None}),
            {
                "example.org": ["192.0.2.1"],
                "*.example.org": ["192.0.2.1"],
                "*.edge2.example.org": ["192.0.2.2"],
            },
        )
        self.assertEqual(plan("example.org", None, {}), {})

    def test_diff(self) -> None:
        desired = {"a.example": ["192.0.2.1"], "b.example": ["192.0.2.2"]}
        current = {"a.example": ["192.0.2.1"], "b.example": ["192.0.2.9"], "c.example": ["192.0.2.3"]}
        self.assertEqual(diff(desired, current), [("b.example", ["192.0.2.2"])])


class WriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.provider = _Provider()
        self.token: int | None = None
        self.desired = {"example.org": ["192.0.2.1"]}
        self.writer = DNSWriter(
            self.provider,
            self.clock,
            lambda: self.token,
            lambda: dict(self.desired),
            interval=60.0,
            minGap=1.0,
        )

    def test_onlyTheHolderWrites(self) -> None:
        """
        Nothing is written without the lease; with it, only changed names,
        under its token; changes are rate-limited and reconciled every 60 s.
        """
        self.writer.startService()
        self.addCleanup(self.writer.stopService)
        self.clock.advance(0)
        self.assertEqual(self.provider.applied, [])
        assert self.writer.last is not None
        self.assertEqual(self.writer.last["outcome"], "not the DNS writer")
        self.token = 3
        self.writer.poke()
        self.clock.advance(1.0)
        self.assertEqual(self.provider.applied, [([("example.org", ["192.0.2.1"])], 3)])
        self.desired["*.example.org"] = ["192.0.2.1"]
        for _ in range(5):
            self.writer.poke()
        self.clock.advance(0.5)
        self.assertEqual(len(self.provider.applied), 1)  # rate limit
        self.clock.advance(0.5)
        self.assertEqual(self.provider.applied[-1], ([("*.example.org", ["192.0.2.1"])], 3))
        self.assertEqual(len(self.provider.applied), 2)
        started = self.writer.lastStart
        self.writer.pokeIfChanged()
        self.clock.advance(5)
        self.assertEqual(self.writer.lastStart, started)  # same plan: no pass
        self.desired["*.n1.example.org"] = ["192.0.2.5"]
        self.writer.pokeIfChanged()
        self.clock.advance(1)
        self.assertEqual(self.provider.applied[-1], ([("*.n1.example.org", ["192.0.2.5"])], 3))
        self.provider.zone["example.org"] = ["192.0.2.66"]
        self.clock.advance(60)
        self.assertEqual(self.provider.applied[-1], ([("example.org", ["192.0.2.1"])], 3))
        self.assertEqual(self.writer.status()["lastReconcile"]["outcome"], "updated")

    def test_renewalsDoNotReconcile(self) -> None:
        """
        The lease keeper notifies on every renewal: with the same plan and
        the same token that starts no pass (the interval alone does), while
        a new token, or losing the lease, does.
        """
        self.token = 3
        self.writer.startService()
        self.addCleanup(self.writer.stopService)
        self.clock.advance(0)
        started = self.writer.lastStart
        for _ in range(30):
            self.writer.pokeIfChanged()
            self.clock.advance(1)
        self.assertEqual(self.writer.lastStart, started)
        self.token = 4
        self.writer.pokeIfChanged()
        self.clock.advance(0)
        self.assertEqual(self.writer.lastStart, self.clock.seconds())
        assert self.writer.last is not None
        self.assertEqual(self.writer.last["token"], 4)
        self.token = None
        self.clock.advance(1)
        self.writer.pokeIfChanged()
        self.clock.advance(0)
        self.assertEqual(self.writer.last["outcome"], "not the DNS writer")

    def test_fencedAndDryRun(self) -> None:
        """
        A fenced write is reported, not retried blindly; a dry run writes
        nothing but lists the changes.
        """
        from tests.clustor.helpers import captureLogs

        self.events = captureLogs(self)
        self.provider.fence = 9
        self.token = 4
        self.writer.startService()
        self.addCleanup(self.writer.stopService)
        self.clock.advance(0)
        self.assertEqual(self.provider.applied, [])
        assert self.writer.last is not None
        self.assertTrue(self.writer.last["outcome"].startswith("fenced"))
        dry = DNSWriter(self.provider, self.clock, lambda: 9, lambda: dict(self.desired), dryRun=True)
        dry.startService()
        self.addCleanup(dry.stopService)
        self.clock.advance(0)
        self.assertEqual(self.provider.applied, [])
        assert dry.last is not None
        self.assertEqual(dry.last["changes"], [["example.org", ["192.0.2.1"]]])

    def test_pokesDuringAPassAskForOneMore(self) -> None:
        """
        Pokes while a pass waits on the provider ask for exactly one more
        pass after it, at least C{minGap} after it began; after stop, a pass
        in progress ends and nothing more runs.
        """
        reads: list[Deferred[dict[str, list[str]]]] = []

        def records(names: Any) -> Deferred[dict[str, list[str]]]:
            d: Deferred[dict[str, list[str]]] = Deferred()
            reads.append(d)
            return d

        self.provider.records = records  # type: ignore[method-assign]
        self.token = 3
        self.writer.startService()
        self.clock.advance(0)
        self.assertEqual(len(reads), 1)
        for _ in range(3):
            self.writer.poke()
        self.clock.advance(5)
        self.assertEqual(len(reads), 1)  # one pass at a time
        reads[0].callback({})
        self.assertEqual(len(self.provider.applied), 1)
        self.clock.advance(0)
        self.assertEqual(len(reads), 2)  # the rate limit has passed: at once
        self.writer.poke()
        reads[1].callback({"example.org": ["192.0.2.1"]})
        self.clock.advance(0.9)
        self.assertEqual(len(reads), 2)  # 1 s after the second pass began
        self.clock.advance(0.1)
        self.assertEqual(len(reads), 3)
        self.writer.poke()
        self.writer.stopService()
        reads[2].callback({"example.org": ["192.0.2.1"]})
        self.clock.advance(120)
        self.assertEqual((len(reads), self.clock.getDelayedCalls()), (3, []))

    def test_failedPassesRetrySooner(self) -> None:
        """
        A failed pass is retried after 1 s, then 2, 4, ... capped at the
        interval, through the same coalescing job; a pass that does not fail
        starts the backoff again; a fenced write is not retried; stopping
        cancels a pending retry.
        """
        starts: list[float] = []
        failing = [True]
        records = self.provider.records

        def flaky(names: Any) -> Any:
            starts.append(self.clock.seconds())
            if failing[0]:
                raise ConnectionRefusedError("provider down")
            return records(names)

        self.provider.records = flaky  # type: ignore[method-assign]
        self.token = 3
        self.writer.startService()
        self.clock.advance(0)
        for _ in range(60):
            self.clock.advance(1)
        # 0, then +1, +2, +4, +8, +16; the interval's pass at 60 fails too.
        self.assertEqual(starts, [0, 1, 3, 7, 15, 31, 60])
        assert self.writer.last is not None
        self.assertEqual(self.writer.last["retryIn"], 60.0)  # capped at the interval
        self.assertEqual(self.writer.failures, 7)
        failing[0] = False
        del starts[:]
        self.clock.advance(60)  # the interval's pass and the retry coalesce
        self.assertEqual(starts, [120])
        self.assertEqual(self.provider.applied, [([("example.org", ["192.0.2.1"])], 3)])
        failing[0] = True
        self.writer.poke()
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(starts, [120, 121, 122])  # from 1 s again
        self.writer.stopService()
        self.clock.advance(300)
        self.assertEqual((starts, self.clock.getDelayedCalls()), ([120, 121, 122], []))

    def test_rateLimitWaits(self) -> None:
        """
        A provider that asks to wait (a rate limit's Retry-After) is retried
        no sooner than asked, and the backoff goes on from there.
        """

        class RateLimited(Exception):
            retryAfter = 20.0

        starts: list[float] = []

        def limited(names: Any) -> Any:
            starts.append(self.clock.seconds())
            raise RateLimited("HTTP 429: rate limited")

        self.provider.records = limited  # type: ignore[method-assign]
        self.token = 3
        self.writer.startService()
        self.addCleanup(self.writer.stopService)
        self.clock.advance(0)
        for _ in range(45):
            self.clock.advance(1)
        self.assertEqual(starts, [0, 20, 40])
        assert self.writer.last is not None
        self.assertEqual((self.writer.last["retryAfter"], self.writer.last["retryIn"]), (20.0, 20.0))

    def test_fencedIsNotRetried(self) -> None:
        """
        A write refused by the fence waits for the next interval.
        """
        from tests.clustor.helpers import captureLogs

        self.events = captureLogs(self)
        self.provider.fence = 9
        self.token = 4
        self.writer.startService()
        self.addCleanup(self.writer.stopService)
        self.clock.advance(0)
        started = self.writer.lastStart
        self.clock.advance(59)
        self.assertEqual(self.writer.lastStart, started)
        self.assertEqual(self.writer.failures, 1)
        from twisted.logger import formatEvent

        fenced = [formatEvent(e) for e in self.events if "refused by the fence" in e.get("log_format", "")]
        self.assertEqual(len(fenced), 1)
        self.assertIn("delete the zone's _constellation-fence TXT record", fenced[0])
