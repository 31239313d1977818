"""
suite.kv: L{IKeyValueStore} and its backends (memory, aof, sqlite).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.interfaces import IReactorTime

from suite.kv.versions import TOMBSTONE_HORIZON

__all__ = ["openStore", "BACKENDS"]

BACKENDS = ("aof", "sqlite", "memory")


def openStore(
    backend: str,
    dataDir: str,
    index: int,
    clock: IReactorTime,
    runner: Any,
    flushInterval: float = 3.0,
    origin: int = 0,
    horizon: float = TOMBSTONE_HORIZON,
    sync: bool = False,
) -> Any:
    """
    Open vnode C{index}'s store under C{dataDir/index} with C{backend}.
    C{runner} runs a blocking callable off the reactor thread (one per store
    for SQLite, so it has a single writer) and returns a L{Deferred}.
    C{origin} is the writer id in the versions the store stamps (the
    vnode's id); tombstones are kept C{horizon} seconds.  With C{sync}, the
    append-only store acknowledges a change only once it is fsynced (SQLite
    always acknowledges after its commit).
    """
    directory = os.path.join(dataDir, str(index))
    if backend == "memory":
        from suite.kv.memory import MemoryStore

        return MemoryStore(clock, origin=origin, horizon=horizon)
    if backend == "aof":
        from suite.kv.aof import AOFStore

        return AOFStore(
            directory, clock, runner, flushInterval=flushInterval, origin=origin, horizon=horizon, sync=sync
        )
    if backend == "sqlite":
        from suite.kv.sqlite import SQLiteStore

        return SQLiteStore(
            directory, os.path.join(dataDir, "cache"), clock, runner, origin=origin, horizon=horizon
        )
    raise ValueError(f"unknown KV backend {backend!r}")
