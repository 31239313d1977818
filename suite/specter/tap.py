"""
twistd plugin entry for specter: C{twistd specter server|dns ...}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from suite.daemon import attachCommon, exitOnConfigError
from suite.specter.options import Options

__all__ = ["Options", "makeService"]


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
        attachCommon(
            dns,
            sub,
            {"zone": dns.zone, "factory": dns.factory, "challenges": dns.challenges},
            reactor,
        )
        return dns
    from suite.specter.service import makeServerService

    root = makeServerService(sub, reactor)
    attachCommon(root, sub, {"node": root.node, "vnodes": root.node.vnodes}, reactor)
    return root
