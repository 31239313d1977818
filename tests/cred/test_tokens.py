"""
Tests for L{suite.cred.tokens}: permissions, bearer tokens, the token
checker and the principal realm.
"""

from __future__ import annotations

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.cred.interfaces import IBearerToken, IPrincipal, IPrincipalSource
from suite.cred.tokens import (
    ADMIN,
    ALL_PERMISSIONS,
    MAX_TOKEN_LENGTH,
    READ,
    WRITE,
    BearerToken,
    Permission,
    Principal,
    PrincipalRealm,
    TokenChecker,
    expandPermissions,
    parsePermission,
    parsePermissions,
)
from suite.logging import formatJSON


def makeChecker() -> TokenChecker:
    return TokenChecker(
        {
            "admin": ("admin-secret-0123", ["read", "write", "admin"]),
            "writer": ("writer-secret-4567", [WRITE]),
            "readonly": (b"readonly-secret-89", ["READ"]),
        }
    )


class PermissionTests(SynchronousTestCase):
    """
    The permission ladder: ADMIN implies WRITE implies READ.
    """

    def test_adminImpliesAll(self) -> None:
        """
        ADMIN alone expands to every permission.
        """
        self.assertEqual(expandPermissions([ADMIN]), ALL_PERMISSIONS)

    def test_writeImpliesRead(self) -> None:
        """
        WRITE expands to WRITE and READ, not ADMIN.
        """
        self.assertEqual(expandPermissions([WRITE]), frozenset({READ, WRITE}))

    def test_readIsReadOnly(self) -> None:
        """
        READ expands to itself only; nothing expands to nothing.
        """
        self.assertEqual(expandPermissions([READ]), frozenset({READ}))
        self.assertEqual(expandPermissions([]), frozenset())

    def test_parseNames(self) -> None:
        """
        Names parse case-insensitively; Permission values pass through.
        """
        self.assertIs(parsePermission(" Write "), WRITE)
        self.assertIs(parsePermission(ADMIN), ADMIN)
        self.assertEqual(parsePermissions(["read", "admin"]), ALL_PERMISSIONS)
        self.assertEqual(str(READ), "read")

    def test_parseUnknownNamesTheKey(self) -> None:
        """
        An unknown name fails with a message naming where it came from.
        """
        e = self.assertRaises(
            ValueError, parsePermissions, ["read", "root"], "api.auth.tokens[1].permissions"
        )
        self.assertIn("api.auth.tokens[1].permissions", str(e))
        self.assertIn("'root'", str(e))

    def test_parseNotAList(self) -> None:
        """
        A bare string is not a list of permissions.
        """
        e = self.assertRaises(ValueError, parsePermissions, "admin", "perms")
        self.assertIn("expected a list", str(e))


class PrincipalTests(SynchronousTestCase):
    """
    L{Principal} holds expanded permissions.
    """

    def test_interface(self) -> None:
        """
        A principal provides IPrincipal.
        """
        self.assertTrue(verifyObject(IPrincipal, Principal("p", [READ])))

    def test_allows(self) -> None:
        """
        allows() follows the ladder; None only needs authentication.
        """
        writer = Principal("w", ["write"])
        self.assertTrue(writer.allows(READ))
        self.assertTrue(writer.allows(WRITE))
        self.assertFalse(writer.allows(ADMIN))
        self.assertTrue(Principal("nobody").allows(None))
        self.assertFalse(Principal("nobody").allows(READ))

    def test_equality(self) -> None:
        """
        Principals with the same name and expanded permissions are equal.
        """
        self.assertEqual(Principal("a", [ADMIN]), Principal("a", [READ, WRITE, ADMIN]))
        self.assertNotEqual(Principal("a", [READ]), Principal("a", [WRITE]))
        self.assertIn("admin", repr(Principal("a", [ADMIN])))


