"""
Tests for L{suite.cred.ldap}: escaping and configuration as unit tests, the
bind checker against a real slapd (see tests/support/slapd.py).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import treq
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.cred.errors import AuthenticationUnavailable
from suite.cred.interfaces import IPrincipalSource
from suite.cred.ldap import LDAPBindChecker, escapeDNValue, escapeFilterValue, parseLDAPURL
from suite.cred.tokens import READ, Principal
from suite.cred.web import principalOf, requireBasicAuth
from tests.support.process import freePort
from tests.support.slapd import SlapdServer, mintTestCA, pem

TEMPLATE = "uid={username},ou=people,dc=example,dc=org"
GROUP_FILTER = "(&(objectClass=groupOfNames)(cn=operators)(member={dn}))"

# A service account outside ou=people, reachable by DN injection if the user
# name were pasted into the template unescaped ("robot,ou=robots").
ROBOTS_LDIF = """\
dn: ou=robots,ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: robots

dn: uid=robot,ou=robots,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: robot
cn: robot
sn: robot
userPassword: robot-pw

dn: uid=weird\\,name\\+x,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: weird,name+x
cn: weird
sn: weird
userPassword: weird-pw

dn: uid=*,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: *
cn: star
sn: star
userPassword: star-pw
"""


class EscapingTests(SynchronousTestCase):
    """
    RFC 4514 (DN) and RFC 4515 (filter) escaping.
    """

    def test_dnSpecials(self) -> None:
        """
        DN specials are backslash-escaped; plain names are unchanged.
        """
        self.assertEqual(escapeDNValue("alice"), "alice")
        self.assertEqual(escapeDNValue('a,b+c"d\\e<f>g;h=i'), 'a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i')
        self.assertEqual(escapeDNValue("é"), "é")

    def test_dnLeadingTrailing(self) -> None:
        """
        A leading space or #, and a trailing space, are escaped; inner ones not.
        """
        self.assertEqual(escapeDNValue(" #a b# "), "\\ #a b#\\ ")
        self.assertEqual(escapeDNValue("#x"), "\\#x")
        self.assertEqual(escapeDNValue(" "), "\\ ")

    def test_dnControl(self) -> None:
        """
        NUL and control characters are hex-escaped.
        """
        self.assertEqual(escapeDNValue("a\x00b\nc"), "a\\00b\\0ac")

    def test_filter(self) -> None:
        """
        Filter metacharacters and NUL become hex escapes.
        """
        self.assertEqual(escapeFilterValue("*)(uid=*"), "\\2a\\29\\28uid=\\2a")
        self.assertEqual(escapeFilterValue("a\\b\x00"), "a\\5cb\\00")
        self.assertEqual(escapeFilterValue("plain é"), "plain é")

    def test_userDN(self) -> None:
        """
        The user DN is the template with the escaped name.
        """
        checker = LDAPBindChecker("ldap://127.0.0.1", TEMPLATE)
        self.assertEqual(checker.userDN("a,ou=x"), "uid=a\\,ou\\=x,ou=people,dc=example,dc=org")


class ConfigurationTests(SynchronousTestCase):
    """
    Construction-time validation and endpoint strings.
    """

    def test_interfaces(self) -> None:
        """
        The checker provides ICredentialsChecker and IPrincipalSource.
        """
        checker = LDAPBindChecker("ldap://127.0.0.1:389", TEMPLATE, reactor=MemoryReactorClock())
        self.assertTrue(verifyObject(ICredentialsChecker, checker))
        self.assertTrue(verifyObject(IPrincipalSource, checker))
        limited = LDAPBindChecker("ldap://h", TEMPLATE, permissions=["read"])
        self.assertEqual(limited.principalFor("bob"), Principal("bob", [READ]))

    def test_urls(self) -> None:
        """
        ldap:// and ldaps:// URLs split into (secure, host, port) with the
        default ports; other strings are endpoint strings.
        """
        self.assertEqual(parseLDAPURL("ldap://10.0.0.1"), (False, "10.0.0.1", 389))
        self.assertEqual(parseLDAPURL("LDAPS://dir.example:1636/"), (True, "dir.example", 1636))
        self.assertEqual(parseLDAPURL("ldaps://[::1]"), (True, "::1", 636))
        self.assertIsNone(parseLDAPURL("tcp:host=10.0.0.1:port=389"))
        for bad in ["ldap://", "ldap://h:notaport", "ldap://h/dc=x?cn", "ldap://u@h"]:
            self.assertRaises(ValueError, parseLDAPURL, bad)

    def test_endpointString(self) -> None:
        """
        An endpoint string is parsed with the given reactor.
        """
        clock = MemoryReactorClock()
        checker = LDAPBindChecker("tcp:host=127.0.0.1:port=10389", TEMPLATE, reactor=clock)
        d = checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
        self.assertEqual(clock.tcpClients[0][:2], ("127.0.0.1", 10389))
        clock.advance(10)
        self.failureResultOf(d, AuthenticationUnavailable)

    def test_tlsConfig(self) -> None:
        """
        startTLS=True needs a plain ldap:// URL; a bad CA file is named.
        """
        self.assertRaises(ValueError, LDAPBindChecker, "tcp:host=h:port=1", TEMPLATE, startTLS=True)
        self.assertRaises(ValueError, LDAPBindChecker, "ldaps://h", TEMPLATE, startTLS=True)
        missing = self.mktemp()
        e = self.assertRaises(ValueError, LDAPBindChecker, "ldaps://h", TEMPLATE, tlsTrustRoot=missing)
        self.assertIn(missing, str(e))
        empty = self.mktemp()
        with open(empty, "w") as f:
            f.write("nothing here\n")
        e = self.assertRaises(ValueError, LDAPBindChecker, "ldaps://h", TEMPLATE, tlsTrustRoot=empty)
        self.assertIn("no PEM certificate", str(e))

    def test_concurrencyCap(self) -> None:
        """
        With maxConcurrent=1 a second check waits for the first; its own
        timeout still applies while it waits.
        """
        clock = Clock()
        endpoint = NeverConnects()
        checker = LDAPBindChecker(endpoint, TEMPLATE, reactor=clock, timeout=3, maxConcurrent=1)
        first = checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
        clock.advance(1)
        second = checker.requestAvatarId(UsernamePassword(b"bob", b"pw"))
        self.assertEqual(endpoint.attempts, 1)
        clock.advance(2)
        self.failureResultOf(first, AuthenticationUnavailable)
        self.assertEqual(endpoint.attempts, 2)
        clock.advance(1)
        self.failureResultOf(second, AuthenticationUnavailable)
        self.assertEqual(endpoint.attempts, 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_badConfig(self) -> None:
        """
        Missing placeholder, bad filter, bad timeout, bad endpoint, half a
        search account: ValueError saying which.
        """
        e = self.assertRaises(ValueError, LDAPBindChecker, "ldap://h", "uid=%s,dc=x")
        self.assertIn("{username}", str(e))
        e = self.assertRaises(ValueError, LDAPBindChecker, "ldap://h", TEMPLATE, groupFilter="(cn=ops")
        self.assertIn("group filter", str(e))
        self.assertRaises(ValueError, LDAPBindChecker, "ldap://h", TEMPLATE, timeout=0)
        e = self.assertRaises(ValueError, LDAPBindChecker, "bogus:thing", TEMPLATE, reactor=Clock())
        self.assertIn("bogus:thing", str(e))
        self.assertRaises(ValueError, LDAPBindChecker, "ldap://h", TEMPLATE, searchBindDN="cn=x")
        e = self.assertRaises(
            ValueError, LDAPBindChecker, "ldap://h", "uid={username},o=x", groupFilter="(member={dn})"
        )
        self.assertIn("groupBase", str(e))

    def test_groupFilterMustNameTheUser(self) -> None:
        """
        A group filter that does not reference the user ({dn} or
        {username}) would let every user who can bind in: refused, saying
        why and what to write instead.
        """
        for groupFilter in ("(cn=ops)", "(&(objectClass=groupOfNames)(cn=ops))", "(member=dn)"):
            e = self.assertRaises(ValueError, LDAPBindChecker, "ldap://h", TEMPLATE, groupFilter=groupFilter)
            self.assertIn("does not reference the user", str(e))
            self.assertIn("(member={dn})", str(e))
        for groupFilter in ("(member={dn})", "(&(cn=ops)(memberUid={username}))"):
            LDAPBindChecker("ldap://h", TEMPLATE, groupFilter=groupFilter)

    def test_refusedBeforeConnecting(self) -> None:
        """
        Empty password, empty name, oversized input: refused without a
        connection attempt.
        """
        endpoint = NeverConnects()
        checker = LDAPBindChecker(endpoint, TEMPLATE, reactor=Clock())
        for user, password in [(b"alice", b""), (b"", b"pw"), (b"a" * 300, b"pw"), (b"alice", b"\xff")]:
            f = self.failureResultOf(
                checker.requestAvatarId(UsernamePassword(user, password)), UnauthorizedLogin
            )
            self.assertNotIsInstance(f.value, AuthenticationUnavailable)
        self.assertEqual(endpoint.attempts, 0)

    def test_timeout(self) -> None:
        """
        A server that never answers: AuthenticationUnavailable after the
        timeout, and the attempt is cancelled.
        """
        clock = Clock()
        endpoint = NeverConnects()
        checker = LDAPBindChecker(endpoint, TEMPLATE, reactor=clock, timeout=3)
        d = checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
        self.assertNoResult(d)
        clock.advance(3)
        f = self.failureResultOf(d, AuthenticationUnavailable)
        self.assertIn("did not answer within 3s", f.getErrorMessage())
        self.assertTrue(endpoint.cancelled)
        self.assertEqual(clock.getDelayedCalls(), [])


@implementer(IStreamClientEndpoint)
class NeverConnects:
    """
    An endpoint whose connection attempts never complete.
    """

    def __init__(self) -> None:
        self.attempts = 0
        self.cancelled = False

    def connect(self, factory: Any) -> Deferred[Any]:
        self.attempts += 1

        def cancel(d: Deferred[Any]) -> None:
            self.cancelled = True

        return Deferred(cancel)


class LDAPBindCheckerSlapdTests(TestCase):
    """
    The checker against a live slapd on a loopback port.
    """

    async def startServer(self) -> SlapdServer:
        server = SlapdServer(
            self,
            users={"alice": "alice-pw", "bob": "bob-pw"},
            groups={"operators": ["alice"]},
            extraLDIF=ROBOTS_LDIF,
        )
        return await server.start()

    def checker(self, server: SlapdServer, **kw: Any) -> LDAPBindChecker:
        return LDAPBindChecker(server.url, TEMPLATE, reactor=reactor, timeout=10, **kw)

    async def test_rightPassword(self) -> None:
        """
        The right password binds and yields the user name as avatar id.
        """
        server = await self.startServer()
        checker = self.checker(server)
        verifyObject(ICredentialsChecker, checker)
        self.assertEqual(await checker.requestAvatarId(UsernamePassword(b"alice", b"alice-pw")), "alice")
        strCredentials: Any = UsernamePassword("bob", "bob-pw")  # type: ignore[arg-type]
        self.assertEqual(await checker.requestAvatarId(strCredentials), "bob")

    async def test_wrongPassword(self) -> None:
        """
        A wrong password or an unknown user is refused with UnauthorizedLogin
        (not AuthenticationUnavailable).
        """
        server = await self.startServer()
        checker = self.checker(server)
        for user, password in [(b"alice", b"wrong"), (b"alice", b"bob-pw"), (b"nobody", b"xyzzy-pw")]:
            with self.assertRaises(UnauthorizedLogin) as cm:
                await checker.requestAvatarId(UsernamePassword(user, password))
            self.assertNotIsInstance(cm.exception, AuthenticationUnavailable)
            self.assertNotIn(password.decode(), str(cm.exception))

    async def test_emptyPassword(self) -> None:
        """
        The server accepts an unauthenticated bind (DN, empty password); the
        checker still refuses an empty password.
        """
        server = await self.startServer()
        self.assertEqual(await rawBind(server.port, server.userDN("alice"), b""), 0)
        with self.assertRaises(UnauthorizedLogin) as cm:
            await self.checker(server).requestAvatarId(UsernamePassword(b"alice", b""))
        self.assertIn("empty password", str(cm.exception))

    async def test_group(self) -> None:
        """
        With a group filter, a member is accepted and a non-member refused.
        """
        server = await self.startServer()
        checker = self.checker(server, groupFilter=GROUP_FILTER, groupBase="ou=groups,dc=example,dc=org")
        self.assertEqual(await checker.requestAvatarId(UsernamePassword(b"alice", b"alice-pw")), "alice")
        with self.assertRaises(UnauthorizedLogin) as cm:
            await checker.requestAvatarId(UsernamePassword(b"bob", b"bob-pw"))
        self.assertIn("not in a group", str(cm.exception))
        # The filter naming only the group (which used to be suggested)
        # would have let bob in: it matches the group whoever logs in.
        self.assertEqual(
            await rawSearchCount(server.port, "ou=groups,dc=example,dc=org", "(cn=operators)"), 1
        )
        self.assertRaises(ValueError, self.checker, server, groupFilter="(cn=operators)")
        # Without the filter, bob's password is fine.
        self.assertEqual(
            await self.checker(server).requestAvatarId(UsernamePassword(b"bob", b"bob-pw")), "bob"
        )

    async def test_filterInjection(self) -> None:
        """
        The {username} placeholder is filter-escaped: a user literally named
        "*" (whose bind succeeds) does not turn "a group named after me"
        into "any group", which the raw filter would match.
        """
        server = await self.startServer()
        checker = self.checker(server, groupFilter="(&(objectClass=groupOfNames)(cn={username}))")
        self.assertEqual(await self.checker(server).requestAvatarId(UsernamePassword(b"*", b"star-pw")), "*")
        self.assertEqual(await rawSearchCount(server.port, "ou=groups,dc=example,dc=org", "(cn=*)"), 1)
        with self.assertRaises(UnauthorizedLogin):
            await checker.requestAvatarId(UsernamePassword(b"*", b"star-pw"))
        # {username} does match when the value is really there.
        byMember = self.checker(
            server,
            groupFilter="(&(objectClass=groupOfNames)(member=uid={username},ou=people,dc=example,dc=org))",
        )
        self.assertEqual(await byMember.requestAvatarId(UsernamePassword(b"alice", b"alice-pw")), "alice")
        with self.assertRaises(UnauthorizedLogin):
            await byMember.requestAvatarId(UsernamePassword(b"bob", b"bob-pw"))

    async def test_missingGroupBase(self) -> None:
        """
        A group base that does not exist is a server-side problem, reported
        as unavailable with the base named.
        """
        server = await self.startServer()
        checker = self.checker(server, groupFilter=GROUP_FILTER, groupBase="ou=nowhere,dc=example,dc=org")
        with self.assertRaises(AuthenticationUnavailable) as cm:
            await checker.requestAvatarId(UsernamePassword(b"alice", b"alice-pw"))
        self.assertIn("ou=nowhere", str(cm.exception))

    async def test_searchAccount(self) -> None:
        """
        The group search may run as a service account (the root DN here).
        """
        server = await self.startServer()
        checker = self.checker(
            server,
            groupFilter=GROUP_FILTER,
            searchBindDN=server.rootDN,
            searchBindPassword=server.rootPassword,
        )
        self.assertEqual(await checker.requestAvatarId(UsernamePassword(b"alice", b"alice-pw")), "alice")
        bad = self.checker(
            server, groupFilter=GROUP_FILTER, searchBindDN=server.rootDN, searchBindPassword="nope"
        )
        with self.assertRaises(AuthenticationUnavailable) as cm:
            await bad.requestAvatarId(UsernamePassword(b"alice", b"alice-pw"))
        self.assertIn("search account bind failed", str(cm.exception))

    async def test_dnInjection(self) -> None:
        """
        A user name carrying DN syntax cannot reach another entry: the robot
        account (outside ou=people) is refused though its password is right,
        while the same bind made with the raw DN succeeds on the server.
        """
        server = await self.startServer()
        self.assertEqual(
            await rawBind(server.port, "uid=robot,ou=robots,ou=people,dc=example,dc=org", b"robot-pw"), 0
        )
        checker = self.checker(server)
        for user in [b"robot,ou=robots", b"alice,ou=people,dc=example,dc=org", b"alice+cn=alice", b"*"]:
            with self.assertRaises(UnauthorizedLogin):
                await checker.requestAvatarId(UsernamePassword(user, b"robot-pw"))

    async def test_specialCharactersLiteral(self) -> None:
        """
        A real uid containing DN specials binds once escaped.
        """
        server = await self.startServer()
        self.assertEqual(
            await self.checker(server).requestAvatarId(UsernamePassword(b"weird,name+x", b"weird-pw")),
            "weird,name+x",
        )

    async def test_serverDown(self) -> None:
        """
        No server listening: AuthenticationUnavailable naming the endpoint.
        """
        port = freePort()
        checker = LDAPBindChecker(f"ldap://127.0.0.1:{port}", TEMPLATE, reactor=reactor, timeout=5)
        with self.assertRaises(AuthenticationUnavailable) as cm:
            await checker.requestAvatarId(UsernamePassword(b"alice", b"alice-pw"))
        self.assertIn(f"127.0.0.1:{port}", str(cm.exception))
        self.assertIn("unreachable", str(cm.exception))

    async def test_serverStopped(self) -> None:
        """
        A server that was up and is stopped: the next check is unavailable.
        """
        server = await self.startServer()
        checker = self.checker(server)
        self.assertEqual(await checker.requestAvatarId(UsernamePassword(b"alice", b"alice-pw")), "alice")
        await server.stop()
        with self.assertRaises(AuthenticationUnavailable):
            await checker.requestAvatarId(UsernamePassword(b"alice", b"alice-pw"))

    async def test_overHTTP(self) -> None:
        """
        requireBasicAuth with the LDAP checker on a real loopback site: 200
        for a group member, 401 for a wrong password, 503 with slapd down.
        """
        server = await self.startServer()
        checker = self.checker(server, groupFilter=GROUP_FILTER)

        class Hello(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                p = principalOf(request)
                return json.dumps({"user": p.name if p else None}).encode()

        port = reactor.listenTCP(0, Site(requireBasicAuth(Hello(), checker, "ops")), interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/x"  # type: ignore[attr-defined]

        async def get(user: bytes, password: bytes) -> tuple[int, Any]:
            auth = b"Basic " + base64.b64encode(user + b":" + password)
            r = await treq.get(url, headers=Headers({b"Authorization": [auth]}), persistent=False)
            return r.code, json.loads(await r.content())

        self.assertEqual(await get(b"alice", b"alice-pw"), (200, {"user": "alice"}))
        self.assertEqual((await get(b"alice", b"nope"))[0], 401)
        self.assertEqual((await get(b"bob", b"bob-pw"))[0], 401)
        await server.stop()
        self.assertEqual(
            await get(b"alice", b"alice-pw"), (503, {"error": "authentication backend unavailable"})
        )


class LDAPBindCheckerTLSTests(TestCase):
    """
    StartTLS and LDAPS against a live slapd with a test CA.
    """

    async def startServer(self) -> SlapdServer:
        return await SlapdServer(self, users={"alice": "alice-pw"}, tls=True).start()

    def otherCA(self) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(pem(mintTestCA("someone else")[0]))
        return path

    async def test_startTLS(self) -> None:
        """
        StartTLS verified against the right CA binds; against a foreign CA
        the check is unavailable (the password is never sent in clear).
        """
        server = await self.startServer()
        url = f"ldap://localhost:{server.port}"
        good = LDAPBindChecker(
            url, TEMPLATE, reactor=reactor, timeout=10, startTLS=True, tlsTrustRoot=server.caPath
        )
        self.assertEqual(await good.requestAvatarId(UsernamePassword(b"alice", b"alice-pw")), "alice")
        with self.assertRaises(UnauthorizedLogin):
            await good.requestAvatarId(UsernamePassword(b"alice", b"wrong"))
        bad = LDAPBindChecker(
            url, TEMPLATE, reactor=reactor, timeout=10, startTLS=True, tlsTrustRoot=self.otherCA()
        )
        with self.assertRaises(AuthenticationUnavailable) as cm:
            await bad.requestAvatarId(UsernamePassword(b"alice", b"alice-pw"))
        self.assertIn("TLS with LDAP server", str(cm.exception))

    async def test_ldaps(self) -> None:
        """
        ldaps:// with the right CA binds; with a foreign CA, or a host name
        the certificate does not name, it is unavailable.
        """
        server = await self.startServer()
        good = LDAPBindChecker(
            server.ldapsURL, TEMPLATE, reactor=reactor, timeout=10, tlsTrustRoot=server.caPath
        )
        self.assertEqual(await good.requestAvatarId(UsernamePassword(b"alice", b"alice-pw")), "alice")
        foreign = LDAPBindChecker(
            server.ldapsURL, TEMPLATE, reactor=reactor, timeout=10, tlsTrustRoot=self.otherCA()
        )
        with self.assertRaises(AuthenticationUnavailable) as cm:
            await foreign.requestAvatarId(UsernamePassword(b"alice", b"alice-pw"))
        self.assertIn("TLS with LDAP server", str(cm.exception))
        with open(server.caPath, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        endpoint = wrapClientTLS(
            optionsForClientTLS("ldap.example", trustRoot=trust),
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.ldapsPort),
        )
        wrongName = LDAPBindChecker(endpoint, TEMPLATE, reactor=reactor, timeout=10)
        with self.assertRaises(AuthenticationUnavailable) as cm:
            await wrongName.requestAvatarId(UsernamePassword(b"alice", b"alice-pw"))
        self.assertIn("TLS with LDAP server", str(cm.exception))
        self.assertIn("ldap.example", str(cm.exception))


async def rawSearchCount(port: int, base: str, filterText: str) -> int:
    """
    Search anonymously with ldaptor directly and count the entries.
    """
    from ldaptor import ldapfilter
    from ldaptor.protocols import pureldap
    from ldaptor.protocols.ldap.ldapclient import LDAPClient

    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), LDAPClient())
    entries: list[Any] = []
    done: Deferred[None] = Deferred()

    def handler(message: Any) -> bool:
        if isinstance(message, pureldap.LDAPSearchResultEntry):
            entries.append(message)
            return False
        done.callback(None)
        return True

    try:
        client.send_multiResponse(
            pureldap.LDAPSearchRequest(baseObject=base.encode(), filter=ldapfilter.parseFilter(filterText)),
            handler,
        )
        await done
        return len(entries)
    finally:
        client.transport.loseConnection()


async def rawBind(port: int, dn: str, password: bytes) -> int:
    """
    Bind with ldaptor directly (no checker) and return the result code.
    """
    from ldaptor.protocols import pureldap
    from ldaptor.protocols.ldap.ldapclient import LDAPClient

    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), LDAPClient())
    try:
        response = await client.send(pureldap.LDAPBindRequest(dn=dn.encode(), auth=password))
        return int(response.resultCode)
    finally:
        client.transport.loseConnection()
