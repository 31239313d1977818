"""The C{ceptra} console script: runs a CEPtra node in the foreground."""

from __future__ import annotations

from collections.abc import Sequence

from suite.ceptra.options import Options
from suite.daemon import runConsole

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """
    C{ceptra [options]}: same options (and C{CEPTRA_*} variables) as C{twistd ceptra}.
    """
    runConsole("ceptra", "ceptra", Options, argv)
