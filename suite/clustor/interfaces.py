"""
Interfaces of the Clustor substrate: the control plane's state store and
the feed client that CEPtra nodes use to follow it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from suite.clustor.state import FeedDocument

__all__ = ["IControlPlaneStore", "IFeedClient"]


class IControlPlaneStore(Interface):
    """
    Holds the control plane's current state; the HTTP feed resources read
    it, the reloader (SIGHUP or file change) refreshes it.
    """

    path = Attribute("The state file this store reads.")
    revision = Attribute("Counter bumped each time the published content changes (starts at 1).")

    def document(feed: str) -> FeedDocument:
        """
        The current L{suite.clustor.state.FeedDocument} for C{feed}
        (one of L{suite.clustor.state.FEEDS}).
        """

    def reload() -> bool:
        """
        Re-read the state file.  Return C{True} when the content changed;
        on an invalid file keep serving the previous state, log the one-line
        reason and return C{False}.
        """


class IFeedClient(Interface):
    """
    Follows the control plane's feeds; the node's readiness checks and
    metrics read it.
    """

    feeds = Attribute("The feed names followed (e.g. placement, features, warmup, activation).")

    def stalenessMs(feed: str) -> float:
        """
        Milliseconds since C{feed} was last refreshed successfully (since the
        client started when it never was).
        """

    def latest(feed: str) -> dict[str, Any] | None:
        """
        The last successfully fetched document of C{feed} as a dict, or C{None}.
        """

    def isStale(feed: str) -> bool:
        """
        C{True} when C{feed} was never fetched or is older than the
        staleness threshold.
        """
