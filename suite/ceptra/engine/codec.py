"""
Encoding of the two kinds of Raft entries the engine applies.

An entry is a two-byte tag followed by compact JSON: C{E1} for a batch of
events, C{R1} for a rules document.  An empty payload is a no-op entry.
JSON that is not plain JSON (NaN, Infinity, a number too large for a float)
makes the whole entry unreadable.
"""

from __future__ import annotations

import json
import math
from typing import Any

from suite.ceptra.engine.errors import EngineError

__all__ = ["EVENTS_TAG", "RULES_TAG", "encodeEvents", "encodeRules", "decodeEntry"]

EVENTS_TAG = b"E1"
RULES_TAG = b"R1"

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
