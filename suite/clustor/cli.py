"""The C{clustor-cp} console script: runs the control plane in the foreground."""

from __future__ import annotations

from collections.abc import Sequence

from suite.clustor.options import Options
from suite.daemon import runConsole

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """
    C{clustor-cp [options]}: same options as C{twistd clustor-cp}.
    """
    runConsole("clustor-cp", "clustor-cp", Options, argv)
