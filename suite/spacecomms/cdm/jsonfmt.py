"""
CDM in JSON.  CCSDS defines no JSON binding for the CDM, so this suite uses
the KVN keywords directly, grouped like the XML::

    {"CCSDS_CDM_VERS": "1.0",
     "header": {"COMMENT": [...], "CREATION_DATE": "...", ...},
     "relative_metadata_data": {"TCA": "...", "MISS_DISTANCE": 715.0, ...},
     "segments": [{"metadata": {"OBJECT": "OBJECT1", ...},
                   "data": {"X": 2570.097065, ..., "CR_R": 4.142e1, ...}},
                  {...}]}

Numbers are JSON numbers in the standard's units (the units of each keyword
are those of the field tables); times and enumerations are strings.
"""

from __future__ import annotations

import json
from typing import Any

from suite.spacecomms.cdm import fields as F
from suite.spacecomms.cdm.model import CDM, MAX_TEXT, CDMError, Segment, convert, epochValid

__all__ = ["parseJSON", "writeJSON", "toDict", "fromDict", "MAX_JSON_BYTES"]

MAX_JSON_BYTES = 512 * 1024


def _plain(text: str) -> bool:
    """
    True for text that L{convert} would keep unchanged (the fast path).
    """
    return 0 < len(text) <= MAX_TEXT and text.isprintable() and text[0] != " " and text[-1] != " "


def _sectionGeneral(
    obj: Any, name: str, table: dict[str, F.Field], prefix: str
) -> tuple[dict[str, Any], list[str]]:
    """
    One section, keyword by keyword through L{convert}: the reference the
    fast pass (L{_section}) must agree with, and the path that names the
    first keyword at fault.
    """
    if not isinstance(obj, dict):
        raise CDMError(name, "must be an object")
    values: dict[str, Any] = {}
    comments: list[str] = []
    for key, raw in obj.items():
        if key == "COMMENT":
            if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
                raise CDMError(prefix + "COMMENT", "must be a list of strings")
            comments.extend(raw)
            continue
        f = table.get(key)
        if f is None:
            raise CDMError((prefix + str(key))[:60] or name, "unknown keyword")
        kind = f.kind
        if type(raw) is float and kind == "float" and raw - raw == 0.0:
            values[key] = raw
        elif type(raw) is str and (kind == "str" or (kind == "enum" and raw in f.enum)) and _plain(raw):
            values[key] = raw
        else:
            values[key] = convert(f, raw, prefix + key)
    return values, comments


class _Kind:
    """
    A keyword kind the fast pass tests by identity.
    """


_STR, _EPOCH, _INT = _Kind(), _Kind(), _Kind()
_KINDS = {"str": _STR, "epoch": _EPOCH, "int": _INT}


class _Accepts:
    """
    What the fast pass accepts unchanged in one section: the float keywords,
    and for the others a kind marker or, for an enumeration, the set of its
    canonical values.
    """

    def __init__(self, table: dict[str, F.Field]) -> None:
        self.floats = frozenset(n for n, f in table.items() if f.kind == "float")
        self.others: dict[str, _Kind | frozenset[str]] = {
            n: frozenset(f.enum) if f.kind == "enum" else _KINDS[f.kind]
            for n, f in table.items()
            if f.kind != "float"
        }


_HEADER_ACCEPTS = _Accepts(F.HEADER_BY_NAME)
_RELATIVE_ACCEPTS = _Accepts(F.RELATIVE_BY_NAME)
_METADATA_ACCEPTS = _Accepts(F.METADATA_BY_NAME)
_DATA_ACCEPTS = _Accepts(F.DATA_BY_NAME)


