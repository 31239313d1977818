"""
HTTP authentication wrappers for twisted.web resources.

    root.putChild(b"_internal", requireBasicAuth(internal, StaticPasswordChecker({u: p}), "specter"))
    api = requireBearer(apiRoot, tokenChecker, methodPermissions({b"GET": READ}, default=WRITE))

Both wrappers guard the wrapped resource and everything below it.  Failures
answer JSON C{{"error": reason}}:

  - 401 with C{WWW-Authenticate} for missing, malformed or wrong
    credentials (the reason never says which part was wrong);
  - 403 when the principal lacks the permission the request needs;
  - 503 when the authentication backend (e.g. LDAP) is unreachable;
  - 429 with C{Retry-After} when an optional L{FailureLimiter} says the
    client failed too often recently.

Each failure is logged as C{authentication failed} (or C{permission
denied}) with the principal's name when one is known, the client address
and the path, never the secret.  The authenticated L{IPrincipal} is
available to the wrapped resource through L{principalOf}.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials, UsernamePassword
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from suite.cred.errors import AuthenticationUnavailable
from suite.cred.interfaces import IPrincipal, IPrincipalSource
from suite.cred.limits import FailureLimiter
from suite.cred.tokens import MAX_TOKEN_LENGTH, BearerToken, Permission, Principal, parsePermission
from suite.web.errors import jsonError

__all__ = [
    "requireBasicAuth",
    "requireBearer",
    "principalOf",
    "methodPermissions",
    "Authenticator",
    "MAX_AUTHORIZATION_LENGTH",
]

log = Logger(namespace="suite.cred")

#: Longest Authorization header read; longer ones are refused unparsed.
MAX_AUTHORIZATION_LENGTH = 8192

_PRINCIPAL_ATTR = "_suiteCredPrincipal"

PermissionSpec = Union[Permission, str, None, Callable[[IRequest], Union[Permission, None]]]


def principalOf(request: IRequest) -> IPrincipal | None:
    """
    The L{IPrincipal} a wrapper authenticated for C{request}, or C{None}.
    """
    return getattr(request, _PRINCIPAL_ATTR, None)


def methodPermissions(
    byMethod: Mapping[bytes, Permission | str], default: Permission | str | None = Permission.ADMIN
) -> Callable[[IRequest], Permission | None]:
    """
    A permission rule for L{requireBearer} by HTTP method, e.g.
    C{methodPermissions({b"GET": READ, b"HEAD": READ}, default=WRITE)}.
    """
    table = {m.upper(): parsePermission(p) for m, p in byMethod.items()}
    fallback = None if default is None else parsePermission(default)

    def rule(request: IRequest) -> Permission | None:
        return table.get((request.method or b"").upper(), fallback)

    return rule


def _safeName(name: Any) -> str:
    """
    A user-supplied name made safe for a log line (printable, bounded).
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in str(name))
    return text[:128] + ("..." if len(text) > 128 else "")


