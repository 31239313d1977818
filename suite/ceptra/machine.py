"""
A partition's Raft state machine: the CEP engine, plus rule versioning.

Log entries are the engine's own payloads (L{suite.ceptra.engine.codec}):
C{E2} + the events of one or more ingest requests in msgpack columns (C{E1}
+ a JSON batch of events, written by earlier versions or for values msgpack
cannot carry, is applied too), C{R1} + a JSON rules document.  The engine deduplicates events by C{event_id} inside its
bounded horizon, so a batch resent after a lost acknowledgement is not
counted twice; the result handed back to the proposer says how many events
of the batch were new (for an entry combining several requests, under
C{"segments"}, one count per request).  A rules entry bumps this partition's rules version
and records the document's digest (the features-feed follower compares it).

Everything here is deterministic: replaying the log, or restoring a
snapshot and replaying the rest, gives the same state on every replica.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
from zope.interface import implementer

from suite.ceptra.engine import PartitionEngine, encodeRules
from suite.ceptra.engine.codec import RULES_TAG, encodeBatch
from suite.raft.interfaces import IRaftSnapshotCapture, IRaftStateMachine
from suite.raft.snapshot import binHeader

__all__ = ["PartitionMachine", "eventsEntry", "rulesEntry", "rulesDigest", "partitionNumber"]

SNAPSHOT_VERSION = 2


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


def eventsEntry(*requests: list[dict[str, Any]]) -> bytes:
    """
    The log entry of the validated events (C{{"event_id", "key", "ts",
    "fields"}}) of one or more requests, in order.
    """
    return encodeBatch(requests)


def rulesEntry(doc: Any) -> bytes:
    """
    The log entry of a rules document (raises L{EngineError} when invalid).
    """
    return encodeRules(doc)


def _encodeMachine(engine: bytes, rulesVersion: int, digest: str | None, lastIndex: int) -> bytes:
    """
    The msgpack map C{"v", "engine", "rulesVersion", "rulesDigest",
    "lastIndex"} of a partition machine's snapshot, without copying the
    engine's bytes twice.
    """
    head = msgpack.packb({"v": SNAPSHOT_VERSION}, use_bin_type=True)
    tail = msgpack.packb(
        {"rulesVersion": rulesVersion, "rulesDigest": digest, "lastIndex": lastIndex}, use_bin_type=True
    )
    return b"".join((b"\x85", head[1:], msgpack.packb("engine"), binHeader(len(engine)), engine, tail[1:]))


@implementer(IRaftStateMachine, IRaftSnapshotCapture)
class PartitionMachine:
    """
    @param onResults: called with C{(partition, index, results)} after each
        applied entry that produced results (the partition and the log index
        they reflect).
    @param wantResults: asked before each entry whether anyone reads its
        results (e.g. a C{/stream} client); when it answers false the engine
        does not build them (the state is the same either way).  Without
        it, results are built whenever C{onResults} is set.
    """

    def __init__(
        self,
        partition: str,
        onResults: Callable[[str, int, list[dict[str, Any]]], None] | None = None,
        wantResults: Callable[[], bool] | None = None,
    ) -> None:
        self.partition = partition
        self.onResults = onResults
        self.wantResults = wantResults
        self.number = partitionNumber(partition)
        self.engine = PartitionEngine(partition=self.number)
        self.rulesVersion = 0
        self.rulesDigest: str | None = None
        self.lastIndex = 0

    def _counters(self) -> tuple[int, int, int]:
        # events, duplicates, rejected (events, entries and rules documents)
        counters = self.engine.status()["counters"]
        return (
            counters["events"],
            counters["duplicates"],
            counters["rejected"] + counters["rejected_entries"] + counters["rejected_rules"],
        )

    @property
    def events(self) -> int:
        return self._counters()[0]

    @property
    def duplicates(self) -> int:
        return self._counters()[1]

    # -- IRaftStateMachine ------------------------------------------------

    def apply(self, index: int, command: bytes) -> object:
        self.lastIndex = index
        before = self._counters()
        onResults = self.onResults
        want = onResults is not None and (self.wantResults is None or self.wantResults())
        results = self.engine.apply(index, command, want)
        after = self._counters()
        answer: dict[str, Any] = {
            "index": index,
            "accepted": after[0] - before[0],
            "duplicates": after[1] - before[1],
        }
        if after[2] != before[2]:
            answer["rejected"] = after[2] - before[2]
        segments = self.engine.lastSegments
        if len(segments) > 1:
            answer["segments"] = [
                {"accepted": a, "duplicates": d, **({"rejected": r} if r else {})} for a, d, r in segments
            ]
        if command[:2] == RULES_TAG:
            if after[2] == before[2] and self._rulesApplied(command):
                self.rulesVersion += 1
                answer["rulesVersion"] = self.rulesVersion
            else:
                why = next(
                    (r.get("error") for r in results if r.get("kind") == "rules" and not r.get("accepted")),
                    None,
                )
                answer["error"] = f"rules document refused: {why or 'rejected by the engine'}"
        if results and onResults is not None:
            onResults(self.partition, index, results)
        return answer

    def _rulesApplied(self, command: bytes) -> bool:
        try:
            doc = json.loads(command[2:])
        except ValueError:
            return False
        self.rulesDigest = rulesDigest(doc)
        return True

    def snapshot(self) -> bytes:
        # At once, on the calling thread (the node's own snapshot): the
        # engine's snapshot, not its capture, whose encoding paces itself
        # with sleeps meant for a thread beside the reactor's.
        return _encodeMachine(self.engine.snapshot(), self.rulesVersion, self.rulesDigest, self.lastIndex)

    # -- IRaftSnapshotCapture ---------------------------------------------

    def captureSnapshot(self) -> Callable[[], bytes]:
        """
        Freeze the state now (the engine's L{PartitionEngine.capture}, about
        a tenth of encoding it); the function returned gives the bytes
        L{snapshot} gives now, and may run in a thread while entries are
        applied.
        """
        engine = self.engine.capture()
        rulesVersion, digest, lastIndex = self.rulesVersion, self.rulesDigest, self.lastIndex

        def encode() -> bytes:
            return _encodeMachine(engine(), rulesVersion, digest, lastIndex)

        return encode

    def restore(self, data: bytes) -> None:
        state = msgpack.unpackb(data, raw=False)
        self.engine = PartitionEngine.restore(self.number, state["engine"])
        self.rulesVersion = state["rulesVersion"]
        self.rulesDigest = state["rulesDigest"]
        self.lastIndex = state["lastIndex"]

    # -- views ------------------------------------------------------------

    def stateHash(self) -> str:
        """
        A digest of the replicated state: the engine's hash (its canonical
        state, dedup horizon and counters included) and the rules version.
        Equal on replicas at the same index.
        """
        h = hashlib.sha256()
        h.update(self.engine.stateHash().encode())
        h.update(msgpack.packb([self.rulesVersion, self.rulesDigest]))
        return h.hexdigest()

    def status(self) -> dict[str, Any]:
        engine: Any
        try:
            engine = self.engine.status()
        except Exception as e:  # the overlay must never break /readyz
            engine = {"error": str(e)}
        counters = engine.get("counters", {}) if isinstance(engine, dict) else {}
        return {
            "rulesVersion": self.rulesVersion,
            "rulesDigest": self.rulesDigest,
            "events": counters.get("events"),
            "duplicates": counters.get("duplicates"),
            "appliedIndex": self.lastIndex,
            "engine": engine,
        }
