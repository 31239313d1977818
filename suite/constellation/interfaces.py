"""
Interfaces of the Constellation agent.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IServiceCatalog"]


class IServiceCatalog(Interface):
    """
    The services this agent knows about (its own node's, and, once gossip
    runs, its peers').  The Traefik HTTP provider and C{/api/state} read it;
    the Docker monitor and gossip (when built) write it.
    """

    nodeName = Attribute("This node's name.")

    def services():  # type: ignore[no-untyped-def]
        """
        All known L{suite.constellation.catalog.ServiceEntry} values, sorted by name then node.
        """

    def nodes():  # type: ignore[no-untyped-def]
        """
        All known L{suite.constellation.catalog.NodeEntry} values (this node first).
        """
