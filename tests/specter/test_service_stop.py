"""
Stopping L{suite.specter.service.SpecterService}: the node leaves the ring,
and a leave that times out or fails is logged and the node stops anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.service import LEAVE_TIMEOUT, SpecterService


class _Node:
    def __init__(self, leave: Deferred[None]) -> None:
        self._leave = leave
        self.stopped = False

    def leave(self) -> Deferred[None]:
        return self._leave

    def stop(self) -> None:
        self.stopped = True

    def closeRingState(self) -> Deferred[None]:
        return succeed(None)


class _Transport:
    closed = False

    def close(self) -> None:
        self.closed = True


class StopTests(SynchronousTestCase):
    def stop(self, leave: Deferred[None]) -> tuple[_Node, Clock, Deferred[None], Sequence[Any]]:
        node, clock, transport = _Node(leave), Clock(), _Transport()
        service = SpecterService(node, None, [], [], transport, clock)  # type: ignore[arg-type]
        service.nodeStarted = True  # its listeners listened and the node joined
        with capturedLogs() as events:
            d = service.stopService()
            clock.advance(LEAVE_TIMEOUT)
        return node, clock, d, events

    def test_leaveFailureLogged(self) -> None:
        """
        A leave that fails is logged with its error and the node stops.
        """
        node, clock, d, events = self.stop(fail(RuntimeError("ring gone")))
        self.successResultOf(d)
        self.assertTrue(node.stopped)
        [event] = [e for e in events if "log_failure" in e]
        self.assertEqual(event["log_failure"].getErrorMessage(), "ring gone")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_neverStartedDoesNotLeave(self) -> None:
        """
        A node that never started (a listener failed to bind) does not leave
        the ring in the name of the vnodes it never announced.
        """
        node, clock, transport = _Node(Deferred()), Clock(), _Transport()
        service = SpecterService(node, None, [], [], transport, clock)  # type: ignore[arg-type]
        with capturedLogs() as events:
            self.successResultOf(service.stopService())
        self.assertTrue(node.stopped)
        self.assertFalse([e for e in events if "leav" in e.get("log_format", "")])

    def test_leaveTimeout(self) -> None:
        """
        A leave still running after L{LEAVE_TIMEOUT} is cancelled, a warning
        says so, and the node stops.
        """
        node, clock, d, events = self.stop(Deferred())
        self.successResultOf(d)
        self.assertTrue(node.stopped)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual([e["log_format"] for e in warnings], ["leave did not finish in {s}s"])
        self.assertFalse([e for e in events if "log_failure" in e])
