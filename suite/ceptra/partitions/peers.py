"""
How this node's partitions reach their peers over the shared Raft
transport: dialling a peer's Raft address (over mTLS, the peer's
certificate must carry the SPIFFE ID the routing table gives for that
address), and naming the node behind an inbound connection by the SPIFFE
ID of its certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import clientFromString, wrapClientTLS
from twisted.internet.protocol import Factory

from suite.ceptra.routing import Routing
from suite.netutil import isIPAddress

__all__ = ["PeerDialer", "identifyPeer", "spiffeIdentity"]


def spiffeIdentity(transport: Any) -> list[str]:
    from suite.pki.peer import peerIdentity
    from suite.pki.verify import VerificationError

    try:
        return list(peerIdentity(transport).spiffeIds)
    except VerificationError:  # no certificate, or unparsable names
        return []


def identifyPeer(known: Collection[str], transport: Any) -> str | None:
    """
    The node behind an inbound connection: the first SPIFFE ID of its
    certificate among the C{known} nodes, else its first one (refused by
    the transport), else L{None}.
    """
    ids = spiffeIdentity(transport)
    for spiffe in ids:
        if spiffe in known:
            return spiffe
    return ids[0] if ids else None


class PeerDialer:
    """
    Dials peers' Raft addresses.

    @param bundle: the node identity for mTLS (C{None}: plain TCP, tests
        only).
    @param routing: the routing table in force, read at each dial.
    """

    def __init__(self, reactor: Any, bundle: Any, routing: Callable[[], Routing]) -> None:
        self.reactor = reactor
        self.bundle = bundle
        self.routing = routing

    def connect(self, address: str, factory: Factory, timeout: float) -> Deferred[Any]:
        """
        Connect C{factory} to the Raft address C{address} within
        C{timeout} seconds.
        """
        host, port = address.rsplit(":", 1)
        host = host.strip("[]")
        endpoint: Any = clientFromString(
            self.reactor, f"tcp:host={host}:port={port}:timeout={max(1, round(timeout))}"
        )
        if self.bundle is not None:
            from suite.pki.tls import clientContextFactory

            expected = self.routing().nodeByRaftAddress(address)
            if expected is None or not expected.spiffe:
                return fail(ConnectionError(f"no node with a SPIFFE ID listed at {address}"))
            if isIPAddress(host):
                creator = clientContextFactory(self.bundle, ipAddress=host, spiffeId=expected.spiffe)
            else:
                creator = clientContextFactory(self.bundle, hostname=host, spiffeId=expected.spiffe)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint.connect(factory)  # type: ignore[no-any-return]
