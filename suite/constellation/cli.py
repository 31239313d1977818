"""The C{constellation} console script: runs the agent in the foreground."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from suite.constellation.options import Options
from suite.daemon import runConsole

__all__ = ["keygen", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """
    C{constellation [options]}: same options (and variables) as C{twistd constellation};
    C{constellation deploy FILE ...} applies a deployment file
    (L{suite.constellation.deploy.cli}); C{constellation keygen [FILE]}
    makes a gossip key (L{keygen}).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["keygen"]:
        sys.exit(keygen(args[1:]))
    if args[:1] == ["deploy"]:
        from suite.constellation.deploy.cli import main as deployMain

        deployMain(args[1:])
        return
    runConsole("constellation", "constellation", Options, argv)


def keygen(args: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """
    C{constellation keygen [FILE]}: a new gossip key for
    C{--gossip-key-file}, 32 random bytes in base64 (as C{serf keygen}
    prints), on standard output or into C{FILE}, created with mode 0600
    (an existing file is not overwritten).  The exit status: 0, or 2 with
    one line on standard error.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if len(args) > 1 or any(a.startswith("-") for a in args):
        err.write("usage: constellation keygen [FILE]\n")
        return 2
    line = base64.b64encode(os.urandom(32)).decode("ascii") + "\n"
    if not args:
        out.write(line)
        return 0
    try:
        fd = os.open(args[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        err.write(f"constellation keygen: cannot create {args[0]}: {e.strerror or e}\n")
        return 2
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(line)
    return 0
