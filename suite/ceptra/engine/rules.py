"""
The rules document: validation and compilation into rule specifications.

A document is JSON::

    {"version": 2,
     "settings": {"watermark_delay_ms": 1000, "allowed_lateness_ms": 5000,
                  "late_events": "retract"},
     "rules": [{"name": "spend", "type": "aggregate", ...},
               {"name": "abandon", "type": "pattern", ...}]}

L{validateRules} raises L{EngineError} with one line naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from suite.ceptra.engine.errors import EngineError

__all__ = [
    "AGGREGATES",
    "AggregateSpec",
    "PatternSpec",
    "RuleSet",
    "Settings",
    "compileFilter",
    "compileRules",
    "validateRules",
]

AGGREGATES = ("count", "sum", "min", "max", "avg", "distinct", "quantiles", "topk")
WINDOWS = ("tumbling", "hopping", "sliding", "session")
_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "exists")
_MAX_MS = 366 * 24 * 3600 * 1000
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")

Filter = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Settings:
    """
    Partition-wide time and dedup settings of a rules document.
    """

    watermarkDelayMs: int = 0
    allowedLatenessMs: int = 0
    lateEvents: str = "drop"
    dedupHorizonMs: int = 600_000
    dedupMaxIds: int = 1_000_000

    @property
    def horizonMs(self) -> int:
        """
        How far behind the watermark a late event is still accepted.
        """
        return self.allowedLatenessMs if self.lateEvents == "retract" else 0


@dataclass(frozen=True)
class AggregateSpec:
    """
    A windowed aggregation rule.
    """

    name: str
    canonical: str
    where: Filter | None
    groupBy: tuple[str, ...]
    maxGroups: int
    window: str
    sizeMs: int
    hopMs: int
    gapMs: int
    fn: str
    field: str | None
    params: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class PatternSpec:
    """
    A sequence pattern rule: C{first} then C{then} within C{withinMs}.
    """

    name: str
    canonical: str
    where: Filter | None
    groupBy: tuple[str, ...]
    maxGroups: int
    first: Filter
    then: Filter
    withinMs: int
    strict: bool
    negate: bool


@dataclass(frozen=True)
class RuleSet:
    """
    A validated, compiled rules document.
    """

    version: int
    settings: Settings
    rules: tuple[AggregateSpec | PatternSpec, ...]


def _fail(path: str, message: str) -> EngineError:
    return EngineError(f"{path}: {message}")


def _int(obj: dict[str, Any], name: str, path: str, lo: int, hi: int, default: int | None = None) -> int:
    if name not in obj:
        if default is None:
            raise _fail(f"{path}.{name}", "required")
        return default
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{path}.{name}", "must be an integer")
    if not lo <= value <= hi:
        raise _fail(f"{path}.{name}", f"must be between {lo} and {hi}")
    return value


def _keys(obj: object, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _fail(path, "must be an object")
    for k in obj:
        if k not in allowed:
            raise _fail(f"{path}.{k}", "unknown field")
    return obj


def _literal(value: object, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, "must be finite")
    if isinstance(value, (dict, list)):
        raise _fail(path, "must be a string, number, boolean or null")


def same(v: object, lit: object) -> bool:
    """
    JSON equality: numbers by value (C{1 == 1.0}), never a boolean for a
    number, never a string for anything else.
    """
    return v == lit and (type(v) is bool) == (type(lit) is bool) and (type(v) is str) == (type(lit) is str)


def _compileCondition(fieldName: str, cond: object, path: str) -> Filter:
    missing = object()
    if not isinstance(cond, dict):
        _literal(cond, path)
        lit = cond
        return lambda ev: same(ev.get(fieldName, missing), lit)
    if len(cond) != 1:
        raise _fail(path, "must hold exactly one operator of " + ", ".join(_OPS))
    ((op, arg),) = cond.items()
    if op not in _OPS:
        raise _fail(f"{path}.{op}", "unknown operator (use " + ", ".join(_OPS) + ")")
    if op == "exists":
        if not isinstance(arg, bool):
            raise _fail(f"{path}.exists", "must be a boolean")
        want = arg
        return lambda ev: (fieldName in ev) is want
    if op == "in":
        if not isinstance(arg, list) or not arg:
            raise _fail(f"{path}.in", "must be a non-empty list")
        for i, item in enumerate(arg):
            _literal(item, f"{path}.in[{i}]")
        options = list(arg)
        return lambda ev: any(same(ev.get(fieldName, missing), o) for o in options)
    _literal(arg, f"{path}.{op}")
    if op in ("eq", "ne"):
        lit = arg
        if op == "eq":
            return lambda ev: same(ev.get(fieldName, missing), lit)
        return lambda ev: not same(ev.get(fieldName, missing), lit)
    if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
        raise _fail(f"{path}.{op}", "must be a number or a string")
    numeric = not isinstance(arg, str)
    bound: Any = arg

    def cmp(ev: dict[str, Any]) -> bool:
        v: Any = ev.get(fieldName)
        if numeric:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
        elif not isinstance(v, str):
            return False
        if op == "lt":
            return bool(v < bound)
        if op == "le":
            return bool(v <= bound)
        if op == "gt":
            return bool(v > bound)
        return bool(v >= bound)

    return cmp


def compileFilter(obj: object, path: str) -> Filter:
    """
    Compile a filter object C{{field: literal | {op: arg}}} (all must hold).
    """
    if not isinstance(obj, dict):
        raise _fail(path, "must be an object of field conditions")
    conds = [_compileCondition(str(k), v, f"{path}.{k}") for k, v in obj.items()]
    if not conds:
        return lambda ev: True
    if len(conds) == 1:
        return conds[0]
    return lambda ev: all(c(ev) for c in conds)


def _groupBy(rule: dict[str, Any], path: str) -> tuple[str, ...]:
    gb = rule.get("group_by", [])
    if not isinstance(gb, list) or not all(isinstance(f, str) and f for f in gb):
        raise _fail(f"{path}.group_by", "must be a list of field names")
    if len(set(gb)) != len(gb):
        raise _fail(f"{path}.group_by", "names a field twice")
    if len(gb) > 8:
        raise _fail(f"{path}.group_by", "at most 8 fields")
    return tuple(gb)


_AGG_KEYS = ("name", "type", "where", "group_by", "max_groups", "window", "aggregate")
_PAT_KEYS = (
    "name",
    "type",
    "where",
    "group_by",
    "max_groups",
    "first",
    "then",
    "within_ms",
    "contiguity",
    "negate",
)


def _aggregate(rule: dict[str, Any], path: str, name: str, canonical: str) -> AggregateSpec:
    _keys(rule, path, _AGG_KEYS)
    where = compileFilter(rule["where"], f"{path}.where") if "where" in rule else None
    groupBy = _groupBy(rule, path)
    maxGroups = _int(rule, "max_groups", path, 1, 10_000_000, 100_000)
    if "window" not in rule:
        raise _fail(f"{path}.window", "required")
    win = _keys(rule["window"], f"{path}.window", ("kind", "size_ms", "hop_ms", "gap_ms"))
    kind = win.get("kind")
    if kind not in WINDOWS:
        raise _fail(f"{path}.window.kind", "must be one of " + ", ".join(WINDOWS))
    wpath = f"{path}.window"
    size = hop = gap = 0
    if kind == "session":
        gap = _int(win, "gap_ms", wpath, 1, _MAX_MS)
        for k in ("size_ms", "hop_ms"):
            if k in win:
                raise _fail(f"{wpath}.{k}", "not used by session windows")
    else:
        size = _int(win, "size_ms", wpath, 1, _MAX_MS)
        if "gap_ms" in win:
            raise _fail(f"{wpath}.gap_ms", "only for session windows")
        if kind == "hopping":
            hop = _int(win, "hop_ms", wpath, 1, size)
            if size // hop > 1000:
                raise _fail(f"{wpath}.hop_ms", "at most 1000 windows per event (size_ms / hop_ms)")
        elif "hop_ms" in win:
            raise _fail(f"{wpath}.hop_ms", "only for hopping windows")
        else:
            hop = size
    if "aggregate" not in rule:
        raise _fail(f"{path}.aggregate", "required")
    apath = f"{path}.aggregate"
    agg = _keys(
        rule["aggregate"], apath, ("fn", "field", "q", "precision", "k", "capacity", "bins_per_octave")
    )
    fn = agg.get("fn")
    if fn not in AGGREGATES:
        raise _fail(f"{apath}.fn", "must be one of " + ", ".join(AGGREGATES))
    field = agg.get("field")
    if fn == "count":
        if field is not None and not (isinstance(field, str) and field):
            raise _fail(f"{apath}.field", "must be a field name")
    elif not (isinstance(field, str) and field):
        raise _fail(f"{apath}.field", f"required for {fn}")
    params: list[tuple[str, Any]] = []
    allowedParams = {
        "quantiles": ("q", "bins_per_octave"),
        "distinct": ("precision",),
        "topk": ("k", "capacity"),
    }
    for p in ("q", "precision", "k", "capacity", "bins_per_octave"):
        if p in agg and p not in allowedParams.get(fn, ()):
            raise _fail(f"{apath}.{p}", f"not a parameter of {fn}")
    if fn == "quantiles":
        q = agg.get("q", [0.5, 0.9, 0.99])
        if (
            not isinstance(q, list)
            or not q
            or len(q) > 32
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in q)
        ):
            raise _fail(f"{apath}.q", "must be a non-empty list of numbers between 0 and 1")
        params.append(("q", tuple(float(x) for x in q)))
        params.append(("bins_per_octave", _int(agg, "bins_per_octave", apath, 4, 1024, 64)))
    elif fn == "distinct":
        params.append(("precision", _int(agg, "precision", apath, 4, 16, 10)))
    elif fn == "topk":
        topK = _int(agg, "k", apath, 1, 1000, 10)
        params.append(("k", topK))
        params.append(("capacity", _int(agg, "capacity", apath, topK, 100_000, max(64, 4 * topK))))
    return AggregateSpec(
        name=name,
        canonical=canonical,
        where=where,
        groupBy=groupBy,
        maxGroups=maxGroups,
        window=str(kind),
        sizeMs=size,
        hopMs=hop,
        gapMs=gap,
        fn=str(fn),
        field=field,
        params=tuple(params),
    )


def _pattern(rule: dict[str, Any], path: str, name: str, canonical: str) -> PatternSpec:
    _keys(rule, path, _PAT_KEYS)
    where = compileFilter(rule["where"], f"{path}.where") if "where" in rule else None
    groupBy = _groupBy(rule, path)
    maxGroups = _int(rule, "max_groups", path, 1, 10_000_000, 100_000)
    for k in ("first", "then"):
        if k not in rule:
            raise _fail(f"{path}.{k}", "required")
    first = compileFilter(rule["first"], f"{path}.first")
    then = compileFilter(rule["then"], f"{path}.then")
    within = _int(rule, "within_ms", path, 0, _MAX_MS)
    contiguity = rule.get("contiguity", "relaxed")
    if contiguity not in ("strict", "relaxed"):
        raise _fail(f"{path}.contiguity", "must be strict or relaxed")
    negate = rule.get("negate", False)
    if not isinstance(negate, bool):
        raise _fail(f"{path}.negate", "must be a boolean")
    return PatternSpec(
        name=name,
        canonical=canonical,
        where=where,
        groupBy=groupBy,
        maxGroups=maxGroups,
        first=first,
        then=then,
        withinMs=within,
        strict=contiguity == "strict",
        negate=negate,
    )


def _settings(doc: dict[str, Any]) -> Settings:
    s = _keys(
        doc.get("settings", {}),
        "settings",
        ("watermark_delay_ms", "allowed_lateness_ms", "late_events", "dedup_horizon_ms", "dedup_max_ids"),
    )
    late = s.get("late_events", "drop")
    if late not in ("drop", "retract"):
        raise _fail("settings.late_events", "must be drop or retract")
    return Settings(
        watermarkDelayMs=_int(s, "watermark_delay_ms", "settings", 0, _MAX_MS, 0),
        allowedLatenessMs=_int(s, "allowed_lateness_ms", "settings", 0, _MAX_MS, 0),
        lateEvents=str(late),
        dedupHorizonMs=_int(s, "dedup_horizon_ms", "settings", 0, _MAX_MS, 600_000),
        dedupMaxIds=_int(s, "dedup_max_ids", "settings", 1, 100_000_000, 1_000_000),
    )


def compileRules(doc: object) -> RuleSet:
    """
    Validate C{doc} and compile it; raises L{EngineError} naming the field.
    """
    doc = _keys(doc, "rules document", ("version", "settings", "rules", "description"))
    version = _int(doc, "version", "rules document", 1, 2**53)
    settings = _settings(doc)
    rules = doc.get("rules")
    if not isinstance(rules, list):
        raise _fail("rules", "required, a list of rules")
    if len(rules) > 1000:
        raise _fail("rules", "at most 1000 rules")
    seen: set[str] = set()
    out: list[AggregateSpec | PatternSpec] = []
    for i, rule in enumerate(rules):
        path = f"rules[{i}]"
        if not isinstance(rule, dict):
            raise _fail(path, "must be an object")
        name = rule.get("name")
        if not isinstance(name, str) or not name or len(name) > 128 or not set(name) <= _NAME_CHARS:
            raise _fail(f"{path}.name", "required: 1-128 characters of letters, digits, _ - .")
        if name in seen:
            raise _fail(f"{path}.name", f"duplicate rule name {name!r}")
        seen.add(name)
        try:
            canonical = json.dumps(rule, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            raise _fail(path, "not plain JSON") from None
        rtype = rule.get("type")
        if rtype == "aggregate":
            out.append(_aggregate(rule, path, name, canonical))
        elif rtype == "pattern":
            out.append(_pattern(rule, path, name, canonical))
        else:
            raise _fail(f"{path}.type", "must be aggregate or pattern")
    return RuleSet(version=version, settings=settings, rules=tuple(out))


def validateRules(doc: dict[str, Any]) -> None:
    """
    Raise L{EngineError} with one line naming the field when C{doc} is not a
    valid rules document.
    """
    compileRules(doc)
