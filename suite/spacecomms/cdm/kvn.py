"""
CDM in Keyword=Value Notation (CCSDS 508.0-B-1 section 4 / 502.0 KVN
rules): one C{KEYWORD = value [units]} per line, C{COMMENT} lines, the
version keyword first, then header, relative metadata/data, and the
metadata and data of OBJECT1 and OBJECT2.
"""

from __future__ import annotations

import re
from typing import Any

from suite.spacecomms.cdm import fields as F
from suite.spacecomms.cdm.model import CDM, CDMError, Segment, checkUnits, convert, formatValue

__all__ = ["parseKVN", "writeKVN", "MAX_KVN_BYTES"]

MAX_KVN_BYTES = 256 * 1024
_TABLE: dict[str, tuple[str, F.Field]] = {
    **{n: ("H", f) for n, f in F.HEADER_BY_NAME.items()},
    **{n: ("R", f) for n, f in F.RELATIVE_BY_NAME.items()},
    **{n: ("M", f) for n, f in F.METADATA_BY_NAME.items()},
    **{n: ("D", f) for n, f in F.DATA_BY_NAME.items()},
}
MAX_LINE = 2048
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _comment(line: str) -> str | None:
    if line == "COMMENT":
        return ""
    if line.startswith("COMMENT") and line[7] in " \t":
        return line[8:].strip()
    return None


def parseKVN(text: str) -> CDM:
    """
    Parse KVN text into an (unvalidated for obligations) L{CDM}; syntax,
    ordering, unknown keywords, types, enums and units are checked here.
    """
    if len(text) > MAX_KVN_BYTES:
        raise CDMError("cdm", f"document larger than {MAX_KVN_BYTES} bytes")
    cdm = CDM()
    section = "start"
    seg: Segment | None = None
    prefix = ""
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) > MAX_LINE:
            raise CDMError(
                line[:30].split("=")[0].strip() or "cdm", f"line longer than {MAX_LINE} characters"
            )
        comment = _comment(line) if line.startswith("COMMENT") else None
        if comment is not None:
            if section == "start":
                raise CDMError(F.VERSION_KEY, "must be the first keyword")
            pending.append(comment)
            continue
        key, eq, rest = line.partition("=")
        key = key.strip()
        found = _TABLE.get(key)
        if not eq or (found is None and key != F.VERSION_KEY and not _KEY.match(key)):
            name = key[:40] if key and _KEY.match(key) else (F.VERSION_KEY if section == "start" else "cdm")
            raise CDMError(name, f"expected KEYWORD = value, got {line[:40]!r}")
        value, units = rest.strip(), None
        if value.endswith("]"):
            opening = value.rfind("[")
            if opening >= 0:
                value, units = value[:opening].strip(), value[opening + 1 : -1].strip()
        if key == F.VERSION_KEY:
            if section != "start":
                raise CDMError(F.VERSION_KEY, "must appear once, as the first keyword")
            if units is not None:
                raise CDMError(F.VERSION_KEY, "takes no units")
            cdm.version = value
            section = "header"
            continue
        if section == "start":
            raise CDMError(F.VERSION_KEY, "must be the first keyword")
        target: dict[str, Any]
        if found is None:
            raise CDMError(key[:40], "unknown keyword")
        code, f = found
        if code == "D":
            if section not in ("metadata", "data") or seg is None:
                raise CDMError(prefix + key, "data keyword outside an object section")
            section = "data"
            target, comments = seg.data, seg.dataComments
        elif code == "M":
            if key == "OBJECT":
                if len(cdm.segments) >= 2:
                    raise CDMError("OBJECT", "more than two object sections")
                seg = Segment()
                cdm.segments.append(seg)
                section = "metadata"
                prefix = f"OBJECT{len(cdm.segments)}."
            elif section != "metadata" or seg is None:
                raise CDMError(
                    prefix + key, "metadata keyword outside an object's metadata (OBJECT must come first)"
                )
            target, comments = seg.metadata, seg.metadataComments
        elif code == "H":
            if section != "header":
                raise CDMError(key, "header keyword after the header")
            target, comments = cdm.header, cdm.headerComments
        else:
            if section not in ("header", "relative"):
                raise CDMError(key, "relative metadata/data keyword inside an object section")
            section = "relative"
            target, comments = cdm.relative, cdm.relativeComments
        where = prefix + key
        if key in target:
            raise CDMError(where, "duplicate keyword")
        if units is not None and units != f.units and (f.units is None or units.lower() != f.units.lower()):
            checkUnits(f, units, where)
        if f.kind == "float":
            try:
                number = float(value)
            except ValueError:
                number = convert(f, value, where)
            if number - number != 0.0:
                number = convert(f, value, where)
            target[key] = number
        else:
            target[key] = convert(f, value, where)
        if pending:
            comments.extend(pending)
            pending.clear()
    if section == "start":
        raise CDMError(F.VERSION_KEY, "missing (empty document)")
    if pending:
        if seg is not None:
            (seg.dataComments if section == "data" else seg.metadataComments).extend(pending)
        else:
            (cdm.relativeComments if section == "relative" else cdm.headerComments).extend(pending)
    return cdm


def _line(f: F.Field, value: Any) -> str:
    text = formatValue(value)
    if f.units:
        return f"{f.name:<28} = {text} [{f.units}]"
    return f"{f.name:<28} = {text}"


def _section(out: list[str], comments: list[str], table: tuple[F.Field, ...], values: dict[str, Any]) -> None:
    for c in comments:
        out.append(f"COMMENT {c}".rstrip())
    for f in table:
        if f.name in values:
            out.append(_line(f, values[f.name]))


def writeKVN(cdm: CDM) -> str:
    """
    Render C{cdm} as KVN, keywords in the standard's table order.
    """
    out = [f"{F.VERSION_KEY:<28} = {cdm.version}"]
    _section(out, cdm.headerComments, F.HEADER, cdm.header)
    _section(out, cdm.relativeComments, F.RELATIVE, cdm.relative)
    for seg in cdm.segments:
        _section(out, seg.metadataComments, F.METADATA, seg.metadata)
        _section(out, seg.dataComments, F.DATA, seg.data)
    return "\n".join(out) + "\n"