class BearerTokenTests(SynchronousTestCase):
    """
    L{BearerToken} credentials keep the token secret.
    """

    def test_interface(self) -> None:
        """
        A BearerToken provides IBearerToken.
        """
        self.assertTrue(verifyObject(IBearerToken, BearerToken("x")))

    def test_neverShown(self) -> None:
        """
        Neither repr, str nor a log line shows the token; reveal() does.
        """
        creds = BearerToken(b"very-secret-value")
        self.assertNotIn("very-secret-value", repr(creds))
        self.assertNotIn("very-secret-value", str(creds.token))
        self.assertNotIn("very-secret-value", f"{creds.token}")
        line = formatJSON({"log_format": "got {t}", "t": creds.token, "log_namespace": "x"})
        self.assertNotIn("very-secret-value", line)
        self.assertEqual(creds.token.reveal(), "very-secret-value")


class TokenCheckerTests(SynchronousTestCase):
    """
    L{TokenChecker} accepts configured tokens and refuses everything else.
    """

    def test_interfaces(self) -> None:
        """
        The checker provides ICredentialsChecker and IPrincipalSource.
        """
        checker = makeChecker()
        self.assertTrue(verifyObject(ICredentialsChecker, checker))
        self.assertTrue(verifyObject(IPrincipalSource, checker))

    def test_rightToken(self) -> None:
        """
        A configured token yields its name as the avatar id.
        """
        checker = makeChecker()
        self.assertEqual(
            self.successResultOf(checker.requestAvatarId(BearerToken("writer-secret-4567"))), "writer"
        )
        self.assertEqual(
            self.successResultOf(checker.requestAvatarId(BearerToken(b"readonly-secret-89"))), "readonly"
        )

    def test_wrongToken(self) -> None:
        """
        An unknown token, a prefix or an extension of a real one is refused.
        """
        checker = makeChecker()
        for token in ["nope", "writer-secret-456", "writer-secret-45678", "WRITER-SECRET-4567"]:
            f = self.failureResultOf(checker.requestAvatarId(BearerToken(token)), UnauthorizedLogin)
            self.assertNotIn(token, f.getErrorMessage())

    def test_missingToken(self) -> None:
        """
        An empty token is refused.
        """
        self.failureResultOf(makeChecker().requestAvatarId(BearerToken("")), UnauthorizedLogin)

    def test_oversizedToken(self) -> None:
        """
        A token longer than the limit is refused without comparison.
        """
        checker = TokenChecker({"big": ("x" * MAX_TOKEN_LENGTH, [READ])})
        self.assertEqual(checker.check("x" * MAX_TOKEN_LENGTH), "big")
        self.assertIsNone(checker.check("x" * (MAX_TOKEN_LENGTH + 1)))

    def test_principals(self) -> None:
        """
        principalFor gives each token's expanded permissions.
        """
        checker = makeChecker()
        self.assertEqual(checker.principalFor("admin").permissions, ALL_PERMISSIONS)
        self.assertEqual(checker.principalFor("writer").permissions, frozenset({READ, WRITE}))
        self.assertEqual(checker.principalFor("readonly").permissions, frozenset({READ}))
        self.assertEqual(checker.principalFor("gone").permissions, frozenset())
        self.assertEqual(checker.authenticate("admin-secret-0123"), Principal("admin", [ADMIN]))
        self.assertIsNone(checker.authenticate("bad"))

    def test_wrongCredentialType(self) -> None:
        """
        Non-bearer credentials are rejected (not silently accepted).
        """
        self.assertRaises(TypeError, makeChecker().requestAvatarId, UsernamePassword(b"a", b"b"))

    def test_configErrors(self) -> None:
        """
        Empty secrets, shared secrets and bad permissions fail naming the
        token ids and never the secret.
        """
        e = self.assertRaises(ValueError, TokenChecker, {"a": ("", [READ])})
        self.assertIn("'a'", str(e))
        e = self.assertRaises(
            ValueError, TokenChecker, {"a": ("same-secret", [READ]), "b": ("same-secret", [READ])}
        )
        self.assertIn("'a'", str(e))
        self.assertIn("'b'", str(e))
        self.assertNotIn("same-secret", str(e))
        e = self.assertRaises(ValueError, TokenChecker, {"c": ("s3", ["superuser"])})
        self.assertIn("token 'c' permissions", str(e))
        self.assertRaises(ValueError, TokenChecker, {"d": "not-a-pair"})

    def test_setTokensIsAtomic(self) -> None:
        """
        A bad reload keeps the old tokens; a good one replaces them.
        """
        checker = makeChecker()
        self.assertRaises(ValueError, checker.setTokens, {"new": ("n", [READ]), "bad": ("", [READ])})
        self.assertEqual(checker.check("admin-secret-0123"), "admin")
        checker.setTokens({"new": ("n", [READ])})
        self.assertIsNone(checker.check("admin-secret-0123"))
        self.assertEqual(checker.check("n"), "new")
        self.assertEqual(checker.names, ["new"])


