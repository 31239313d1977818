"""
Encoding of the Raft entries the engine applies.

An entry is a two-byte tag and a body; an empty payload is a no-op entry.

  - C{R1}: a rules document as compact JSON.
  - C{E1}: a batch of events as a compact JSON array of
    C{{"event_id", "key", "ts", **fields}}.  JSON that is not plain JSON
    (NaN, Infinity, a number too large for a float) makes the whole entry
    unreadable.
  - C{E2}: a batch of events in columns (L{encodeBatch}), msgpack
    C{[1, segments, ids, keys, ts, names, columns]}: the format version
    (1), the number of events of each request combined into the entry, the
    C{event_id}, C{key} and C{ts} of every event, the field names (first
    appearance order) and one column of values per name, an absent field
    being the msgpack extension type 1 with no data.  Values are scalars
    (string, integer, float, boolean, nil).  Decoding is size-limited
    (L{MAX_BATCH_EVENTS} events, L{MAX_BATCH_FIELDS} fields, strings up to
    L{MAX_STRING_BYTES}) and checks the shape; a follower applies it without
    parsing JSON or building a dict per event.  The leader falls back to
    C{E1} for values msgpack cannot carry (integers beyond 64 bits,
    strings that are not valid Unicode).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import msgpack

from suite.ceptra.engine.context import MISSING
from suite.ceptra.engine.errors import EngineError

__all__ = [
    "BATCH_TAG",
    "EVENTS_TAG",
    "EventBatch",
    "MAX_BATCH_EVENTS",
    "RULES_TAG",
    "decodeBatch",
    "decodeEntry",
    "encodeBatch",
    "encodeEvents",
    "encodeRules",
]

EVENTS_TAG = b"E1"
RULES_TAG = b"R1"
BATCH_TAG = b"E2"
BATCH_VERSION = 1
MAX_BATCH_EVENTS = 200_000
MAX_BATCH_FIELDS = 1024
MAX_STRING_BYTES = 64 * 1024
_ABSENT_CODE = 1
_RESERVED = frozenset({"event_id", "key", "ts"})
# The types a column may hold (C{object}: the absent marker L{MISSING}).
_COLUMN_TYPES = frozenset({str, int, float, bool, type(None), object})

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _noConstant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


_decoder = json.JSONDecoder(parse_constant=_noConstant, parse_float=_finite)


def _dump(value: object, what: str) -> bytes:
    try:
        return _encoder.encode(value).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as e:
        raise EngineError(f"{what}: not encodable as JSON: {e}") from None


def encodeEvents(events: list[dict[str, Any]]) -> bytes:
    """
    One batch entry holding C{events}, each C{{"event_id", "key", "ts", **fields}}.
    Events are checked when applied (bad ones are counted as rejected).
    """
    if not isinstance(events, list):
        raise EngineError("events: must be a list")
    return EVENTS_TAG + _dump(events, "events")


def encodeRules(doc: dict[str, Any]) -> bytes:
    """
    One rules entry holding the document C{doc} (validated first).
    """
    from suite.ceptra.engine.rules import validateRules

    validateRules(doc)
    return RULES_TAG + _dump(doc, "rules")


def decodeEntry(payload: bytes) -> tuple[bytes, Any]:
    """
    Split an entry into its tag and decoded JSON body; C{(b"", None)} for a
    no-op entry.  Raises L{EngineError} for anything else.
    """
    if not payload:
        return b"", None
    tag = bytes(payload[:2])
    if tag not in (EVENTS_TAG, RULES_TAG):
        raise EngineError("entry: unknown tag")
    try:
        body = _decoder.decode(bytes(payload[2:]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise EngineError(f"entry: bad JSON: {e}") from None
    except RecursionError:
        raise EngineError("entry: JSON nested too deeply") from None
    return tag, body


class EventBatch:
    """
    A decoded C{E2} entry: the events of one or more requests, in columns.

    @ivar segments: the number of events of each combined request, in order.
    @ivar ids: C{event_id} of every event (as sent; the engine checks them).
    @ivar keys: C{key} of every event.
    @ivar ts: C{ts} of every event.
    @ivar names: field names; C{columns[j][i]} is field C{names[j]} of
        event C{i}, or L{MISSING} when the event has no such field.
    """

    __slots__ = ("segments", "ids", "keys", "ts", "names", "columns", "_index")

    def __init__(
        self,
        segments: list[int],
        ids: list[Any],
        keys: list[Any],
        ts: list[Any],
        names: list[str],
        columns: list[list[Any]],
    ) -> None:
        self.segments = segments
        self.ids = ids
        self.keys = keys
        self.ts = ts
        self.names = names
        self.columns = columns
        self._index = {n: c for n, c in zip(names, columns, strict=True)}
        self._index["event_id"] = ids
        self._index["key"] = keys
        self._index["ts"] = ts

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> list[Any] | None:
        """
        The values of field C{name} (also C{event_id}, C{key}, C{ts}) of
        every event, or None when no event has it.
        """
        return self._index.get(name)

    def event(self, i: int) -> dict[str, Any]:
        """
        Event C{i} as the engine's dict C{{**fields, "event_id", "key", "ts"}}.
        """
        ev = {n: c[i] for n, c in zip(self.names, self.columns, strict=True) if c[i] is not MISSING}
        ev["event_id"] = self.ids[i]
        ev["key"] = self.keys[i]
        ev["ts"] = self.ts[i]
        return ev


def _packDefault(obj: object) -> object:
    if obj is MISSING:
        return msgpack.ExtType(_ABSENT_CODE, b"")
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encodeBatch(segments: Sequence[Sequence[dict[str, Any]]]) -> bytes:
    """
    One C{E2} entry holding the events of each request in C{segments}, in
    order; every event is C{{"event_id", "key", "ts", "fields": {...}}} with
    scalar field values (as the ingest API validates them).  Falls back to
    an C{E1} entry when a value does not fit msgpack.
    """
    flat = [ev for events in segments for ev in events]
    n = len(flat)
    ids = [ev["event_id"] for ev in flat]
    keys = [ev["key"] for ev in flat]
    tss = [ev["ts"] for ev in flat]
    fields = [ev["fields"] for ev in flat]
    first = fields[0].keys() if fields else {}.keys()
    if all(f.keys() == first for f in fields):
        # Every event has the same fields (the common case): one column per
        # name in one pass each.
        names = list(first)
        cols = [[f[name] for f in fields] for name in names]
    else:
        columns: dict[str, list[Any]] = {}
        for i, f in enumerate(fields):
            for name, value in f.items():
                col = columns.get(name)
                if col is None:
                    col = columns[name] = [MISSING] * n
                col[i] = value
        names, cols = list(columns), list(columns.values())
    body = [BATCH_VERSION, [len(events) for events in segments], ids, keys, tss, names, cols]
    try:
        return BATCH_TAG + msgpack.packb(body, default=_packDefault, use_bin_type=True)
    except (OverflowError, UnicodeEncodeError, TypeError, ValueError):
        return encodeEvents(
            [
                {**ev["fields"], "event_id": ev["event_id"], "key": ev["key"], "ts": ev["ts"]}
                for s in segments
                for ev in s
            ]
        )


def _extHook(code: int, data: bytes) -> object:
    if code == _ABSENT_CODE and not data:
        return MISSING
    raise ValueError(f"unknown extension type {code}")


def _bad(why: str) -> EngineError:
    return EngineError(f"entry: bad event batch: {why}")


def decodeBatch(payload: bytes) -> EventBatch:
    """
    Decode and check an C{E2} entry.  Raises L{EngineError} for anything
    that is not one (wrong shape, version or sizes past the limits).
    """
    if payload[:2] != BATCH_TAG:
        raise _bad("wrong tag")
    try:
        body = msgpack.unpackb(
            payload[2:],
            raw=False,
            use_list=True,
            ext_hook=_extHook,
            strict_map_key=True,
            max_str_len=MAX_STRING_BYTES,
            max_bin_len=0,
            max_ext_len=0,
            max_map_len=0,
            max_array_len=MAX_BATCH_EVENTS,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise _bad(f"undecodable ({e})") from None
    if type(body) is not list or len(body) != 7:
        raise _bad("not a 7-item array")
    version, segments, ids, keys, tss, names, columns = body
    if version != BATCH_VERSION:
        raise _bad(f"unknown version {version!r}")
    for what, value in (("segments", segments), ("ids", ids), ("keys", keys), ("ts", tss)):
        if type(value) is not list:
            raise _bad(f"{what} is not an array")
    n = len(ids)
    if len(keys) != n or len(tss) != n:
        raise _bad("id, key and ts columns differ in length")
    if any(type(c) is not int or c < 0 for c in segments) or sum(segments) != n:
        raise _bad("segment counts do not add up to the events")
    if type(names) is not list or type(columns) is not list or len(names) != len(columns):
        raise _bad("field names and columns do not match")
    if len(names) > MAX_BATCH_FIELDS:
        raise _bad(f"more than {MAX_BATCH_FIELDS} fields")
    if any(type(name) is not str for name in names) or len(set(names)) != len(names):
        raise _bad("field names must be distinct strings")
    if _RESERVED.intersection(names):
        raise _bad("a field is named event_id, key or ts")
    isfinite = math.isfinite
    for col in columns:
        if type(col) is not list or len(col) != n:
            raise _bad("a column's length differs from the events'")
        kinds = set(map(type, col))
        if not kinds <= _COLUMN_TYPES:
            raise _bad("a field value is not a scalar")
        if object in kinds and any(type(v) is object and v is not MISSING for v in col):
            raise _bad("a field value is not a scalar")
        if float in kinds and not all(isfinite(v) for v in col if type(v) is float):
            raise _bad("a field value is not a finite number")
    return EventBatch(segments, ids, keys, tss, names, columns)
