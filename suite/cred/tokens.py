"""
Bearer tokens with permissions.

Permissions form a ladder: C{ADMIN} implies C{WRITE}, which implies C{READ}.
A principal granted C{["admin"]} therefore may read and write too; one
granted C{["read"]} may only read.

    checker = TokenChecker({
        "admin": (adminSecret, ["read", "write", "admin"]),
        "readonly": (readSecret, [READ]),
    })
    portal = Portal(PrincipalRealm(checker), [checker])

The checker keeps only SHA-256 digests of the configured secrets; an offered
token travels as a L{suite.logging.Secret} (rendered as C{***} anywhere it is
formatted or logged).  Comparison is constant time: every configured token
is compared on every attempt with L{hmac.compare_digest}, through
fixed-length digests, so neither the position of a match nor a secret's
length shows in the timing.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from suite.cred.interfaces import IBearerToken, IPrincipal, IPrincipalSource
from suite.logging import Secret

__all__ = [
    "Permission",
    "READ",
    "WRITE",
    "ADMIN",
    "ALL_PERMISSIONS",
    "parsePermission",
    "parsePermissions",
    "expandPermissions",
    "BearerToken",
    "Principal",
    "TokenChecker",
    "PrincipalRealm",
    "MAX_TOKEN_LENGTH",
]

#: Longest token accepted on the wire; longer ones are refused unread.
MAX_TOKEN_LENGTH = 4096


class Permission(enum.Enum):
    """
    What a principal may do.  Ordered: ADMIN > WRITE > READ, and each
    implies the ones below it.
    """

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __str__(self) -> str:
        return self.value


_RANK = {Permission.READ: 1, Permission.WRITE: 2, Permission.ADMIN: 3}

READ = Permission.READ
WRITE = Permission.WRITE
ADMIN = Permission.ADMIN
ALL_PERMISSIONS: frozenset[Permission] = frozenset(Permission)


def parsePermission(value: Permission | str, where: str = "permission") -> Permission:
    """
    Turn C{"read"|"write"|"admin"} (any case) or a L{Permission} into a
    L{Permission}.

    @param where: the config key or flag to name in the error.
    @raise ValueError: naming C{where} and the bad value.
    """
    if isinstance(value, Permission):
        return value
    if isinstance(value, str):
        try:
            return Permission(value.strip().lower())
        except ValueError:
            pass
    raise ValueError(f"{where}: unknown permission {value!r} (use read, write or admin)")


def expandPermissions(permissions: Iterable[Permission]) -> frozenset[Permission]:
    """
    Close a set of permissions under implication (ADMIN ⇒ WRITE ⇒ READ).
    """
    top = max((p.rank for p in permissions), default=0)
    return frozenset(p for p in Permission if p.rank <= top)


def parsePermissions(values: Iterable[Permission | str], where: str = "permissions") -> frozenset[Permission]:
    """
    Parse a list of permission names and expand it (see L{expandPermissions}).

    @raise ValueError: naming C{where} for a non-list or an unknown name.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{where}: expected a list of permissions (read, write, admin), got {values!r}")
    return expandPermissions(parsePermission(v, where) for v in values)


@implementer(IBearerToken)
class BearerToken:
    """
    Bearer-token credentials.  The token is kept as a L{Secret}.
    """

    def __init__(self, token: str | bytes) -> None:
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        self.token = token if isinstance(token, Secret) else Secret(token)

    def __repr__(self) -> str:
        return "BearerToken(***)"


@implementer(IPrincipal)
class Principal:
    """
    A named principal and its (expanded) permissions.
    """

    def __init__(self, name: str, permissions: Iterable[Permission | str] = ()) -> None:
        self.name = name
        self.permissions: frozenset[Permission] = parsePermissions(list(permissions))

    def allows(self, permission: Permission | None) -> bool:
        return permission is None or permission in self.permissions

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Principal):
            return NotImplemented
        return (self.name, self.permissions) == (other.name, other.permissions)

    def __hash__(self) -> int:
        return hash((self.name, self.permissions))

    def __repr__(self) -> str:
        perms = ",".join(sorted(p.value for p in self.permissions))
        return f"Principal({self.name!r}, {{{perms}}})"


def _digest(value: str | bytes) -> bytes:
    if isinstance(value, Secret):
        value = value.reveal()
    if isinstance(value, str):
        value = value.encode("utf-8")
    return hashlib.sha256(value).digest()


