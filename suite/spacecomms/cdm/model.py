"""
The CDM value object and its validation against the field tables.

A L{CDM} holds typed values (C{float}, C{int}, canonical enum text, epoch
text) keyed by the standard's keywords, so every encoding round-trips
through it.  L{CDMError} always names the offending field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from suite.spacecomms.cdm import fields as F

__all__ = ["CDM", "CDMError", "Segment", "convert", "epochSeconds", "validate", "decode", "encode", "sniff"]

MAX_TEXT = 1024
_EPOCH = re.compile(r"^(\d{4})-(?:(\d{2})-(\d{2})|(\d{3}))T(\d{2}):(\d{2}):(\d{2})(\.\d{1,12})?Z?$")


class CDMError(ValueError):
    """
    A CDM was rejected; C{field} names the keyword or element at fault.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass
class Segment:
    """
    One object's metadata and data (OBJECT1 or OBJECT2).
    """

    metadata: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metadataComments: list[str] = field(default_factory=list)
    dataComments: list[str] = field(default_factory=list)


@dataclass
class CDM:
    """
    A whole Conjunction Data Message.
    """

    version: str = "1.0"
    header: dict[str, Any] = field(default_factory=dict)
    relative: dict[str, Any] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    headerComments: list[str] = field(default_factory=list)
    relativeComments: list[str] = field(default_factory=list)

    @property
    def messageId(self) -> str:
        return str(self.header["MESSAGE_ID"])

    @property
    def originator(self) -> str:
        return str(self.header["ORIGINATOR"])

    @property
    def tca(self) -> str:
        return str(self.relative["TCA"])

    @property
    def tcaSeconds(self) -> float:
        return epochSeconds(self.tca)

    @property
    def creationSeconds(self) -> float:
        return epochSeconds(str(self.header["CREATION_DATE"]))

    def objectDesignators(self) -> tuple[str, str]:
        return (
            str(self.segments[0].metadata["OBJECT_DESIGNATOR"]),
            str(self.segments[1].metadata["OBJECT_DESIGNATOR"]),
        )

    def summary(self) -> dict[str, Any]:
        """
        The fields the API lists for a CDM.
        """
        out: dict[str, Any] = {
            "cdm_id": self.messageId,
            "originator": self.originator,
            "creation_date": self.header["CREATION_DATE"],
            "tca": self.tca,
            "miss_distance_m": self.relative["MISS_DISTANCE"],
        }
        if "COLLISION_PROBABILITY" in self.relative:
            out["collision_probability"] = self.relative["COLLISION_PROBABILITY"]
        out["objects"] = [
            {
                "object": s.metadata.get("OBJECT"),
                "designator": s.metadata.get("OBJECT_DESIGNATOR"),
                "name": s.metadata.get("OBJECT_NAME"),
            }
            for s in self.segments
        ]
        return out


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _isLeap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _daysFromCivil(y: int, m: int, d: int) -> int:
    """
    Days since 1970-01-01 of a proleptic Gregorian date.
    """
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def epochSeconds(text: str, where: str = "epoch") -> float:
    """
    Seconds since 1970 for a CCSDS ASCII time (calendar or day-of-year form).
    """
    t = text.strip()
    if _CALENDAR.fullmatch(t) is not None:
        frac = t[19:].rstrip("Z")
        days = _daysFromCivil(int(t[:4]), int(t[5:7]), int(t[8:10]))
        return (
            days * 86400
            + int(t[11:13]) * 3600
            + int(t[14:16]) * 60
            + int(t[17:19])
            + (float(frac) if frac else 0.0)
        )
    return _epochSecondsGeneral(text, where)


