"""
L{suite.web.conditional.etagMatches}: If-None-Match as RFC 9110 reads it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.web.conditional import etagMatches


class EtagMatchesTests(SynchronousTestCase):
    def test_matches(self) -> None:
        """
        The same tag, its weak form, a list holding it, and C{*} match.
        """
        for header in (b'"abc"', b'W/"abc"', b'"x", "abc"', b'"x","abc"', b"*", b'  "abc"  '):
            self.assertTrue(etagMatches(header, b'"abc"'), header)
        self.assertTrue(etagMatches(b'"abc"', b'W/"abc"'))

    def test_noMatch(self) -> None:
        """
        No header, another tag, an unquoted tag or a malformed list match
        nothing.
        """
        for header in (None, b"", b'"x"', b"abc", b'"x" junk, "abc"', b'"ab'):
            self.assertFalse(etagMatches(header, b'"abc"'), header)
