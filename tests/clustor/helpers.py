"""
Shared test data for the control plane and its clients.
"""

from __future__ import annotations

import os
from typing import Any, cast

from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

__all__ = ["STATE_YAML", "writeState", "captureLogs"]

STATE_YAML = """\
nodes:
  ceptra-a: {raft: "127.0.0.1:26021", admin: "127.0.0.1:26020", spiffe: "spiffe://example.org/ceptra/a"}
  ceptra-b: {raft: "127.0.0.1:26121", spiffe: "spiffe://example.org/ceptra/b"}
partitions:
  - id: p0
    replicas: [ceptra-a, ceptra-b]
    leader: ceptra-a
  - id: p1
    replicas: [ceptra-b]
features:
  cep.sliding_windows: true
  cep.max_window_ms: 60000
warmup:
  p0: {ready: true, progress: 1.0}
  p1: false
activation:
  barriers:
    - {id: epoch-1, partitions: [p0, p1], ready: false, note: "rolling upgrade"}
"""


def writeState(directory: str, text: str = STATE_YAML, name: str = "state.yaml") -> str:
    """
    Write C{text} as a state file in C{directory}; return its path.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def captureLogs(testCase: SynchronousTestCase) -> list[dict[str, Any]]:
    """
    Collect every log event emitted during the test.
    """
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    testCase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events
