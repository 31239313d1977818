"""
The last log events of a daemon, kept for C{/logs.json}, C{/logs} and the
live SSE tail.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

from suite.logging import redactEvent

__all__ = ["LogBuffer"]


@implementer(ILogObserver)
class LogBuffer:
    """A bounded ring of formatted log entries with listeners."""

    def __init__(self, maxEntries: int = 1000, minLevel: LogLevel = LogLevel.info) -> None:
        self.minLevel = minLevel
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxEntries)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._seq = 0
        self._recent: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=256)

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level is not None and level < self.minLevel:
            return
        key = (event.get("log_time"), event.get("log_format"), event.get("log_namespace"), id(event))
        if key in self._recent:
            return  # the same event replayed by the log beginner's start-up buffer
        self._recent.append(key)
        clean = redactEvent(event)
        # formatEvent never raises: an event it cannot format comes back as
        # "Unable to format event ..." naming the event, which is kept.
        text = formatEvent(clean)
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
