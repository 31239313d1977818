"""
Placement epochs: the placement of each partition this node has applied,
taken from the routing feed only in increasing epoch order.

The control plane gives every partition's placement (its replicas) an
epoch, raised with every change.  Feed documents can arrive stale (a
control plane restored from an old file, a cache, a slow replica of it),
repeated, or out of order; a node therefore keeps, per partition, the
placement of the highest epoch it has seen and:

  - applies a placement with a higher epoch (one log line);
  - ignores the same placement again (the feed is polled: nothing to do);
  - ignores a lower epoch (C{stale}) or a different placement under the
    applied epoch (C{conflict}): one warning per such update and
    C{ceptra_placement_ignored_updates_total{partition,reason}}.

The applied placements are kept in C{DATA_DIR/placement.json}, so a
restarted node does not go back to an older epoch either.  The partitions
of the routing table are those of the latest feed document (a partition
removed from the table stops being routed to); their replicas are the
applied ones.

Membership changes in each partition's Raft group follow the applied
placement and carry its epoch into the group's configuration
(L{suite.ceptra.partitions}), where they are replicated: a leader whose
applied epoch is older than the group's configuration changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from suite.ceptra.routing import Routing
from suite.fileutil import writeAtomically
from suite.serial import SerialJob

__all__ = ["FILENAME", "LedgerCloser", "Placed", "PlacementFile", "PlacementLedger"]

log = Logger(namespace="ceptra.placement")

#: The ledger file, in the node's data directory.
FILENAME = "placement.json"


@dataclass(frozen=True)
class Placed:
    """
    A partition's placement as applied: its epoch and replicas (node names).
    """

    epoch: int
    replicas: tuple[str, ...]

    def toJSON(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "replicas": list(self.replicas)}


class PlacementFile:
    """
    Where the ledger is kept: a JSON file written atomically (temporary
    file, fsync, rename) in the reactor's thread pool.
    """

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self.reactor = reactor

    def read(self) -> Mapping[str, Placed]:
        """
        The saved placements (blocking; at start-up).  A missing file is
        empty; an unreadable one is logged and ignored (the Raft groups'
        configurations still carry their epochs).
        """
        try:
            with open(self.path, "rb") as f:
                return parseLedger(json.loads(f.read(16 * 1024 * 1024)))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warn("placement ledger {path} is unreadable ({why}); starting empty", path=self.path, why=e)
            return {}

    def write(self, placements: Mapping[str, Placed]) -> Deferred[None]:
        body = json.dumps({pid: p.toJSON() for pid, p in sorted(placements.items())}).encode()
        return deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), writeAtomically, self.path, body, 0o644
        )


def parseLedger(doc: Any) -> dict[str, Placed]:
    """
    Placements from a ledger document; malformed entries are skipped.
    """
    out: dict[str, Placed] = {}
    for pid, spec in doc.items() if isinstance(doc, dict) else ():
        if not isinstance(spec, dict):
            continue
        epoch, replicas = spec.get("epoch"), spec.get("replicas")
        if type(epoch) is int and isinstance(replicas, list) and all(isinstance(r, str) for r in replicas):
            out[str(pid)] = Placed(epoch, tuple(replicas))
    return out


class MemoryPlacementFile:
    """
    A ledger store in memory (tests; a simulated disk).
    """

    def __init__(self) -> None:
        self.saved: dict[str, Placed] = {}
        self.writes = 0

    def read(self) -> Mapping[str, Placed]:
        return dict(self.saved)

    def write(self, placements: Mapping[str, Placed]) -> Deferred[None]:
        self.saved = dict(placements)
        self.writes += 1
        return succeed(None)


class PlacementLedger:
    """
    The placements this node applied, one per partition, in epoch order.

    @param store: a L{PlacementFile} (or L{MemoryPlacementFile}); C{None}
        keeps nothing across restarts.
    @param onApplied: called with the partition id when a placement is applied.
    """

    def __init__(
        self,
        store: PlacementFile | MemoryPlacementFile | None = None,
        onApplied: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.onApplied = onApplied
        self.applied: dict[str, Placed] = dict(store.read()) if store is not None else {}
        #: (partition, "stale" | "conflict") -> feed updates ignored
        self.ignored: dict[tuple[str, str], int] = {}
        self._lastIgnored: dict[str, Placed] = {}
        # One write at a time; placements applied during a write are saved
        # by one more write after it.
        self._saver = SerialJob(self._write, "saving the placement ledger", log=log)
        #: what the store holds (as far as this ledger wrote it)
        self._stored: dict[str, Placed] = dict(self.applied)

    def epoch(self, pid: str) -> int:
        """
        The applied placement epoch of C{pid} (0: none applied).
        """
        placed = self.applied.get(pid)
        return placed.epoch if placed is not None else 0

    def update(self, routing: Routing) -> Routing:
        """
        Take the placements of a routing feed document; return the routing
        table with the applied placements.
        """
        changed = False
        for pid in routing.partitionIds:
            offered = Placed(routing.epochs.get(pid, 0), tuple(routing.partitions[pid]))
            current = self.applied.get(pid)
            if current is None or offered.epoch > current.epoch:
                log.info(
                    "partition {pid}: placement epoch {epoch} applied: replicas {replicas} (was {was})",
                    pid=pid,
                    epoch=offered.epoch,
                    replicas=list(offered.replicas),
                    was=f"epoch {current.epoch}, replicas {list(current.replicas)}" if current else "none",
                )
                self.applied[pid] = offered
                self._lastIgnored.pop(pid, None)
                changed = True
                if self.onApplied is not None:
                    self.onApplied(pid)
            elif offered != current and self._lastIgnored.get(pid) != offered:
                self._lastIgnored[pid] = offered
                reason = "stale" if offered.epoch < current.epoch else "conflict"
                self.ignored[(pid, reason)] = self.ignored.get((pid, reason), 0) + 1
                log.warn(
                    "partition {pid}: ignoring {reason} placement epoch {epoch} (replicas {replicas}); "
                    "applied: epoch {applied}, replicas {appliedReplicas}",
                    pid=pid,
                    reason=reason,
                    epoch=offered.epoch,
                    replicas=list(offered.replicas),
                    applied=current.epoch,
                    appliedReplicas=list(current.replicas),
                )
        if changed:
            self._save()
        return replace(
            routing,
            partitions={pid: self.applied[pid].replicas for pid in routing.partitionIds},
            epochs={pid: self.applied[pid].epoch for pid in routing.partitionIds},
        )

    def _save(self) -> None:
        if self.store is not None:
            self._saver.request()

    def _write(self) -> Deferred[None]:
        assert self.store is not None
        placements = dict(self.applied)
        d = self.store.write(placements)

        def written(_: object) -> None:
            self._stored = placements

        d.addCallbacks(written, lambda f: log.failure("could not save the placement ledger", f))
        return d

    def close(self) -> Deferred[None]:
        """
        Stop saving at shutdown without losing an applied placement: wait
        for the write in progress, then write once more if placements were
        applied that the store does not hold yet.  Later updates are kept in
        memory only.
        """
        stopped = self._saver.stop()
        store = self.store
        if store is None:
            return stopped

        def last(_: object) -> Deferred[None] | None:
            if self.applied == self._stored:
                return None
            d = store.write(dict(self.applied))
            d.addErrback(lambda f: log.failure("could not save the placement ledger", f))
            return d

        return stopped.addCallback(last)

    def toJSON(self) -> dict[str, Any]:
        """
        The applied placements and ignored updates, for C{/partitions}.
        """
        ignored: dict[str, dict[str, int]] = {}
        for (pid, reason), n in sorted(self.ignored.items()):
            ignored.setdefault(pid, {})[reason] = n
        return {
            "applied": {pid: p.toJSON() for pid, p in sorted(self.applied.items())},
            "ignoredUpdates": ignored,
        }


class LedgerCloser(Service):
    """
    Close the placement ledger at shutdown (parented before the partition
    manager, so it stops after it and the last placements are saved).
    """

    def __init__(self, ledger: PlacementLedger) -> None:
        self.ledger = ledger

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.ledger.close()
