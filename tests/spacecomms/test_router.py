"""
The routing rules on their own: loops, duplicates, hop and TTL limits,
policies, forwarding targets and the token bucket.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.config import Policies
from suite.spacecomms.envelope import Envelope
from suite.spacecomms.router import Router, SeenCache, TokenBucket


def _env(**kw: object) -> Envelope:
    base: dict = dict(
        message_type="CDM_ANNOUNCE", source_node="A", payload={}, timestamp=100.0, ttl=60.0, path=("A",)
    )
    base.update(kw)
    return Envelope(**base)


class RouterTests(SynchronousTestCase):
    """
    Router.inbound and Router.targets.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.router = Router("B", self.clock, maxHops=3, seenLifetime=300)

    def test_inbound(self) -> None:
        """
        Each drop rule gives its reason; a fresh message is accepted once.
        """
        ok = Policies()
        self.assertTrue(self.router.inbound(_env(message_id="m1"), "A", ok).accept)
        self.assertEqual(
            self.router.inbound(_env(message_id="m1"), "A", ok).reason, "loop: duplicate message id"
        )
        self.assertIn("loop", self.router.inbound(_env(message_id="m2", path=("A", "B")), "C", ok).reason)
        self.assertIn("loop", self.router.inbound(_env(message_id="m3", source_node="B"), "C", ok).reason)
        self.assertIn(
            "hop limit: hop count 3 reached max_hop_count",
            self.router.inbound(_env(message_id="m4", hop_count=3), "A", ok).reason,
        )
        self.clock.advance(61)
        self.assertEqual(self.router.inbound(_env(message_id="m5"), "A", ok).reason, "ttl: expired")
        self.clock.advance(-61)
        ahead = _env(message_id="m5b", timestamp=100.0 + 301)
        self.assertIn("ttl: timestamp is more than", self.router.inbound(ahead, "A", ok).reason)
        self.assertTrue(self.router.inbound(_env(message_id="m5c", timestamp=100.0 + 299), "A", ok).accept)
        self.assertIn(
            "policy: accept_cdm",
            self.router.inbound(_env(message_id="m6"), "A", Policies(accept_cdm=False)).reason,
        )
        obj = _env(message_id="m7", message_type="OBJECT_STATE_ANNOUNCE")
        self.assertIn(
            "accept_object_state", self.router.inbound(obj, "A", Policies(accept_object_state=False)).reason
        )

    def test_targets(self) -> None:
        """
        Never the previous hop, nobody on the path, only where forwarding
        is allowed, and nothing at the hop limit.
        """
        pols = {"A": Policies(), "C": Policies(), "D": Policies(forward_cdm=False), "E": Policies()}
        env = _env(path=("A", "E"), hop_count=1)
        self.assertEqual(self.router.targets(env, "E", ["A", "C", "D", "E"], pols), ["C"])
        obj = _env(message_type="OBJECT_STATE_ANNOUNCE", path=("A",))
        self.assertEqual(self.router.targets(obj, "A", ["A", "C", "D"], pols), ["C", "D"])
        self.assertEqual(self.router.targets(_env(hop_count=2), "A", ["C"], pols), [])
        local = _env(source_node="B", path=("B",))
        self.assertEqual(self.router.targets(local, None, ["A", "C", "D"], pols), ["A", "C"])


class BucketAndCacheTests(SynchronousTestCase):
    """
    The token bucket refills with time; the seen cache forgets old ids.
    """

    def test_tokenBucket(self) -> None:
        """
        A burst passes, then one token per 1/rate seconds.
        """
        clock = Clock()
        bucket = TokenBucket(clock, rate=2, burst=3)
        self.assertEqual([bucket.take() for _ in range(4)], [True, True, True, False])
        clock.advance(0.5)
        self.assertEqual([bucket.take(), bucket.take()], [True, False])

    def test_seenCache(self) -> None:
        """
        Ids are remembered for the lifetime, and the cache is bounded.
        """
        clock = Clock()
        cache = SeenCache(clock, lifetime=10, maxEntries=3)
        self.assertFalse(cache.seen("a"))
        self.assertTrue(cache.seen("a"))
        clock.advance(11)
        self.assertFalse(cache.seen("a"))
        for k in "bcde":
            cache.seen(k)
        self.assertLessEqual(len(cache), 3)
