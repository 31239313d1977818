"""
A brute-force model of the engine's semantics, written from the rule
language's definition (docs/ceptra.md) rather than from the engine: it keeps
every accepted event and recomputes every window and pattern from scratch.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

TICK = "tick"


def groupOf(groupBy: list[str], ev: dict[str, Any]) -> str:
    if not groupBy:
        return "*"
    if len(groupBy) == 1:
        v = ev.get(groupBy[0])
        return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return json.dumps([ev.get(f) for f in groupBy], separators=(",", ":"))


@dataclass
class Accepted:
    """
    What the partition accepted, in arrival order.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    late: list[bool] = field(default_factory=list)
    duplicates: int = 0
    lateDropped: int = 0
    lateRetracted: int = 0


def accept(settings: dict[str, Any], batches: list[list[dict[str, Any]]]) -> Accepted:
    """
    Replay the watermark, dedup and lateness rules over the arrival order.
    """
    delay = settings.get("watermark_delay_ms", 0)
    lateness = settings.get("allowed_lateness_ms", 0)
    retract = settings.get("late_events", "drop") == "retract"
    seen: set[str] = set()
    maxTs: int | None = None
    out = Accepted()
    for batch in batches:
        for ev in batch:
            if ev["event_id"] in seen:
                out.duplicates += 1
                continue
            wm = None if maxTs is None else maxTs - delay
            late = wm is not None and ev["ts"] < wm
            if late:
                assert wm is not None
                if retract and ev["ts"] >= wm - lateness:
                    out.lateRetracted += 1
                else:
                    out.lateDropped += 1
                    continue
            seen.add(ev["event_id"])
            out.events.append(ev)
            out.late.append(late)
            maxTs = ev["ts"] if maxTs is None else max(maxTs, ev["ts"])
    return out


def matches(cond: dict[str, Any], ev: dict[str, Any]) -> bool:
    """
    The filter language, the slow way (only the operators the tests use).
    """
    for name, c in cond.items():
        v = ev.get(name)
        if isinstance(c, dict):
            ((op, arg),) = c.items()
            if op == "exists":
                if (name in ev) != arg:
                    return False
            elif op == "gt":
                if not (isinstance(v, int) and v > arg):
                    return False
            elif op == "ne":
                if v == arg:
                    return False
            else:
                raise AssertionError(op)
        elif v != c:
            return False
    return True


def _windowsOf(win: dict[str, Any], ts: int) -> list[tuple[int, int]]:
    kind = win["kind"]
    size = win.get("size_ms", 0)
    if kind == "tumbling":
        s = ts - ts % size
        return [(s, s + size)]
    if kind == "hopping":
        hop = win["hop_ms"]
        return [(s, s + size) for s in range(ts - ts % hop, ts - size, -hop)]
    raise AssertionError(kind)


def aggregateWindows(
    rule: dict[str, Any], events: list[dict[str, Any]]
) -> dict[tuple[str, int, int], list[Any]]:
    """
    Every window of C{rule} over C{events} with the field values in it.
    """
    where = rule.get("where", {})
    fieldName = rule["aggregate"].get("field")
    fn = rule["aggregate"]["fn"]
    byGroup: dict[str, list[tuple[int, Any]]] = {}
    for ev in events:
        if not matches(where, ev):
            continue
        if fieldName is not None:
            if fieldName not in ev:
                continue
            v = ev[fieldName]
            if fn in ("sum", "min", "max", "avg", "quantiles") and (
                isinstance(v, bool) or not isinstance(v, (int, float))
            ):
                continue
        else:
            v = None
        byGroup.setdefault(groupOf(rule.get("group_by", []), ev), []).append((ev["ts"], v))
    win = rule["window"]
    out: dict[tuple[str, int, int], list[Any]] = {}
    for group, items in byGroup.items():
        if win["kind"] in ("tumbling", "hopping"):
            for ts, v in items:
                for s, e in _windowsOf(win, ts):
                    out.setdefault((group, s, e), []).append(v)
        elif win["kind"] == "sliding":
            size = win["size_ms"]
            for t in {ts for ts, _ in items}:
                out[(group, t - size + 1, t + 1)] = [v for ts, v in items if t - size < ts <= t]
        else:
            gap = win["gap_ms"]
            items = sorted(items, key=lambda x: x[0])
            cur: list[Any] = []
            start = last = None
            for ts, v in items:
                if last is not None and ts >= last + gap:
                    out[(group, start, last + gap)] = cur  # type: ignore[index]
                    cur, start = [], None
                if start is None:
                    start = ts
                last = ts
                cur.append(v)
            if cur:
                out[(group, start, last + gap)] = cur  # type: ignore[index]
    return out


