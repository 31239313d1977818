"""The C{constellation} console script: runs the agent in the foreground."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from suite.constellation.options import Options
from suite.daemon import runConsole

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """
    C{constellation [options]}: same options (and variables) as C{twistd constellation};
    C{constellation deploy FILE ...} applies a deployment file
    (L{suite.constellation.deploy.cli}).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["deploy"]:
        from suite.constellation.deploy.cli import main as deployMain

        deployMain(args[1:])
        return
    runConsole("constellation", "constellation", Options, argv)
