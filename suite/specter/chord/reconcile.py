"""
Reconciliation by version: how two copies of a range, or records held by a
vnode that does not own them, are brought together without losing a newer
write.

Both directions compare versions before moving values:

  - B{repair} (owner and replica): for a digest bucket that differs, the
    owner lists the replica's C{(kind, key, version, hash)} entries
    (C{versions}), fetches the records where the replica's copy wins
    (C{fetch}) and imports them, then sends the replica the records where
    its own copy wins (C{replicate}); both ends merge, so after one exchange
    they hold the same newest copies.
  - B{re-homing} (after a join): a vnode that comes back with records
    outside its new range (a restart, a new identity, a ring founded apart
    with C{--bootstrap} that rejoins) offers them to their owners
    (C{offer}, entries only); each owner answers which it lacks or holds
    older, and takes those (C{merge}), copying them to its replicas.
    Records older than half the tombstone horizon are not offered: their
    deletion may have been forgotten already (see docs/specter.md).

L{RecordServer} answers a peer's calls from the store alone (the entries
and records asked for, digests, copies sent); L{exchangeBucket} is the
owner's side of repair, run by L{suite.specter.chord.replication}; the
L{Reconciler} is an owner's side of re-homing and the calls it answers.

Wire entries are C{[kind, key, hlc, origin, hash]}; C{hash} is
L{suite.kv.records.recordHash} (payload, liveness and version), so equal
versions with different contents (records from before versions) are told
apart too.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from suite.kv.records import Record, recordHash
from suite.kv.versions import Version, versionAt
from suite.specter.chord import errors as E
from suite.specter.chord.base import records as _records
from suite.specter.chord.base import sleep
from suite.specter.chord.base import version as _version
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import RING_SIZE, VnodeRef, inRange, ref, ringId
from suite.specter.chord.machine import Membership, MembershipCore
from suite.specter.chord.view import RingView
from suite.specter.interfaces import IVnodePeers

__all__ = [
    "RecordServer",
    "Reconciler",
    "exchangeBucket",
    "entry",
    "chunked",
    "compare",
    "ENTRY_BUDGET",
    "RECORD_BUDGET",
    "REHOME_DELAY",
]

log = Logger()
#: bytes of entries per C{versions} answer or C{offer} call (about)
ENTRY_BUDGET = 4 * 1024 * 1024
#: bytes of records per C{fetch} answer, C{merge} or C{replicate} call (about)
RECORD_BUDGET = 16 * 1024 * 1024
#: records per C{replicate} call at most
RECORD_CHUNK = 4096
#: seconds after a join before re-homing starts (the ring settles)
REHOME_DELAY = 2.0
#: keys looked up together by C{fetch}
FETCH_BATCH = 1024
#: rounds of re-homing before what is left is given up (logged)
REHOME_ROUNDS = 12


def entry(rec: Record) -> list[Any]:
    """
    The wire entry of a record: C{[kind, key, hlc, origin, hash]}.
    """
    kind, key, payload, hlc, origin = rec
    return [kind, key, hlc, origin, recordHash(kind, key, payload, hlc, origin)]


def _size(rec: Any) -> int:
    return len(rec[1]) + (len(rec[2]) if rec[2] is not None else 0) + 40


def chunked(items: list[Any], budget: int, most: int) -> Iterable[list[Any]]:
    """
    Consecutive slices of C{items} of at most C{most} items and about
    C{budget} bytes (at least one item each).
    """
    chunk: list[Any] = []
    size = 0
    for item in items:
        n = _size(item)
        if chunk and (size + n > budget or len(chunk) >= most):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += n
    if chunk:
        yield chunk


def compare(
    mine: dict[tuple[str, bytes], Record], theirs: dict[tuple[str, bytes], tuple[int, int, int]]
) -> tuple[list[Record], list[tuple[str, bytes]]]:
    """
    What to send (records where ours wins or they have none) and what to
    ask for (slots where theirs wins or they have one we lack); a record
    whose versions tie with different contents goes both ways, and both
    ends then keep the same winner.
    """
    send: list[Record] = []
    want: list[tuple[str, bytes]] = []
    for slot, rec in mine.items():
        held = theirs.get(slot)
        if held is None or (rec[3], rec[4]) > held[:2]:
            send.append(rec)
        elif (rec[3], rec[4]) == held[:2] and recordHash(*rec) != held[2]:
            send.append(rec)
            want.append(slot)
    for slot, (hlc, origin, _) in theirs.items():
        ours = mine.get(slot)
        if ours is None or (hlc, origin) > (ours[3], ours[4]):
            want.append(slot)
    return send, want


class RecordServer:
    """
    The calls served from a vnode's store alone: C{versions}, C{fetch} and
    C{digest} read it; C{replicate} and C{syncRange} merge copies into it
    by version.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    async def remote_versions(self, low: int, high: int, start: int | None = None) -> list[Any]:
        """
        Entries of the records held in C{(low, high]} (from C{start} on, a
        position returned before), in ring order: C{[entries, next]}, where
        C{next} is where to continue or C{None} at the end.
        """
        low, high = int(low), int(high)
        begin = low if start is None else int(start)
        recs = await self.store.exportRange(begin, high)
        if start is not None and begin == high:
            recs = []
        # in ring order from just after begin (begin itself, in a whole-ring range, last)
        recs.sort(key=lambda rec: ((ringId(rec[1]) - begin - 1) % RING_SIZE, rec[0], rec[1]))
        out: list[Any] = []
        size = 0
        last: int | None = None
        for rec in recs:
            kid = ringId(rec[1])
            if size >= ENTRY_BUDGET and kid != last:
                return [out, last]
            out.append(entry(rec))
            size += len(rec[1]) + 40
            last = kid
        return [out, None]

    async def remote_fetch(self, slots: Any) -> list[Any]:
        """
        The records held for C{[kind, key]} slots, as many as fit the budget:
        C{[records, served]} (the first C{served} slots were looked at).
        """
        wanted = [(kind, key) for kind, key in slots]
        if not all(isinstance(key, bytes) for _, key in wanted):
            raise RemoteError(E.BAD_REQUEST, "key must be bytes")
        out: list[Any] = []
        size = 0
        served = 0
        for i in range(0, len(wanted), FETCH_BATCH):
            part = wanted[i : i + FETCH_BATCH]
            # asked together, so a threaded store answers them in one batch
            held = await gatherResults([self.store.exportKey(key) for _, key in part])
            for (kind, _), recs in zip(part, held, strict=True):
                for rec in recs:
                    if rec[0] == kind:
                        out.append(rec)
                        size += _size(rec)
                served += 1
                if size >= RECORD_BUDGET:
                    return [out, served]
        return [out, served]

    async def remote_digest(self, low: int, high: int, buckets: int = 1) -> list[list[int]]:
        buckets = max(1, min(256, int(buckets)))
        return [list(b) for b in await self.store.digestRange(int(low), int(high), buckets)]

    async def remote_replicate(self, records: Any) -> None:
        await self.store.importRecords(_records(records))

    async def remote_syncRange(self, low: int, high: int, records: Any) -> None:
        # repair from a peer without versions: merged, never dropping a newer write
        await self.store.importRecords(_records(records))


