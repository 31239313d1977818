"""
The C{goop2} console script: C{goop2 peer DIR}, C{goop2 rendezvous DIR},
and C{goop2} with no arguments for the multi-peer manager page.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.python import usage

from suite.daemon import runConsole

__all__ = ["MALLOC_ARENAS", "fewerMallocArenas", "main", "withoutHTTP2"]

#: glibc's C{mallopt} parameter for the number of malloc arenas.
M_ARENA_MAX = -8
#: How many malloc arenas a Goop2 process may use (glibc's default is eight
#: per core).
MALLOC_ARENAS = 2


def withoutHTTP2() -> None:
    """
    Keep Twisted's HTTP/2 support (C{twisted.web._http2} with hyper-h2,
    hpack and hyperframe: about 1.4 MB resident) out of this process.

    Every Goop2 surface (viewer, hub, manager) serves cleartext HTTP; a TLS
    front end before a public hub is a separate proxy.  HTTP/2 is only ever
    chosen by TLS ALPN, so a Goop2 process has no use for it, yet
    C{twisted.web.http} imports it whenever hyper-h2 is installed (the
    suite installs it for other daemons).  Marking the module absent before
    C{twisted.web} is first imported makes C{twisted.web.http.H2_ENABLED}
    false; L{suite.web.limits} then serves through Twisted's HTTP/1.1
    switch.  Once C{twisted.web.http} is loaded (a test process) this does
    nothing, so no later importer of the module finds it missing.
    """
    if "twisted.web.http" not in sys.modules:
        sys.modules.setdefault("twisted.web._http2", None)  # type: ignore[arg-type]


def fewerMallocArenas(environ: Mapping[str, str] = os.environ, libc: Any = None) -> bool:
    """
    Let this process's threads share at most L{MALLOC_ARENAS} glibc malloc
    arenas; returns whether the limit was set.

    Every thread that allocates while another holds the main arena gets an
    arena of its own (up to eight per core), and each keeps its freed
    memory resident.  A peer runs about seven threads (SQLite's, the
    reactor's pool, zeroconf's loop and browser), and Python's own small
    objects do not use malloc at all; after the standard workload the limit
    keeps about 0.4 MB less resident, for the same CPU per request
    (docs/performance.md, resident memory).  This is what
    C{MALLOC_ARENA_MAX=2} in the environment does, set here because the
    console script is where every Goop2 process starts; it applies to the
    arenas of threads started after it, and no thread has started yet.  An
    operator's own C{MALLOC_ARENA_MAX} wins; without glibc this does
    nothing.  C{libc} is the C library to call (a test's stand-in).
    """
    if "MALLOC_ARENA_MAX" in environ:
        return False
    try:
        if libc is None:
            # Already loaded: Twisted's filepath imports it.
            import ctypes

            libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(M_ARENA_MAX, MALLOC_ARENAS))


def _manager(options: usage.Options) -> int:
    from suite.goop.manager.app import runManager

    return runManager(options.subOptions)


def main(argv: Sequence[str] | None = None) -> None:
    withoutHTTP2()
    fewerMallocArenas()
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
