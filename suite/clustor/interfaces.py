"""
Interfaces of the Clustor substrate: the control plane's state store and
the feed client that CEPtra nodes use to follow it.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IControlPlaneStore", "IFeedClient"]


class IControlPlaneStore(Interface):
    """
    Holds the control plane's current state; the HTTP feed resources read
    it, the reloader (SIGHUP or file change) refreshes it.
    """

    path = Attribute("The state file this store reads.")
    revision = Attribute("Counter bumped each time the published content changes (starts at 1).")

    def document(feed):  # type: ignore[no-untyped-def]
        """
        The current L{suite.clustor.state.FeedDocument} for C{feed}
        (one of L{suite.clustor.state.FEEDS}).
        """

    def reload():  # type: ignore[no-untyped-def]
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

    def stalenessMs(feed):  # type: ignore[no-untyped-def]
        """
        Milliseconds since C{feed} was last refreshed successfully (since the
        client started when it never was).
        """

    def latest(feed):  # type: ignore[no-untyped-def]
        """
        The last successfully fetched document of C{feed} as a dict, or C{None}.
        """

    def isStale(feed):  # type: ignore[no-untyped-def]
        """
        C{True} when C{feed} was never fetched or is older than the
        staleness threshold.
        """
