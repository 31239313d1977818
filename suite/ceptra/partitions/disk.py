"""
The data of the replicas that no longer run on this node: retired copies
and stopped replicas.

A replica leaves this node's disk only once its group is known to have
removed it: a configuration without this node committed (the leader said
so, or this replica's own commit index covers it).  Then it is retired:
its data is moved to C{DATA_DIR/retired/<partition>-<epoch>-<time>}
(L{suite.ceptra.partitions.retire}), kept C{retiredKeep} seconds, then
deleted.  Every retired copy of a partition is listed until deleted (a
partition placed here, moved off, placed here and moved off again has
several).

A replica stopped by the grace period alone (L{suite.ceptra.partitions.
lifecycle}: Leaving or Dropped) was never told that its removal
committed.  Its data stays in place, never deleted by the node, because
it may hold the only copy of acknowledged writes:

  - Raft commits an entry once a majority of the configuration it was
    appended under holds it, and a configuration entry takes effect when
    appended, not when committed: a configuration excluding this replica
    may still be truncated by a later leader, which makes this replica a
    member again.  Neither its own log nor the leader commit index it last
    heard (announced for the leader's log, not proven for this one) tells
    that the configuration committed; only its commit index does, and a
    replica whose commit index covers it is removed, not stopped by the
    grace period.
  - A partition no longer in the routing table has no group running at
    all: every replica stops after the grace period, so no leader is left
    to tell anyone anything, and every replica's copy may be the only one
    left.  Retiring them would also mark them never to start again: if the
    partition came back (an operator's mistake in the control plane's
    file, a feed undone), every replica would start empty, and its
    acknowledged writes would be gone for good once the copies expire.

The one exception is a replica whose log holds nothing (no entry, no
snapshot) when the grace period stops it: it never stored anything of its
group's, so nothing of it can be the last copy of anything, and it is
retired like a removed one (L{suite.ceptra.partitions.lifecycle}).

A replica stopped while it holds the configuration entry excluding it
(its partition still routed) asks its group's current members for proof
that this entry is committed (L{suite.raft.commitproof}): one member's
proof retires it; until then it is reported as stopped.

So any other such replica is reported: C{stopped} while its partition is still in
the routing table (placed elsewhere: it is started again at the node's
next start, and retires through its group like any replica moved away),
C{orphaned} once the partition is not in the routing table (found so at
start-up too).  An orphaned replica whose partition is routed again is
started again (the same as at start-up); one placed here again runs again
with its data.  Removing an orphaned replica's data is the operator's
decision: the log line and C{/partitions} give its paths and the command.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.ceptra.partitions.retire import (
    RETIRED_DIR,
    marker,
    markRetired,
    moveRetired,
    parseName,
    pendingRetirements,
    purge,
    retiredCopies,
)
from suite.raft.incarnation import FILENAME as INCARNATION_FILE

__all__ = ["ReplicaDisk", "RetiredCopy", "StoppedReplica", "heldReplicas"]

log = Logger(namespace="ceptra.partitions")


@dataclass
class RetiredCopy:
    """
    The data of a replica retired on this node, kept under
    C{DATA_DIR/retired/} until it is deleted (for status pages).
    """

    #: the placement epoch of the configuration that removed the replica
    epoch: int
    #: when it retired (unix time, from the copy's name)
    at: int
    #: where its data goes (or went)
    path: str
    #: whether its data is moved there yet
    moved: bool


@dataclass
class StoppedReplica:
    """
    A replica stopped on this node without its removal from its group
    known committed: its data stays in place.
    """

    #: when it stopped, or was found on disk at start-up
    since: float
    #: whether its partition was out of the routing table when last seen
    #: (then it is orphaned; logged once each time it becomes so)
    orphaned: bool


def heldReplicas(walDir: str) -> list[str]:
    """
    The partitions whose replica this node's storage holds: an incarnation
    file in C{WAL_DIR/<partition>}, and no retirement marker (blocks: one
    listing and a stat or two per partition).
    """
    try:
        names = sorted(os.listdir(walDir))
    except FileNotFoundError:
        return []
    return [
        pid
        for pid in names
        if os.path.exists(os.path.join(walDir, pid, INCARNATION_FILE)) and marker(walDir, pid) is None
    ]


class ReplicaDisk:
    """
    The retired copies and stopped replicas of one node.

    @param dataDir: where retired replicas' data goes (C{retired/});
        C{None}: a retired replica's data is left in place (simulations).
    @param keep: how long a retired copy is kept, in seconds.
    @param fileRunner: runs blocking file work off the reactor thread.
    @param forget: forgets a partition's records in the shared WAL.
    """

    def __init__(
        self,
        reactor: Any,
        walDir: str,
        snapshotDir: str,
        dataDir: str | None,
        keep: float,
        fileRunner: Callable[..., Deferred[Any]],
        forget: Callable[[str], Awaitable[None]],
    ) -> None:
        self.reactor = reactor
        self.walDir, self.snapshotDir, self.dataDir = walDir, snapshotDir, dataDir
        self.keep = keep
        self.fileRunner = fileRunner
        self.forget = forget
        #: partition -> its retirement in progress (data being moved)
        self.reclaiming: dict[str, Deferred[None]] = {}
        #: partitions whose retired replica could not be moved in this run
        #: (never started: its move is tried again at the next start)
        self.retireFailed: set[str] = set()
        self.lastPurge: float | None = None
        #: partition -> name -> a retired copy kept here, until deleted
        self.copies: dict[str, dict[str, RetiredCopy]] = {}
        #: partition -> its replica stopped here, data in place
        self.stopped: dict[str, StoppedReplica] = {}

    # -- retirement -------------------------------------------------------

    def reclaim(self, pid: str, closing: Deferred[Any] | None, epoch: int) -> None:
        """
        C{pid}'s replica left its group for good (a configuration of
        placement C{epoch} without this node committed) and is shut down:
        move its data to C{DATA_DIR/retired/}, once its storage is closed
        (C{closing}).
        """
        self.stopped.pop(pid, None)
        if self.dataDir is None or pid in self.reclaiming:
            return
        now = self.reactor.seconds()
        provisional = f"{pid}-{epoch}-{int(now)}"
        self.note(provisional, moved=False)

        async def reclaiming() -> None:
            if closing is not None:
                await closing
            name = await self.fileRunner(markRetired, self.walDir, pid, epoch, now)
            if name != provisional:
                # An earlier marker names the copy.
                self.copies.get(pid, {}).pop(provisional, None)
            self.note(name, moved=False)
            await self.finish(pid, name)

        self.track(pid, Deferred.fromCoroutine(reclaiming()))

    def track(self, pid: str, d: Deferred[None]) -> None:
        self.reclaiming[pid] = d

        def failed(f: Failure) -> None:
            self.retireFailed.add(pid)
            log.warn(
                "partition {pid}: moving the retired replica's data failed: {why}; "
                "it is not started again, and moved at the next start",
                pid=pid,
                why=f.getErrorMessage(),
            )

        def done(_: object) -> None:
            if self.reclaiming.get(pid) is d:
                del self.reclaiming[pid]

        d.addErrback(failed).addBoth(done)

    async def finish(self, pid: str, name: str) -> None:
        """
        Forget C{pid}'s records in the shared WAL, then move its
        directories (both steps idempotent: a retirement cut short is
        finished the same way).
        """
        assert self.dataDir is not None
        await self.forget(pid)
        where = await self.fileRunner(moveRetired, self.dataDir, self.walDir, self.snapshotDir, pid, name)
        self.note(name, moved=True)
        log.info("partition {pid} replica retired; data moved to {where}", pid=pid, where=where)

    def note(self, name: str, moved: bool) -> None:
        """
        Remember the retired copy C{name} for status pages.
        """
        parsed = parseName(name)
        if parsed is None or self.dataDir is None:
            return
        pid, epoch, at = parsed
        path = os.path.join(self.dataDir, RETIRED_DIR, name)
        self.copies.setdefault(pid, {})[name] = RetiredCopy(epoch, at, path, moved)

    def resume(self) -> None:
        """
        At start-up, before any replica starts: list the retired copies
        kept, and finish the retirements a crash cut short (one directory
        listing, and a stat per partition).
        """
        if self.dataDir is None:
            return
        try:
            for name, _ in retiredCopies(self.dataDir):
                self.note(name, moved=True)
        except OSError as e:
            log.warn("listing retired replicas in {dir}: {why}", dir=self.dataDir, why=e)
        try:
            pending = pendingRetirements(self.walDir)
        except OSError as e:
            log.warn("looking for retired replicas in {dir}: {why}", dir=self.walDir, why=e)
            return
        for pid, name in pending:
            self.note(name, moved=False)
            self._resume(pid, name)

    def _resume(self, pid: str, name: str) -> None:
        log.info("partition {pid}: finishing the retirement of its replica", pid=pid)
        self.track(pid, Deferred.fromCoroutine(self.finish(pid, name)))

    def retired(self, pid: str) -> bool:
        """
        Whether C{pid}'s replica here is retired (its data not moved yet):
        then it is not started; its move is resumed, once per run.
        """
        if self.dataDir is None or pid in self.reclaiming:
            return pid in self.reclaiming
        if pid in self.retireFailed:
            return True
        found = marker(self.walDir, pid)
        if found is None:
            return False
        self._resume(pid, str(found["name"]))
        return True

    def purgeOld(self) -> None:
        """
        Delete retired copies older than C{keep} (at start-up, then at
        most once a minute).
        """
        now = self.reactor.seconds()
        if self.dataDir is None or (self.lastPurge is not None and now - self.lastPurge < 60.0):
            return
        self.lastPurge = now

        def purged(paths: list[str]) -> None:
            gone = set(paths)
            for pid, copies in list(self.copies.items()):
                for name, copy in list(copies.items()):
                    if copy.path in gone:
                        del copies[name]
                if not copies:
                    del self.copies[pid]
            for path in paths:
                log.info(
                    "deleted retired replica data {path} (older than {keep} s)", path=path, keep=self.keep
                )

        self.fileRunner(purge, self.dataDir, self.keep, now).addCallbacks(
            purged, lambda f: log.warn("deleting old retired replica data: {why}", why=f.getErrorMessage())
        )

    # -- stopped replicas -------------------------------------------------

    def data(self, pid: str) -> list[str]:
        """
        Where a replica of C{pid} keeps its data here.
        """
        return [os.path.join(self.walDir, pid), os.path.join(self.snapshotDir, pid)]

    def removeCommand(self, pid: str) -> str:
        """
        The shell command that removes C{pid}'s replica from this node's
        storage, to run with the node stopped.
        """
        wal, snapshots = self.data(pid)
        return f"python -m suite.raft wal drop {self.walDir} {pid} && rm -r {wal} {snapshots}"

    def noteStopped(self, pid: str, now: float, routed: bool, found: bool = False) -> bool:
        """
        C{pid}'s replica stopped (or, with C{found}, was found on disk at
        start-up) without its removal known committed; C{routed}: whether
        its partition is in the routing table.  Return whether it is
        orphaned now.
        """
        self.stopped[pid] = StoppedReplica(now, False)
        if routed:
            log.warn(
                "partition {pid}: this node's replica stopped without hearing that its group removed it; "
                "its data stays in place ({data}) and it is started again at the next start (its group "
                "may still count on it)",
                pid=pid,
                data=", ".join(self.data(pid)),
            )
            return False
        return self._orphaned(pid, found)

    def _orphaned(self, pid: str, found: bool = False) -> bool:
        self.stopped[pid].orphaned = True
        log.warn(
            "partition {pid} is not in the routing table and this node's replica of it "
            + ("was found on disk" if found else "stopped")
            + " without hearing that its group removed it: its data stays in place ({data}), it may "
            "hold the only copy of acknowledged writes; to remove it, with the node stopped: {command}",
            pid=pid,
            data=", ".join(self.data(pid)),
            command=self.removeCommand(pid),
        )
        return True

    def routingChanged(self, routed: Collection[str]) -> list[str]:
        """
        Follow the partitions in the routing table (C{routed}): return the
        stopped replicas orphaned by it (their partition left the table).
        """
        out = []
        for pid, replica in sorted(self.stopped.items()):
            if pid in routed:
                replica.orphaned = False
            elif not replica.orphaned:
                self._orphaned(pid)
                out.append(pid)
        return out

    # -- status -----------------------------------------------------------

    def copyStatus(self, pid: str, copy: RetiredCopy) -> dict[str, Any]:
        return {
            "partition": pid,
            "state": "retired",
            "epoch": copy.epoch,
            "retiredAt": copy.at,
            "keptUntil": copy.at + round(self.keep),
            "data": copy.path,
            "moved": copy.moved,
        }

    def retiredList(self, pid: str) -> list[dict[str, Any]]:
        """
        Every retired copy of C{pid} kept here, oldest first.
        """
        copies = sorted(self.copies.get(pid, {}).items(), key=lambda item: (item[1].at, item[0]))
        return [self.copyStatus(pid, copy) for _, copy in copies]

    def retiredStatuses(self) -> dict[str, list[dict[str, Any]]]:
        """
        The retired copies kept here, by partition, until deleted.
        """
        return {pid: self.retiredList(pid) for pid in sorted(self.copies)}

    def stoppedStatus(self, pid: str) -> dict[str, Any]:
        replica = self.stopped[pid]
        out = {
            "partition": pid,
            "state": "orphaned" if replica.orphaned else "stopped",
            "since": replica.since,
            "data": self.data(pid),
        }
        if replica.orphaned:
            out["remove"] = self.removeCommand(pid)
        return out

    def stoppedStatuses(self, orphaned: bool) -> dict[str, dict[str, Any]]:
        """
        The stopped replicas whose data stays here, by partition: those
        whose partition is in the routing table, or (C{orphaned}) not.
        """
        return {
            pid: self.stoppedStatus(pid)
            for pid, replica in sorted(self.stopped.items())
            if replica.orphaned == orphaned
        }
