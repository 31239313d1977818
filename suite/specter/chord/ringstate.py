"""
The ring-state file (C{DATA/ring.json}): the peers a process was in a ring
with and its vnodes' last predecessor and successor lists, so that a
restart without C{--join} rejoins that ring instead of founding a new one.

Written atomically (temporary file, fsync, rename, fsync of the directory)
off the reactor thread; read once at start-up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from suite.daemon import ConfigError
from suite.fileutil import writeAtomically
from suite.specter.interfaces import IRingState

__all__ = ["RingStateFile", "RING_STATE", "MAX_STATE"]

RING_STATE = "ring.json"
MAX_STATE = 4 * 1024 * 1024


@implementer(IRingState)
class RingStateFile:
    """
    L{IRingState} in C{DATA/ring.json}.

    @param runner: runs a blocking function off the reactor thread and
        returns a L{Deferred} of its result (C{deferToThreadPool}).
    """

    def __init__(self, dataDir: str, runner: Callable[[Callable[[], Any]], Deferred[Any]]) -> None:
        self.path = os.path.join(dataDir, RING_STATE)
        self.runner = runner

    def load(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_STATE + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ConfigError(f"--data-dir: cannot read {self.path}: {e.strerror}") from None
        try:
            if len(data) > MAX_STATE:
                raise ValueError("too large")
            state = json.loads(data)
            peers = state["peers"]
            if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
                raise ValueError("peers must be a list of addresses")
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"--data-dir: {self.path} is not a ring state file ({e}); "
                "move it away to found a new ring with --bootstrap"
            ) from None
        return dict(state)

    def save(self, state: dict[str, Any]) -> Deferred[None]:
        data = json.dumps(state, indent=1, sort_keys=True).encode() + b"\n"
        return self.runner(lambda: writeAtomically(self.path, data))
