"""
Start-up failures after the reactor was asked to run (a port in use, an
unreadable database): one log line naming the cause, then a stop with exit
code 1, so a supervisor sees the failure instead of a half-started daemon.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["failStartup", "logOnly", "FatalHandler"]

FatalHandler = Callable[[str, Failure], None]

log = Logger()


def failStartup(reactor: Any, what: str, failure: Failure) -> None:
    """Log C{what: reason} once and stop the process with exit code 1."""
    log.critical("{what}: {reason}", what=what, reason=failure.getErrorMessage() or repr(failure.value))
    if not hasattr(reactor, "addSystemEventTrigger"):
        return
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
    if getattr(reactor, "running", False):
        reactor.stop()
    else:
        reactor.callWhenRunning(reactor.stop)


def logOnly(what: str, failure: Failure) -> None:
    """The default for services built outside twistd (tests): log, keep running."""
    log.critical("{what}: {reason}", what=what, reason=failure.getErrorMessage() or repr(failure.value))
