"""twistd plugin entry for C{clustor-cp}, the CEPtra control plane."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from suite.clustor import service
from suite.clustor.options import Options
from suite.daemon import exitOnConfigError

__all__ = ["Options", "makeService"]


@exitOnConfigError("clustor-cp")
def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build the control plane from parsed options (one-line error, exit 2, on bad input).
    """
    return service.makeService(options, reactor)
