"""
Tests for L{suite.cred.web}: the Basic and Bearer wrappers.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import treq
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from suite.cred import web
from suite.cred.basic import StaticPasswordChecker
from suite.cred.errors import AuthenticationUnavailable
from suite.cred.tokens import ADMIN, READ, WRITE, PrincipalRealm, TokenChecker
from suite.cred.web import methodPermissions, principalOf, requireBasicAuth, requireBearer
from suite.logging import formatJSON

ADMIN_TOKEN = "tok-admin-7f3a"
READ_TOKEN = "tok-read-19bc"


class Protected(Resource):
    """
    Answers with the authenticated principal's name; has a child.
    """

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"child", Leaf())

    def render_GET(self, request: Any) -> bytes:
        principal = principalOf(request)
        return b"root:" + (principal.name.encode() if principal else b"-")

    render_POST = render_GET


class Leaf(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"leaf:" + b"/".join(request.postpath)


def tokens() -> TokenChecker:
    return TokenChecker({"admin": (ADMIN_TOKEN, [ADMIN]), "reader": (READ_TOKEN, [READ])})


def request(path: list[bytes], authorization: bytes | None = None, method: bytes = b"GET") -> DummyRequest:
    r = DummyRequest(path)
    r.method = method
    r.path = b"/" + b"/".join(path)  # type: ignore[attr-defined]
    if authorization is not None:
        r.requestHeaders.addRawHeader(b"authorization", authorization)
    return r


def basic(user: bytes, password: bytes) -> bytes:
    return b"Basic " + base64.b64encode(user + b":" + password)


class WrapperTestsMixin:
    """
    Helpers: render a request through a resource tree and capture logs.
    """

    events: list[dict[str, Any]]

    def captureLogs(self) -> None:
        self.events = []
        self.patch(web, "log", Logger(namespace="suite.cred", observer=self.events.append))  # type: ignore[attr-defined, arg-type]

    def render(self, root: Any, req: DummyRequest) -> tuple[int, bytes]:
        req.render(getChildForRequest(root, req))
        self.assertTrue(req.finished)  # type: ignore[attr-defined]
        return req.responseCode or 200, b"".join(req.written)

    def logText(self) -> str:
        return "".join(formatJSON(e) for e in self.events)


class BearerTests(WrapperTestsMixin, SynchronousTestCase):
    """
    L{requireBearer}.
    """

    def setUp(self) -> None:
        self.captureLogs()
        self.root = Resource()
        self.root.putChild(b"api", requireBearer(Protected(), tokens(), WRITE))

    def test_missing(self) -> None:
        """
        No Authorization header: 401 JSON with a Bearer challenge, logged.
        """
        req = request([b"api"])
        code, body = self.render(self.root, req)
        self.assertEqual(code, 401)
        self.assertEqual(json.loads(body), {"error": "missing bearer token"})
        self.assertEqual(req.responseHeaders.getRawHeaders(b"www-authenticate"), [b'Bearer realm="api"'])
        self.assertEqual(
            req.responseHeaders.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"]
        )
        self.assertIn("authentication failed", self.logText())

    def test_wrong(self) -> None:
        """
        A wrong token: 401 invalid_token; the log never holds the token.
        """
        req = request([b"api"], b"Bearer not-the-token-xyz")
        code, body = self.render(self.root, req)
        self.assertEqual(code, 401)
        self.assertEqual(json.loads(body)["error"], "invalid token")
        self.assertIn(
            b'error="invalid_token"', req.responseHeaders.getRawHeaders(b"www-authenticate", [b""])[0]
        )
        self.assertIn("authentication failed", self.logText())
        self.assertNotIn("not-the-token-xyz", self.logText())

    def test_right(self) -> None:
        """
        The admin token reaches the resource and its children; the
        principal is available to them.
        """
        code, body = self.render(self.root, request([b"api"], b"Bearer " + ADMIN_TOKEN.encode()))
        self.assertEqual((code, body), (200, b"root:admin"))
        code, body = self.render(
            self.root, request([b"api", b"child", b"x"], b"bearer " + ADMIN_TOKEN.encode())
        )
        self.assertEqual((code, body), (200, b"leaf:x"))
        self.assertEqual(self.events, [])

    def test_forbidden(self) -> None:
        """
        A valid token without the permission: 403, logged with its name.
        """
        req = request([b"api"], b"Bearer " + READ_TOKEN.encode())
        code, body = self.render(self.root, req)
        self.assertEqual(code, 403)
        self.assertEqual(json.loads(body), {"error": "permission write required"})
        self.assertIn(b"insufficient_scope", req.responseHeaders.getRawHeaders(b"www-authenticate", [b""])[0])
        text = self.logText()
        self.assertIn("permission denied", text)
        self.assertIn("reader", text)
        self.assertNotIn(READ_TOKEN, text)

    def test_malformed(self) -> None:
        """
        Other schemes, empty, oversized and space-containing tokens: 401.
        """
        for header in [
            b"Basic " + base64.b64encode(b"a:b"),
            b"Bearer",
            b"Bearer a b",
            b"Bearer " + b"x" * 5000,
            b"Bearer " + b"y" * 9000,
        ]:
            code, body = self.render(self.root, request([b"api"], header))
            self.assertEqual(code, 401, header[:20])
            self.assertIn("error", json.loads(body))

    def test_methodPermissions(self) -> None:
        """
        A per-method rule lets readers GET but not POST.
        """
        root = requireBearer(Protected(), tokens(), methodPermissions({b"GET": READ}, default=WRITE))
        code, _ = self.render(root, request([], b"Bearer " + READ_TOKEN.encode()))
        self.assertEqual(code, 200)
        code, _ = self.render(root, request([], b"Bearer " + READ_TOKEN.encode(), method=b"POST"))
        self.assertEqual(code, 403)
        code, _ = self.render(root, request([], b"Bearer " + ADMIN_TOKEN.encode(), method=b"POST"))
        self.assertEqual(code, 200)

    def test_anyValidToken(self) -> None:
        """
        permission=None admits any valid token.
        """
        root = requireBearer(Protected(), tokens(), None)
        self.assertEqual(self.render(root, request([], b"Bearer " + READ_TOKEN.encode()))[0], 200)

    def test_synchronousAccept(self) -> None:
        """
        A token checker that accepts answers without a Deferred: the
        wrapped resource itself comes back from traversal, with the
        principal set; wrong, forbidden and unicode-space tokens still go
        their ways.
        """
        guard = requireBearer(Protected(), tokens(), WRITE)
        req = request([b"api"], b"Bearer " + ADMIN_TOKEN.encode())
        req.prepath = [b"api"]
        req.postpath = []
        self.assertIsInstance(guard.getChildWithDefault(b"api", req), Protected)
        principal = principalOf(req)  # type: ignore[arg-type]
        assert principal is not None
        self.assertEqual(principal.name, "admin")
        for header, code in [
            (b"Bearer not-the-token-xyz", 401),
            (b"Bearer " + READ_TOKEN.encode(), 403),
            (b"Bearer " + ADMIN_TOKEN.encode() + b"\xa0x", 401),
        ]:
            self.assertEqual(self.render(self.root, request([b"api"], header))[0], code, header)

    def test_authenticateNow(self) -> None:
        """
        L{web.Authenticator.authenticateNow} gives the principal of a
        synchronous acceptance and C{None} where the general path decides:
        refusals, checkers without C{avatarIdNow}, portals, credentials no
        checker takes.
        """
        from suite.cred.tokens import BearerToken

        auth = web.Authenticator(tokens())
        self.assertEqual(auth.authenticateNow(BearerToken(ADMIN_TOKEN)).name, "admin")  # type: ignore[union-attr]
        self.assertIsNone(auth.authenticateNow(BearerToken("nope-not-a-token")))
        self.assertIsNone(web.Authenticator([FixedChecker("alice")]).authenticateNow(_userPassword()))
        realm = PrincipalRealm(tokens())
        portal = Portal(realm, [tokens()])
        self.assertIsNone(web.Authenticator(portal).authenticateNow(BearerToken(ADMIN_TOKEN)))
        self.assertIsNone(auth.authenticateNow(_userPassword()))

    def test_putChildRefused(self) -> None:
        """
        Children go on the wrapped resource, not the wrapper.
        """
        guard = requireBearer(Protected(), tokens())
        self.assertRaises(NotImplementedError, guard.putChild, b"x", Resource())


def _userPassword() -> Any:
    from twisted.cred.credentials import UsernamePassword

    return UsernamePassword(b"alice", b"pw")


@implementer(ICredentialsChecker)
class FixedChecker:
    """
    A checker answering with a fixed result, counting calls.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls = 0

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        self.calls += 1
        if isinstance(self.result, Exception):
            return fail(self.result)
        if isinstance(self.result, Deferred):
            return self.result
        return succeed(self.result)


