"""
Windowed aggregation rules: tumbling, hopping, sliding and session windows
over event time.

A window covers C{[start, end)} and is emitted once (C{"update"}) when the
partition's watermark reaches C{end}.  A late event accepted under
C{late_events: retract} revises every emitted window it falls in with a
C{"retract"} of the old value followed by an C{"update"}.  Windows are
dropped when the watermark passes C{end + horizon}, where the horizon is the
allowed lateness under C{retract} and 0 under C{drop}.

A sliding window exists for every distinct event time C{t} of a group and
covers C{(t - size, t]}, i.e. C{[t - size + 1, t + 1)}.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

from suite.ceptra.engine.codec import EventBatch
from suite.ceptra.engine.context import MISSING, Context, groupOf, groupOfValues
from suite.ceptra.engine.monoids import INT_LIMIT as _INT_LIMIT
from suite.ceptra.engine.monoids import makeAggregation
from suite.ceptra.engine.rules import AggregateSpec

__all__ = ["AggregateRule"]


def _noPause() -> None:
    pass


class AggregateRule:
    """
    The state of one aggregation rule in one partition.
    """

    def __init__(self, spec: AggregateSpec, since: int) -> None:
        self.spec = spec
        self.since = since
        self.name = spec.name
        self.agg = makeAggregation(spec.fn, dict(spec.params))
        self.groups: dict[str, Any] = {}
        # Windows to emit, ordered by (end, seq): those scheduled in order
        # (the common case: event time moves forward) queue in C{ordered},
        # the others in the heap C{fires}; L{advance} merges the two.
        self.fires: list[tuple[int, int, str, int]] = []
        self.ordered: deque[tuple[int, int, str, int]] = deque()
        self.purges: list[tuple[int, int, str, int]] = []
        self.seq = 0
        self.skipped = 0
        self.overflow = 0
        kind = spec.window
        self.kind = kind
        self.size = spec.sizeMs
        self.hop = spec.hopMs
        self.gap = spec.gapMs
        self.fast = spec.fn if spec.fn in ("count", "sum", "avg") else ""
        self.where = spec.where
        self.field = spec.field
        self.accepts = self.agg.accepts
        self.numeric = spec.fn in ("sum", "min", "max", "avg", "quantiles")
        self.groupBy = spec.groupBy
        self.single = spec.groupBy[0] if len(spec.groupBy) == 1 else None

    # -- events ---------------------------------------------------------

    def onEvent(self, ev: dict[str, Any], ts: int, late: bool, ctx: Context) -> None:
        """
        Add one accepted event (C{late}: older than the watermark).
        """
        where = self.where
        if where is not None and not where(ev):
            return
        field = self.field
        v = None if field is None else ev.get(field, MISSING)
        single = self.single
        if single is not None:
            group = ev.get(single)
            if type(group) is not str:
                group = groupOf(self.groupBy, ev)
        else:
            group = groupOf(self.groupBy, ev) if self.groupBy else "*"
        self._add(group, v, ts, late, ctx)

    def columnPlan(self, batch: EventBatch) -> tuple[Any, ...] | None:
        """
        How L{onColumn} reads this rule's value and group from C{batch}'s
        columns, or None when the rule needs whole events (a C{where}
        filter).
        """
        if self.where is not None:
            return None
        value = None if self.field is None else batch.column(self.field)
        groups = [batch.column(f) for f in self.groupBy]
        return (value, groups)

    def onColumn(self, plan: tuple[Any, ...], i: int, ts: int, late: bool, ctx: Context) -> None:
        """
        Add accepted event C{i} of a batch, read through L{columnPlan}.
        """
        values, groups = plan
        if self.field is None:
            v = None
        else:
            v = values[i] if values is not None else MISSING
        if len(groups) == 1 and groups[0] is not None and type(groups[0][i]) is str:
            group = groups[0][i]
        else:
            group = groupOfValues([None if col is None else col[i] for col in groups])
        self._add(group, v, ts, late, ctx)

    def _add(self, group: str, v: Any, ts: int, late: bool, ctx: Context) -> None:
        if self.field is not None:
            if type(v) is not int or not -_INT_LIMIT < v < _INT_LIMIT or not self.numeric:
                if v is MISSING or not self.accepts(v):
                    self.skipped += 1
                    return
        gs = self.groups.get(group)
        if gs is None:
            if len(self.groups) >= self.spec.maxGroups:
                self.overflow += 1
                return
            gs = self.groups[group] = self._newGroup()
        kind = self.kind
        if kind == "sliding":
            self._slidingAdd(group, gs, ts, v, late, ctx)
        elif kind == "session":
            self._sessionAdd(group, gs, ts, v, late, ctx)
        else:
            size = self.size
            hop = self.hop
            start = ts - ts % hop
            while start > ts - size:
                self._fixedAdd(group, gs, start, v, ctx)
                start -= hop

    def _newGroup(self) -> Any:
        if self.kind == "sliding":
            # [timestamps, values, prefix sums, head, windows {t: (emitted, value)},
            #  sorted window ts, purge scheduled]; a window's pair is replaced,
            #  never changed in place (L{capture} copies the dict, not the pairs)
            return [[], [], [0], 0, {}, [], False]
        if self.kind == "session":
            return []
        return {}

    def _push(self, heap: list[tuple[int, int, str, int]], at: int, group: str, start: int) -> None:
        heappush(heap, (at, self.seq, group, start))
        self.seq += 1

    def _fire(self, at: int, group: str, start: int) -> None:
        """
        Schedule the emission of window C{start} of C{group} at watermark C{at}.
        """
        ordered = self.ordered
        if not ordered or at >= ordered[-1][0]:
            ordered.append((at, self.seq, group, start))
        else:
            heappush(self.fires, (at, self.seq, group, start))
        self.seq += 1

    def due(self, wm: int) -> bool:
        """
        Whether L{advance} to C{wm} has anything to emit or drop.
        """
        return bool(
            self.ordered
            and self.ordered[0][0] <= wm
            or self.fires
            and self.fires[0][0] <= wm
            or self.purges
            and self.purges[0][0] <= wm
        )

    # -- tumbling / hopping ---------------------------------------------

    def _fixedAdd(self, group: str, gs: dict[int, list[Any]], start: int, v: Any, ctx: Context) -> None:
        w = gs.get(start)
        if w is None:
            w = gs[start] = [self.agg.new(), False, None]
            self._fire(start + self.size, group, start)
        w[0] = self.agg.add(w[0], v)
        if w[1]:
            ctx.emit("retract", self.name, group, start, start + self.size, w[2])
            w[2] = self.agg.value(w[0])
            ctx.emit("update", self.name, group, start, start + self.size, w[2])

    # -- sessions -------------------------------------------------------

    def _sessionAdd(
        self, group: str, sessions: list[list[Any]], ts: int, v: Any, late: bool, ctx: Context
    ) -> None:
        gap = self.gap
        agg = self.agg
        lo = hi = None
        for i, s in enumerate(sessions):
            if s[0] < ts + gap and ts < s[1] + gap:
                if lo is None:
                    lo = i
                hi = i
            elif s[0] >= ts + gap:
                break
        if lo is None or hi is None:
            new = [ts, ts, agg.add(agg.new(), v), False, None]
            insort(sessions, new, key=lambda s: s[0])
            self._fire(ts + gap, group, ts)
            return
        merged = sessions[lo : hi + 1]
        first = merged[0]
        if len(merged) == 1 and not first[3]:
            changed = False
            if ts < first[0]:
                first[0] = ts
                changed = True
            if ts > first[1]:
                first[1] = ts
                changed = True
            first[2] = agg.add(first[2], v)
            if changed:
                self._fire(first[1] + gap, group, first[0])
            return
        acc = agg.new()
        for s in merged:
            if s[3]:
                ctx.emit("retract", self.name, group, s[0], s[1] + gap, s[4])
            acc = agg.merge(acc, s[2])
        acc = agg.add(acc, v)
        new = [min(first[0], ts), max(merged[-1][1], ts), acc, False, None]
        sessions[lo : hi + 1] = [new]
        self._fire(new[1] + gap, group, new[0])

    # -- sliding --------------------------------------------------------

    def _slidingAdd(self, group: str, gs: list[Any], ts: int, v: Any, late: bool, ctx: Context) -> None:
        tsl, vl, pre = gs[0], gs[1], gs[2]
        fast = self.fast
        if not tsl or ts >= tsl[-1]:
            tsl.append(ts)
            vl.append(v)
            if fast == "count":
                pass
            elif fast:
                pre.append(pre[-1] + v)
        else:
            i = bisect_right(tsl, ts, gs[3])
            tsl.insert(i, ts)
            vl.insert(i, v)
            if fast and fast != "count":
                del pre[i + 1 :]
                acc = pre[i]
                for x in vl[i:]:
                    acc = acc + x
                    pre.append(acc)
        windows = gs[4]
        if ts not in windows:
            windows[ts] = (False, None)
            wts = gs[5]
            if not wts or ts > wts[-1]:
                wts.append(ts)
            else:
                insort(wts, ts)
            at = ts + 1
            ordered = self.ordered
            if not ordered or at >= ordered[-1][0]:
                ordered.append((at, self.seq, group, ts))
            else:
                heappush(self.fires, (at, self.seq, group, ts))
            self.seq += 1
        if late:
            wts = gs[5]
            end = ts + self.size
            i = bisect_left(wts, ts)
            while i < len(wts) and wts[i] < end:
                t = wts[i]
                w = windows[t]
                if w[0]:
                    ctx.emit("retract", self.name, group, t - self.size + 1, t + 1, w[1])
                    value = self._slidingValue(gs, t)
                    windows[t] = (True, value)
                    ctx.emit("update", self.name, group, t - self.size + 1, t + 1, value)
                i += 1

    def _slidingValue(self, gs: list[Any], t: int) -> Any:
        tsl = gs[0]
        lo = bisect_right(tsl, t - self.size, gs[3])
        hi = bisect_right(tsl, t, lo)
        fast = self.fast
        if fast == "count":
            return hi - lo
        if fast == "sum":
            return gs[2][hi] - gs[2][lo]
        if fast == "avg":
            return (gs[2][hi] - gs[2][lo]) / (hi - lo) if hi > lo else None
        return self.agg.value(self.agg.fold(gs[1][lo:hi]))

    # -- watermark ------------------------------------------------------

    def advance(self, wm: int, ctx: Context) -> None:
        """
        Emit the windows whose end the watermark C{wm} has reached, and drop
        the state no accepted event can change any more.
        """
        fires = self.fires
        ordered = self.ordered
        popleft = ordered.popleft
        horizon = ctx.horizonMs
        kind = self.kind
        out = ctx.out
        quiet = ctx.quiet
        name = self.name
        size = self.size
        fast = self.fast
        while True:
            if ordered and ordered[0][0] <= wm and (not fires or ordered[0] < fires[0]):
                end, _, group, start = popleft()
            elif fires and fires[0][0] <= wm:
                end, _, group, start = heappop(fires)
            else:
                break
            gs = self.groups.get(group)
            if gs is None:
                continue
            if kind == "sliding":
                sw = gs[4]
                w = sw.get(start)
                if w is None or w[0]:
                    continue
                if fast == "sum":
                    tsl = gs[0]
                    lo = bisect_right(tsl, start - size, gs[3])
                    pre = gs[2]
                    value = pre[bisect_right(tsl, start, lo)] - pre[lo]
                else:
                    value = self._slidingValue(gs, start)
                sw[start] = (True, value)
                if not quiet:
                    out.append(
                        {
                            "rule": name,
                            "group": group,
                            "window": {"start": start - size + 1, "end": end},
                            "value": value,
                            "kind": "update",
                            "partition": ctx.partition,
                            "index": ctx.index,
                        }
                    )
                if not gs[6]:
                    gs[6] = True
                    self._push(self.purges, end + horizon, group, start)
            elif kind == "session":
                for s in gs:
                    if s[0] == start:
                        if s[1] + self.gap == end and not s[3]:
                            s[3] = True
                            s[4] = self.agg.value(s[2])
                            ctx.emit("update", self.name, group, start, end, s[4])
                            self._push(self.purges, end + horizon, group, start)
                        break
            else:
                fw = gs.get(start)
                if fw is None or fw[1]:
                    continue
                fw[1] = True
                fw[2] = self.agg.value(fw[0])
                ctx.emit("update", self.name, group, start, end, fw[2])
                self._push(self.purges, end + horizon, group, start)
        purges = self.purges
        while purges and purges[0][0] <= wm:
            _, _, group, start = heappop(purges)
            gs = self.groups.get(group)
            if gs is None:
                continue
            if kind == "sliding":
                gs[6] = False
                self._slidingPurge(group, gs, wm, horizon)
            elif kind == "session":
                for i, s in enumerate(gs):
                    if s[0] == start:
                        if s[3] and s[1] + self.gap + horizon <= wm:
                            del gs[i]
                        break
                if not gs:
                    del self.groups[group]
            else:
                gs.pop(start, None)
                if not gs:
                    del self.groups[group]

    def _slidingPurge(self, group: str, gs: list[Any], wm: int, horizon: int) -> None:
        """
        Drop the emitted windows before C{wm - horizon} and the events no
        window from there on covers, then schedule the next purge of the
        group (one pending purge per group).
        """
        floor = wm - horizon
        windows, wts = gs[4], gs[5]
        n = 0
        while n < len(wts) and wts[n] < floor and windows[wts[n]][0]:
            del windows[wts[n]]
            n += 1
        if n:
            del wts[:n]
        tsl = gs[0]
        head = gs[3]
        head = bisect_right(tsl, floor - self.size, head)
        if head == len(tsl) and not windows:
            del self.groups[group]
            return
        if head > 256 and head * 2 > len(tsl):
            del tsl[:head]
            del gs[1][:head]
            pre = gs[2]
            if len(pre) > 1:
                base = pre[head]
                gs[2] = [x - base for x in pre[head:]]
            head = 0
        gs[3] = head
        at = tsl[head] + self.size + horizon if head < len(tsl) else None
        if wts and windows[wts[0]][0] and (at is None or wts[0] + 1 + horizon < at):
            at = wts[0] + 1 + horizon
        if at is not None:
            # Purging later than possible is harmless (nothing accepted can
            # reach the extra state); the slack makes it one pass per many
            # windows instead of one per window.
            gs[6] = True
            self._push(self.purges, max(at, wm + 1) + (self.size + horizon) // 2, group, 0)

    # -- reading --------------------------------------------------------

    def windowsOf(self, group: str) -> list[dict[str, Any]]:
        """
        The current windows of C{group}: bounds, value, whether emitted.
        """
        gs = self.groups.get(group)
        if gs is None:
            return []
        out = []
        if self.kind == "sliding":
            for t in gs[5]:
                w = gs[4][t]
                out.append(
                    {
                        "window": {"start": t - self.size + 1, "end": t + 1},
                        "value": self._slidingValue(gs, t),
                        "final": w[0],
                    }
                )
        elif self.kind == "session":
            for s in gs:
                out.append(
                    {
                        "window": {"start": s[0], "end": s[1] + self.gap},
                        "value": self.agg.value(s[2]),
                        "final": s[3],
                    }
                )
        else:
            for start in sorted(gs):
                fw = gs[start]
                out.append(
                    {
                        "window": {"start": start, "end": start + self.size},
                        "value": self.agg.value(fw[0]),
                        "final": fw[1],
                    }
                )
        return out

    # -- snapshots ------------------------------------------------------

    def dump(self) -> Any:
        """
        Canonical JSON form of the rule's state.
        """
        return self.capture(copy=False)(_noPause)

    def capture(self, copy: bool = True) -> Callable[[Callable[[], None]], Any]:
        """
        Freeze the rule's state now; the function returned builds its
        L{dump} as of now, in any thread, however the rule changes since.

        Groups of tumbling, hopping and session windows are dumped at once
        (their accumulators may change in place); a sliding group's lists
        and window dict are copied (C{copy}; its window pairs are immutable)
        and dumped by the function, which calls its argument between
        groups (a pause, in a thread).  Without C{copy} the function must be
        called before the rule changes (L{dump}).
        """
        agg = self.agg
        sliding: list[tuple[str, list[Any]]] = []
        groups: list[Any] = []
        if self.kind == "sliding":
            counted = self.spec.field is None
            if copy:
                for group, gs in self.groups.items():
                    vals = len(gs[1]) if counted else gs[1][:]
                    sliding.append((group, [gs[0][:], vals, gs[2][:], gs[3], gs[4].copy(), gs[5][:], gs[6]]))
            else:
                for group, gs in self.groups.items():
                    vals = len(gs[1]) if counted else gs[1]
                    sliding.append((group, [gs[0], vals, gs[2], gs[3], gs[4], gs[5], gs[6]]))
        elif self.kind == "session":
            for group, gs in self.groups.items():
                groups.append([group, [[s[0], s[1], agg.dump(s[2]), s[3], s[4]] for s in gs]])
        else:
            for group, gs in self.groups.items():
                groups.append([group, [[start, agg.dump(w[0]), w[1], w[2]] for start, w in gs.items()]])
        fires = [*self.fires, *self.ordered]
        purges = self.purges[:] if copy else self.purges
        seq, skipped, overflow = self.seq, self.skipped, self.overflow

        def build(pause: Callable[[], None]) -> Any:
            out = groups[:]
            for group, g in sliding:
                windows = [[t, w[0], w[1]] for t, w in g[4].items()]
                out.append([group, [g[0], g[1], g[2], g[3], windows, g[5], g[6]]])
                pause()
            return {
                "groups": out,
                # One canonical list whichever queue holds each entry.
                "fires": [list(f) for f in sorted(fires)],
                "purges": [list(p) for p in purges],
                "seq": seq,
                "skipped": skipped,
                "overflow": overflow,
            }

        return build

    def load(self, obj: Any) -> None:
        """
        Inverse of L{dump}.
        """
        agg = self.agg
        self.groups = {}
        for group, g in obj["groups"]:
            if self.kind == "sliding":
                vals = g[1] if self.spec.field is not None else [None] * int(g[1])
                self.groups[group] = [g[0], vals, g[2], g[3], {t: (e, v) for t, e, v in g[4]}, g[5], g[6]]
            elif self.kind == "session":
                self.groups[group] = [[s[0], s[1], agg.load(s[2]), s[3], s[4]] for s in g]
            else:
                self.groups[group] = {w[0]: [agg.load(w[1]), w[2], w[3]] for w in g}
        self.fires = [(f[0], f[1], f[2], f[3]) for f in obj["fires"]]
        heapify(self.fires)
        self.ordered = deque()
        self.purges = [(p[0], p[1], p[2], p[3]) for p in obj["purges"]]
        self.seq = obj["seq"]
        self.skipped = obj["skipped"]
        self.overflow = obj["overflow"]