def _epochSecondsGeneral(text: str, where: str) -> float:
    """
    L{epochSeconds} by the general pattern, with its range checks and errors.
    """
    m = _EPOCH.match(text.strip())
    if not m:
        raise CDMError(where, f"not a CCSDS time (YYYY-MM-DDThh:mm:ss[.d]): {text[:40]!r}")
    year = int(m.group(1))
    hh, mm, ss = int(m.group(5)), int(m.group(6)), int(m.group(7))
    if m.group(4):
        doy = int(m.group(4))
        if not 1 <= doy <= (366 if _isLeap(year) else 365):
            raise CDMError(where, f"day of year out of range: {doy}")
        days = _daysFromCivil(year, 1, 1) + doy - 1
    else:
        month, day = int(m.group(2)), int(m.group(3))
        if not 1 <= month <= 12 or day < 1 or day > _MONTH_DAYS[month - 1] + (month == 2 and _isLeap(year)):
            raise CDMError(where, f"invalid calendar date: {text[:40]!r}")
        days = _daysFromCivil(year, month, day)
    if hh > 23 or mm > 59 or ss > 60:
        raise CDMError(where, f"invalid time of day: {text[:40]!r}")
    frac = m.group(8)
    return days * 86400 + hh * 3600 + mm * 60 + ss + (float(frac) if frac else 0.0)


# Calendar times whose date and time of day are in range, checked by the
# pattern itself; 29 February (valid in leap years only) takes the second.
_TIME_OF_DAY = r"T(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.\d{1,12})?Z?"
_CALENDAR = re.compile(
    r"\d{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    + _TIME_OF_DAY,
    re.ASCII,
)
_LEAP_DAY = re.compile(r"\d{4}-02-29" + _TIME_OF_DAY, re.ASCII)


def epochValid(text: str) -> bool:
    """
    True for a calendar-form time, ASCII digits and no surrounding space,
    that L{epochSeconds} accepts (checked by pattern, without computing the
    time); False leaves the verdict to L{epochSeconds}.
    """
    if _CALENDAR.fullmatch(text) is not None:
        return True
    return _LEAP_DAY.fullmatch(text) is not None and _isLeap(int(text[:4]))


def convert(f: F.Field, raw: Any, where: str) -> Any:
    """
    Convert C{raw} (text from KVN/XML, or a JSON value) to the field's type,
    or raise L{CDMError} naming C{where}.
    """
    kind = f.kind
    t = type(raw)
    if kind == "float":
        if t is float:
            if not math.isfinite(raw):
                raise CDMError(where, "not a finite number")
            return raw
        if t is int:
            return float(raw)
        if t is not str:
            raise CDMError(where, "expected a float value")
        text = raw.strip()
        if not text:
            raise CDMError(where, "empty value")
        try:
            value = float(text)
        except ValueError:
            raise CDMError(where, f"not a number: {text[:40]!r}")
        if not math.isfinite(value):
            raise CDMError(where, "not a finite number")
        return value
    if kind == "int":
        if t is int:
            number = raw
        elif t is str:
            try:
                number = int(raw.strip())
            except ValueError:
                raise CDMError(where, f"not an integer: {raw.strip()[:40]!r}")
        else:
            raise CDMError(where, "expected an int value")
        if number < 0:
            raise CDMError(where, "must not be negative")
        return number
    if t is not str:
        raise CDMError(where, "expected text")
    text = raw.strip()
    if not text:
        raise CDMError(where, "empty value")
    if len(text) > MAX_TEXT:
        raise CDMError(where, f"longer than {MAX_TEXT} characters")
    if not text.isprintable():
        raise CDMError(where, "control characters are not allowed")
    if kind == "enum":
        canon = text.upper()
        if canon not in f.enum:
            raise CDMError(where, f"{text[:40]!r} is not one of {', '.join(f.enum)}")
        return canon
    if kind == "epoch" and not epochValid(text):
        epochSeconds(text, where)
    return text


def checkUnits(f: F.Field, units: str | None, where: str) -> None:
    """
    Reject units that differ from the standard's for this field.
    """
    if units is None:
        return
    if f.units is None:
        raise CDMError(where, f"takes no units, got [{units[:20]}]")
    if units.strip().lower() != f.units.lower():
        raise CDMError(where, f"units must be [{f.units}], got [{units[:20]}]")


_MANDATORY = {
    id(table): frozenset(f.name for f in table if f.mandatory)
    for table in (F.HEADER, F.RELATIVE, F.METADATA, F.DATA)
}