class BasicTests(WrapperTestsMixin, SynchronousTestCase):
    """
    L{requireBasicAuth}.
    """

    def setUp(self) -> None:
        self.captureLogs()
        self.checker = StaticPasswordChecker({"ops": "pa:ss"})

    def test_missing(self) -> None:
        """
        No credentials: 401 with a Basic challenge naming the realm.
        """
        req = request([])
        code, body = self.render(requireBasicAuth(Protected(), self.checker, "specter"), req)
        self.assertEqual(code, 401)
        self.assertEqual(
            req.responseHeaders.getRawHeaders(b"www-authenticate"),
            [b'Basic realm="specter", charset="UTF-8"'],
        )
        self.assertEqual(json.loads(body), {"error": "missing credentials"})

    def test_right(self) -> None:
        """
        The right user and password (which may contain a colon) get through.
        """
        guard = requireBasicAuth(Protected(), self.checker, "specter")
        self.assertEqual(self.render(guard, request([], basic(b"ops", b"pa:ss"))), (200, b"root:ops"))

    def test_wrong(self) -> None:
        """
        A wrong password: 401, logged with the user name, never the password.
        """
        guard = requireBasicAuth(Protected(), self.checker, "specter")
        code, body = self.render(guard, request([], basic(b"ops", b"hunter2-guess")))
        self.assertEqual(code, 401)
        self.assertEqual(json.loads(body), {"error": "invalid user name or password"})
        text = self.logText()
        self.assertIn("authentication failed", text)
        self.assertIn("ops", text)
        self.assertNotIn("hunter2-guess", text)

    def test_malformed(self) -> None:
        """
        Bad base64, no colon, empty password, other schemes: 401.
        """
        guard = requireBasicAuth(Protected(), self.checker)
        for header in [
            b"Basic !!!",
            b"Basic " + base64.b64encode(b"nocolon"),
            basic(b"ops", b""),
            b"Bearer x",
        ]:
            self.assertEqual(self.render(guard, request([], header))[0], 401, header)

    def test_logInjection(self) -> None:
        """
        Control characters in a user name do not reach the log as such.
        """
        guard = requireBasicAuth(Protected(), self.checker)
        self.render(guard, request([], basic(b"ops\nlevel=critical", b"x")))
        self.assertNotIn("\n", self.events[0]["principal"])

    def test_checkersInOrder(self) -> None:
        """
        With several checkers, the first that accepts wins; a refusal moves on.
        """
        first = FixedChecker(UnauthorizedLogin("no"))
        second = FixedChecker("second-user")
        guard = requireBasicAuth(Protected(), [first, second])
        self.assertEqual(self.render(guard, request([], basic(b"u", b"p"))), (200, b"root:second-user"))
        self.assertEqual((first.calls, second.calls), (1, 1))

    def test_unavailable(self) -> None:
        """
        A backend that cannot answer gives 503, not 401, and is logged.
        """
        guard = requireBasicAuth(
            Protected(),
            [FixedChecker(UnauthorizedLogin("no")), FixedChecker(AuthenticationUnavailable("LDAP down"))],
        )
        code, body = self.render(guard, request([], basic(b"u", b"p")))
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body), {"error": "authentication backend unavailable"})
        self.assertIn("LDAP down", self.logText())

    def test_checkerCrash(self) -> None:
        """
        A checker raising something unexpected gives a 500, logged.
        """
        guard = requireBasicAuth(Protected(), FixedChecker(RuntimeError("boom")))
        code, _ = self.render(guard, request([], basic(b"u", b"p")))
        self.assertEqual(code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 0)
        self.assertIn("boom", self.logText())

    def test_clientGoneDuringCheck(self) -> None:
        """
        A client that disconnects while its check is pending cancels the
        check, and nothing is rendered to it afterwards.
        """
        cancelled: list[bool] = []
        pending: Deferred[Any] = Deferred(lambda d: cancelled.append(True))
        guard = requireBasicAuth(Protected(), FixedChecker(pending))
        req = request([], basic(b"u", b"p"))
        req.render(getChildForRequest(guard, req))
        self.assertEqual(req.written, [])
        req.processingFailed(Failure(ConnectionLost()))
        self.assertEqual(cancelled, [True])
        self.assertEqual(req.written, [])
        self.assertFalse(req.finished)
        self.assertIn("went away", self.logText())

    def test_portal(self) -> None:
        """
        A portal whose realm answers IPrincipal works, with a permission.
        """
        portal = Portal(PrincipalRealm(permissions=[READ]), [self.checker])
        guard = requireBasicAuth(Protected(), portal, permission=READ)
        self.assertEqual(self.render(guard, request([], basic(b"ops", b"pa:ss"))), (200, b"root:ops"))
        guard = requireBasicAuth(Protected(), portal, permission=ADMIN)
        self.assertEqual(self.render(guard, request([], basic(b"ops", b"pa:ss")))[0], 403)

    def test_noCheckers(self) -> None:
        """
        An empty checker list is a configuration error.
        """
        self.assertRaises(ValueError, requireBasicAuth, Protected(), [])


