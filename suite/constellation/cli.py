"""The C{constellation} console script: runs the agent in the foreground."""

from __future__ import annotations

from collections.abc import Sequence

from suite.constellation.options import Options
from suite.daemon import runConsole

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """
    C{constellation [options]}: same options (and variables) as C{twistd constellation}.
    """
    runConsole("constellation", "constellation", Options, argv)
