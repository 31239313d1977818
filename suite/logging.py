"""
Logging for every daemon: JSON lines on stderr by default, coloured
human-readable lines with C{--verbose}.  Secrets never reach the output.

Use under twistd with C{--logger=suite.logging.observer} (the console scripts
do this); daemons log through L{twisted.logger.Logger} with named fields.
A field whose name says it holds a secret (token, password, authToken, ...,
in snake_case, camelCase or dashed), whose value is a L{Secret}, the same
inside nested dicts and lists, and the password of a C{user:password@} URL
are written as C{"***"}, in the fields and in the formatted message.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Mapping
from string import Formatter
from typing import IO, Any

from constantly import NamedConstant
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    InvalidLogLevelError,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import implementer

__all__ = [
    "Secret",
    "setVerbose",
    "setLevel",
    "observer",
    "jsonObserver",
    "textObserver",
    "redactEvent",
    "startLogging",
    "parseLevel",
    "filtered",
]

REDACTED = "***"
_SECRET_NAME = re.compile(
    r"(^|_)(token|tokens|secret|secrets|password|passwd|pass|passphrase|auth_pass|"
    r"authorization|credentials?|cookie|private_?key|api_?key|key_?pem|psk|bearer)($|_)",
    re.IGNORECASE,
)
# camelCase and acronym boundaries: authToken -> auth_Token, keyPEM -> key_PEM
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# user:password@ in URLs
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^@/\s]+@")
#: Event keys that carry no user data (legacy bridge fields and our own).
_SKIP_FIELDS = frozenset(("format", "message", "system", "isError", "time", "failure"))


class Secret(str):
    """
    A string that renders as C{***} when formatted, logged or repr'd; use
    C{.reveal()} where the real value is needed.
    """

    def reveal(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, spec: str) -> str:
        return REDACTED


_settings: dict[str, Any] = {"verbose": False, "level": LogLevel.info}


def setVerbose(flag: bool) -> None:
    """
    Choose human-readable output for the observer twistd builds next.
    """
    _settings["verbose"] = bool(flag)


def parseLevel(name: str) -> LogLevel:
    """
    Map C{debug|info|warn|warning|error|critical} to a L{LogLevel}.

    @raise ValueError: for an unknown name, naming it.
    """
    key = name.strip().lower()
    if key == "warning":
        key = "warn"
    if key == "trace":
        key = "debug"
    try:
        level: LogLevel = LogLevel.levelWithName(key)
        return level
    except InvalidLogLevelError:
        raise ValueError(f"unknown log level {name!r} (use debug, info, warn, error or critical)") from None


def setLevel(level: LogLevel | str) -> None:
    """
    Set the minimum level written by the observer twistd builds next.
    """
    _settings["level"] = parseLevel(level) if isinstance(level, str) else level


def _isSecretName(name: str) -> bool:
    normal = _CAMEL.sub("_", name).replace("-", "_")
    return bool(_SECRET_NAME.search(normal))


def _redactValue(value: Any, depth: int = 0) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value) if "://" in value else value
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _isSecretName(k) else _redactValue(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redactValue(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_redactValue(v, depth + 1) for v in value)
    return value


def redactEvent(event: Mapping[str, Any]) -> dict[str, Any]:
    """
    Return a copy of C{event} with secret-looking fields replaced: fields
    whose name says secret (C{token}, C{password}, C{authToken}, ...), any
    L{Secret} value, the same inside nested dicts and lists, and the
    password of a C{scheme://user:password@host} URL.
    """
    out = dict(event)
    for k, v in event.items():
        if k.startswith("log_"):
            continue
        if isinstance(v, Secret) or _isSecretName(k):
            out[k] = REDACTED
        else:
            out[k] = _redactValue(v)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): REDACTED if _isSecretName(str(k)) else _jsonable(v) for k, v in value.items()}
    return repr(value)


#: Parsed log formats: the format string -> its (literal, field name,
#: conversion, spec) parts, or None when a part needs Twisted's formatter
#: (attribute or index access, calls, nested specs, positional fields).
_FORMATS: dict[str, tuple[tuple[str, str | None, str | None, str], ...] | None] = {}
_FORMATS_MAX = 1024
#: Field name -> whether it names a secret.
_SECRET_NAMES: dict[str, bool] = {}
_SECRET_NAMES_MAX = 4096
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=repr)
_RESERVED = frozenset(("time", "level", "logger", "msg", "error", "traceback"))
#: The whole-second part of the last time stamp, (second, text), replaced
#: as one tuple so that lines logged from threads never pair one second's
#: number with another's text.
_lastSecond: list[tuple[int, str]] = [(-1, "")]
_formatter = Formatter()


def _secretName(name: str) -> bool:
    known = _SECRET_NAMES.get(name)
    if known is None:
        known = _isSecretName(name)
        if len(_SECRET_NAMES) >= _SECRET_NAMES_MAX:
            _SECRET_NAMES.clear()
        _SECRET_NAMES[name] = known
    return known


def _parsedFormat(fmt: str) -> tuple[tuple[str, str | None, str | None, str], ...] | None:
    try:
        return _FORMATS[fmt]
    except KeyError:
        pass
    parts: tuple[tuple[str, str | None, str | None, str], ...] | None
    try:
        parsed = tuple(_formatter.parse(fmt))
    except ValueError:
        parts = None
    else:
        simple = all(
            name is None
            or (name.isidentifier() and conversion in (None, "s", "r", "a") and "{" not in (spec or ""))
            for _, name, spec, conversion in parsed
        )
        parts = (
            tuple((literal, name, conversion, spec or "") for literal, name, spec, conversion in parsed)
            if simple
            else None
        )
    if len(_FORMATS) >= _FORMATS_MAX:
        _FORMATS.clear()
    _FORMATS[fmt] = parts
    return parts


def _message(event: Mapping[str, Any], fields: Mapping[str, Any]) -> str:
    """
    The formatted message of C{event}, its non-C{log_} fields taken from
    C{fields} (redacted): what L{formatEvent} gives on the redacted event,
    without re-parsing the format for every event.
    """
    fmt = event.get("log_format")
    if type(fmt) is str and "log_flattened" not in event:
        parts = _parsedFormat(fmt)
        if parts is not None:
            out = []
            try:
                for literal, name, conversion, spec in parts:
                    out.append(literal)
                    if name is None:
                        continue
                    value = event[name] if name.startswith("log_") else fields[name]
                    if conversion is not None:
                        value = (
                            str(value)
                            if conversion == "s"
                            else repr(value)
                            if conversion == "r"
                            else ascii(value)
                        )
                    out.append(format(value, spec))
            except Exception:
                pass
            else:
                return "".join(out)
    whole = dict(event)
    whole.update(fields)
    return formatEvent(whole)


def _redactedFields(event: Mapping[str, Any]) -> dict[str, Any]:
    """
    The non-C{log_} fields of C{event}, redacted as L{redactEvent} does.
    """
    fields: dict[str, Any] = {}
    for k, v in event.items():
        if k.startswith("log_"):
            continue
        if _secretName(k):
            fields[k] = REDACTED
            continue
        t = type(v)
        if t is str:
            fields[k] = _URL_PASSWORD.sub(r"\1***@", v) if "://" in v else v
        elif t is int or t is float or t is bool or v is None:
            fields[k] = v
        else:
            fields[k] = _redactValue(v)
    return fields


def _stamp(when: float) -> str:
    second = int(when)
    cached = _lastSecond[0]
    if cached[0] != second or when < 0:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)))
        if when >= 0:  # before 1970, int() and gmtime() round apart
            _lastSecond[0] = cached
    return f"{cached[1]}.{int((when % 1) * 1000):03d}Z"


def formatJSON(event: Mapping[str, Any]) -> str:
    """
    One JSON object per line: time, level, logger, msg, then the event's own
    named fields (redacted) and the error traceback if any.

    One pass over the event: field names are checked for secrets once per
    name, each format string is parsed once, the time stamp's seconds are
    formatted once per second, one encoder serves every line; the output is
    that of L{_formatJSONGeneral}.
    """
    fields = _redactedFields(event)
    level = event.get("log_level")
    when = event.get("log_time") or time.time()
    msg = _message(event, fields)
    record: dict[str, Any] = {
        "time": _stamp(when),
        "level": getattr(level, "name", "info"),
        "logger": event.get("log_namespace", "-"),
        "msg": _URL_PASSWORD.sub(r"\1***@", msg) if "://" in msg else msg,
    }
    for k, v in fields.items():
        if k in _SKIP_FIELDS:
            continue
        # Never let a field overwrite time/level/logger/msg/error.
        key = k if k not in record and k not in _RESERVED else f"{k}_"
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            record[key] = v
        else:
            record[key] = _jsonable(v)
    _addFailure(record, event)
    return _ENCODER.encode(record) + "\n"


def _addFailure(record: dict[str, Any], event: Mapping[str, Any]) -> None:
    """
    The event's failure, if any, as C{error} and C{traceback} of C{record}.
    """
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["error"] = failure.getErrorMessage()
            record["traceback"] = failure.getTraceback()
        except Exception:  # inside a log observer: never raise
            record["error"] = repr(failure)


def _formatJSONGeneral(event: Mapping[str, Any]) -> str:
    """
    L{formatJSON} the general way: a redacted copy of the whole event,
    Twisted's formatter, a new encoder.  The reference the fast path is
    tested against.
    """
    event = redactEvent(event)
    level = event.get("log_level")
    when = event.get("log_time") or time.time()
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int((when % 1) * 1000):03d}Z",
        "level": getattr(level, "name", "info"),
        "logger": event.get("log_namespace", "-"),
        "msg": _redactValue(formatEvent(event)),
    }
    for k, v in event.items():
        if k.startswith("log_") or k in _SKIP_FIELDS:
            continue
        # Never let a field overwrite time/level/logger/msg/error.
        key = k if k not in record and k not in ("error", "traceback") else f"{k}_"
        record[key] = _jsonable(v)
    _addFailure(record, event)
    return json.dumps(record, separators=(",", ":"), default=repr) + "\n"


_COLOURS = {
    "debug": "\x1b[2m",
    "info": "\x1b[36m",
    "warn": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
}


def _formatText(colour: bool) -> Any:
    def fmt(event: Mapping[str, Any]) -> str:
        event = redactEvent(event)
        level = getattr(event.get("log_level"), "name", "info")
        stamp = time.strftime("%H:%M:%S", time.localtime(event.get("log_time") or time.time()))
        text = _redactValue(formatEvent(event))
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        lvl = f"{level.upper():5}"
        if colour:
            lvl = f"{_COLOURS.get(level, '')}{lvl}\x1b[0m"
        return f"{stamp} {lvl} [{event.get('log_namespace', '-')}] {text}\n"

    return fmt


def jsonObserver(stream: IO[str] | None = None) -> ILogObserver:
    """
    An observer writing JSON lines to C{stream} (stderr by default).
    """
    return FileLogObserver(stream or sys.stderr, formatJSON)


def textObserver(stream: IO[str] | None = None) -> ILogObserver:
    """
    An observer writing human-readable lines, coloured on a terminal.
    """
    s = stream or sys.stderr
    return FileLogObserver(s, _formatText(bool(getattr(s, "isatty", lambda: False)())))


#: Twisted's own per-factory chatter ("Starting factory <... at 0x...>"),
#: logged at info for every connection a noisy factory makes: debug here.
_FACTORY_NOISE = ("Starting factory {factory!r}", "Stopping factory {factory!r}")


@implementer(ILogFilterPredicate)
class _FactoryNoise:
    """
    Drops L{_FACTORY_NOISE} unless C{level} is debug.
    """

    def __init__(self, level: LogLevel) -> None:
        self.level = level

    def __call__(self, event: LogEvent) -> NamedConstant:
        noise = self.level > LogLevel.debug and event.get("log_format") in _FACTORY_NOISE
        result: NamedConstant = PredicateResult.no if noise else PredicateResult.maybe
        return result


def _filtered(obs: ILogObserver, level: LogLevel) -> ILogObserver:
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    return FilteringLogObserver(obs, [_FactoryNoise(level), predicate])


def filtered(obs: ILogObserver, level: LogLevel | str) -> ILogObserver:
    """
    C{obs} behind the suite's filter: events below C{level} are dropped, and
    Twisted's per-factory "Starting factory" chatter unless C{level} is debug.
    """
    return _filtered(obs, parseLevel(level) if isinstance(level, str) else level)


def observer() -> ILogObserver:
    """
    The twistd C{--logger} factory: JSON or text per L{setVerbose}, filtered
    at the level from L{setLevel}.
    """
    base = textObserver() if _settings["verbose"] else jsonObserver()
    return _filtered(base, _settings["level"])


def startLogging(
    verbose: bool = False, level: LogLevel | str = LogLevel.info, stream: IO[str] | None = None
) -> None:
    """
    Begin logging outside twistd (client commands, tools).
    """
    setVerbose(verbose)
    setLevel(level)
    base = textObserver(stream) if verbose else jsonObserver(stream)
    globalLogBeginner.beginLoggingTo([_filtered(base, _settings["level"])], redirectStandardIO=False)
