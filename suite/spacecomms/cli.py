"""
The C{spacecomms} console script: C{spacecomms start --config FILE} runs the
node in the foreground under twistd (logging as configured);
C{spacecomms validate-config --config FILE} checks a file and prints every
problem, one per line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

from twisted.python import usage

from suite.daemon import errorLine
from suite.spacecomms.tap import Options

__all__ = ["main", "validateConfig"]


def validateConfig(options: usage.Options, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """
    Check the configuration; 0 when valid, 1 with every reason on stderr.
    """
    from suite.daemon import ConfigError
    from suite.spacecomms.config import ConfigInvalid, loadConfig
    from suite.spacecomms.service import startupChecks

    stdout = out or sys.stdout
    stderr = err or sys.stderr
    path = options["config"]
    try:
        cfg = loadConfig(path, getattr(options, "environ", None))
        startupChecks(cfg)
    except ConfigInvalid as e:
        for reason in e.reasons:
            stderr.write(f"{path}: {reason}\n")
        stderr.write(f"{path}: invalid ({len(e.reasons)} problem{'s' if len(e.reasons) != 1 else ''})\n")
        return 1
    except ConfigError as e:
        stderr.write(f"{path}: {e}\n{path}: invalid (1 problem)\n")
        return 1
    stdout.write(f"{path}: valid (node {cfg.node_id}, {len(cfg.peers)} peers, storage {cfg.storage_type})\n")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """
    Entry point of the C{spacecomms} console script.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    options = Options()
    try:
        options.parseOptions(args)
    except usage.UsageError as e:
        sys.stderr.write(errorLine("spacecomms", e))
        sys.stderr.write("spacecomms: run 'spacecomms --help' for usage\n")
        raise SystemExit(2) from None
    if options.subCommand == "validate-config":
        raise SystemExit(validateConfig(options))
    if options.subCommand is None and not args:
        sys.stderr.write("spacecomms: error: a subcommand is required (start or validate-config)\n")
        raise SystemExit(2)
    from twisted.scripts.twistd import run

    from suite.proctitle import setProcessName

    setProcessName("spacecomms", args)
    sys.argv = [
        "twistd",
        "--nodaemon",
        "--pidfile=",
        "--logger=suite.spacecomms.logsetup.observer",
        "spacecomms",
        *args,
    ]
    run()
