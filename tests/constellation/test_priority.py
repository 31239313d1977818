"""
Node priority by name.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.constellation.priority import nodePriority


class PriorityTests(SynchronousTestCase):
    """
    Names containing "cloudserver" get 10, every other name 50.
    """

    def test_cloudserver(self) -> None:
        """
        "cloudserver" anywhere in the name, in any case, is priority 10.
        """
        for name in ("cloudserver", "cloudserver1", "eu-cloudserver-2", "CloudServer3"):
            self.assertEqual(nodePriority(name), 10, name)

    def test_others(self) -> None:
        """
        Other names, including near misses, are priority 50.
        """
        for name in ("", "micklethefickle", "cloud-server", "server", "cloudserve"):
            self.assertEqual(nodePriority(name), 50, name)

    def test_lowerWins(self) -> None:
        """
        Sorting by priority puts cloudserver nodes first.
        """
        names = ["beatapostapita", "cloudserver2", "vractormania", "cloudserver1"]
        self.assertEqual(
            sorted(names, key=lambda n: (nodePriority(n), n))[:2], ["cloudserver1", "cloudserver2"]
        )
