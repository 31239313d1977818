"""
Interfaces of a CEPtra node.
"""

from __future__ import annotations

from zope.interface import Interface

__all__ = ["IRaftStatus"]


class IRaftStatus(Interface):
    """
    What the node's readiness check needs from the Raft layer under its
    partitions.  The readiness provider calls it on every C{/readyz}.
    """

    def leaderKnown():  # type: ignore[no-untyped-def]
        """
        C{True} when every hosted partition knows its Raft leader.
        """

    def notReadyReasons():  # type: ignore[no-untyped-def]
        """
        One short line per reason the Raft layer is not ready (empty when ready).
        """
