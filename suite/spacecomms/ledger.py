"""
The node's records over its L{IRecordStore}: storing announces and
withdrawal tombstones, superseding older CDMs of the same conjunction,
withdrawing CDMs after their TCA, retention, and this node's sequence
numbers.
"""

from __future__ import annotations

import heapq
from typing import Any

from suite.spacecomms.cdm.model import CDMError, epochSeconds
from suite.spacecomms.core import NodeCore, log
from suite.spacecomms.resync import DERIVED
from suite.spacecomms.store import Record, StoreWriteError

__all__ = ["Ledger", "CONJUNCTION_WINDOW_SECONDS", "CLEANUP_INTERVAL_SECONDS"]

CONJUNCTION_WINDOW_SECONDS = 60.0
CLEANUP_INTERVAL_SECONDS = 60.0


class Ledger:
    """
    Records as this node holds them, with the indexes the lifecycle needs
    (a heap of TCAs, the active CDMs per object pair).
    """

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self._lastSeq = 0
        #: The highest sequence of this node's own entries loaded at start
        #: (not raised by updates made here, so those do not hide the ones
        #: peers still have to give back, nor by a restore cut short).
        self._mark = 0
        #: The peers whose re-sync (one that could restore) has completed
        #: since this start; to each of them the node states all it holds.
        self._rejoined: set[str] = set()
        self._lastCleanup = float("-inf")
        self._tcaHeap: list[tuple[float, str]] = []
        self._pairs: dict[frozenset[str], set[str]] = {}

    def load(self) -> None:
        """
        Load the store and rebuild the indexes and the sequence counter.
        """
        store = self.core.store
        store.load()
        for kind in ("cdm", "object"):
            for r in store.records(kind):
                if r.origin == self.core.nodeId:
                    self._lastSeq = max(self._lastSeq, r.sequence)
        self._mark = self._lastSeq
        for r in store.records("cdm"):
            if r.active and r.tca is not None:
                heapq.heappush(self._tcaHeap, (r.tca, r.key))
                self._pairs.setdefault(frozenset(r.objects), set()).add(r.key)

    def nextSequence(self, after: int = 0) -> int:
        """
        A per-originator sequence number: strictly increasing (and above
        C{after}, the version it replaces), and based on the clock in
        microseconds so it keeps increasing across restarts.
        """
        self._lastSeq = max(self._lastSeq + 1, int(self.core.now() * 1_000_000), after + 1)
        return self._lastSeq

    def restoreMark(self, peer: str | None) -> int:
        """
        What this node states to C{peer} in its HELLO as C{own_sequence}:
        its own entries newer than this are what it asks that peer to give
        back.  Until that peer's re-sync has completed after a start, the
        highest sequence it loaded (an update made meanwhile through the
        API, or what another peer gave back, must not hide the older
        entries this peer may still hold); from then on the highest it
        holds, so later reconnections to that peer re-send none of its own
        entries.
        """
        return self._lastSeq if peer in self._rejoined else self._mark

    def rejoined(self, peer: str) -> None:
        """
        C{peer}, which restores, finished its re-sync to this node: it gave
        back all it held of this node's own entries.
        """
        self._rejoined.add(peer)

    def restored(self, sequence: int) -> None:
        """
        A peer gave back one of this node's own entries: later sequences
        follow it.  (The restore mark stated to a peer moves only once that
        peer's whole re-sync has come: entries come in store order, not by
        sequence, so a re-sync cut short may have skipped older ones; and
        another peer may hold older ones this one lacked.)
        """
        self._lastSeq = max(self._lastSeq, sequence)

    def writtenHere(self, record: Record) -> bool:
        """
        Whether C{record} is a version this node made itself (through its
        API) since it started: its own, not given back by a peer, numbered
        above everything it loaded, and not a tombstone it derived
        (SUPERSEDED, TCA_PASSED).  Any copy of that entry a peer holds
        with another sequence is older, whatever the sequences say: a node
        that lost its store and runs with its clock behind numbers its new
        versions below those it made before.
        """
        return (
            record.origin == self.core.nodeId
            and record.learnedFrom is None
            and record.sequence > self._mark
            and (record.active or record.reason not in DERIVED)
        )

    def put(self, record: Record) -> None:
        """
        Store C{record}, indexing an active CDM by TCA and object pair.
        """
        self.core.store.put(record)
        if record.origin == self.core.nodeId:
            self._lastSeq = max(self._lastSeq, record.sequence)
        if record.kind == "cdm" and record.active and record.tca is not None:
            heapq.heappush(self._tcaHeap, (record.tca, record.key))
            self._pairs.setdefault(frozenset(record.objects), set()).add(record.key)

    def tombstone(
        self,
        old: Record,
        reason: str,
        sequence: int,
        origin: str,
        learnedFrom: str | None = None,
        override: bool | None = None,
        signed: dict[str, Any] | None = None,
    ) -> Record:
        """
        Store a withdrawal of C{old}; C{signed} is the signed payload that
        made it (None for one this node derives itself: SUPERSEDED,
        TCA_PASSED), whose signature is kept to re-send it.
        """
        now = self.core.now()
        record = Record(
            old.kind,
            old.key,
            origin,
            sequence,
            False,
            None,
            reason,
            old.createdAt,
            now,
            learnedFrom,
            old.tca,
            old.objects,
            old.override if override is None else override,
            None if signed is None else signed.get("signature"),
            None if signed is None else signed.get("cert"),
        )
        self.core.store.put(record)
        if origin == self.core.nodeId:
            self._lastSeq = max(self._lastSeq, sequence)
        return record

    def supersede(self, record: Record) -> None:
        """
        A newer CDM for the same conjunction (same two objects, TCA within
        a minute) replaces older ones, which are withdrawn as SUPERSEDED.
        """
        if record.tca is None or record.body is None:
            return
        pair = frozenset(record.objects)
        keys = self._pairs.get(pair, set())
        if not keys - {record.key}:
            return
        mine = _created(record)
        for key in sorted(keys):
            o: Record | None = self.core.store.get("cdm", key)
            if o is None or not o.active or frozenset(o.objects) != pair:
                keys.discard(key)
                continue
            if o.key == record.key or o.tca is None:
                continue
            if abs(o.tca - record.tca) > CONJUNCTION_WINDOW_SECONDS:
                continue
            if (_created(o), o.sequence) < (mine, record.sequence):
                self.tombstone(o, "SUPERSEDED", o.sequence, o.origin, o.learnedFrom)
                keys.discard(o.key)
                log.info("cdm {cdm_id} superseded by {newer}", cdm_id=o.key, newer=record.key)
            elif (_created(o), o.sequence) > (mine, record.sequence):
                self.tombstone(record, "SUPERSEDED", record.sequence, record.origin, record.learnedFrom)
                keys.discard(record.key)
                log.info("cdm {cdm_id} superseded by {newer}", cdm_id=record.key, newer=o.key)
                return

    def retentionLimit(self, kind: str) -> float | None:
        """
        With C{storage.cleanup.enabled}, the POSIX time before which an entry
        of C{kind} last changed by its originator is past retention.
        """
        config = self.core.config
        if not config.cleanup_enabled:
            return None
        hours = config.cdm_retention_hours if kind == "cdm" else config.object_retention_hours
        return self.core.now() - hours * 3600

    def pastRetention(self, kind: str, sequence: int) -> bool:
        """
        Whether an entry whose originator last changed it at C{sequence}
        (microseconds of its clock) is past retention here: removed, and
        not taken back from a peer that still holds it.
        """
        limit = self.retentionLimit(kind)
        return limit is not None and sequence / 1e6 < limit

    def tick(self) -> None:
        """
        Withdraw CDMs whose TCA has passed (TCA_PASSED, on every node) and,
        once a minute, apply the retention limits.
        """
        core = self.core
        store = core.store
        now = core.now()
        while self._tcaHeap and self._tcaHeap[0][0] < now:
            _, key = heapq.heappop(self._tcaHeap)
            r = store.get("cdm", key)
            if r is not None and r.active and r.tca is not None and r.tca < now:
                try:
                    self.tombstone(r, "TCA_PASSED", r.sequence, r.origin, r.learnedFrom)
                except StoreWriteError as e:
                    # Tried again next tick; the timer must not stop.
                    heapq.heappush(self._tcaHeap, (r.tca, key))
                    log.error(
                        "cdm {cdm_id}: TCA_PASSED not recorded yet: {reason}", cdm_id=key, reason=str(e)
                    )
                    return
                log.info("cdm {cdm_id} withdrawn: TCA_PASSED", cdm_id=key)
        config = core.config
        if config.cleanup_enabled and now - self._lastCleanup >= CLEANUP_INTERVAL_SECONDS:
            self._lastCleanup = now
            for kind, hours in (
                ("cdm", config.cdm_retention_hours),
                ("object", config.object_retention_hours),
            ):
                limit = now - hours * 3600
                for r in store.records(kind):
                    # Counted from the originator's last change (its
                    # sequence), as every node counts it, so that peers do
                    # not hand back, as new, what each other dropped.
                    if min(r.updatedAt, r.sequence / 1e6) < limit:
                        try:
                            store.remove(kind, r.key)
                        except StoreWriteError as e:
                            self._lastCleanup = now - CLEANUP_INTERVAL_SECONDS  # again next tick
                            log.error(
                                "retention: {kind} {key} not removed yet: {reason}",
                                kind=kind,
                                key=r.key,
                                reason=str(e),
                            )
                            return
                        log.info("retention: removed {kind} {key}", kind=kind, key=r.key)


def _created(r: Record) -> float:
    try:
        return epochSeconds(str((r.body or {})["header"]["CREATION_DATE"]))
    except (KeyError, TypeError, CDMError):
        return 0.0
