"""
A lint of Prometheus text expositions with the rules of
C{promtool check metrics} (help text, C{_total} on counters and only there,
reserved histogram/summary suffixes, snake_case, base units, no abbreviated
units, no type in the name, no C{:}) plus the suite's own: every metric is
prefixed with its daemon's name unless an operator guide dictates the name,
C{_ms} units only where a guide dictates them, and no gauge named for a
count of events (C{..._writes}, C{..._errors}): a count that only grows is
a counter, exposed with C{_total} (a gauge set from a running count passes
promtool's C{_total} rule, since that rule looks at the type alone).

L{promtool} runs the real C{promtool} when it is installed, tolerating only
its complaints about the guides' C{_ms} names.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

__all__ = ["GUIDE_NAMES", "PREFIXES", "lintExposition", "promtool"]

#: Names the operator guides dictate (docs in /metrics tables of the guides).
GUIDE_NAMES: dict[str, frozenset[str]] = {
    "spacecomms": frozenset(
        {
            "peers_connected",
            "heartbeat_latency_ms",
            "cdm_processing_time_ms",
            # the guide's alert thresholds are single values in ms: the recent
            # p99 of its cdm_processing_time_ms, in the same unit
            "spacecomms_cdm_processing_time_p99_ms",
            "message_queue_depth",
            "error_rate",
        }
    ),
}

#: The prefixes of each daemon's own metrics (CEPtra runs on Clustor, whose
#: guide names the clustor_* feed metrics it exports).
PREFIXES: dict[str, tuple[str, ...]] = {
    "specter": ("specter_",),
    "spacecomms": ("spacecomms_",),
    "ceptra": ("ceptra_", "clustor_"),
    "clustor-cp": ("clustor_",),
    "constellation": ("constellation_",),
    "goop": ("goop_",),
}

#: Daemons whose guide requires milliseconds for every duration.
MILLISECOND_DAEMONS = frozenset({"ceptra", "clustor-cp"})

_NON_BASE_UNITS = {
    "milliseconds": "seconds",
    "microseconds": "seconds",
    "nanoseconds": "seconds",
    "minutes": "seconds",
    "hours": "seconds",
    "days": "seconds",
    "kilobytes": "bytes",
    "megabytes": "bytes",
    "gigabytes": "bytes",
    "kibibytes": "bytes",
    "mebibytes": "bytes",
    "gibibytes": "bytes",
    "centigrade": "celsius",
    "fahrenheit": "celsius",
}
_ABBREVIATIONS = frozenset(
    {"ms", "s", "sec", "secs", "us", "ns", "min", "mins", "hr", "hrs", "kb", "mb", "gb", "pct"}
)
_TYPES_IN_NAME = ("counter", "gauge", "histogram", "summary")
#: Last words of a name that count events: such a gauge should be a counter.
_EVENT_COUNTS = frozenset(
    {
        "writes",
        "reads",
        "requests",
        "errors",
        "failures",
        "retries",
        "restarts",
        "reconnects",
        "rejections",
        "timeouts",
        "evictions",
        "drops",
        "dropped",
        "sent",
        "received",
        "processed",
        "published",
        "refused",
    }
)
_SNAKE = re.compile(r"^[a-z_][a-z0-9_]*$")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s")
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)=")


@dataclass
class _Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    samples: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)


def _parse(text: str) -> dict[str, _Family]:
    families: dict[str, _Family] = {}
    current: _Family | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            name = parts[2]
            current = families.setdefault(name, _Family(name))
            if parts[1] == "HELP":
                current.help = parts[3] if len(parts) > 3 else ""
            else:
                current.type = parts[3].strip() if len(parts) > 3 else "untyped"
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError(f"malformed sample line {line!r}")
        sample = m.group(1)
        owner = current if current is not None and sample.startswith(current.name) else None
        if owner is None:
            owner = families.setdefault(sample, _Family(sample))
        owner.samples.add(sample)
        if m.group(2):
            owner.labels.update(_LABEL.findall(m.group(2)))
    return families


def _words(name: str) -> list[str]:
    return name.split("_")


def lintExposition(text: str, daemon: str) -> list[str]:
    """
    The problems of the exposition C{text} of C{daemon}, one line each
    (an empty list when it is clean).
    """
    problems: list[str] = []
    guide = GUIDE_NAMES.get(daemon, frozenset())
    prefixes = PREFIXES[daemon]
    for family in _parse(text).values():
        name = family.name
        if name.endswith("_created") and family.type == "gauge":
            continue  # the creation time prometheus_client adds to counters
        say = problems.append
        if not family.help:
            say(f"{name}: no help text")
        if ":" in name:
            say(f"{name}: metric names should not contain ':'")
        if not _SNAKE.match(name) or any(not _SNAKE.match(label) for label in family.labels):
            say(f"{name}: metric names should be written in 'snake_case' not 'camelCase'")
        for sample in family.samples:
            if family.type == "counter" and not sample.endswith("_total"):
                say(f'{name}: counter metrics should have "_total" suffix')
            if family.type != "counter" and sample.endswith("_total"):
                say(f'{name}: non-counter metrics should not have "_total" suffix')
            if family.type != "histogram" and sample.endswith("_bucket"):
                say(f'{name}: non-histogram metrics should not have "_bucket" suffix')
            if family.type not in ("histogram", "summary") and sample.endswith(("_count", "_sum")):
                say(f'{name}: non-histogram and non-summary metrics should not have "_count"/"_sum" suffix')
        if family.type not in ("histogram",) and "le" in family.labels:
            say(f'{name}: non-histogram metrics should not have "le" label')
        if family.type != "summary" and "quantile" in family.labels:
            say(f'{name}: non-summary metrics should not have "quantile" label')
        words = _words(name)
        for word in words:
            if word in _NON_BASE_UNITS:
                say(f'{name}: use base unit "{_NON_BASE_UNITS[word]}" instead of "{word}"')
            if word in _TYPES_IN_NAME and word == family.type:
                say(f'{name}: metric name should not include type "{word}"')
        if family.type == "gauge" and words[-1] in _EVENT_COUNTS:
            say(
                f'{name}: a gauge named for a count of events ("{words[-1]}"): make it a counter with "_total"'
            )
        abbreviated = [w for w in words[1:] if w in _ABBREVIATIONS]
        if abbreviated:
            allowed = name in guide or (daemon in MILLISECOND_DAEMONS and abbreviated == ["ms"])
            if not allowed:
                say(f"{name}: metric names should not contain abbreviated units")
        if name not in guide and not name.startswith(prefixes):
            say(f"{name}: not prefixed with {' or '.join(prefixes)} and not a name the guide dictates")
    return sorted(set(problems))


#: Series a metric family exposes besides its own name.
_SERIES_SUFFIXES = ("_created", "_bucket", "_count", "_sum", "_total")


def promtool(text: str, allowed: Iterable[str] = ()) -> list[str] | None:
    """
    Run C{promtool check metrics} on C{text} when promtool is installed
    (C{None} otherwise); its complaints, less those about the C{allowed}
    names' abbreviated units.
    """
    path = shutil.which("promtool")
    if path is None:
        return None
    r = subprocess.run([path, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    keep: Collection[str] = set(allowed)
    out = []
    for line in (r.stdout + r.stderr).splitlines():
        name = line.split(" ", 1)[0]
        for suffix in _SERIES_SUFFIXES:
            # a histogram's or counter's own series (prometheus_client adds _created)
            if name.endswith(suffix) and name[: -len(suffix)] in keep:
                name = name[: -len(suffix)]
                break
        if not line.strip() or (name in keep and "abbreviated units" in line):
            continue
        out.append(line)
    return out
