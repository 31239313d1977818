"""
twistd plugin entry for specter: C{twistd specter server|dns ...}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from suite.daemon import attachCommon, exitOnConfigError
from suite.specter.options import Options

__all__ = ["Options", "makeService", "trapSIGINT"]


@exitOnConfigError("specter")
def makeService(options: Any) -> MultiService:
    """
    Build the service for the chosen subcommand.
    """
    from twisted.internet import reactor

    sub = options.subOptions
    if options.subCommand == "dns":
        from suite.specter.dns import makeDNSService

        dns = makeDNSService(sub, reactor)
        barrier = attachCommon(
            dns,
            sub,
            {"zone": dns.zone, "factory": dns.factory, "challenges": dns.challenges},
            reactor,
        )
        if barrier.fatal:
            trapSIGINT()
        return dns
    from suite.specter.service import makeServerService

    root = makeServerService(sub, reactor)
    barrier = attachCommon(root, sub, {"node": root.node, "vnodes": root.node.vnodes}, reactor)
    if barrier.fatal:  # run by twistd (or the console script), not built by a test
        trapSIGINT()
    return root


def trapSIGINT() -> None:
    """
    Stop on SIGINT like on SIGTERM even when the process was started with
    SIGINT ignored (C{specter server ... &} from a script): Twisted installs
    its SIGINT handler only over Python's default one, so the ignored signal
    would never make the node leave the ring.
    """
    import signal

    try:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: nothing to restore
        pass
