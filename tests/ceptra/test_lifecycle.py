"""
The partition lifecycle machine: every input in every state.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.lifecycle import LifecycleCore, PartitionLifecycle


class Replica:
    pid = "p0"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def abandon(self) -> None:
        self.calls.append("abandon")

    def shutdown(self) -> None:
        self.calls.append("shutdown")


def machine(state: str) -> tuple[Any, Replica]:
    replica = Replica()
    m = PartitionLifecycle(LifecycleCore(replica))
    if state in ("Running", "Retiring"):
        m.loaded()
    if state == "Retiring":
        m.unplaced(10.0, True, 30.0)
    if state == "Failed":
        m.loadFailed("bad snapshot")
    if state == "Stopped":
        m.stop()
    replica.calls.clear()
    return m, replica


class LifecycleTests(SynchronousTestCase):
    def test_starting(self) -> None:
        m, r = machine("Starting")
        self.assertEqual((m.serving(), m.describe()), (False, {"state": "starting"}))
        m.placed()
        m.unplaced(1.0, False, 30.0)
        self.assertEqual(r.calls, [])
        m.loaded()
        self.assertEqual((r.calls, m.serving()), ([], True))
        m, r = machine("Starting")
        m.loadFailed("disk")
        self.assertEqual((r.calls, m.describe()), (["abandon"], {"state": "failed", "error": "disk"}))
        m, r = machine("Starting")
        m.stop()
        self.assertEqual((r.calls, m.describe()), (["shutdown"], {"state": "stopped"}))

    def test_running(self) -> None:
        m, r = machine("Running")
        m.loaded()
        m.loadFailed("late")
        m.placed()
        self.assertEqual((r.calls, m.describe(), m.serving()), ([], {"state": "running"}, True))
        m.unplaced(5.0, True, 30.0)
        self.assertEqual(m.describe(), {"state": "retiring", "since": 5.0})
        m, r = machine("Running")
        m.stop()
        self.assertEqual((r.calls, m.serving()), (["shutdown"], False))

    def test_retiring(self) -> None:
        m, r = machine("Retiring")
        self.assertTrue(m.serving())
        m.loaded()
        m.loadFailed("late")
        m.unplaced(20.0, True, 30.0)  # still a member, within the grace period
        self.assertEqual(r.calls, [])
        m.placed()
        self.assertEqual(m.describe(), {"state": "running"})
        m, r = machine("Retiring")
        m.unplaced(11.0, False, 30.0)  # the group removed this node
        self.assertEqual((r.calls, m.describe()), (["shutdown"], {"state": "stopped"}))
        m, r = machine("Retiring")
        m.unplaced(41.0, True, 30.0)  # grace period over
        self.assertEqual(r.calls, ["shutdown"])
        m, r = machine("Retiring")
        m.stop()
        self.assertEqual(r.calls, ["shutdown"])

    def test_failed(self) -> None:
        m, r = machine("Failed")
        for call in (m.loaded, m.placed):
            call()
        m.loadFailed("again")
        m.unplaced(1.0, False, 0.0)
        self.assertEqual((r.calls, m.serving()), ([], False))
        self.assertEqual(m.describe(), {"state": "failed", "error": "bad snapshot"})
        m.stop()
        self.assertEqual((r.calls, m.describe()), (["shutdown"], {"state": "stopped"}))

    def test_stopped(self) -> None:
        m, r = machine("Stopped")
        m.loaded()
        m.loadFailed("x")
        m.placed()
        m.unplaced(1.0, False, 0.0)
        m.stop()
        self.assertEqual((r.calls, m.serving(), m.describe()), ([], False, {"state": "stopped"}))