def _checkSection(values: Mapping[str, Any], table: tuple[F.Field, ...], prefix: str) -> None:
    required = _MANDATORY.get(id(table))
    if required is not None and values.keys() >= required:
        return
    for f in table:
        if f.mandatory and f.name not in values:
            raise CDMError(prefix + f.name, "missing mandatory field")


def validate(cdm: CDM) -> CDM:
    """
    Check obligations and cross-field rules; return C{cdm} or raise.
    """
    if cdm.version not in F.SUPPORTED_VERSIONS:
        raise CDMError(F.VERSION_KEY, f"unsupported version {cdm.version[:20]!r} (supported: 1.0)")
    _checkSection(cdm.header, F.HEADER, "")
    _checkSection(cdm.relative, F.RELATIVE, "")
    present = [n for n in F.RELATIVE_STATE_VECTOR if n in cdm.relative]
    if present and len(present) != len(F.RELATIVE_STATE_VECTOR):
        missing = [n for n in F.RELATIVE_STATE_VECTOR if n not in cdm.relative][0]
        raise CDMError(missing, "the relative state vector needs all six components")
    if cdm.relative["MISS_DISTANCE"] < 0:
        raise CDMError("MISS_DISTANCE", "must not be negative")
    pc = cdm.relative.get("COLLISION_PROBABILITY")
    if pc is not None and not 0.0 <= pc <= 1.0:
        raise CDMError("COLLISION_PROBABILITY", "must be between 0 and 1")
    if len(cdm.segments) != 2:
        raise CDMError("OBJECT", f"a CDM has exactly two objects, got {len(cdm.segments)}")
    for expected, seg in zip(("OBJECT1", "OBJECT2"), cdm.segments, strict=True):
        obj = seg.metadata.get("OBJECT")
        if obj is None:
            raise CDMError(f"{expected}.OBJECT", "missing mandatory field")
        if obj != expected:
            raise CDMError(f"{expected}.OBJECT", f"expected {expected}, got {obj}")
        _checkSection(seg.metadata, F.METADATA, expected + ".")
        _checkSection(seg.data, F.DATA, expected + ".")
    return cdm


def sniff(data: str) -> str:
    """
    Guess the encoding of a CDM document: C{xml}, C{json} or C{kvn}.
    """
    head = data.lstrip("\ufeff \t\r\n")[:1]
    if head == "<":
        return "xml"
    if head in ("{", "["):
        return "json"
    return "kvn"


FORMATS = ("kvn", "xml", "json")


def decode(data: bytes | str, fmt: str | None = None) -> CDM:
    """
    Parse and validate a CDM in C{fmt} (or the sniffed encoding).
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CDMError("cdm", "not UTF-8 text")
    fmt = fmt or sniff(data)
    if fmt == "kvn":
        from suite.spacecomms.cdm.kvn import parseKVN

        return validate(parseKVN(data))
    if fmt == "xml":
        from suite.spacecomms.cdm.xml import parseXML

        return validate(parseXML(data))
    if fmt == "json":
        from suite.spacecomms.cdm.jsonfmt import parseJSON

        return validate(parseJSON(data))
    raise CDMError("format", f"unknown CDM encoding {fmt!r} (use kvn, xml or json)")


def encode(cdm: CDM, fmt: str) -> str:
    """
    Render C{cdm} in C{fmt} (C{kvn}, C{xml} or C{json}).
    """
    if fmt == "kvn":
        from suite.spacecomms.cdm.kvn import writeKVN

        return writeKVN(cdm)
    if fmt == "xml":
        from suite.spacecomms.cdm.xml import writeXML

        return writeXML(cdm)
    if fmt == "json":
        from suite.spacecomms.cdm.jsonfmt import writeJSON

        return writeJSON(cdm)
    raise CDMError("format", f"unknown CDM encoding {fmt!r} (use kvn, xml or json)")


def formatValue(value: Any) -> str:
    """
    Text form of a typed value, exact for floats (shortest round-trip repr).
    """
    if isinstance(value, float):
        text = repr(value)
        return text
    return str(value)
