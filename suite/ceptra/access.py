"""
Who may use a node's admin listener: a client certificate from the trust
bundle is not enough, its SPIFFE ID must be on the allow list — the
configured IDs or trust domains (C{CEPTRA_ADMIN_ALLOWED_SPIFFE}) and the
cluster's own nodes (from the routing feed, so nodes can forward to each
other).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cryptography import x509
from zope.interface import implementer

from suite.pki.interfaces import IPeerVerifier
from suite.pki.verify import PeerIdentity, VerificationError, identityOf

__all__ = ["SpiffeAllowList"]


@implementer(IPeerVerifier)
class SpiffeAllowList:
    """
    @param allowed: SPIFFE IDs, or trust domains C{spiffe://DOMAIN} (any ID
        in the domain).
    @param dynamic: returns more allowed IDs at each handshake (the nodes).
    """

    def __init__(self, allowed: Iterable[str], dynamic: Callable[[], Iterable[str]] = lambda: ()) -> None:
        self.allowed = tuple(allowed)
        self.dynamic = dynamic
        self.refused = 0

    @property
    def description(self) -> str:
        return "a SPIFFE ID on the admin allow list"

    def permits(self, spiffe: str) -> bool:
        for entry in self.allowed:
            if spiffe == entry:
                return True
            if entry.count("/") == 2 and len(entry) > len("spiffe://") and spiffe.startswith(entry + "/"):
                return True
        return spiffe in set(self.dynamic())

    def verifyPeer(self, certificate: x509.Certificate) -> PeerIdentity:
        identity = identityOf(certificate)
        for spiffe in identity.spiffeIds:
            if self.permits(spiffe):
                return identity
        self.refused += 1
        raise VerificationError(
            f"client SPIFFE ID {', '.join(identity.spiffeIds) or '(none)'} is not on the admin allow list"
        )
