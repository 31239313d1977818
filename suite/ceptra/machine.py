"""
A partition's Raft state machine: the CEP engine behind an envelope that
adds event-id deduplication and rule versioning.

Log entries are msgpack maps:

  - C{{"t": "events", "e": [event, ...]}}: one ingest batch.  Events whose
    C{event_id} was applied within the dedup horizon (the last
    C{horizon} ids, in log order) are dropped, the rest go to the engine as
    one L{encodeEvents} payload;
  - C{{"t": "rules", "doc": {...}, "digest": "sha256 hex"}}: a rules
    document (validated before it was proposed), applied with
    L{encodeRules}; the rules version counts such entries.

Everything here is deterministic: replaying the log, or restoring a
snapshot and replaying the rest, gives the same state on every replica.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
from zope.interface import implementer

from suite.ceptra.engine import EngineError, PartitionEngine, encodeEvents, encodeRules
from suite.raft.interfaces import IRaftStateMachine

__all__ = ["PartitionMachine", "eventsEntry", "rulesEntry", "rulesDigest", "DEFAULT_HORIZON"]

DEFAULT_HORIZON = 200_000
SNAPSHOT_VERSION = 1


def partitionNumber(pid: str) -> int:
    """
    The engine's integer partition number for partition id C{pid}: its
    trailing digits (C{p12} -> 12), else a CRC-32 of the id.
    """
    m = re.search(r"(\d+)$", pid)
    if m is not None and len(m.group(1)) < 10:
        return int(m.group(1))
    return zlib.crc32(pid.encode()) & 0x7FFFFFFF


def rulesDigest(doc: Any) -> str:
    """
    A stable digest of a rules document (canonical JSON).
    """
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def eventsEntry(events: list[dict[str, Any]]) -> bytes:
    return msgpack.packb({"t": "events", "e": events}, use_bin_type=True)  # type: ignore[no-any-return]


def rulesEntry(doc: Any) -> bytes:
    return msgpack.packb(  # type: ignore[no-any-return]
        {"t": "rules", "doc": doc, "digest": rulesDigest(doc)}, use_bin_type=True
    )


@implementer(IRaftStateMachine)
class PartitionMachine:
    """
    @param onResults: called with C{(partition, index, results)} after each
        applied entry that produced results (results are tagged with the
        partition and the log index they reflect).
    """

    def __init__(
        self,
        partition: str,
        horizon: int = DEFAULT_HORIZON,
        onResults: Callable[[str, int, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.partition = partition
        self.horizon = horizon
        self.onResults = onResults
        self.number = partitionNumber(partition)
        self.engine = PartitionEngine(partition=self.number)
        self._order: deque[str] = deque()
        self._seen: set[str] = set()
        self.rulesVersion = 0
        self.rulesDigest: str | None = None
        self.events = 0
        self.duplicates = 0
        self.lastIndex = 0
        self.errors = 0

    # -- IRaftStateMachine ------------------------------------------------

    def apply(self, index: int, command: bytes) -> object:
        self.lastIndex = index
        try:
            entry = msgpack.unpackb(command, raw=False)
        except Exception:
            self.errors += 1
            return {"error": "malformed entry"}
        if not isinstance(entry, dict):
            self.errors += 1
            return {"error": "malformed entry"}
        kind = entry.get("t")
        if kind == "events":
            return self._applyEvents(index, entry.get("e") or [])
        if kind == "rules":
            return self._applyRules(index, entry.get("doc"), entry.get("digest"))
        self.errors += 1
        return {"error": f"unknown entry type {kind!r}"}

    def _applyEvents(self, index: int, events: list[Any]) -> dict[str, Any]:
        fresh: list[dict[str, Any]] = []
        dup = 0
        for event in events:
            eid = event.get("event_id") if isinstance(event, dict) else None
            if not isinstance(eid, str):
                continue
            if eid in self._seen:
                dup += 1
                continue
            self._seen.add(eid)
            self._order.append(eid)
            fields = event.get("fields") or {}
            fresh.append({**fields, "event_id": eid, "key": event.get("key"), "ts": event.get("ts")})
        while len(self._order) > self.horizon:
            self._seen.discard(self._order.popleft())
        self.events += len(fresh)
        self.duplicates += dup
        results: list[dict[str, Any]] = []
        if fresh:
            try:
                results = self.engine.apply(index, encodeEvents(fresh))
            except EngineError as e:
                self.errors += 1
                return {"index": index, "accepted": 0, "duplicates": dup, "error": str(e)}
        self._publish(index, results)
        return {"index": index, "accepted": len(fresh), "duplicates": dup}

    def _applyRules(self, index: int, doc: Any, digest: Any) -> dict[str, Any]:
        try:
            results = self.engine.apply(index, encodeRules(doc))
        except EngineError as e:
            self.errors += 1
            return {"index": index, "error": str(e)}
        self.rulesVersion += 1
        self.rulesDigest = digest if isinstance(digest, str) else rulesDigest(doc)
        self._publish(index, results or [])
        return {"index": index, "rulesVersion": self.rulesVersion}

    def _publish(self, index: int, results: list[dict[str, Any]]) -> None:
        if results and self.onResults is not None:
            tagged = [{**r, "partition": self.partition, "index": index} for r in results]
            self.onResults(self.partition, index, tagged)

    def snapshot(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            {
                "v": SNAPSHOT_VERSION,
                "engine": self.engine.snapshot(),
                "seen": list(self._order),
                "rulesVersion": self.rulesVersion,
                "rulesDigest": self.rulesDigest,
                "events": self.events,
                "duplicates": self.duplicates,
                "lastIndex": self.lastIndex,
            },
            use_bin_type=True,
        )

    def restore(self, data: bytes) -> None:
        state = msgpack.unpackb(data, raw=False)
        self.engine = PartitionEngine.restore(self.number, state["engine"])
        self._order = deque(state["seen"])
        self._seen = set(self._order)
        self.rulesVersion = state["rulesVersion"]
        self.rulesDigest = state["rulesDigest"]
        self.events = state["events"]
        self.duplicates = state["duplicates"]
        self.lastIndex = state["lastIndex"]

    # -- views ------------------------------------------------------------

    def stateHash(self) -> str:
        """
        A digest of the replicated state: the engine's hash, the dedup
        horizon and the counters.  Equal on replicas at the same index.
        """
        h = hashlib.sha256()
        h.update(self.engine.stateHash().encode())
        h.update(msgpack.packb([list(self._order), self.rulesVersion, self.events, self.duplicates]))
        return h.hexdigest()

    def status(self) -> dict[str, Any]:
        engine: Any
        try:
            engine = self.engine.status()
        except Exception as e:  # the overlay must never break /readyz
            engine = {"error": str(e)}
        return {
            "rulesVersion": self.rulesVersion,
            "rulesDigest": self.rulesDigest,
            "events": self.events,
            "duplicates": self.duplicates,
            "appliedIndex": self.lastIndex,
            "engine": engine,
        }
