"""
The peer-protocol envelope and message payload checks (see
docs/spacecomms-protocol.md).  Frames are a 4-byte big-endian length and a
msgpack-encoded envelope map.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgpack

__all__ = [
    "Envelope",
    "EnvelopeError",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "MESSAGE_TYPES",
    "ROUTED_TYPES",
    "WITHDRAW_REASONS",
    "ERROR_CODES",
    "decodeEnvelope",
    "newMessageId",
    "REPAIR_TYPES",
    "MAX_TTL_SECONDS",
    "MAX_TIMESTAMP",
    "DIGEST_BUCKETS",
    "MAX_SUMMARY_ENTRIES",
    "MAX_PULL_ITEMS",
    "MAX_STATE_DEPTH",
    "MAX_SYNC_SUMMARY_ENTRIES",
    "SYNC_SUMMARY_FRAME_BYTES",
    "stateProblem",
    "summaryEntryProblem",
]

PROTOCOL_VERSION = "1.0"
SUPPORTED_VERSIONS = ("1.0",)
ROUTED_TYPES = ("OBJECT_STATE_ANNOUNCE", "OBJECT_STATE_WITHDRAW", "CDM_ANNOUNCE", "CDM_WITHDRAW")
#: Anti-entropy exchange between two peers (never routed further).
REPAIR_TYPES = ("DIGEST", "DIGEST_SUMMARY", "PULL")
MESSAGE_TYPES = (
    "HELLO",
    "HEARTBEAT",
    "ERROR",
    "SYNC_SUMMARY",
    "END_OF_SYNC",
    *ROUTED_TYPES,
    *REPAIR_TYPES,
)
WITHDRAW_REASONS = ("SUPERSEDED", "TCA_PASSED", "FALSE_POSITIVE", "ERROR")
OBJECT_WITHDRAW_REASONS = ("DECAYED", "NO_LONGER_TRACKED", "ERROR", "OPERATOR_REQUEST")
ERROR_CODES = ("INVALID_MESSAGE", "UNSUPPORTED_VERSION", "UNAUTHORIZED", "RATE_LIMITED", "INTERNAL_ERROR")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_PATH = 64
#: Largest C{session_timeout_seconds} a HELLO may state (the configuration's limit).
MAX_SESSION_TIMEOUT = 7 * 86400
#: Largest envelope C{ttl} accepted (one day).
MAX_TTL_SECONDS = 86400.0
#: Envelope timestamps must lie in [0, 2100-01-01T00:00:00Z).
MAX_TIMESTAMP = 4102444800.0
#: Buckets of a DIGEST; most entries of a DIGEST_SUMMARY; most items of a PULL.
DIGEST_BUCKETS = 256
MAX_SUMMARY_ENTRIES = 2000
MAX_PULL_ITEMS = 500
#: Most entries one re-sync summary (all its SYNC_SUMMARY frames) may list.
MAX_SYNC_SUMMARY_ENTRIES = 500_000
#: Largest SYNC_SUMMARY frame a node sends: the smallest C{max_frame_bytes}
#: any node accepts, so every peer takes it whatever its own limit.
SYNC_SUMMARY_FRAME_BYTES = 4096
_KINDS = ("cdm", "object")
#: Deepest nesting of maps and lists inside an object state.
MAX_STATE_DEPTH = 32


class EnvelopeError(ValueError):
    """
    A malformed envelope or payload; C{field} names the part at fault and
    C{messageId} is the envelope's id when it could be read.
    """

    def __init__(self, field: str, reason: str, messageId: str | None = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.messageId = messageId


def stateProblem(state: Any, path: str) -> tuple[str, str] | None:
    """
    Why an object state is not plain JSON data, as (field, reason), or None.

    A state is served by the REST API as JSON, so it may hold only maps with
    string keys, lists, strings, booleans, null, integers and finite numbers,
    nested at most L{MAX_STATE_DEPTH} deep (msgpack from a peer could carry
    NaN, binary or integer keys, which no JSON client can read back).
    """
    stack: list[tuple[Any, str, int]] = [(state, path, 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= MAX_STATE_DEPTH:
                return where, f"nested deeper than {MAX_STATE_DEPTH} levels"
            if isinstance(value, dict):
                for k, v in value.items():
                    if not isinstance(k, str):
                        return where, f"keys must be strings, got {type(k).__name__}"
                    stack.append((v, f"{where}.{k[:40]}", depth + 1))
            else:
                stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                return where, "must be a finite number (NaN and Infinity are not JSON)"
        elif value is not None and not isinstance(value, (str, int, bool)):
            return where, f"must be JSON data, not {type(value).__name__}"
    return None


def summaryEntryProblem(e: Any) -> str | None:
    """
    Why one entry of a SYNC_SUMMARY or DIGEST_SUMMARY is not
    C{[kind, key, origin, sequence, active]}, or None.
    """
    if not isinstance(e, list) or len(e) != 5:
        return "must be [kind, key, origin, sequence, active]"
    kind, key, origin, sequence, active = e
    if kind not in _KINDS:
        return "kind must be cdm or object"
    if not isinstance(key, str) or not _ID.match(key):
        return "key is not a valid identifier"
    if not isinstance(origin, str) or not _ID.match(origin):
        return "origin is not a valid node id"
    if not isinstance(sequence, int) or isinstance(sequence, bool) or not 0 <= sequence < 2**63:
        return "sequence must be an integer in [0, 2**63)"
    if not isinstance(active, bool):
        return "active must be a boolean"
    return None


def newMessageId() -> str:
    """
    A fresh, globally unique message id.
    """
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Envelope:
    """
    One peer-protocol message.
    """

    message_type: str
    source_node: str
    payload: dict[str, Any]
    message_id: str = field(default_factory=newMessageId)
    timestamp: float = 0.0
    hop_count: int = 0
    ttl: float = 300.0
    path: tuple[str, ...] = ()
    protocol_version: str = PROTOCOL_VERSION

    def toJSON(self) -> dict[str, Any]:
        return {
            "protocol_version": self.protocol_version,
            "message_id": self.message_id,
            "timestamp": self.timestamp,
            "source_node": self.source_node,
            "message_type": self.message_type,
            "hop_count": self.hop_count,
            "ttl": self.ttl,
            "path": list(self.path),
            "payload": self.payload,
        }

    def encode(self) -> bytes:
        return msgpack.packb(self.toJSON(), use_bin_type=True)

    def forwarded(self, via: str) -> Envelope:
        """
        The copy sent on by node C{via}: one more hop, C{via} on the path.
        """
        return Envelope(
            self.message_type,
            self.source_node,
            self.payload,
            self.message_id,
            self.timestamp,
            self.hop_count + 1,
            self.ttl,
            (*self.path, via),
            self.protocol_version,
        )


def _need(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, mid: str | None) -> Any:
    value = d.get(key)
    if value is None or isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise EnvelopeError(f"{where}{key}", f"missing or not a {name}", mid)
    return value


def _checkId(value: str, where: str, mid: str | None) -> str:
    if not _ID.match(value):
        raise EnvelopeError(where, "not a valid identifier", mid)
    return value


def checkPayload(mtype: str, p: dict[str, Any], mid: str | None) -> None:
    """
    Check the payload of a message of type C{mtype}.
    """
    w = "payload."
    if mtype == "HELLO":
        _checkId(_need(p, "node_id", str, w, mid), w + "node_id", mid)
        versions = _need(p, "versions", list, w, mid)
        if not versions or not all(isinstance(v, str) for v in versions):
            raise EnvelopeError(w + "versions", "must be a non-empty list of strings", mid)
        _need(p, "capabilities", list, w, mid)
        if not isinstance(p.get("auth_token", ""), str):
            raise EnvelopeError(w + "auth_token", "must be a string", mid)
        own = p.get("own_sequence", 0)
        if not isinstance(own, int) or isinstance(own, bool) or not 0 <= own < 2**63:
            raise EnvelopeError(w + "own_sequence", "must be an integer in [0, 2**63)", mid)
        timeout = p.get("session_timeout_seconds", 1.0)
        if (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not 0 < timeout <= MAX_SESSION_TIMEOUT
        ):
            raise EnvelopeError(
                w + "session_timeout_seconds",
                f"must be a number of seconds in (0, {MAX_SESSION_TIMEOUT}]",
                mid,
            )
    elif mtype == "HEARTBEAT":
        _need(p, "sequence", int, w, mid)
        echo = p.get("echo")
        if echo is not None and not (
            isinstance(echo, list)
            and len(echo) == 2
            and isinstance(echo[0], int)
            and not isinstance(echo[0], bool)
            and 0 <= echo[0] < 2**63
            and isinstance(echo[1], (int, float))
            and not isinstance(echo[1], bool)
            and 0 <= echo[1] <= MAX_SESSION_TIMEOUT * 1000
        ):
            raise EnvelopeError(w + "echo", "must be [heartbeat sequence, milliseconds held]", mid)
    elif mtype == "ERROR":
        code = _need(p, "code", str, w, mid)
        if code not in ERROR_CODES:
            raise EnvelopeError(w + "code", f"unknown error code {code[:40]!r}", mid)
    elif mtype in ROUTED_TYPES:
        key = "cdm_id" if mtype.startswith("CDM") else "object_id"
        _checkId(_need(p, key, str, w, mid), w + key, mid)
        seq = _need(p, "sequence", int, w, mid)
        if seq < 0 or seq >= 2**63:
            raise EnvelopeError(w + "sequence", "must be in [0, 2**63)", mid)
        if not isinstance(p.get("override", False), bool):
            raise EnvelopeError(w + "override", "must be a boolean", mid)
        for name, limit in (("signature", 1024), ("cert", 8192)):
            value = p.get(name)
            if value is not None and (not isinstance(value, bytes) or len(value) > limit):
                raise EnvelopeError(w + name, f"must be binary, at most {limit} bytes", mid)
        if mtype == "CDM_ANNOUNCE":
            _need(p, "cdm", dict, w, mid)
        elif mtype == "OBJECT_STATE_ANNOUNCE":
            problem = stateProblem(_need(p, "state", dict, w, mid), w + "state")
            if problem is not None:
                raise EnvelopeError(*problem, mid)
        elif mtype == "CDM_WITHDRAW":
            reason = _need(p, "reason", str, w, mid)
            if reason not in WITHDRAW_REASONS:
                raise EnvelopeError(w + "reason", f"must be one of {', '.join(WITHDRAW_REASONS)}", mid)
        else:
            reason = p.get("reason", "NO_LONGER_TRACKED")
            if not isinstance(reason, str) or reason not in OBJECT_WITHDRAW_REASONS:
                raise EnvelopeError(w + "reason", f"must be one of {', '.join(OBJECT_WITHDRAW_REASONS)}", mid)
    elif mtype in REPAIR_TYPES:
        _checkRepair(mtype, p, mid)


def _checkRepair(mtype: str, p: dict[str, Any], mid: str | None) -> None:
    w = "payload."
    if mtype == "DIGEST":
        kinds = _need(p, "kinds", list, w, mid)
        if not kinds or len(kinds) > 2 or any(k not in _KINDS for k in kinds):
            raise EnvelopeError(w + "kinds", "must be a non-empty list of cdm, object", mid)
        buckets = _need(p, "buckets", list, w, mid)
        if len(buckets) != DIGEST_BUCKETS or not all(
            isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 2**64 for b in buckets
        ):
            raise EnvelopeError(w + "buckets", f"must be {DIGEST_BUCKETS} integers in [0, 2**64)", mid)
    elif mtype == "DIGEST_SUMMARY":
        entries = _need(p, "entries", list, w, mid)
        if len(entries) > MAX_SUMMARY_ENTRIES:
            raise EnvelopeError(w + "entries", f"at most {MAX_SUMMARY_ENTRIES} entries", mid)
        for e in entries:
            if not (
                isinstance(e, list)
                and len(e) == 5
                and e[0] in _KINDS
                and isinstance(e[1], str)
                and _ID.match(e[1])
                and isinstance(e[2], str)
                and _ID.match(e[2])
                and isinstance(e[3], int)
                and not isinstance(e[3], bool)
                and 0 <= e[3] < 2**63
                and isinstance(e[4], bool)
            ):
                raise EnvelopeError(w + "entries", "each must be [kind, key, origin, sequence, active]", mid)
    else:
        items = _need(p, "items", list, w, mid)
        if len(items) > MAX_PULL_ITEMS:
            raise EnvelopeError(w + "items", f"at most {MAX_PULL_ITEMS} items", mid)
        for i in items:
            if not (isinstance(i, list) and len(i) == 2 and i[0] in _KINDS and isinstance(i[1], str)):
                raise EnvelopeError(w + "items", "each must be [kind, key]", mid)


def decodeEnvelope(data: bytes) -> Envelope:
    """
    Parse and check one frame.

    @raise EnvelopeError: naming the field at fault.
    """
    try:
        d = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as e:
        raise EnvelopeError("envelope", f"not a valid msgpack map ({type(e).__name__})")
    if not isinstance(d, dict):
        raise EnvelopeError("envelope", "must be a map")
    mid = d.get("message_id") if isinstance(d.get("message_id"), str) else None
    if mid is not None:
        _checkId(mid, "message_id", None)
    version = _need(d, "protocol_version", str, "", mid)
    mid = _need(d, "message_id", str, "", mid)
    ts = _need(d, "timestamp", (int, float), "", mid)
    src = _checkId(_need(d, "source_node", str, "", mid), "source_node", mid)
    mtype = _need(d, "message_type", str, "", mid)
    if mtype not in MESSAGE_TYPES:
        raise EnvelopeError("message_type", f"unknown message type {mtype[:40]!r}", mid)
    hops = _need(d, "hop_count", int, "", mid)
    ttl = _need(d, "ttl", (int, float), "", mid)
    path = _need(d, "path", list, "", mid)
    if hops < 0 or hops > 1000:
        raise EnvelopeError("hop_count", "out of range", mid)
    if not math.isfinite(ttl) or not 0 <= ttl <= MAX_TTL_SECONDS:
        raise EnvelopeError("ttl", f"must be a number of seconds in [0, {MAX_TTL_SECONDS:.0f}]", mid)
    if not math.isfinite(ts) or not 0 <= ts < MAX_TIMESTAMP:
        raise EnvelopeError("timestamp", "must be POSIX seconds between 1970 and 2100", mid)
    if len(path) > MAX_PATH or not all(isinstance(n, str) and _ID.match(n) for n in path):
        raise EnvelopeError("path", "must be a list of node ids", mid)
    payload = _need(d, "payload", dict, "", mid)
    checkPayload(mtype, payload, mid)
    return Envelope(mtype, src, payload, mid, float(ts), hops, float(ttl), tuple(path), version)
