"""twistd plugin entry for C{ceptra}, a CEPtra node."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from suite.ceptra import service
from suite.ceptra.options import Options
from suite.daemon import exitOnConfigError

__all__ = ["Options", "makeService"]


@exitOnConfigError("ceptra")
def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build a CEPtra node from parsed options (one-line error, exit 2, on bad input).
    """
    return service.makeService(options, reactor)
