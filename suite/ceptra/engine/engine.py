"""
L{PartitionEngine}: the deterministic state machine of one CEPtra partition.

It applies committed Raft entries (event batches and rules documents) in
log order.  Everything it does is a function of the entries it has applied:
no clock, no reactor, no dict-order or C{hash()} dependence, so replicas
that applied the same log hold the same state and the same L{stateHash}.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import deque
from collections.abc import Callable
from hashlib import sha256
from heapq import heappop, heappush
from typing import Any

import msgpack
from zope.interface import implementer

from suite.ceptra.engine.codec import BATCH_TAG, RULES_TAG, EventBatch, decodeBatch, decodeEntry
from suite.ceptra.engine.context import Context
from suite.ceptra.engine.errors import EngineError
from suite.ceptra.engine.interfaces import IPartitionEngine
from suite.ceptra.engine.patterns import PatternRule
from suite.ceptra.engine.rules import AggregateSpec, RuleSet, Settings, compileRules
from suite.ceptra.engine.windows import AggregateRule

__all__ = ["PartitionEngine"]

_SNAPSHOT_FORMAT = 1
_SNAPSHOT_MAGIC = b"CEPS\x02"
_MAX_TS = 2**62
_MAX_ID = 256
_canon = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

_MAX_DEPTH = 32

Rule = AggregateRule | PatternRule


#: About how many values one msgpack call packs: bounds how long a call
#: holds the interpreter lock when a snapshot is encoded in a thread.
_PIECE = 4096

_packer = msgpack.Packer(use_bin_type=True)

Pause = Callable[[], None]


def _noPause() -> None:
    pass


class _Pacer:
    """
    Called between the pieces of an encoding that runs in a thread beside
    the reactor's: once the thread has worked for L{SLICE} seconds it
    sleeps as long, letting go of the interpreter lock.  Without it the
    reactor thread, which lets go of the lock at every system call, waits
    up to the interpreter's switch interval (5 ms) to get it back each
    time; with it, about a slice at most, and it gets half the lock.
    """

    SLICE = 0.001

    def __init__(self) -> None:
        self.since = time.perf_counter()

    def __call__(self) -> None:
        worked = time.perf_counter() - self.since
        if worked >= self.SLICE:
            time.sleep(min(worked, 0.01))
            self.since = time.perf_counter()


def _arrayHead(n: int) -> int:
    """
    The length of msgpack's header of an array of C{n} items.
    """
    return 1 if n < 16 else 3 if n < 0x10000 else 5


def _packPieces(value: Any, out: list[bytes], pause: Pause = _noPause) -> None:
    """
    Append the msgpack encoding of C{value} to C{out} in pieces: the same
    bytes as C{msgpack.packb(value, use_bin_type=True)}, made by many short
    calls instead of one long one, with C{pause()} after each.
    """
    t = type(value)
    if t is dict:
        out.append(_packer.pack_map_header(len(value)))
        for k, v in value.items():
            out.append(msgpack.packb(k, use_bin_type=True))
            _packPieces(v, out, pause)
    elif t is list or t is tuple:
        step = _PIECE // _size(value[0], _PIECE) if value else 1
        if step > 1:
            if len(value) <= step:
                out.append(msgpack.packb(value, use_bin_type=True))
                return
            out.append(_packer.pack_array_header(len(value)))
            for i in range(0, len(value), step):
                piece = value[i : i + step]
                out.append(msgpack.packb(piece, use_bin_type=True)[_arrayHead(len(piece)) :])
                pause()
        else:
            out.append(_packer.pack_array_header(len(value)))
            for v in value:
                _packPieces(v, out, pause)
    else:
        out.append(msgpack.packb(value, use_bin_type=True))
        pause()


def _size(value: Any, cap: int) -> int:
    """
    About how many values C{value} holds (counted up to C{cap}).
    """
    t = type(value)
    if t is list or t is tuple:
        n = 1
        for v in value:
            n += _size(v, cap - n)
            if n >= cap:
                break
        return n
    if t is dict:
        n = 1
        for v in value.values():
            n += 1 + _size(v, cap - n)
            if n >= cap:
                break
        return n
    return 1


def _encodeState(state: dict[str, Any], pause: Pause = _noPause) -> bytes:
    """
    L{PartitionEngine.snapshot}'s bytes of the state dict C{state}.
    """
    out = [_SNAPSHOT_MAGIC]
    try:
        _packPieces(state, out, pause)
    except (OverflowError, UnicodeEncodeError, TypeError, ValueError):
        return zlib.compress(_canon.encode(state).encode("utf-8", "surrogatepass"), 1)
    return b"".join(out)


def _depth(value: Any, limit: int) -> int:
    """
    The nesting depth of a JSON value, counted up to C{limit + 1}.
    """
    if limit < 0:
        return 1
    if type(value) is dict:
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if type(value) is list:
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


@implementer(IPartitionEngine)
class PartitionEngine:
    """
    The CEP state of one partition, driven only by L{apply}.
    """

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self._ctx = Context(partition)
        self._rulesDoc: Any = None
        self._ruleset: RuleSet | None = None
        self._settings = Settings()
        self._aggregates: list[AggregateRule] = []
        self._patterns: list[PatternRule] = []
        self._rules: list[Rule] = []
        self._maxTs: int | None = None
        self._wm: int | None = None
        self._lastIndex = 0
        self._counters = {
            "events": 0,
            "duplicates": 0,
            "late_dropped": 0,
            "late_retracted": 0,
            "rejected": 0,
            "rejected_entries": 0,
            "rejected_rules": 0,
        }
        self._seen: set[str] = set()
        self._seenOrder: deque[tuple[int, str]] = deque()
        self._release: list[tuple[int, int, dict[str, Any]]] = []
        self._releaseSeq = 0
        #: Per combined request of the last C{E2} entry applied: (accepted,
        #: duplicates, rejected) events; empty after any other entry.
        self.lastSegments: list[tuple[int, int, int]] = []

    # -- applying entries -------------------------------------------------

    def apply(self, index: int, payload: bytes, results: bool = True) -> list[dict[str, Any]]:
        """
        Apply the committed entry at log C{index}; return its results.  An
        index at or below the last applied one is ignored (replay after a
        snapshot).  Never raises for bad content: it is counted instead.

        @param results: when false, window and pattern results are not built
            (a replica nobody reads results from); the state, and so the
            state hash, is the same either way.  Rules results still are.
        """
        if index <= self._lastIndex:
            return []
        self._lastIndex = index
        if type(payload) is not bytes:
            payload = bytes(payload)
        ctx = self._ctx
        ctx.index = index
        out: list[dict[str, Any]] = []
        ctx.out = out
        ctx.quiet = not results
        self.lastSegments = []
        if payload[:2] == BATCH_TAG:
            try:
                batch = decodeBatch(payload)
            except EngineError:
                self._counters["rejected_entries"] += 1
                return out
            self._applyBatch(batch)
            self._forget()
            return out
        try:
            tag, body = decodeEntry(payload)
        except EngineError:
            self._counters["rejected_entries"] += 1
            return out
        if not tag:
            return out
        if tag == RULES_TAG:
            self._applyRules(body)
            return out
        if type(body) is not list:
            self._counters["rejected_entries"] += 1
            return out
        if payload.count(b"{") + payload.count(b"[") > 2 * len(body) + 16:
            # Some events nest values: refuse those nested too deeply to be
            # stored (counted as rejected below).
            body = [None if _depth(ev, _MAX_DEPTH) > _MAX_DEPTH else ev for ev in body]
        self._applyEvents(body)
        self._forget()
        return out

    def _applyEvents(self, body: list[Any]) -> None:
        """
        Check, deduplicate, time and dispatch the events of one batch.
        """
        counters = self._counters
        rejected = duplicates = lateDropped = lateRetracted = accepted = 0
        seen = self._seen
        remember = self._seenOrder.append
        aggregates = self._aggregates
        patterns = bool(self._patterns)
        ctx = self._ctx
        settings = self._settings
        delay = settings.watermarkDelayMs
        lateness = settings.allowedLatenessMs if settings.lateEvents == "retract" else None
        maxTs = self._maxTs
        wm = self._wm
        behind = False
        for ev in body:
            if type(ev) is not dict:
                rejected += 1
                continue
            eid = ev.get("event_id")
            ts = ev.get("ts")
            if (
                type(eid) is not str
                or not eid
                or len(eid) > _MAX_ID
                or type(ev.get("key")) is not str
                or type(ts) is not int
                or not -_MAX_TS < ts < _MAX_TS
            ):
                rejected += 1
                continue
            if eid in seen:
                duplicates += 1
                continue
            if wm is not None and ts < wm:
                if lateness is None or ts < wm - lateness:
                    lateDropped += 1
                    continue
                lateRetracted += 1
                accepted += 1
                seen.add(eid)
                remember((ts, eid))
                # Windows the watermark has passed are emitted before a late
                # event revises them.
                if behind:
                    self._advance(wm)
                behind = True
                for rule in aggregates:
                    rule.onEvent(ev, ts, True, ctx)
                continue
            accepted += 1
            seen.add(eid)
            remember((ts, eid))
            for rule in aggregates:
                rule.onEvent(ev, ts, False, ctx)
            if patterns:
                heappush(self._release, (ts, self._releaseSeq, ev))
                self._releaseSeq += 1
            if maxTs is None or ts > maxTs:
                maxTs = ts
                if wm is None or ts - delay > wm:
                    self._wm = wm = ts - delay
                    behind = True
        self._maxTs = maxTs
        if behind and wm is not None:
            self._advance(wm)
        counters["rejected"] += rejected
        counters["duplicates"] += duplicates
        counters["late_dropped"] += lateDropped
        counters["late_retracted"] += lateRetracted
        counters["events"] += accepted

    def _applyBatch(self, batch: EventBatch) -> None:
        """
        Apply an C{E2} entry in one pass, as L{_applyEvents} applies the same
        events (the state is the same), and count each combined request's
        accepted, duplicate and rejected events (L{lastSegments}).  Rules
        read values and groups from the columns; a dict per event is built
        only when a rule needs whole events (filters, patterns).
        """
        counters = self._counters
        plans = [rule.columnPlan(batch) for rule in self._aggregates]
        whole = bool(self._patterns) or any(p is None for p in plans)
        rules = list(zip(self._aggregates, plans, strict=True))
        rejected = duplicates = lateDropped = lateRetracted = accepted = 0
        seen = self._seen
        remember = self._seenOrder.append
        patterns = bool(self._patterns)
        ctx = self._ctx
        settings = self._settings
        delay = settings.watermarkDelayMs
        lateness = settings.allowedLatenessMs if settings.lateEvents == "retract" else None
        maxTs = self._maxTs
        wm = self._wm
        behind = False
        ids, keys, tss = batch.ids, batch.keys, batch.ts
        ev: Any = None
        segments: list[tuple[int, int, int]] = []
        start = 0
        for n in batch.segments:
            marks = (accepted, duplicates, rejected)
            for i in range(start, start + n):
                eid = ids[i]
                ts = tss[i]
                if (
                    type(eid) is not str
                    or not eid
                    or len(eid) > _MAX_ID
                    or type(keys[i]) is not str
                    or type(ts) is not int
                    or not -_MAX_TS < ts < _MAX_TS
                ):
                    rejected += 1
                    continue
                if eid in seen:
                    duplicates += 1
                    continue
                if whole:
                    ev = batch.event(i)
                late = False
                if wm is not None and ts < wm:
                    if lateness is None or ts < wm - lateness:
                        lateDropped += 1
                        continue
                    lateRetracted += 1
                    late = True
                    # Windows the watermark has passed are emitted before a
                    # late event revises them.
                    if behind:
                        self._advance(wm)
                    behind = True
                accepted += 1
                seen.add(eid)
                remember((ts, eid))
                for rule, plan in rules:
                    if plan is None:
                        rule.onEvent(ev, ts, late, ctx)
                    else:
                        rule.onColumn(plan, i, ts, late, ctx)
                if late:
                    continue
                if patterns:
                    heappush(self._release, (ts, self._releaseSeq, ev))
                    self._releaseSeq += 1
                if maxTs is None or ts > maxTs:
                    maxTs = ts
                    if wm is None or ts - delay > wm:
                        self._wm = wm = ts - delay
                        behind = True
            segments.append((accepted - marks[0], duplicates - marks[1], rejected - marks[2]))
            start += n
        self._maxTs = maxTs
        if behind and wm is not None:
            self._advance(wm)
        counters["rejected"] += rejected
        counters["duplicates"] += duplicates
        counters["late_dropped"] += lateDropped
        counters["late_retracted"] += lateRetracted
        counters["events"] += accepted
        self.lastSegments = segments

    def _advance(self, wm: int) -> None:
        ctx = self._ctx
        for rule in self._aggregates:
            if rule.due(wm):
                rule.advance(wm, ctx)
        if self._patterns:
            release = self._release
            patterns = self._patterns
            while release and release[0][0] < wm:
                ts, _, ev = heappop(release)
                for p in patterns:
                    p.onOrdered(ev, ts, ctx)
            for p in patterns:
                p.expire(wm, ctx)

    def _forget(self) -> None:
        order = self._seenOrder
        settings = self._settings
        wm = self._wm
        floor = (wm - settings.dedupHorizonMs) if wm is not None else None
        limit = settings.dedupMaxIds
        while order and (len(order) > limit or (floor is not None and order[0][0] < floor)):
            self._seen.discard(order.popleft()[1])

    def _applyRules(self, body: Any) -> None:
        ctx = self._ctx
        try:
            if _depth(body, _MAX_DEPTH) > _MAX_DEPTH:
                raise EngineError("rules document: nested too deeply")
            ruleset = compileRules(body)
            if self._ruleset is not None and ruleset.version <= self._ruleset.version:
                raise EngineError(
                    f"version: must be greater than the current version {self._ruleset.version}"
                )
        except EngineError as e:
            self._counters["rejected_rules"] += 1
            ctx.out.append(
                {
                    "kind": "rules",
                    "accepted": False,
                    "error": str(e),
                    "partition": self.partition,
                    "index": ctx.index,
                }
            )
            return
        self._install(ruleset, body, {})
        ctx.out.append(
            {
                "kind": "rules",
                "accepted": True,
                "version": ruleset.version,
                "partition": self.partition,
                "index": ctx.index,
            }
        )

    def _install(self, ruleset: RuleSet, doc: Any, since: dict[str, int]) -> None:
        old = {r.name: r for r in self._rules}
        rules: list[Rule] = []
        for spec in ruleset.rules:
            prev = old.get(spec.name)
            if prev is not None and prev.spec.canonical == spec.canonical and not since:
                rules.append(prev)
                continue
            version = since.get(spec.name, ruleset.version)
            if isinstance(spec, AggregateSpec):
                rules.append(AggregateRule(spec, version))
            else:
                rules.append(PatternRule(spec, version))
        self._rules = rules
        self._aggregates = [r for r in rules if isinstance(r, AggregateRule)]
        self._patterns = [r for r in rules if isinstance(r, PatternRule)]
        if not self._patterns:
            self._release = []
        self._ruleset = ruleset
        self._rulesDoc = doc
        self._settings = ruleset.settings
        self._ctx.horizonMs = ruleset.settings.horizonMs
        if self._maxTs is not None:
            newWm = self._maxTs - ruleset.settings.watermarkDelayMs
            if self._wm is None or newWm > self._wm:
                self._wm = newWm
        if self._wm is not None:
            self._advance(self._wm)

    # -- reading ----------------------------------------------------------

    def query(self, rule: str, group: str | None = None) -> dict[str, Any]:
        """
        The current windows (or pending pattern starts) of C{rule}, for one
        C{group} or all.  Raises C{KeyError} for an unknown rule.
        """
        for r in self._rules:
            if r.name == rule:
                break
        else:
            raise KeyError(rule)
        if isinstance(r, AggregateRule):
            names = list(r.groups) if group is None else [group]
            groups: dict[str, Any] = {g: r.windowsOf(g) for g in names}
        else:
            names = list(r.byGroup) if group is None else [group]
            groups = {g: r.pendingOf(g) for g in names}
        return {
            "rule": rule,
            "type": "aggregate" if isinstance(r, AggregateRule) else "pattern",
            "since_version": r.since,
            "partition": self.partition,
            "index": self._lastIndex,
            "watermark": self._wm,
            "groups": groups,
        }

    def status(self) -> dict[str, Any]:
        """
        Rule versions, watermark, counters and the last applied index.
        """
        rules: dict[str, Any] = {}
        for r in self._rules:
            if isinstance(r, AggregateRule):
                rules[r.name] = {
                    "type": "aggregate",
                    "since_version": r.since,
                    "groups": len(r.groups),
                    "skipped": r.skipped,
                    "group_overflow": r.overflow,
                }
            else:
                rules[r.name] = {
                    "type": "pattern",
                    "since_version": r.since,
                    "groups": len(r.byGroup),
                    "matches": r.matches,
                    "group_overflow": r.overflow,
                }
        return {
            "partition": self.partition,
            "last_applied_index": self._lastIndex,
            "rules_version": self._ruleset.version if self._ruleset else None,
            "rules": rules,
            "watermark": self._wm,
            "max_event_ts": self._maxTs,
            "counters": dict(self._counters),
            "dedup_ids": len(self._seenOrder),
        }

    # -- snapshots ----------------------------------------------------------

    def _stateDict(self) -> dict[str, Any]:
        return self._freeze(copy=False)(_noPause)

    def _freeze(self, copy: bool = True) -> Callable[[Pause], dict[str, Any]]:
        """
        Freeze the state now: the function returned builds the state dict
        (the snapshot's content) as of now, in any thread, however the
        engine changes since.  The mutable parts are copied (C{copy}: the
        dedup order, the release queue, the counters, each rule's
        L{AggregateRule.capture}); without C{copy} the function must be
        called before the next L{apply}.
        """
        seen: Any = list(self._seenOrder) if copy else self._seenOrder
        release = self._release[:] if copy else self._release
        counters = dict(self._counters) if copy else self._counters
        rules = [r.capture(copy) for r in self._rules]
        head = {
            "format": _SNAPSHOT_FORMAT,
            "partition": self.partition,
            "last_index": self._lastIndex,
            "rules_doc": self._rulesDoc,
            "since": [[r.name, r.since] for r in self._rules],
            "max_ts": self._maxTs,
            "watermark": self._wm,
        }
        releaseSeq = self._releaseSeq

        def build(pause: Pause = _noPause) -> dict[str, Any]:
            return {
                **head,
                "counters": counters,
                # Tuples encode as arrays, in JSON and msgpack alike.
                "seen": seen if type(seen) is list else list(seen),
                "release": [[ts, seq, ev] for ts, seq, ev in release],
                "release_seq": releaseSeq,
                "rules": [dump(pause) for dump in rules],
            }

        return build

    def _state(self) -> bytes:
        return _canon.encode(self._stateDict()).encode("utf-8", "surrogatepass")

    def snapshot(self) -> bytes:
        """
        The whole state as bytes for L{restore}: C{CEPS} + version 2 +
        msgpack (about ten times cheaper to make than the canonical JSON),
        or zlib-compressed canonical JSON (version 1) for state msgpack
        cannot carry (integers past 64 bits, strings that are not Unicode).
        """
        return _encodeState(self._stateDict())

    def capture(self) -> Callable[[], bytes]:
        """
        Freeze the state now, cheaply (copies of the mutable parts, no
        encoding); the function returned gives the bytes L{snapshot} gives
        now, and may run in another thread while L{apply} goes on.  It
        encodes in pieces and, every millisecond of work, sleeps as long
        (L{_Pacer}), so that it never keeps the interpreter lock from the
        reactor thread for long.
        """
        state = self._freeze()

        def encode() -> bytes:
            pause = _Pacer()
            return _encodeState(state(pause), pause)

        return encode

    def stateHash(self) -> str:
        """
        Hex SHA-256 of the canonical state.
        """
        return sha256(self._state()).hexdigest()

    @classmethod
    def restore(cls, partition: int, data: bytes) -> PartitionEngine:
        """
        An engine holding the state of L{snapshot} bytes C{data}.  Raises
        L{EngineError} when C{data} is not such a snapshot.
        """
        try:
            if data[: len(_SNAPSHOT_MAGIC)] == _SNAPSHOT_MAGIC:
                state = msgpack.unpackb(data[len(_SNAPSHOT_MAGIC) :], raw=False, strict_map_key=False)
            else:
                state = json.loads(zlib.decompress(data).decode("utf-8", "surrogatepass"))
            if not isinstance(state, dict) or state.get("format") != _SNAPSHOT_FORMAT:
                raise EngineError("snapshot: unknown format")
            eng = cls(partition)
            eng._lastIndex = state["last_index"]
            eng._maxTs = state["max_ts"]
            eng._wm = state["watermark"]
            eng._counters = state["counters"]
            eng._seenOrder = deque((ts, eid) for ts, eid in state["seen"])
            eng._seen = {eid for _, eid in eng._seenOrder}
            eng._release = [(ts, seq, ev) for ts, seq, ev in state["release"]]
            eng._releaseSeq = state["release_seq"]
            if state["rules_doc"] is not None:
                since = {name: v for name, v in state["since"]}
                ruleset = compileRules(state["rules_doc"])
                wm = eng._wm
                eng._wm = None
                eng._maxTs, maxTs = None, eng._maxTs
                eng._install(ruleset, state["rules_doc"], since)
                eng._wm, eng._maxTs = wm, maxTs
                for r, dumped in zip(eng._rules, state["rules"], strict=True):
                    r.load(dumped)
        except EngineError:
            raise
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            IndexError,
            zlib.error,
            msgpack.ExtraData,
            msgpack.FormatError,
            msgpack.StackError,
        ) as e:
            raise EngineError(f"snapshot: unreadable: {e}") from None
        return eng