def exactValue(rule: dict[str, Any], values: list[Any]) -> Any:
    """
    The exact aggregation of C{values}.
    """
    agg = rule["aggregate"]
    fn = agg["fn"]
    if fn == "count":
        return len(values)
    if fn == "sum":
        return sum(values)
    if fn == "min":
        return min(values)
    if fn == "max":
        return max(values)
    if fn == "avg":
        return sum(values) / len(values)
    if fn == "distinct":
        return len({json.dumps(v) for v in values})
    if fn == "quantiles":
        ordered = sorted(values)
        return {
            repr(float(q)): ordered[math.floor(q * (len(ordered) - 1))]
            for q in agg.get("q", [0.5, 0.9, 0.99])
        }
    if fn == "topk":
        counts = Counter(json.dumps(v, separators=(",", ":")) for v in values)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: agg.get("k", 10)]
        return [[json.loads(k), c] for k, c in top]
    raise AssertionError(fn)


def withinError(rule: dict[str, Any], got: Any, exact: Any) -> bool:
    """
    Whether C{got} is C{exact} up to the documented error of a sketch.
    """
    agg = rule["aggregate"]
    fn = agg["fn"]
    if fn == "distinct":
        m = 2 ** agg.get("precision", 10)
        return bool(abs(got - exact) <= 4 * 1.04 / math.sqrt(m) * exact + 1)
    if fn == "quantiles":
        rel = 1 / (2 * agg.get("bins_per_octave", 64))
        return set(got) == set(exact) and all(
            abs(got[q] - exact[q]) <= rel * abs(exact[q]) * (1 + 1e-9) for q in exact
        )
    return bool(got == exact)


def patternMatches(rule: dict[str, Any], accepted: Accepted) -> Counter[tuple[Any, ...]]:
    """
    The matches of a pattern rule: over the on-time events in (ts, arrival)
    order, per group, from the definitions.
    """
    onTime = [ev for ev, late in zip(accepted.events, accepted.late, strict=True) if not late]
    ordered = sorted(onTime, key=lambda ev: ev["ts"])  # stable: arrival order breaks ties
    where = rule.get("where", {})
    streams: dict[str, list[dict[str, Any]]] = {}
    for ev in ordered:
        if matches(where, ev):
            streams.setdefault(groupOf(rule.get("group_by", []), ev), []).append(ev)
    within = rule["within_ms"]
    strict = rule.get("contiguity", "relaxed") == "strict"
    negate = rule.get("negate", False)
    out: Counter[tuple[Any, ...]] = Counter()
    for group, s in streams.items():
        for i, a in enumerate(s):
            if not matches(rule["first"], a):
                continue
            b = None
            if strict:
                if i + 1 < len(s) and matches(rule["then"], s[i + 1]):
                    b = s[i + 1]
            else:
                for nxt in s[i + 1 :]:
                    if matches(rule["then"], nxt):
                        b = nxt
                        break
            if b is not None and b["ts"] - a["ts"] > within:
                b = None
            if negate and b is None:
                out[(group, a["ts"], a["ts"] + within, a["event_id"], None)] += 1
            elif not negate and b is not None:
                out[(group, a["ts"], b["ts"], a["event_id"], b["event_id"])] += 1
    return out
