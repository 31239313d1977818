"""
What every rule needs while one entry is applied: where results go, and the
tags each result carries.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["Context", "groupOf", "groupOfValues", "MISSING"]

MISSING: Any = object()
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Context:
    """
    The output list and tags of the entry being applied.  With C{quiet}
    set, window and pattern results are not built at all (nobody reads
    them); the state they reflect is updated all the same.
    """

    __slots__ = ("partition", "index", "out", "horizonMs", "quiet")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.index = 0
        self.out: list[dict[str, Any]] = []
        self.horizonMs = 0
        self.quiet = False

    def emit(self, kind: str, rule: str, group: str, start: int, end: int, value: Any) -> None:
        """
        Append one result (unless quiet).
        """
        if self.quiet:
            return
        self.out.append(
            {
                "rule": rule,
                "group": group,
                "window": {"start": start, "end": end},
                "value": value,
                "kind": kind,
                "partition": self.partition,
                "index": self.index,
            }
        )


def groupOf(groupBy: tuple[str, ...], ev: dict[str, Any]) -> str:
    """
    The group string of C{ev}: C{"*"} without group-by, the value itself for
    one string field, canonical JSON otherwise (a missing field is C{null}).
    """
    if not groupBy:
        return "*"
    if len(groupBy) == 1:
        v = ev.get(groupBy[0])
        return v if type(v) is str else _json.encode(v)
    return _json.encode([ev.get(f) for f in groupBy])


def groupOfValues(values: list[Any]) -> str:
    """
    L{groupOf} from the group-by fields' values (L{MISSING} or None for a
    missing field), for events read from columns.
    """
    if not values:
        return "*"
    if len(values) == 1:
        v = values[0]
        if type(v) is str:
            return v
        return _json.encode(None if v is MISSING else v)
    return _json.encode([None if v is MISSING else v for v in values])