def _fastSection(obj: dict[str, Any], accepts: _Accepts) -> bool:
    """
    True when every member of C{obj} is a value L{_sectionGeneral} keeps
    exactly as it is (finite floats, plain text, canonical enumerations,
    valid epochs, non-negative integers, a list of comment strings); False
    sends the section down the general path, which names the fault.
    """
    floats, others = accepts.floats, accepts.others
    for key, raw in obj.items():
        t = type(raw)
        if t is float:
            if key in floats and raw - raw == 0.0:
                continue
            return False
        k = others.get(key)
        if t is str:
            if not (0 < len(raw) <= MAX_TEXT and raw.isprintable() and raw[0] != " " and raw[-1] != " "):
                return False
            if k is _STR or (k is _EPOCH and epochValid(raw)) or (type(k) is frozenset and raw in k):
                continue
            return False
        if t is int:
            if k is _INT and raw >= 0:
                continue
            return False
        if key == "COMMENT" and t is list and all(type(c) is str for c in raw):
            continue
        return False
    return True


def _section(
    obj: Any, name: str, table: dict[str, F.Field], accepts: _Accepts, prefix: str
) -> tuple[dict[str, Any], list[str]]:
    if type(obj) is dict and _fastSection(obj, accepts):
        values = dict(obj)
        comments = values.pop("COMMENT", None)
        return values, list(comments) if comments is not None else []
    return _sectionGeneral(obj, name, table, prefix)


def fromDict(doc: Any) -> CDM:
    """
    Build an L{CDM} from the JSON object model.
    """
    if not isinstance(doc, dict):
        raise CDMError("cdm", "a JSON CDM must be an object")
    unknown = set(doc) - {F.VERSION_KEY, "header", "relative_metadata_data", "segments"}
    if unknown:
        raise CDMError(sorted(str(k) for k in unknown)[0][:60] or "cdm", "unknown member")
    version = doc.get(F.VERSION_KEY)
    if not isinstance(version, str):
        raise CDMError(F.VERSION_KEY, "missing or not a string")
    cdm = CDM(version=version)
    cdm.header, cdm.headerComments = _section(
        doc.get("header"), "header", F.HEADER_BY_NAME, _HEADER_ACCEPTS, ""
    )
    cdm.relative, cdm.relativeComments = _section(
        doc.get("relative_metadata_data"), "relative_metadata_data", F.RELATIVE_BY_NAME, _RELATIVE_ACCEPTS, ""
    )
    segs = doc.get("segments")
    if not isinstance(segs, list):
        raise CDMError("segments", "missing or not a list")
    if len(segs) > 2:
        raise CDMError("OBJECT", "more than two segments")
    for i, s in enumerate(segs, start=1):
        prefix = f"OBJECT{i}."
        if not isinstance(s, dict) or set(s) != {"metadata", "data"}:
            raise CDMError(prefix + "segment", "each segment is an object with metadata and data")
        seg = Segment()
        seg.metadata, seg.metadataComments = _section(
            s["metadata"], prefix + "metadata", F.METADATA_BY_NAME, _METADATA_ACCEPTS, prefix
        )
        seg.data, seg.dataComments = _section(
            s["data"], prefix + "data", F.DATA_BY_NAME, _DATA_ACCEPTS, prefix
        )
        cdm.segments.append(seg)
    return cdm


def parseJSON(text: str) -> CDM:
    """
    Parse a JSON CDM document.
    """
    if len(text) > MAX_JSON_BYTES:
        raise CDMError("cdm", f"document larger than {MAX_JSON_BYTES} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CDMError("cdm", f"not valid JSON ({str(e)[:80]})")
    return fromDict(doc)


def _out(values: dict[str, Any], comments: list[str], table: tuple[F.Field, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if comments:
        out["COMMENT"] = list(comments)
    out.update(values)
    return out


def toDict(cdm: CDM) -> dict[str, Any]:
    """
    The JSON object model of C{cdm}.
    """
    return {
        F.VERSION_KEY: cdm.version,
        "header": _out(cdm.header, cdm.headerComments, F.HEADER),
        "relative_metadata_data": _out(cdm.relative, cdm.relativeComments, F.RELATIVE),
        "segments": [
            {
                "metadata": _out(s.metadata, s.metadataComments, F.METADATA),
                "data": _out(s.data, s.dataComments, F.DATA),
            }
            for s in cdm.segments
        ],
    }


def writeJSON(cdm: CDM) -> str:
    """
    Render C{cdm} as JSON text.
    """
    return json.dumps(toDict(cdm), separators=(",", ":"))
