"""
Static user/password checking (e.g. specter's C{INTERNAL_USER} /
C{INTERNAL_PASS} for C{/_internal}).

    checker = StaticPasswordChecker({"ops": password})

Every attempt costs the same whatever the user name: the offered name and
password are hashed and compared (with L{hmac.compare_digest}) against every
configured entry, so an unknown user takes as long as a wrong password.
Passwords are held as L{suite.logging.Secret}.  Empty passwords are refused
at construction and at login.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from suite.cred.interfaces import IPrincipal, IPrincipalSource
from suite.cred.tokens import ALL_PERMISSIONS, Permission, Principal, parsePermissions
from suite.logging import Secret

__all__ = ["StaticPasswordChecker", "MAX_USERNAME_LENGTH", "MAX_PASSWORD_LENGTH", "asText"]

MAX_USERNAME_LENGTH = 256
MAX_PASSWORD_LENGTH = 1024


def asText(value: str | bytes) -> str:
    """
    Credentials arrive as bytes (HTTP) or str; decode bytes as UTF-8.

    @raise UnicodeDecodeError: for invalid UTF-8.
    """
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _digest(*parts: str) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.digest()


@implementer(ICredentialsChecker, IPrincipalSource)
class StaticPasswordChecker:
    """
    Check L{IUsernamePassword} against C{{user: password}}.

    The avatar id is the user name (a str).  Every user is granted
    C{permissions} (all of them by default: this checker guards admin
    surfaces).

    @raise ValueError: an empty user name or password (naming the user).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        users: Mapping[str, str | bytes],
        permissions: Iterable[Permission | str] = ALL_PERMISSIONS,
    ) -> None:
        self._permissions = parsePermissions(list(permissions))
        entries: list[tuple[bytes, str]] = []
        for user, password in users.items():
            user = asText(user)
            password = asText(password)
            if not user:
                raise ValueError("user name is empty")
            if not password:
                raise ValueError(f"user {user!r}: password is empty")
            if len(user) > MAX_USERNAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
                raise ValueError(f"user {user!r}: user name or password too long")
            entries.append((_digest(user, password), user))
        self._entries = entries

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        creds = IUsernamePassword(credentials)
        try:
            user = asText(creds.username)
            password = asText(creds.password)
        except UnicodeDecodeError:
            return fail(UnauthorizedLogin("user name or password is not valid UTF-8"))
        if not password:
            return fail(UnauthorizedLogin("empty password"))
        if len(user) > MAX_USERNAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
            return fail(UnauthorizedLogin("user name or password too long"))
        offered = _digest(user, password)
        found: str | None = None
        for digest, name in self._entries:
            if hmac.compare_digest(digest, offered):
                found = name
        if found is None:
            return fail(UnauthorizedLogin("invalid user name or password"))
        return succeed(found)

    def principalFor(self, avatarId: str) -> IPrincipal:
        return Principal(avatarId, self._permissions)