async def exchangeBucket(
    peers: IVnodePeers, store: Any, target: VnodeRef, low: int, high: int
) -> tuple[int, int]:
    """
    Bring C{target}'s copy of C{(low, high]} and the one in C{store} to the
    newest of both; return how many records were sent and how many taken.
    """
    theirs: dict[tuple[str, bytes], tuple[int, int, int]] = {}
    start: int | None = None
    while True:
        entries, nxt = await peers.call(target, "versions", low, high, start)
        for kind, key, hlc, origin, h in entries:
            v = _version([hlc, origin])
            theirs[(kind, key)] = (v.hlc, v.origin, int(h))
        if nxt is None:
            break
        start = int(nxt)
    mine = {(rec[0], rec[1]): rec for rec in await store.exportRange(low, high)}
    send, want = compare(mine, theirs)
    taken = 0
    while want:
        got, served = await peers.call(target, "fetch", [list(s) for s in want])
        if not isinstance(served, int) or served < 1:
            raise RemoteError(E.INTERNAL, "bad fetch answer")
        taken += await store.importRecords(_records(got))
        want = want[served:]
    for chunk in chunked(send, RECORD_BUDGET, RECORD_CHUNK):
        await peers.call(target, "replicate", chunk)
    return len(send), taken


class Reconciler:
    """
    An owner's side of re-homing: offering the records held outside its
    range to their owners, and taking those offered to it.

    @param copyKeys: copy the records now held for some keys to the
        replicas (L{suite.specter.chord.replication.Replicator.copyKeys}).
    """

    def __init__(
        self,
        view: RingView,
        store: Any,
        peers: IVnodePeers,
        membership: Membership,
        core: MembershipCore,
        clock: IReactorTime,
        rng: random.Random,
        copyKeys: Callable[[list[bytes]], Awaitable[None]],
    ) -> None:
        self.view = view
        self.store = store
        self.peers = peers
        self.membership = membership
        self.core = core
        self.clock = clock
        self.rng = rng
        self.copyKeys = copyKeys

    # -- the calls ------------------------------------------------------------------
    def _checkServing(self) -> None:
        if not self.core.phase.serving:
            code = self.membership.kvRefused()
            raise RemoteError(code, "vnode not serving")

    async def remote_offer(self, entries: Any) -> list[Any]:
        """
        An owner hears of copies held elsewhere: answers C{[wanted,
        notMine]}, the indexes of the entries it lacks or holds older, and
        of those whose key it does not own.
        """
        self._checkServing()
        wanted: list[int] = []
        notMine: list[int] = []
        mine: list[tuple[int, str, bytes, Version, int]] = []
        for i, (kind, key, hlc, origin, h) in enumerate(entries):
            if not isinstance(key, bytes):
                raise RemoteError(E.BAD_REQUEST, "key must be bytes")
            if self.view.owns(ringId(key)):
                mine.append((i, kind, key, _version([hlc, origin]), int(h)))
            else:
                notMine.append(i)
        # asked together, so a threaded store answers them in one batch
        held = await gatherResults([self.store.exportKey(key) for _, _, key, _, _ in mine])
        for (i, kind, _, offered, h), recs in zip(mine, held, strict=True):
            ours = [rec for rec in recs if rec[0] == kind]
            if not ours:
                wanted.append(i)
                continue
            have = (ours[0][3], ours[0][4])
            if offered > have or (offered == have and recordHash(*ours[0]) != h):
                wanted.append(i)
        return [wanted, notMine]

    async def remote_merge(self, records: Any) -> list[int]:
        """
        An owner takes records offered to it: installs the newer ones and
        copies them to its replicas; answers the indexes of those whose key
        it does not own (not taken).
        """
        self._checkServing()
        recs = _records(records)
        owns = self.view.owns
        mine = [rec for rec in recs if owns(ringId(rec[1]))]
        notMine = [i for i, rec in enumerate(recs) if not owns(ringId(rec[1]))]
        if mine:
            installed = await self.store.importRecords(mine)
            if installed:
                log.info(
                    "vnode {vnode} took {count} newer records offered from elsewhere",
                    vnode=self.view.ref.short(),
                    count=installed,
                )
                await self.copyKeys(sorted({rec[1] for rec in mine}))
        return notMine

    # -- re-homing ----------------------------------------------------------------------------
    async def rehome(self) -> None:
        """
        Offer the records held outside our range to their owners; retried
        in rounds until every one is placed (or refused as older).
        """
        v = self.view
        await sleep(self.clock, REHOME_DELAY * (0.5 + self.rng.random()))
        pending: list[Record] | None = None
        offered = 0
        for attempt in range(REHOME_ROUNDS):
            if self.core.phase.gone or not self.core.phase.serving:
                return
            rng = v.ownedRange()
            if rng is None:
                await sleep(self.clock, 1.0)
                continue
            low, high = rng
            if low == v.ref.id:
                return  # alone: everything is ours
            if pending is None:
                cutoff = versionAt(self.clock.seconds() - self.store.horizon / 2).hlc
                # (ours, pred]: everything outside our range
                pending = [rec for rec in await self.store.exportRange(high, low) if rec[3] >= cutoff]
                offered = len(pending)
                if not pending:
                    return
            else:
                pending = [rec for rec in pending if not v.owns(ringId(rec[1]))]
            pending = await self._place(pending)
            if not pending:
                log.info(
                    "vnode {vnode} offered {count} records outside its range to their owners",
                    vnode=v.ref.short(),
                    count=offered,
                )
                return
            await sleep(self.clock, min(8.0, 0.5 * 2**attempt) * (0.5 + self.rng.random()))
        log.warn(
            "vnode {vnode}: {count} records outside its range could not be offered to their owners",
            vnode=v.ref.short(),
            count=len(pending or []),
        )

    async def _place(self, recs: list[Record]) -> list[Record]:
        """
        Offer C{recs} arc by arc to the owners found now; return those not
        placed (owner changed, unreachable).
        """
        recs = sorted(recs, key=lambda rec: ringId(rec[1]))
        ids = [ringId(rec[1]) for rec in recs]
        left: list[Record] = []
        i = 0
        while i < len(recs):
            if self.view.owns(ids[i]):
                i += 1
                continue
            try:
                owner, _ = await self.peers.findSuccessor(ids[i])
                state = await self.peers.call(owner, "state")
                pred = ref(state[0])
                j = i
                if pred is not None:
                    while j < len(recs) and (pred == owner or inRange(ids[j], pred.id, owner.id)):
                        j += 1
                if j == i:
                    left.append(recs[i])
                    i += 1
                    continue
                left.extend(await self._offer(owner, recs[i:j]))
                i = j
            except RemoteError:
                left.extend(recs[i:])
                break
        return left

    async def _offer(self, owner: VnodeRef, arc: list[Record]) -> list[Record]:
        left: list[Record] = []
        for chunk in chunked(arc, ENTRY_BUDGET, RECORD_CHUNK):
            wanted, notMine = await self.peers.call(owner, "offer", [entry(rec) for rec in chunk])
            left.extend(chunk[i] for i in notMine)
            taking = [chunk[i] for i in wanted]
            for part in chunked(taking, RECORD_BUDGET, RECORD_CHUNK):
                refused = await self.peers.call(owner, "merge", part)
                left.extend(part[i] for i in refused)
        return left