class Authenticator:
    """
    Turns credentials into an L{IPrincipal} through a portal (whose realm
    must answer L{IPrincipal}) or through checkers tried in order.

    With checkers, the principal comes from the accepting checker's
    L{IPrincipalSource} when it has one, else it is a L{Principal} with
    C{defaultPermissions}.  When no checker accepts and one of them was
    unavailable, the result is L{AuthenticationUnavailable}.
    """

    def __init__(self, portalOrCheckers: Any, defaultPermissions: Iterable[Permission | str] = ()) -> None:
        self._portal: Any = None
        self._checkers: list[ICredentialsChecker] = []
        self._default = list(defaultPermissions)
        if hasattr(portalOrCheckers, "login"):
            self._portal = portalOrCheckers
        else:
            items: Sequence[Any]
            if ICredentialsChecker.providedBy(portalOrCheckers):
                items = [portalOrCheckers]
            else:
                items = list(portalOrCheckers)
            if not items:
                raise ValueError("no credentials checkers given")
            self._checkers = [ICredentialsChecker(c) for c in items]

    def authenticate(self, credentials: ICredentials) -> Deferred[IPrincipal]:
        if self._portal is not None:
            d: Deferred[tuple[object, object, Callable[[], None]]] = self._portal.login(
                credentials, None, IPrincipal
            )
            return d.addCallback(lambda result: IPrincipal(result[1]))
        return Deferred.fromCoroutine(self._tryCheckers(credentials))

    def authenticateNow(self, credentials: ICredentials) -> IPrincipal | None:
        """
        The principal when the first checker for C{credentials} accepts them
        synchronously (it has an C{avatarIdNow}, as
        L{suite.cred.tokens.TokenChecker} does), without a Deferred; C{None}
        when L{authenticate} must decide (a portal, a checker without
        C{avatarIdNow}, or a refusal, which that path reports).
        """
        if self._portal is not None:
            return None
        for checker in self._checkers:
            if not any(i.providedBy(credentials) for i in checker.credentialInterfaces):
                continue
            now = getattr(checker, "avatarIdNow", None)
            if now is None:
                return None
            avatarId = now(credentials)
            if avatarId is None:
                return None
            return self._principal(checker, avatarId)
        return None

    def _principal(self, checker: ICredentialsChecker, avatarId: Any) -> IPrincipal:
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("utf-8", "replace")
        source = IPrincipalSource(checker, None)
        if source is not None:
            return source.principalFor(avatarId)
        return Principal(str(avatarId), self._default)

    async def _tryCheckers(self, credentials: ICredentials) -> IPrincipal:
        unavailable: Failure | None = None
        refused: Failure | None = None
        for checker in self._checkers:
            if not any(i.providedBy(credentials) for i in checker.credentialInterfaces):
                continue
            avatarId: Any
            try:
                avatarId = await maybeDeferred(checker.requestAvatarId, credentials)
            except AuthenticationUnavailable:
                unavailable = Failure()
                continue
            except LoginFailed:
                refused = Failure()
                continue
            return self._principal(checker, avatarId)
        if unavailable is not None:
            unavailable.raiseException()
        if refused is not None:
            refused.raiseException()
        raise UnauthorizedLogin("no checker accepts these credentials")


