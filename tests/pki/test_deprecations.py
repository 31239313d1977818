"""
Building the suite's TLS contexts emits no deprecation warning: keys and
certificates reach pyOpenSSL as cryptography objects, not as its deprecated
C{PKey}/C{X509} wrappers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from suite.pki.mint import mintSelfSigned
from suite.pki.tls import clientContextFactory, publicServerContextFactory, serverContextFactory

from . import helpers


def deprecations(build: Callable[[], Any]) -> list[str]:
    """The deprecation warnings C{build()} emits, as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build()
    return [
        f"{w.filename}:{w.lineno}: {w.message}" for w in caught if issubclass(w.category, DeprecationWarning)
    ]


class NoDeprecatedObjectsTests(SynchronousTestCase):
    def test_mutualServer(self) -> None:
        """The mTLS server context (certificate, chain, key, trust)."""
        self.assertEqual(deprecations(lambda: serverContextFactory(helpers.serverBundle()).getContext()), [])

    def test_mutualClient(self) -> None:
        """The mTLS client context, presenting its certificate."""
        self.assertEqual(
            deprecations(
                lambda: clientContextFactory(helpers.clientBundle(), useClientCert=True).options.getContext()
            ),
            [],
        )

    def test_publicServer(self) -> None:
        """A public listener's context with a certificate chain."""
        cert, key = mintSelfSigned(["a.test"])
        self.assertEqual(
            deprecations(lambda: publicServerContextFactory(cert, key, chain=[cert]).getContext()), []
        )
