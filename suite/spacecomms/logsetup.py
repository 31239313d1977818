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

__all__ = ["configure", "observer", "debugEnabled", "setLevel"]

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
    The configured observer behind a level filter that L{setLevel} can
    replace.
    """

    def __init__(self, base: ILogObserver, level: str) -> None:
        self.base = base
        self.setLevel(level)

    def setLevel(self, level: str) -> None:
        self.current = suitelogging.filtered(self.base, level)

    def __call__(self, event: LogEvent) -> None:
        self.current(event)


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
    stream = _stream(_settings["output"])
    base = (
        suitelogging.textObserver(stream)
        if _settings["format"] == "pretty"
        else suitelogging.jsonObserver(stream)
    )
    live = _Levelled(base, _settings["level"])
    _live[:] = [live]
    return live