class LoopbackTests(TestCase):
    """
    The Bearer wrapper behind a real Site on a loopback port.
    """

    async def test_bearerOverHTTP(self) -> None:
        """
        Real requests: 401 without a token, 403 for a reader on POST, 200
        for the admin, with JSON bodies and the challenge header.
        """
        root = Resource()
        root.putChild(
            b"api", requireBearer(Protected(), tokens(), methodPermissions({b"GET": READ}, default=WRITE))
        )
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}/api/child/deep"  # type: ignore[attr-defined]

        async def call(method: str, token: str | None) -> tuple[int, bytes, Any]:
            headers = Headers()
            if token is not None:
                headers.addRawHeader(b"Authorization", b"Bearer " + token.encode())
            r = await treq.request(method, base, headers=headers, persistent=False)
            return r.code, await r.content(), r.headers

        code, body, headers = await call("GET", None)
        self.assertEqual((code, json.loads(body)), (401, {"error": "missing bearer token"}))
        self.assertEqual(headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="api"'])
        code, body, _ = await call("POST", READ_TOKEN)
        self.assertEqual((code, json.loads(body)), (403, {"error": "permission write required"}))
        code, body, _ = await call("GET", READ_TOKEN)
        self.assertEqual((code, body), (200, b"leaf:deep"))
        code, body, _ = await call("GET", "wrong")
        self.assertEqual(code, 401)