@implementer(IResource)
class _Guard:
    """
    Shared machinery of the two wrappers: parse credentials, authenticate,
    authorize, then hand the request to the wrapped resource.
    """

    isLeaf = False

    def __init__(
        self,
        wrapped: IResource,
        authenticator: Authenticator,
        permission: PermissionSpec,
        scheme: str,
        realm: str,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self._wrapped = IResource(wrapped)
        self._limiter = limiter
        self._authenticator = authenticator
        self._permission: PermissionSpec = (
            permission if permission is None or callable(permission) else parsePermission(permission)
        )
        self._scheme = scheme
        self._realm = realm.replace("\\", "\\\\").replace('"', '\\"')

    # IResource

    def render(self, request: IRequest) -> Any:
        return self._guarded(request).render(request)

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        # Undo the traversal step so the wrapped resource sees the same path.
        request.postpath.insert(0, request.prepath.pop())
        return self._guarded(request)

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError("put children on the wrapped resource instead")

    # Machinery

    def _credentials(self, request: IRequest) -> tuple[ICredentials | None, str, str | None]:
        """
        (credentials or None, reason when None, principal name if known).
        """
        raise NotImplementedError()

    def _challenge(self, error: str | None) -> bytes:
        value = f'{self._scheme} realm="{self._realm}"'
        if self._scheme == "Basic":
            value += ', charset="UTF-8"'
        if error:
            value += f', error="{error}"'
        return value.encode("ascii", "replace")

    def _guarded(self, request: IRequest) -> IResource:
        credentials, reason, name = self._credentials(request)
        if self._limiter is not None and request.getHeader(b"authorization") is not None:
            wait = self._limiter.blockedFor(_client(request))
            if wait > 0:
                log.warn(
                    "authentication failed for {principal}: too many failures from {client}",
                    principal=name or "-",
                    client=_client(request),
                    path=_safeName(getattr(request, "path", b"")),
                )
                return _ErrorResource(429, "too many failed attempts", None, retryAfter=wait)
        if credentials is None:
            presented = request.getHeader(b"authorization") is not None
            return self._refuse(request, 401, reason, name, publicReason=reason, presented=presented)
        # Fast path: a checker that accepts synchronously (API tokens) needs
        # no Deferred; refusals and other checkers take the general path.
        principal = self._authenticator.authenticateNow(credentials)
        if principal is not None:
            return self._authenticated(principal, request)
        d: Deferred[Any] = self._authenticator.authenticate(credentials)
        d.addCallbacks(
            self._authenticated,
            self._failed,
            callbackArgs=(request,),
            errbackArgs=(request, name),
        )
        # Fast path: token and password checkers answer synchronously, so
        # the outcome is usually known already; hand it back directly
        # instead of rendering through a Deferred.
        box: list[Any] = []

        def capture(result: Any) -> Any:
            box.append(result)
            return result

        d.addBoth(capture)
        if box and not isinstance(box[0], Failure):
            return IResource(box[0])
        return _DeferredResource(d)

    def _neededPermission(self, request: IRequest) -> Permission | None:
        permission = self._permission
        if callable(permission):
            return permission(request)
        return None if permission is None else parsePermission(permission)

    def _authenticated(self, principal: IPrincipal, request: IRequest) -> IResource:
        needed = self._neededPermission(request)
        if not principal.allows(needed):
            log.warn(
                "permission denied: {principal} lacks {permission} for {method} {path}",
                principal=principal.name,
                permission=str(needed),
                method=_safeName(getattr(request, "method", b"")),
                path=_safeName(getattr(request, "path", b"")),
                client=_client(request),
            )
            return _ErrorResource(
                403,
                f"permission {needed} required",
                self._challenge("insufficient_scope") if self._scheme == "Bearer" else None,
            )
        setattr(request, _PRINCIPAL_ATTR, principal)
        setComponent = getattr(request, "setComponent", None)
        if setComponent is not None:
            setComponent(IPrincipal, principal)
        return self._wrapped

    def _failed(self, failure: Failure, request: IRequest, name: str | None) -> IResource:
        if failure.check(AuthenticationUnavailable):
            log.error(
                "authentication failed: backend unavailable for {principal}: {reason}",
                principal=name or "-",
                reason=failure.getErrorMessage(),
                client=_client(request),
                path=_safeName(getattr(request, "path", b"")),
            )
            return _ErrorResource(503, "authentication backend unavailable", None)
        if failure.check(CancelledError):
            log.info(
                "authentication abandoned: client {client} went away",
                principal=name or "-",
                client=_client(request),
            )
            return _ErrorResource(499, "client closed request", None)
        if failure.check(LoginFailed, UnauthorizedLogin):
            public = "invalid token" if self._scheme == "Bearer" else "invalid user name or password"
            return self._refuse(
                request, 401, failure.getErrorMessage(), name, publicReason=public, presented=True
            )
        log.failure(
            "authentication failed: checker error for {principal}",
            failure,
            principal=name or "-",
            client=_client(request),
        )
        return _ErrorResource(500, "authentication error", None)

    def _refuse(
        self,
        request: IRequest,
        code: int,
        reason: str,
        name: str | None,
        publicReason: str,
        presented: bool,
    ) -> IResource:
        log.warn(
            "authentication failed for {principal}: {reason}",
            principal=name or "-",
            reason=reason,
            client=_client(request),
            path=_safeName(getattr(request, "path", b"")),
        )
        if presented and self._limiter is not None:
            self._limiter.failed(_client(request))
        error = "invalid_token" if self._scheme == "Bearer" and presented else None
        return _ErrorResource(code, publicReason, self._challenge(error))


def _client(request: IRequest) -> str:
    try:
        peer = request.getClientAddress()
        host = getattr(peer, "host", None)
        if host is not None:
            return str(host)
        # A unix socket (or anything without a host) is one client.
        name = getattr(peer, "name", None)
        return f"unix:{_safeName(name)}" if name is not None else type(peer).__name__
    except Exception:  # only names the client for rate limits/logs
        return "-"


def _authorization(request: IRequest) -> tuple[str, str] | None:
    raw = request.getHeader(b"authorization")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode("latin-1", "replace")
    if len(raw) > MAX_AUTHORIZATION_LENGTH:
        return ("", "")
    scheme, _, rest = raw.strip().partition(b" ")
    return scheme.decode("latin-1").lower(), rest.strip().decode("latin-1")


class _BasicGuard(_Guard):
    def _credentials(self, request: IRequest) -> tuple[ICredentials | None, str, str | None]:
        auth = _authorization(request)
        if auth is None:
            return None, "missing credentials", None
        scheme, value = auth
        if scheme != "basic":
            return None, "expected Basic credentials", None
        try:
            decoded = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return None, "malformed Basic credentials", None
        user, sep, password = decoded.partition(b":")
        if not sep:
            return None, "malformed Basic credentials", None
        name = _safeName(user)
        if not password:
            return None, "empty password", name
        return UsernamePassword(user, password), "", name


#: Whitespace as C{str.isspace} sees it (the same Unicode property).
_SPACE = re.compile(r"\s")


class _BearerGuard(_Guard):
    def _credentials(self, request: IRequest) -> tuple[ICredentials | None, str, str | None]:
        auth = _authorization(request)
        if auth is None:
            return None, "missing bearer token", None
        scheme, value = auth
        if scheme != "bearer":
            return None, "expected a Bearer token", None
        if not value or len(value) > MAX_TOKEN_LENGTH or _SPACE.search(value) is not None:
            return None, "malformed bearer token", None
        return BearerToken(value), "", None


class _ErrorResource(Resource):
    isLeaf = True

    def __init__(self, code: int, reason: str, challenge: bytes | None, retryAfter: float = 0) -> None:
        super().__init__()
        self._code = code
        self._reason = reason
        self._challenge = challenge
        self._retryAfter = retryAfter

    def render(self, request: IRequest) -> bytes:
        if self._challenge is not None:
            request.setHeader(b"WWW-Authenticate", self._challenge)
        if self._retryAfter > 0:
            request.setHeader(b"Retry-After", str(math.ceil(self._retryAfter)).encode("ascii"))
        return jsonError(request, self._code, self._reason)


class _DeferredResource(Resource):
    """
    Renders whatever resource a Deferred produces, with the request's
    remaining path (like L{twisted.web.util.DeferredResource}).
    """

    isLeaf = True

    def __init__(self, d: Deferred[IResource]) -> None:
        super().__init__()
        self._d = d

    def render(self, request: Any) -> Any:
        gone: list[bool] = []

        def lost(failure: Failure) -> None:
            # The client went away: stop authenticating (closes an LDAP
            # connection, say) and render nothing.
            gone.append(True)
            self._d.cancel()

        def show(resource: IResource) -> None:
            if not gone:
                request.render(getChildForRequest(resource, request))

        def oops(failure: Failure) -> None:
            log.failure("rendering a guarded resource failed", failure)
            if not gone:
                request.processingFailed(failure)

        request.notifyFinish().addErrback(lost)
        self._d.addCallback(show).addErrback(oops)
        return NOT_DONE_YET


def requireBasicAuth(
    resource: IResource,
    checkers: Any,
    realm: str = "suite",
    permission: PermissionSpec = None,
    limiter: FailureLimiter | None = None,
) -> IResource:
    """
    Guard C{resource} with HTTP Basic authentication.

    @param checkers: a L{twisted.cred.portal.Portal} whose realm answers
        L{IPrincipal}, one L{ICredentialsChecker} for
        L{twisted.cred.credentials.IUsernamePassword}, or a sequence of them
        tried in order (e.g. a static account, then LDAP).
    @param realm: the realm named in C{WWW-Authenticate}.
    @param permission: optional L{Permission} (or a rule per request) the
        principal must hold; 403 otherwise.
    @param limiter: optional L{FailureLimiter}: clients with too many recent
        failures get 429 without a check.
    """
    return _BasicGuard(resource, Authenticator(checkers), permission, "Basic", realm, limiter)


def requireBearer(
    resource: IResource,
    checker: Any,
    permission: PermissionSpec = Permission.READ,
    realm: str = "api",
    limiter: FailureLimiter | None = None,
) -> IResource:
    """
    Guard C{resource} with C{Authorization: Bearer TOKEN}.

    @param checker: a L{suite.cred.tokens.TokenChecker} (or any checker of
        L{suite.cred.interfaces.IBearerToken}, or a portal answering
        L{IPrincipal}).
    @param permission: the L{Permission} needed (a name works too), a rule
        per request such as L{methodPermissions}, or C{None} for any valid
        token.
    @param limiter: optional L{FailureLimiter} (see L{requireBasicAuth}).
    """
    return _BearerGuard(resource, Authenticator(checker), permission, "Bearer", realm, limiter)
