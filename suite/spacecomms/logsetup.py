"""
Logging as the configuration asks: C{logging.format} json|pretty,
C{logging.level}, C{logging.output} stdout|stderr|FILE.

C{makeService} records the choice with L{configure}; twistd then builds the
observer with C{--logger=suite.spacecomms.logsetup.observer} (what
C{spacecomms start} passes).  Under C{--logger=suite.logging.observer} the
level and format still apply, on stderr.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, LogLevel
from zope.interface import implementer

from suite import logging as suitelogging

__all__ = ["configure", "observer", "debugEnabled", "setLevel", "reopen"]

_settings: dict[str, Any] = {"format": "json", "level": "info", "output": "stderr", "debug": False}


def debugEnabled() -> bool:
    """
    Whether the configured level is debug: the per-frame and per-request
    lines are built only then (they would cost every message otherwise).
    """
    return bool(_settings["debug"])


def configure(fmt: str, level: str, output: str) -> None:
    """
    Remember the configured logging, and pass level and format on to
    L{suite.logging}.
    """
    _settings.update(format=fmt, level=level, output=output)
    _settings["debug"] = suitelogging.parseLevel(level) <= LogLevel.debug
    suitelogging.setLevel(level)
    suitelogging.setVerbose(fmt == "pretty")


def setLevel(level: str) -> None:
    """
    Change the level at run time (a SIGHUP reload of C{logging.level}):
    the observer built by L{observer} and the debug-only lines follow.
    """
    _settings["level"] = level
    _settings["debug"] = suitelogging.parseLevel(level) <= LogLevel.debug
    suitelogging.setLevel(level)
    for live in _live:
        live.setLevel(level)


@implementer(ILogObserver)
class _Levelled:
    """
    The configured observer (format and destination) behind a level filter
    that L{setLevel} can replace; a log file is reopened by L{reopen}.
    """

    def __init__(self, fmt: str, output: str, level: str) -> None:
        self.fmt = fmt
        self.output = output
        self.stream = _stream(output)
        self.base = self._build(self.stream)
        self.setLevel(level)

    def _build(self, stream: IO[str]) -> ILogObserver:
        if self.fmt == "pretty":
            return suitelogging.textObserver(stream)
        return suitelogging.jsonObserver(stream)

    def setLevel(self, level: str) -> None:
        self.level = level
        self.current = suitelogging.filtered(self.base, level)

    def reopen(self) -> None:
        """
        Write to a newly opened C{logging.output} file (after a log
        rotation moved the old one away); stdout and stderr stay.

        @raise OSError: when the file cannot be opened (the old one is kept).
        """
        if self.output in ("stdout", "stderr"):
            return
        stream = _stream(self.output)
        old, self.stream = self.stream, stream
        self.base = self._build(stream)
        self.setLevel(self.level)
        old.close()

    def __call__(self, event: LogEvent) -> None:
        self.current(event)


def reopen() -> None:
    """
    Reopen the C{logging.output} file (SIGHUP, after logrotate moved it).

    @raise OSError: when it cannot be opened; logging goes on to the old one.
    """
    for live in _live:
        live.reopen()


_live: list[_Levelled] = []


def _stream(output: str) -> IO[str]:
    if output == "stdout":
        return sys.stdout
    if output == "stderr":
        return sys.stderr
    return open(output, "a", buffering=1, encoding="utf-8")


def observer() -> ILogObserver:
    """
    The twistd C{--logger} factory.
    """
    live = _Levelled(_settings["format"], _settings["output"], _settings["level"])
    _live[:] = [live]
    return live
