"""twistd plugin entry for C{constellation}, the Constellation agent."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from suite.constellation import service
from suite.constellation.options import Options
from suite.daemon import exitOnConfigError

__all__ = ["Options", "makeService"]


@exitOnConfigError("constellation")
def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build the agent from parsed options (one-line error, exit 2, on bad input).
    """
    return service.makeService(options, reactor)
