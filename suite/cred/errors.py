"""
Failures of L{suite.cred} checkers beyond Twisted's own.

A checker refuses bad credentials with
L{twisted.cred.error.UnauthorizedLogin} (whose message says why, for the
log; clients only ever see a generic reason).  When the authentication
backend cannot answer at all it fails with L{AuthenticationUnavailable}, so
an HTTP wrapper can answer 503 instead of 401 and the log says the server is
unreachable rather than the password wrong.
"""

from __future__ import annotations

from twisted.cred.error import LoginFailed

__all__ = ["AuthenticationUnavailable"]


class AuthenticationUnavailable(LoginFailed):
    """
    The authentication backend (e.g. an LDAP server) is unreachable, timed
    out or failed; the credentials were neither accepted nor refused.
    """
