"""
The C{goop2} console script: C{goop2 peer DIR}, C{goop2 rendezvous DIR},
and C{goop2} with no arguments for the multi-peer manager page.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.python import usage

from suite.daemon import runConsole

__all__ = ["main"]


def _manager(options: usage.Options) -> int:
    from suite.goop.manager.app import runManager

    return runManager(options.subOptions)


def main(argv: Sequence[str] | None = None) -> None:
    from suite.goop.tap import Options

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["manager"]
    runConsole(
        "goop2",
        "goop",
        Options,
        args,
        clientCommands={"manager": _manager},
        daemonSubCommands=["peer", "rendezvous"],
    )
