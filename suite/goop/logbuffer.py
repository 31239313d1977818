"""
The last log events of a daemon, kept for C{/logs.json}, C{/logs} and the
live SSE tail.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

from suite.logging import redactEvent

__all__ = ["LogBuffer"]


@implementer(ILogObserver)
class LogBuffer:
    """A bounded ring of formatted log entries with listeners."""

    def __init__(self, maxEntries: int = 1000) -> None:
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxEntries)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._seq = 0

    def __call__(self, event: dict[str, Any]) -> None:
        clean = redactEvent(event)
        try:
            text = formatEvent(clean)
        except Exception:
            text = str(clean.get("log_format", ""))
        level = clean.get("log_level")
        self._seq += 1
        entry = {
            "seq": self._seq,
            "time": clean.get("log_time"),
            "level": getattr(level, "name", "info"),
            "namespace": clean.get("log_namespace", ""),
            "text": text[:4000],
        }
        self.entries.append(entry)
        for listener in list(self.listeners):
            listener(entry)

    def snapshot(self, limit: int = 500) -> list[dict[str, Any]]:
        return list(self.entries)[-limit:]
