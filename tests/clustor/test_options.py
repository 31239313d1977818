"""
Options of C{clustor-cp}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.clustor.options import DEFAULT_LISTEN, Options
from suite.daemon import ConfigError


def parse(argv: list[str], env: dict[str, str] | None = None) -> Options:
    options = Options(environ=env or {})
    options.parseOptions(argv)
    return options


class OptionsTests(SynchronousTestCase):
    """
    Flags, environment fallbacks, defaults and one-line errors.
    """

    def test_defaults(self) -> None:
        """
        Only the state file is required; the listener defaults to loopback.
        """
        o = parse(["--state", "s.yaml"])
        self.assertEqual(o["listen"], DEFAULT_LISTEN)
        self.assertEqual(o["reload-interval"], 2.0)
        self.assertFalse(o["tls"])

    def test_environment(self) -> None:
        """
        Every flag falls back to its CLUSTOR_CP_* variable; the flag wins.
        """
        env = {
            "CLUSTOR_CP_STATE": "/etc/s.yaml",
            "CLUSTOR_CP_LISTEN": "tcp:9000:interface=10.0.0.1",
            "CLUSTOR_CP_TLS_IDENTITY_CERT": "c.pem",
            "CLUSTOR_CP_TLS_IDENTITY_KEY": "k.pem",
            "CLUSTOR_CP_TLS_TRUST_BUNDLE": "t.pem",
            "CLUSTOR_CP_RELOAD_INTERVAL": "0",
        }
        o = parse([], env)
        self.assertEqual(o["state"], "/etc/s.yaml")
        self.assertEqual(o["listen"], "tcp:9000:interface=10.0.0.1")
        self.assertEqual(o["reload-interval"], 0.0)
        self.assertTrue(o["tls"])
        self.assertEqual(parse(["--state", "x.yaml"], env)["state"], "x.yaml")

    def assertError(self, argv: list[str], *fragments: str, env: dict[str, str] | None = None) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse(argv, env)
        for fragment in fragments:
            self.assertIn(fragment, str(cm.exception))

    def test_errors(self) -> None:
        """
        Each error names the flag and its variable.
        """
        self.assertError([], "--state (CLUSTOR_CP_STATE)", "required")
        self.assertError(
            ["--state", "s", "--reload-interval", "soon"], "CLUSTOR_CP_RELOAD_INTERVAL", "not a number"
        )
        self.assertError(["--state", "s", "--reload-interval", "-1"], "--reload-interval", "0 to 86400")
        self.assertError(
            ["--state", "s", "--tls-identity-cert", "c.pem"],
            "--tls-identity-key (CLUSTOR_CP_TLS_IDENTITY_KEY)",
            "--tls-trust-bundle",
        )

    def test_clientSpiffe(self) -> None:
        """
        --client-spiffe needs mTLS and a well-formed SPIFFE ID or trust domain.
        """
        tls = ["--tls-identity-cert", "c", "--tls-identity-key", "k", "--tls-trust-bundle", "t"]
        o = parse(["--state", "s", *tls], {"CLUSTOR_CP_CLIENT_SPIFFE": "spiffe://example.org"})
        self.assertEqual(o["client-spiffe"], "spiffe://example.org")
        self.assertError(["--state", "s", "--client-spiffe", "spiffe://example.org"], "needs mTLS")
        self.assertError(
            ["--state", "s", *tls, "--client-spiffe", "node-1"], "CLUSTOR_CP_CLIENT_SPIFFE", "spiffe://"
        )
