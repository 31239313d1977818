"""
Tests for L{suite.cred.basic.StaticPasswordChecker}.
"""

from __future__ import annotations

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.cred.basic import MAX_PASSWORD_LENGTH, StaticPasswordChecker
from suite.cred.interfaces import IPrincipalSource
from suite.cred.tokens import ALL_PERMISSIONS, READ, BearerToken
from suite.logging import Secret


class StaticPasswordCheckerTests(SynchronousTestCase):
    """
    Static user/password checking.
    """

    def setUp(self) -> None:
        self.checker = StaticPasswordChecker({"ops": "s3cret", "émile": b"p\xc3\xa4ss"})

    def test_interfaces(self) -> None:
        """
        The checker provides ICredentialsChecker and IPrincipalSource.
        """
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))
        self.assertTrue(verifyObject(IPrincipalSource, self.checker))

    def test_right(self) -> None:
        """
        The right password (bytes or str, UTF-8) yields the user name.
        """
        self.assertEqual(
            self.successResultOf(self.checker.requestAvatarId(UsernamePassword(b"ops", b"s3cret"))), "ops"
        )
        self.assertEqual(
            self.successResultOf(
                self.checker.requestAvatarId(UsernamePassword("émile".encode(), "päss".encode()))
            ),
            "émile",
        )

    def test_wrongPassword(self) -> None:
        """
        A wrong password, another user's password and case changes are refused.
        """
        for user, password in [
            (b"ops", b"s3cre"),
            (b"ops", b"S3CRET"),
            (b"OPS", b"s3cret"),
            (b"ops", "päss".encode()),
        ]:
            self.failureResultOf(
                self.checker.requestAvatarId(UsernamePassword(user, password)), UnauthorizedLogin
            )

    def test_unknownUser(self) -> None:
        """
        An unknown user is refused with the same message as a wrong password.
        """
        unknown = self.failureResultOf(
            self.checker.requestAvatarId(UsernamePassword(b"x", b"s3cret")), UnauthorizedLogin
        )
        wrong = self.failureResultOf(
            self.checker.requestAvatarId(UsernamePassword(b"ops", b"x")), UnauthorizedLogin
        )
        self.assertEqual(unknown.getErrorMessage(), wrong.getErrorMessage())

    def test_emptyPassword(self) -> None:
        """
        An empty password is refused, and cannot be configured.
        """
        self.failureResultOf(self.checker.requestAvatarId(UsernamePassword(b"ops", b"")), UnauthorizedLogin)
        e = self.assertRaises(ValueError, StaticPasswordChecker, {"ops": ""})
        self.assertIn("'ops'", str(e))
        self.assertRaises(ValueError, StaticPasswordChecker, {"": "x"})

    def test_badInput(self) -> None:
        """
        Invalid UTF-8 and oversized passwords are refused.
        """
        self.failureResultOf(
            self.checker.requestAvatarId(UsernamePassword(b"ops\xff", b"x")), UnauthorizedLogin
        )
        self.failureResultOf(
            self.checker.requestAvatarId(UsernamePassword(b"ops", b"x" * (MAX_PASSWORD_LENGTH + 1))),
            UnauthorizedLogin,
        )

    def test_secretPasswordsWork(self) -> None:
        """
        A password configured as a Secret is compared by its real value.
        """
        checker = StaticPasswordChecker({"ops": Secret("hidden")})
        self.assertEqual(
            self.successResultOf(checker.requestAvatarId(UsernamePassword(b"ops", b"hidden"))), "ops"
        )
        self.failureResultOf(checker.requestAvatarId(UsernamePassword(b"ops", b"***")), UnauthorizedLogin)

    def test_permissions(self) -> None:
        """
        Users get all permissions by default, or the configured ones.
        """
        self.assertEqual(self.checker.principalFor("ops").permissions, ALL_PERMISSIONS)
        limited = StaticPasswordChecker({"ops": "x"}, permissions=[READ])
        self.assertEqual(limited.principalFor("ops").permissions, frozenset({READ}))

    def test_wrongCredentialType(self) -> None:
        """
        Bearer tokens are not user/password credentials.
        """
        self.assertRaises(TypeError, self.checker.requestAvatarId, BearerToken("x"))