@implementer(ICredentialsChecker, IPrincipalSource)
class TokenChecker:
    """
    Check L{IBearerToken} credentials against configured named tokens.

    The avatar id is the token's name; L{principalFor} (and so
    L{PrincipalRealm}) gives its permissions.

    @param tokens: C{{name: (secret, permissions)}}; permissions are
        L{Permission}s or their names.
    @raise ValueError: an empty secret, an unknown permission or two names
        sharing one secret (naming the token ids, never the secrets).
    """

    credentialInterfaces = (IBearerToken,)

    def __init__(self, tokens: Mapping[str, tuple[str | bytes, Iterable[Permission | str]]]) -> None:
        self._entries: list[tuple[bytes, str]] = []
        self._principals: dict[str, Principal] = {}
        self.setTokens(tokens)

    @classmethod
    def fromEntries(cls, entries: Any, where: str = "tokens") -> TokenChecker:
        """
        Build a checker from configuration entries such as spacecomms'
        C{api.auth.tokens}: a list of C{{"id": ..., "secret": ...,
        "permissions": [...]}} mappings.

        @param where: the configuration key, named in errors with the index
            and id of the bad entry (never the secret).
        @raise ValueError: a non-list, a missing or empty id or secret, a
            duplicate id or secret, or an unknown permission.
        """
        if not isinstance(entries, (list, tuple)):
            raise ValueError(f"{where}: expected a list of tokens")
        tokens: dict[str, tuple[str | bytes, Iterable[Permission | str]]] = {}
        for index, entry in enumerate(entries):
            here = f"{where}[{index}]"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{here}: expected a mapping with id, secret and permissions")
            name = entry.get("id")
            if not isinstance(name, str) or not name:
                raise ValueError(f"{here}.id: missing or empty")
            if name in tokens:
                raise ValueError(f"{here}.id: duplicate token id {name!r}")
            secret = entry.get("secret")
            if not isinstance(secret, (str, bytes)) or not secret:
                raise ValueError(f"{here}.secret: missing or empty for token {name!r}")
            permissions = parsePermissions(entry.get("permissions", ()), where=f"{here}.permissions")
            tokens[name] = (secret, permissions)
        return cls(tokens)

    def setTokens(self, tokens: Mapping[str, tuple[str | bytes, Iterable[Permission | str]]]) -> None:
        """
        Replace the configured tokens (e.g. on a configuration reload).
        Validates everything first; on error the old tokens stay.
        """
        entries: list[tuple[bytes, str]] = []
        principals: dict[str, Principal] = {}
        seen: dict[bytes, str] = {}
        for name, spec in tokens.items():
            try:
                secret, permissions = spec
            except (TypeError, ValueError):
                raise ValueError(f"token {name!r}: expected (secret, permissions)") from None
            if isinstance(secret, bytes):
                secret = secret.decode("utf-8")
            if not isinstance(secret, str) or not secret:
                raise ValueError(f"token {name!r}: secret is empty")
            if len(secret) > MAX_TOKEN_LENGTH:
                raise ValueError(f"token {name!r}: secret longer than {MAX_TOKEN_LENGTH} characters")
            digest = _digest(secret)
            if digest in seen:
                raise ValueError(f"tokens {seen[digest]!r} and {name!r} share the same secret")
            seen[digest] = name
            perms = parsePermissions(permissions, where=f"token {name!r} permissions")
            entries.append((digest, name))
            principals[name] = Principal(name, perms)
        self._entries = entries
        self._principals = principals

    @property
    def names(self) -> list[str]:
        """
        The configured token names (safe to log).
        """
        return [name for _, name in self._entries]

    def check(self, token: str | bytes) -> str | None:
        """
        The name of the token equal to C{token}, or C{None}.  Compares
        against every configured token, in constant time.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        offered = _digest(token)
        found: str | None = None
        for digest, name in self._entries:
            if hmac.compare_digest(digest, offered):
                found = name
        return found

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        token = IBearerToken(credentials).token
        name = self.check(token)
        if name is None:
            return fail(UnauthorizedLogin("unknown or missing bearer token"))
        return succeed(name)

    def avatarIdNow(self, credentials: Any) -> str | None:
        """
        Synchronous L{requestAvatarId} for the accepting case: the token's
        name, or C{None} (then L{requestAvatarId} gives the refusal).
        """
        return self.check(IBearerToken(credentials).token)

    def principalFor(self, avatarId: str) -> IPrincipal:
        principal = self._principals.get(avatarId)
        if principal is None:
            return Principal(avatarId, ())
        return principal

    def authenticate(self, token: str | bytes) -> Principal | None:
        """
        Synchronous convenience for non-HTTP protocols: the L{Principal} for
        C{token}, or C{None}.
        """
        name = self.check(token)
        return None if name is None else self._principals[name]


@implementer(IRealm)
class PrincipalRealm:
    """
    A realm answering L{IPrincipal} for avatar ids from the given sources.

    @param source: an L{IPrincipalSource} (a L{TokenChecker}, a
        L{suite.cred.basic.StaticPasswordChecker}, an
        L{suite.cred.ldap.LDAPBindChecker}), or C{None} to grant fixed
        C{permissions} to every authenticated avatar id.
    """

    def __init__(
        self,
        source: IPrincipalSource | None = None,
        permissions: Iterable[Permission | str] = (),
    ) -> None:
        self._source = None if source is None else IPrincipalSource(source)
        self._permissions = parsePermissions(list(permissions))

    def principalFor(self, avatarId: Any) -> IPrincipal:
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("utf-8", "replace")
        if self._source is not None:
            return self._source.principalFor(avatarId)
        return Principal(str(avatarId), self._permissions)

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if IPrincipal not in interfaces:
            raise NotImplementedError("PrincipalRealm only provides IPrincipal")
        return (IPrincipal, self.principalFor(avatarId), lambda: None)
