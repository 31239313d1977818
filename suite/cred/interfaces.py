"""
Interfaces of L{suite.cred}: the credentials a daemon accepts and the avatar
(a named principal with permissions) a successful login produces.

Checkers implement L{twisted.cred.checkers.ICredentialsChecker}; a realm
turns the avatar id a checker returns into an L{IPrincipal}; the web
wrappers in L{suite.cred.web} ask a portal for an L{IPrincipal} and compare
its permissions with what the resource needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.cred.credentials import ICredentials
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from suite.cred.tokens import Permission

__all__ = ["IBearerToken", "IPrincipal", "IPrincipalSource"]


class IBearerToken(ICredentials):
    """
    An opaque bearer token (HTTP C{Authorization: Bearer ...} or a peer's
    C{auth_token}).  Checkers compare it in constant time.
    """

    token = Attribute(
        "The token as a L{suite.logging.Secret} (a str that renders as ***); "
        "use C{token.reveal()} for the real value."
    )


class IPrincipal(Interface):
    """
    Who a request acts as once authenticated, and what it may do.
    """

    name = Attribute("The principal's name (a token id or a user name); safe to log.")
    permissions = Attribute(
        "A frozenset of L{suite.cred.tokens.Permission}, already expanded: ADMIN implies WRITE implies READ."
    )

    def allows(permission: Permission | None) -> bool:
        """
        Whether this principal holds C{permission} (C{None} asks only for an
        authenticated principal and is always allowed).
        """


class IPrincipalSource(Interface):
    """
    Something (usually a checker) that knows the permissions of the avatar
    ids it hands out; L{suite.cred.tokens.PrincipalRealm} uses it.
    """

    def principalFor(avatarId: str) -> IPrincipal:
        """
        The principal for an avatar id this source's checker returned.
        """
