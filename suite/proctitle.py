"""
Name daemon processes after their command, so the operators' tools find
them: C{pidof spacecomms}, C{pkill -HUP -x spacecomms}, C{ps -C goop2} and
C{ps aux | grep constellation-agent}.

A console script runs as C{python /opt/suite/venv/bin/spacecomms ...}, so
without this C{pidof} and C{ps -C} see only C{python3}.  L{setProcessName}
rewrites the command line (what C{ps aux} and C{pidof} read) with
C{setproctitle} and the kernel's task name (C{comm}: what C{pkill -x},
C{ps -C} and C{top} read, at most 15 bytes) with C{prctl(PR_SET_NAME)}.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Sequence

__all__ = ["processName", "setProcessName"]

_PR_SET_NAME = 15
_INTERPRETERS = ("python", "twistd", "-c", "-m", "pytest")


def processName(prog: str, argv0: str | None = None) -> str:
    """
    The name a daemon started as C{argv0} goes by: the script's own name (so
    a link such as C{/usr/local/bin/constellation-agent} gives that name), or
    C{prog} when started through an interpreter, C{twistd} or C{-m}.
    """
    base = os.path.basename(argv0 if argv0 is not None else sys.argv[0])
    if not base or base.startswith(_INTERPRETERS) or base.endswith(".py"):
        return prog
    return base


def _setComm(name: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode("utf-8")[:15]), 0, 0, 0)


def setProcessName(prog: str, args: Sequence[str] = (), argv0: str | None = None) -> str:
    """
    Set this process's title to C{NAME ARGS...} and its task name to C{NAME}
    (see L{processName}); returns C{NAME}.  Best effort: on a platform
    without either mechanism the process keeps its name.

    A name longer than the kernel's 15 bytes gets a title of C{NAME} alone:
    C{pidof} matches a title with spaces against the (cut) task name only.
    """
    name = processName(prog, argv0)
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - a dependency; kept optional for odd platforms
        pass
    else:
        long = len(name.encode("utf-8")) > 15
        setproctitle.setproctitle(name if long else " ".join([name, *args]))
    if sys.platform.startswith("linux"):
        try:
            _setComm(name)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    return name
