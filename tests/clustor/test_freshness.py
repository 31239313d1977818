"""
The feed freshness machine.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import ILogObserver, Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from suite.clustor.freshness import FeedFreshness, FreshnessCore, FreshnessMachine


class FreshnessMachineTests(SynchronousTestCase):
    """
    One warning per stale episode, one notice per recovery.
    """

    def test_events(self) -> None:
        """
        Repeated overdue checks warn once; a refresh while fresh says nothing.
        """
        events: list[dict[str, Any]] = []
        publisher = LogPublisher(cast(ILogObserver, events.append))
        machine = FreshnessMachine(FreshnessCore("placement", Logger(observer=publisher)))
        machine.refreshed()
        machine.overdue(31000.0, 30000, "HTTP 500")
        machine.overdue(32000.0, 30000, "HTTP 500")
        machine.refreshed()
        machine.refreshed()
        machine.overdue(40000.0, 30000, None)
        kinds = [(e["log_level"].name, e.get("stalenessMs")) for e in events]
        self.assertEqual(kinds, [("warn", 31000.0), ("info", None), ("warn", 40000.0)])
        self.assertEqual(events[0]["error"], "HTTP 500")
        self.assertEqual(events[2]["error"], "none")

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state: the state after and the log levels.
        """
        # (state, input) -> (state after, log levels)
        table = {
            ("Fresh", "refreshed"): ("Fresh", []),
            ("Fresh", "overdue"): ("Stale", ["warn"]),
            ("Stale", "refreshed"): ("Fresh", ["info"]),
            ("Stale", "overdue"): ("Stale", []),
        }
        self.assertEqual({n for n in vars(FeedFreshness) if not n.startswith("_")}, {"refreshed", "overdue"})
        for (state, name), expected in table.items():
            events: list[dict[str, Any]] = []
            publisher = LogPublisher(cast(ILogObserver, events.append))
            machine = FreshnessMachine(FreshnessCore("placement", Logger(observer=publisher)))
            if state == "Stale":
                machine.overdue(31000.0, 30000, None)
            del events[:]
            if name == "refreshed":
                machine.refreshed()
            else:
                machine.overdue(32000.0, 30000, None)
            after = machine.__automat_transitioner__._state.name  # type: ignore[attr-defined]
            self.assertEqual((after, [e["log_level"].name for e in events]), expected, f"{state} + {name}")
