"""
LDAP simple-bind authentication through ldaptor.

    checker = LDAPBindChecker(
        "ldap://127.0.0.1:389",
        "uid={username},ou=people,dc=example,dc=org",
        groupFilter="(&(objectClass=groupOfNames)(cn=operators)(member={dn}))",
        groupBase="ou=groups,dc=example,dc=org",
        reactor=reactor,
    )

One check is one connection: optionally StartTLS, a simple bind *as the
user* (DN from C{bindDNTemplate}, the user name escaped per RFC 4514), then
optionally a search under C{groupBase} with C{groupFilter} (values escaped
per RFC 4515; C{{dn}} is the user's DN, C{{username}} the user name) that
must return at least one entry, then unbind.

Refusals (L{twisted.cred.error.UnauthorizedLogin}): empty password (an LDAP
"unauthenticated bind" with an empty password succeeds on many servers and
must never count as a login), empty or oversized user name, wrong password,
unknown user, not in the group.  When the server cannot be reached, times out
(C{timeout} seconds for the whole check) or fails, the check fails with
L{suite.cred.errors.AuthenticationUnavailable} naming the endpoint and cause.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, TimeoutError, fail
from twisted.internet.endpoints import HostnameEndpoint, clientFromString, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.cred.basic import MAX_PASSWORD_LENGTH, MAX_USERNAME_LENGTH, asText
from suite.cred.errors import AuthenticationUnavailable
from suite.cred.interfaces import IPrincipal, IPrincipalSource
from suite.cred.tokens import ALL_PERMISSIONS, Permission, Principal, parsePermissions
from suite.logging import Secret

__all__ = [
    "LDAPBindChecker",
    "escapeDNValue",
    "escapeFilterValue",
    "parseLDAPURL",
    "MAX_RESPONSE_BYTES",
]

log = Logger(namespace="suite.cred.ldap")

#: A connection to the LDAP server is dropped once it buffers this much.
MAX_RESPONSE_BYTES = 1024 * 1024

# Result codes (RFC 4511 section 4.1.9).
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_REFUSING = {
    32: "no such object",
    34: "invalid DN syntax",
    48: "inappropriate authentication",
    49: "invalid credentials",
    50: "insufficient access rights",
    53: "unwilling to perform",
}


def escapeDNValue(value: str) -> str:
    """
    Escape an attribute value for use inside a DN (RFC 4514 section 2.4):
    the specials C{" + , ; < > \\} and C{=} are backslash-escaped, as are a
    leading space or C{#} and a trailing space; control characters and NUL
    are hex-escaped.
    """
    out: list[str] = []
    last = len(value) - 1
    for i, c in enumerate(value):
        if c in '"+,;<>\\=':
            out.append("\\" + c)
        elif (i == 0 and c in " #") or (i == last and c == " "):
            out.append("\\" + c)
        elif ord(c) < 0x20 or c == "\x7f":
            out.append("".join(f"\\{b:02x}" for b in c.encode("utf-8")))
        else:
            out.append(c)
    return "".join(out)


def escapeFilterValue(value: str) -> str:
    """
    Escape an assertion value for use inside a search filter (RFC 4515
    section 3): C{* ( ) \\} and NUL (and other control characters) become
    C{\\XX} hex escapes.
    """
    out: list[str] = []
    for c in value:
        if c in "*()\\" or ord(c) < 0x20 or c == "\x7f":
            out.append("".join(f"\\{b:02x}" for b in c.encode("utf-8")))
        else:
            out.append(c)
    return "".join(out)


def parseLDAPURL(url: str) -> tuple[bool, str, int] | None:
    """
    Split C{ldap://host[:port]} / C{ldaps://host[:port]} into (secure, host,
    port), default ports 389 and 636; C{None} for a string that is not an
    LDAP URL (an endpoint string, e.g. C{tcp:host=...:port=...}).

    @raise ValueError: for a malformed LDAP URL.
    """
    if not re.match(r"(?i)ldaps?://", url):
        return None
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ValueError(f"LDAP URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"LDAP URL {url!r} has a bad port") from None
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(f"LDAP URL {url!r}: only ldap[s]://host[:port] is supported")
    secure = parts.scheme.lower() == "ldaps"
    return secure, host, port or (636 if secure else 389)


def _dnSuffix(template: str) -> str:
    """
    The trailing run of C{dc=} components of a DN template, or "".
    """
    parts = [p.strip() for p in re.split(r"(?<!\\),", template)]
    tail: list[str] = []
    for part in reversed(parts):
        if part.lower().startswith("dc="):
            tail.insert(0, part)
        else:
            break
    return ",".join(tail)


def _loadTrustRoot(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"LDAP CA file {path}: {e.strerror or e}") from None
    certificates = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.DOTALL)
    if not certificates:
        raise ValueError(f"LDAP CA file {path}: no PEM certificate found")
    try:
        loaded = [Certificate.loadPEM(pem) for pem in certificates]
    except Exception as e:  # configuration error naming the file
        raise ValueError(f"LDAP CA file {path}: unreadable certificate: {e}") from None
    return trustRootFromCertificates(loaded)


def _parseFilter(text: str) -> Any:
    from ldaptor import ldapfilter

    try:
        return ldapfilter.parseFilter(text)
    except Exception as e:  # configuration error naming the filter
        raise ValueError(f"group filter {text!r} is not a valid LDAP filter: {e}") from None


def _makeClient() -> Any:
    # Imported here: ldaptor's client module imports the global reactor.
    from ldaptor.protocols.ldap.ldapclient import LDAPClient

    # ldaptor ships no types: its LDAPClient is Any to mypy.
    class _BoundedLDAPClient(LDAPClient):  # type: ignore[misc]
        def dataReceived(self, data: bytes) -> None:
            if len(self.buffer) + len(data) > MAX_RESPONSE_BYTES:
                self.transport.abortConnection()
                return
            super().dataReceived(data)

    return _BoundedLDAPClient()


@implementer(ICredentialsChecker, IPrincipalSource)
class LDAPBindChecker:
    """
    Check L{IUsernamePassword} by binding to an LDAP server as the user.

    @param endpoint: C{ldap://host[:port]}, C{ldaps://host[:port]} (the
        server's certificate is verified against C{host}), a client endpoint
        string, or an L{IStreamClientEndpoint}.
    @param bindDNTemplate: the user's DN with C{{username}} where the
        (escaped) user name goes, e.g. C{uid={username},ou=people,dc=x}.
    @param groupFilter: optional filter the user must match a group with;
        it must reference the user through C{{dn}} or C{{username}}, which
        are replaced by escaped values (a filter naming only the group,
        such as C{(cn=ops)}, would let every user in and is refused).
    @param groupBase: where to search for groups (default: the C{dc=}
        suffix of C{bindDNTemplate}).
    @param reactor: the reactor (C{None}: the global one, looked up at first
        use; daemons pass theirs).
    @param timeout: seconds allowed for one whole check.
    @param startTLS: issue StartTLS before binding: C{True} (with an
        C{ldap://} URL: verify the server against the URL's host and
        C{tlsTrustRoot}), or an C{IOpenSSLClientConnectionCreator} (e.g.
        from L{twisted.internet.ssl.optionsForClientTLS} or
        L{suite.pki.tls.clientContextFactory}); C{None} for none.
    @param tlsTrustRoot: a PEM file of CA certificates trusted for
        C{ldaps://} and C{startTLS=True} (default: the platform's trust
        store).
    @param searchBindDN: optional account to bind as for the group search
        (when users may not read groups); C{searchBindPassword} its password.
    @param permissions: granted to every user this checker accepts.
    @param maxConcurrent: checks running at once (one connection each);
        more wait their turn, within their C{timeout}.

    @raise ValueError: a template without C{{username}}, an invalid filter
        or one that does not reference the user,
        a malformed URL or endpoint string, a bad timeout.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        endpoint: str | IStreamClientEndpoint,
        bindDNTemplate: str,
        groupFilter: str | None = None,
        groupBase: str | None = None,
        reactor: Any = None,
        timeout: float = 10.0,
        startTLS: Any = None,
        searchBindDN: str | None = None,
        searchBindPassword: str | None = None,
        permissions: Iterable[Permission | str] = ALL_PERMISSIONS,
        maxConcurrent: int = 16,
        tlsTrustRoot: str | None = None,
    ) -> None:
        if "{username}" not in bindDNTemplate:
            raise ValueError(f"bind DN template {bindDNTemplate!r} must contain {{username}}")
        if not timeout or timeout <= 0:
            raise ValueError(f"LDAP timeout must be positive, got {timeout!r}")
        if maxConcurrent < 1:
            raise ValueError(f"maxConcurrent must be at least 1, got {maxConcurrent!r}")
        self._semaphore = DeferredSemaphore(maxConcurrent)
        self._template = bindDNTemplate
        self._timeout = float(timeout)
        self._reactor = reactor
        self._permissions = parsePermissions(list(permissions))
        if (searchBindDN is None) != (searchBindPassword is None) or searchBindPassword == "":
            raise ValueError("searchBindDN and a non-empty searchBindPassword go together")
        self._searchBind = None if searchBindDN is None else (searchBindDN, Secret(searchBindPassword or ""))
        self._groupFilter = groupFilter
        if groupFilter is not None:
            if "{dn}" not in groupFilter and "{username}" not in groupFilter:
                # "(cn=ops)" matches the group whoever logs in: every user
                # who can bind would pass.  Refuse it rather than guess.
                raise ValueError(
                    f"group filter {groupFilter!r} does not reference the user ({{dn}} or {{username}}), "
                    "so every user who can bind would pass; use e.g. "
                    "(&(objectClass=groupOfNames)(cn=ops)(member={dn}))"
                )
            _parseFilter(self._fillFilter("probe", "uid=probe,dc=example"))
            if groupBase is None:
                groupBase = _dnSuffix(bindDNTemplate)
                if not groupBase:
                    raise ValueError("groupBase is required: the bind DN template has no dc= suffix")
        self._groupBase = groupBase
        self._trustRoot = _loadTrustRoot(tlsTrustRoot) if tlsTrustRoot else None
        self._endpoint: IStreamClientEndpoint | None = None
        self._url: tuple[bool, str, int] | None = None
        self._endpointString: str | None = None
        if isinstance(endpoint, str):
            self._url = parseLDAPURL(endpoint)
            if self._url is None:
                self._endpointString = endpoint
            self._description = endpoint
            if reactor is not None:
                self._endpoint = self._buildEndpoint(reactor)
        else:
            self._description = f"<{type(endpoint).__name__}>"
            self._endpoint = IStreamClientEndpoint(endpoint)
        if startTLS is True:
            if self._url is None:
                raise ValueError("startTLS=True needs an ldap://host URL (or pass TLS options)")
            if self._url[0]:
                raise ValueError("startTLS with an ldaps:// URL: the connection is TLS already")
            self._startTLS = self._tlsOptions(self._url[1])
        elif startTLS is False or startTLS is None:
            self._startTLS = None
        else:
            self._startTLS = startTLS

    def __repr__(self) -> str:
        return f"<LDAPBindChecker {self._description} {self._template!r}>"

    def _tlsOptions(self, host: str) -> Any:
        return optionsForClientTLS(host, trustRoot=self._trustRoot)

    def _buildEndpoint(self, reactor: Any) -> IStreamClientEndpoint:
        if self._url is not None:
            secure, host, port = self._url
            plain = HostnameEndpoint(reactor, host, port, timeout=self._timeout)
            if secure:
                return wrapClientTLS(self._tlsOptions(host), plain)
            return plain
        assert self._endpointString is not None
        try:
            endpoint: IStreamClientEndpoint = clientFromString(reactor, self._endpointString)
            return endpoint
        except Exception as e:  # configuration error naming the endpoint
            raise ValueError(f"LDAP endpoint {self._endpointString!r}: {e}") from None

    def _getReactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor as globalReactor

            self._reactor = globalReactor
        return self._reactor

    def _getEndpoint(self) -> IStreamClientEndpoint:
        if self._endpoint is None:
            self._endpoint = self._buildEndpoint(self._getReactor())
        return self._endpoint

    def _fillFilter(self, username: str, dn: str) -> str:
        assert self._groupFilter is not None
        return self._groupFilter.replace("{dn}", escapeFilterValue(dn)).replace(
            "{username}", escapeFilterValue(username)
        )

    def userDN(self, username: str) -> str:
        """
        The DN a user binds as: the template with the escaped user name.
        """
        return self._template.replace("{username}", escapeDNValue(username))

    # ICredentialsChecker

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        creds = IUsernamePassword(credentials)
        try:
            username = asText(creds.username)
            password = asText(creds.password)
        except UnicodeDecodeError:
            return fail(UnauthorizedLogin("user name or password is not valid UTF-8"))
        if not username:
            return fail(UnauthorizedLogin("empty user name"))
        if not password:
            # Never send: an empty password is an "unauthenticated bind".
            return fail(UnauthorizedLogin("empty password"))
        if len(username) > MAX_USERNAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
            return fail(UnauthorizedLogin("user name or password too long"))
        try:
            endpoint = self._getEndpoint()
        except ValueError as e:
            return fail(AuthenticationUnavailable(str(e)))
        d = self._semaphore.run(lambda: Deferred.fromCoroutine(self._check(endpoint, username, password)))
        d.addTimeout(self._timeout, self._getReactor())
        d.addErrback(self._translate, username)
        return d

    def principalFor(self, avatarId: str) -> IPrincipal:
        return Principal(avatarId, self._permissions)

    # The check

    def _translate(self, failure: Failure, username: str) -> Failure:
        if failure.check(UnauthorizedLogin, AuthenticationUnavailable):
            return failure
        if failure.check(TimeoutError, CancelledError):
            reason = f"LDAP server {self._description} did not answer within {self._timeout:g}s"
        elif _isTLSFailure(failure):
            reason = f"TLS with LDAP server {self._description} failed: {_tlsCause(failure)}"
        else:
            cause = failure.getErrorMessage() or getattr(failure.type, "__name__", "error")
            reason = f"LDAP server {self._description} unreachable: {cause}"
        log.warn("{reason}", reason=reason, user=username)
        return Failure(AuthenticationUnavailable(reason))

    async def _check(self, endpoint: IStreamClientEndpoint, username: str, password: str) -> str:
        from ldaptor.protocols import pureldap

        client = await connectProtocol(endpoint, _makeClient())
        try:
            if self._startTLS is not None:
                response = await client.send(pureldap.LDAPStartTLSRequest())
                if response.resultCode != _SUCCESS:
                    raise AuthenticationUnavailable(
                        f"LDAP server {self._description} refused StartTLS "
                        f"(result {response.resultCode}: {_message(response)})"
                    )
                client.transport.startTLS(self._startTLS)
            dn = self.userDN(username)
            response = await client.send(
                pureldap.LDAPBindRequest(dn=dn.encode("utf-8"), auth=password.encode("utf-8"))
            )
            code = response.resultCode
            if code != _SUCCESS:
                if code in _REFUSING:
                    raise UnauthorizedLogin(f"LDAP bind as {dn!r} refused: {_REFUSING[code]}")
                raise AuthenticationUnavailable(
                    f"LDAP server {self._description} failed the bind (result {code}: {_message(response)})"
                )
            if self._groupFilter is not None:
                if self._searchBind is not None:
                    sdn, spw = self._searchBind
                    response = await client.send(
                        pureldap.LDAPBindRequest(dn=sdn.encode("utf-8"), auth=spw.reveal().encode("utf-8"))
                    )
                    if response.resultCode != _SUCCESS:
                        raise AuthenticationUnavailable(
                            f"LDAP search account bind failed (result {response.resultCode}: {_message(response)})"
                        )
                if not await self._inGroup(client, username, dn):
                    raise UnauthorizedLogin(f"user {username!r} is not in a group matching the group filter")
            if client.connected:
                client.send_noResponse(pureldap.LDAPUnbindRequest())
            return username
        finally:
            client.transport.loseConnection()

    async def _inGroup(self, client: Any, username: str, dn: str) -> bool:
        from ldaptor.protocols import pureldap

        request = pureldap.LDAPSearchRequest(
            baseObject=(self._groupBase or "").encode("utf-8"),
            scope=pureldap.LDAP_SCOPE_wholeSubtree,
            derefAliases=pureldap.LDAP_DEREF_neverDerefAliases,
            sizeLimit=1,
            timeLimit=max(1, int(self._timeout)),
            typesOnly=1,
            filter=_parseFilter(self._fillFilter(username, dn)),
            attributes=[b"1.1"],
        )
        done: Deferred[Any] = Deferred()
        entries: list[Any] = []

        def handler(message: Any) -> bool:
            if isinstance(message, pureldap.LDAPSearchResultEntry):
                entries.append(message.objectName)
                return False
            if isinstance(message, pureldap.LDAPSearchResultDone):
                done.callback(message)
                return True
            return False

        sent = client.send_multiResponse(request, handler)
        # Connection loss errbacks ldaptor's own Deferred; forward it.
        sent.addErrback(lambda f: None if done.called else done.errback(f))
        result = await done
        code = result.resultCode
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            raise AuthenticationUnavailable(
                f"LDAP group search under {self._groupBase!r} failed (result {code}: {_message(result)})"
            )
        return bool(entries)


def _isTLSFailure(failure: Failure) -> bool:
    from OpenSSL.SSL import Error as SSLError
    from service_identity import VerificationError

    return bool(failure.check(SSLError, VerificationError))


def _tlsCause(failure: Failure) -> str:
    value = failure.value
    errors = getattr(value, "errors", None)
    if isinstance(errors, list) and errors:
        parts = []
        for e in errors:
            if isinstance(e, tuple):
                parts.append(str(e[-1]))
            else:
                parts.append(str(e))
        return "; ".join(parts)
    return failure.getErrorMessage()


def _message(response: Any) -> str:
    message = getattr(response, "errorMessage", b"") or b""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return message or "no message"
