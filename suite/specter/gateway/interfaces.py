"""
Interfaces of the gateway.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IRouteStore", "ILinkRegistry", "IResponseSink"]


class IRouteStore(Interface):
    """
    Where tunnel routes live: hostname -> owner and the gateways holding a
    link for it.  The gateway calls it when a client registers, renews,
    releases or lists, and on a route-cache miss for a visitor.
    """

    def lookup(hostname):  # type: ignore[no-untyped-def]
        """
        Fire with the live L{suite.specter.gateway.routes.Route} of
        C{hostname}, or L{None}.
        """

    def publish(hostname, owner, kind, gateway, leaseTTL):  # type: ignore[no-untyped-def]
        """
        Publish (or renew) the route of C{hostname} for C{owner} (a client
        certificate's common name) through C{gateway} under a lease of
        C{leaseTTL} seconds; fire with the lease's fencing token, or fail
        with L{suite.specter.gateway.routes.RouteOwned} if another owner
        holds it.
        """

    def withdraw(hostname, gateway):  # type: ignore[no-untyped-def]
        """
        C{gateway} no longer holds a link for C{hostname}.
        """

    def release(hostname, owner):  # type: ignore[no-untyped-def]
        """
        Forget C{hostname} entirely (only its owner may); fire with whether
        it existed.
        """

    def owned(owner):  # type: ignore[no-untyped-def]
        """
        Fire with the sorted hostnames C{owner} has published.
        """


class ILinkRegistry(Interface):
    """
    The tunnel links held by this gateway process.
    """

    gateway = Attribute("This gateway's advertised HOST:PORT.")

    def add(hostname, link):  # type: ignore[no-untyped-def]
        """
        Record that C{link} serves C{hostname}.
        """

    def remove(hostname, link):  # type: ignore[no-untyped-def]
        """
        Forget that C{link} serves C{hostname}.
        """

    def pick(hostname):  # type: ignore[no-untyped-def]
        """
        A live local link serving C{hostname} (round robin), or L{None}.
        """


class IResponseSink(Interface):
    """
    Where an HTTP/2 or HTTP/3 visitor's request takes its response from an
    L{suite.specter.gateway.exchange.Exchange}: the exchange calls these
    as the target's answer arrives, in this order: C{responseStarted},
    C{responseData} any number of times, then C{responseEnded} or
    C{responseFailed} (at any point, also before C{responseStarted}).
    """

    def responseStarted(head):  # type: ignore[no-untyped-def]
        """
        The response head arrived (a
        L{suite.specter.gateway.http1.ResponseHead}).
        """

    def responseData(data):  # type: ignore[no-untyped-def]
        """
        A piece of the response body.
        """

    def responseEnded():  # type: ignore[no-untyped-def]
        """
        The response is complete.
        """

    def responseFailed(reason):  # type: ignore[no-untyped-def]
        """
        The exchange broke (C{reason}: a sentence): no response, or one cut
        short, which must not look complete to the visitor.
        """

    def requestBodyPaused():  # type: ignore[no-untyped-def]
        """
        The tunnel cannot take more of the request body for now.
        """

    def requestBodyResumed():  # type: ignore[no-untyped-def]
        """
        The tunnel can take more of the request body.
        """
