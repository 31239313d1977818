"""
The C{goop2} console script: C{goop2 peer DIR}, C{goop2 rendezvous DIR},
and C{goop2} with no arguments for the multi-peer manager page.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.python import usage

from suite.daemon import runConsole

__all__ = ["main", "withoutHTTP2"]


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


def _manager(options: usage.Options) -> int:
    from suite.goop.manager.app import runManager

    return runManager(options.subOptions)


def main(argv: Sequence[str] | None = None) -> None:
    withoutHTTP2()
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