class PrincipalRealmTests(SynchronousTestCase):
    """
    L{PrincipalRealm} turns avatar ids into principals through a portal.
    """

    def test_interface(self) -> None:
        """
        The realm provides IRealm.
        """
        self.assertTrue(verifyObject(IRealm, PrincipalRealm()))

    def test_portalLogin(self) -> None:
        """
        A portal login yields the checker's principal for the token.
        """
        checker = makeChecker()
        portal = Portal(PrincipalRealm(checker), [checker])
        iface, principal, logout = self.successResultOf(
            portal.login(BearerToken("writer-secret-4567"), None, IPrincipal)
        )
        self.assertIs(iface, IPrincipal)
        self.assertEqual(principal, Principal("writer", [WRITE]))
        self.failureResultOf(portal.login(BearerToken("x"), None, IPrincipal), UnauthorizedLogin)

    def test_fixedPermissions(self) -> None:
        """
        Without a source, every avatar id (bytes too) gets the fixed permissions.
        """
        realm = PrincipalRealm(permissions=[WRITE])
        self.assertEqual(realm.principalFor(b"bob"), Principal("bob", [READ, WRITE]))

    def test_otherInterface(self) -> None:
        """
        Asking the realm for another interface fails.
        """
        self.assertRaises(NotImplementedError, PrincipalRealm().requestAvatar, "a", None, IRealm)

    def test_permissionEnum(self) -> None:
        """
        The three permissions are exactly read, write and admin.
        """
        self.assertEqual({p.value for p in Permission}, {"read", "write", "admin"})


class FromEntriesTests(SynchronousTestCase):
    """
    L{TokenChecker.fromEntries} reads configuration lists.
    """

    def test_entries(self) -> None:
        """
        A spacecomms-style list builds a working checker.
        """
        checker = TokenChecker.fromEntries(
            [
                {"id": "admin", "secret": "a-secret", "permissions": ["read", "write", "admin"]},
                {"id": "readonly", "secret": "r-secret", "permissions": ["read"]},
            ],
            "api.auth.tokens",
        )
        self.assertEqual(checker.authenticate("a-secret"), Principal("admin", [ADMIN]))
        self.assertEqual(checker.authenticate("r-secret"), Principal("readonly", [READ]))

    def test_errorsNameTheKey(self) -> None:
        """
        Each kind of bad entry fails naming the key, index and id.
        """
        cases = [
            ({"id": "x"}, "api.auth.tokens[0].secret: missing or empty for token 'x'"),
            ({"id": "x", "secret": ""}, "api.auth.tokens[0].secret"),
            ({"secret": "s"}, "api.auth.tokens[0].id"),
            ({"id": "x", "secret": "s", "permissions": ["fly"]}, "api.auth.tokens[0].permissions"),
            ("nope", "api.auth.tokens[0]: expected a mapping"),
        ]
        for entry, message in cases:
            e = self.assertRaises(ValueError, TokenChecker.fromEntries, [entry], "api.auth.tokens")
            self.assertIn(message, str(e))
        e = self.assertRaises(
            ValueError,
            TokenChecker.fromEntries,
            [{"id": "x", "secret": "s1"}, {"id": "x", "secret": "s2"}],
            "api.auth.tokens",
        )
        self.assertIn("api.auth.tokens[1].id: duplicate", str(e))
        self.assertRaises(ValueError, TokenChecker.fromEntries, {"id": "x"}, "t")
