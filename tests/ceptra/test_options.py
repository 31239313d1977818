"""
Options of C{ceptra}: every C{CEPTRA_*} variable of the guide, defaults
and one-line errors naming the variable.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.options import ENV, Options
from suite.daemon import ConfigError

REQUIRED = {
    "CEPTRA_CONTROL_PLANE_URL": "https://cp.example.org:26010",
    "CEPTRA_TLS_IDENTITY_CERT": "/etc/ceptra/node.crt",
    "CEPTRA_TLS_IDENTITY_KEY": "/etc/ceptra/node.key",
    "CEPTRA_TLS_TRUST_BUNDLE": "/etc/ceptra/trust.pem",
    "CEPTRA_NODE_SPIFFE": "spiffe://example.org/ceptra/node-1",
}

GUIDE_VARIABLES = {
    "CEPTRA_CONTROL_PLANE_URL",
    "CEPTRA_CP_ROUTING_PATH",
    "CEPTRA_CP_FEATURE_PATH",
    "CEPTRA_CP_WARMUP_PATH",
    "CEPTRA_CP_ACTIVATION_PATH",
    "CEPTRA_ADMIN_BIND",
    "CEPTRA_RAFT_BIND",
    "CEPTRA_ADVERTISE_HOST",
    "CEPTRA_TLS_IDENTITY_CERT",
    "CEPTRA_TLS_IDENTITY_KEY",
    "CEPTRA_TLS_TRUST_BUNDLE",
    "CEPTRA_NODE_SPIFFE",
    "CEPTRA_RAFT_CLIENT_TIMEOUT_MS",
    "CEPTRA_RAFT_CLIENT_RETRY_ATTEMPTS",
    "CEPTRA_RAFT_CLIENT_BACKOFF_MS",
    "CEPTRA_DATA_DIR",
    "CEPTRA_WAL_DIR",
    "CEPTRA_SNAPSHOT_DIR",
}


def parse(argv: list[str] | None = None, /, **env: str) -> Options:
    environ = dict(REQUIRED)
    environ.update(env)
    options = Options(environ={k: v for k, v in environ.items() if v is not None})
    options.parseOptions(argv or [])
    return options


class OptionsTests(SynchronousTestCase):
    """
    L{Options} reads every guide variable and validates it.
    """

    def test_guideVariablesCovered(self) -> None:
        """
        Every variable the guide names has a flag, and --help names them all.
        """
        self.assertTrue(GUIDE_VARIABLES <= {env for env, _, _ in ENV.values()})
        text = str(Options(environ={}))
        for name in GUIDE_VARIABLES:
            self.assertIn(name, text)

    def test_defaults(self) -> None:
        """
        The guide's defaults apply when only the required variables are set.
        """
        o = parse()
        self.assertEqual(o["cp-routing-path"], "/routing")
        self.assertEqual(o["cp-feature-path"], "/features")
        self.assertEqual(o["cp-warmup-path"], "/warmup")
        self.assertEqual(o["cp-activation-path"], "/activation")
        self.assertEqual(o["admin-bind"], "127.0.0.1:26020")
        self.assertEqual(o["admin-endpoint"], "tcp:26020:interface=127.0.0.1")
        self.assertEqual(o["raft-bind"], "127.0.0.1:26021")
        self.assertEqual((o["raft-host"], o["raft-port"]), ("127.0.0.1", 26021))
        self.assertEqual(o["advertise-host"], "127.0.0.1")
        self.assertEqual(o["data-dir"], "target/ceptra-clustor")
        self.assertEqual(o["wal-dir"], "target/ceptra-clustor/wal")
        self.assertEqual(o["snapshot-dir"], "target/ceptra-clustor/snapshots")
        self.assertEqual(o["raft-client-timeout-ms"], 2000)
        self.assertEqual(o["raft-client-retry-attempts"], 3)
        self.assertEqual(o["raft-client-backoff-ms"], 100)
        self.assertEqual(o["admin-tls"], "mtls")
        self.assertEqual(o["feed-stale-ms"], 30000)

    def test_everyVariable(self) -> None:
        """
        Each variable lands in its option.
        """
        o = parse(
            CEPTRA_CP_ROUTING_PATH="/v1/routing",
            CEPTRA_CP_FEATURE_PATH="/v1/features",
            CEPTRA_CP_WARMUP_PATH="/v1/warmup",
            CEPTRA_CP_ACTIVATION_PATH="/v1/activation",
            CEPTRA_ADMIN_BIND="[::1]:9020",
            CEPTRA_RAFT_BIND="0.0.0.0:9021",
            CEPTRA_ADVERTISE_HOST="node-1.example.org",
            CEPTRA_RAFT_CLIENT_TIMEOUT_MS="750",
            CEPTRA_RAFT_CLIENT_RETRY_ATTEMPTS="5",
            CEPTRA_RAFT_CLIENT_BACKOFF_MS="40",
            CEPTRA_DATA_DIR="/var/lib/ceptra",
            CEPTRA_WAL_DIR="/fast/wal",
            CEPTRA_SNAPSHOT_DIR="/bulk/snap",
        )
        self.assertEqual(o["control-plane-url"], "https://cp.example.org:26010")
        self.assertEqual(o["tls-identity-cert"], "/etc/ceptra/node.crt")
        self.assertEqual(o["tls-identity-key"], "/etc/ceptra/node.key")
        self.assertEqual(o["tls-trust-bundle"], "/etc/ceptra/trust.pem")
        self.assertEqual(o["node-spiffe"], "spiffe://example.org/ceptra/node-1")
        self.assertEqual(o["cp-routing-path"], "/v1/routing")
        self.assertEqual(o["cp-feature-path"], "/v1/features")
        self.assertEqual(o["cp-warmup-path"], "/v1/warmup")
        self.assertEqual(o["cp-activation-path"], "/v1/activation")
        self.assertEqual(o["admin-endpoint"], "tcp6:9020:interface=\\:\\:1")
        self.assertEqual((o["raft-host"], o["raft-port"]), ("0.0.0.0", 9021))
        self.assertEqual(o["advertise-host"], "node-1.example.org")
        self.assertEqual(o["raft-client-timeout-ms"], 750)
        self.assertEqual(o["raft-client-retry-attempts"], 5)
        self.assertEqual(o["raft-client-backoff-ms"], 40)
        self.assertEqual(o["data-dir"], "/var/lib/ceptra")
        self.assertEqual(o["wal-dir"], "/fast/wal")
        self.assertEqual(o["snapshot-dir"], "/bulk/snap")

    def test_flagWins(self) -> None:
        """
        A flag overrides its variable.
        """
        o = parse(["--admin-bind", "127.0.0.1:1234", "--data-dir", "d"], CEPTRA_ADMIN_BIND="127.0.0.1:9")
        self.assertEqual(o["admin-endpoint"], "tcp:1234:interface=127.0.0.1")
        self.assertEqual(o["wal-dir"], "d/wal")

    def assertError(self, variable: str, *fragments: str, argv: list[str] | None = None, **env: str) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse(argv, **env)
        message = str(cm.exception)
        self.assertIn(variable, message)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_required(self) -> None:
        """
        The control-plane URL and each piece of mTLS material are required.
        """
        for name in REQUIRED:
            with self.assertRaises(ConfigError) as cm:
                options = Options(environ={k: v for k, v in REQUIRED.items() if k != name})
                options.parseOptions([])
            self.assertIn(name, str(cm.exception))
            self.assertIn("required", str(cm.exception))

    def test_errors(self) -> None:
        """
        Each malformed value is refused naming its variable and the reason.
        """
        self.assertError("CEPTRA_CONTROL_PLANE_URL", "http://", CEPTRA_CONTROL_PLANE_URL="ftp://cp")
        self.assertError("CEPTRA_CONTROL_PLANE_URL", "no host", CEPTRA_CONTROL_PLANE_URL="https://")
        self.assertError("CEPTRA_CONTROL_PLANE_URL", "query", CEPTRA_CONTROL_PLANE_URL="https://cp/?a=1")
        # credentials in the URL: refused without repeating them (the URL is logged)
        with self.assertRaises(ConfigError) as cm:
            parse(CEPTRA_CONTROL_PLANE_URL="https://ops:pw-Secret9@cp.example.org")
        self.assertIn("credentials in the URL", str(cm.exception))
        self.assertNotIn("pw-Secret9", str(cm.exception))
        self.assertError("CEPTRA_CONTROL_PLANE_URL", "port", CEPTRA_CONTROL_PLANE_URL="https://cp:99999")
        self.assertError(
            "CEPTRA_CONTROL_PLANE_URL",
            "only on loopback",
            CEPTRA_CONTROL_PLANE_URL="http://cp.example.org:26010",
        )
        self.assertError("CEPTRA_CONTROL_PLANE_URL", "https://", CEPTRA_CONTROL_PLANE_URL="http://10.0.0.5")
        for loopback in ("http://127.0.0.1:26010", "http://[::1]:26010", "http://localhost:26010"):
            self.assertEqual(parse(CEPTRA_CONTROL_PLANE_URL=loopback)["control-plane-url"], loopback)
        self.assertError("CEPTRA_CP_ROUTING_PATH", "absolute path", CEPTRA_CP_ROUTING_PATH="routing")
        self.assertError("CEPTRA_CP_FEATURE_PATH", "absolute path", CEPTRA_CP_FEATURE_PATH="/f?x")
        self.assertError("CEPTRA_CP_WARMUP_PATH", "absolute path", CEPTRA_CP_WARMUP_PATH="w")
        self.assertError("CEPTRA_CP_ACTIVATION_PATH", "absolute path", CEPTRA_CP_ACTIVATION_PATH="a")
        self.assertError("CEPTRA_ADMIN_BIND", "HOST:PORT", CEPTRA_ADMIN_BIND="26020")
        self.assertError("CEPTRA_ADMIN_BIND", "not a number", CEPTRA_ADMIN_BIND="127.0.0.1:http")
        self.assertError("CEPTRA_RAFT_BIND", "out of range", CEPTRA_RAFT_BIND="127.0.0.1:70000")
        self.assertError("CEPTRA_ADVERTISE_HOST", "every interface", CEPTRA_RAFT_BIND="0.0.0.0:26021")
        self.assertError("CEPTRA_ADVERTISE_HOST", "not a hostname", CEPTRA_ADVERTISE_HOST="bad_host!")
        self.assertError("CEPTRA_NODE_SPIFFE", "not a SPIFFE ID", CEPTRA_NODE_SPIFFE="node-1")
        self.assertError("CEPTRA_NODE_SPIFFE", "not a SPIFFE ID", CEPTRA_NODE_SPIFFE="spiffe://example.org")
        self.assertError("CEPTRA_NODE_SPIFFE", "'.' and '..'", CEPTRA_NODE_SPIFFE="spiffe://example.org/./a")
        self.assertError("CEPTRA_NODE_SPIFFE", "lowercase", CEPTRA_NODE_SPIFFE="spiffe://Example.org/a")
        self.assertError(
            "CEPTRA_RAFT_CLIENT_TIMEOUT_MS", "whole number", CEPTRA_RAFT_CLIENT_TIMEOUT_MS="1.5s"
        )
        self.assertError("CEPTRA_RAFT_CLIENT_TIMEOUT_MS", "out of range", CEPTRA_RAFT_CLIENT_TIMEOUT_MS="0")
        self.assertError(
            "CEPTRA_RAFT_CLIENT_RETRY_ATTEMPTS", "out of range", CEPTRA_RAFT_CLIENT_RETRY_ATTEMPTS="0"
        )
        self.assertError("CEPTRA_RAFT_CLIENT_BACKOFF_MS", "out of range", CEPTRA_RAFT_CLIENT_BACKOFF_MS="-5")
        self.assertError("CEPTRA_ADMIN_TLS", "mtls or off", CEPTRA_ADMIN_TLS="yes")
        self.assertError("CEPTRA_FEED_INTERVAL_MS", "out of range", CEPTRA_FEED_INTERVAL_MS="1")


class RaftAndAdminOptionsTests(SynchronousTestCase):
    """
    The options of the Raft partitions and the client API.
    """

    def test_defaults(self) -> None:
        o = parse()
        self.assertEqual(o["admin-allowed-spiffe"], [])
        self.assertEqual((o["raft-election-timeout-ms"], o["raft-heartbeat-ms"]), (500, 100))
        self.assertEqual((o["snapshot-threshold"], o["ready-max-lag"]), (2000, 1000))
        self.assertEqual(o["max-batch-bytes"], 4 * 1024 * 1024)
        self.assertEqual(o["raft-endpoint"], "tcp:26021:interface=127.0.0.1")

    def test_values(self) -> None:
        o = parse(
            CEPTRA_ADMIN_ALLOWED_SPIFFE=" spiffe://ops.example/ingest, spiffe://clients.example ,",
            CEPTRA_RAFT_ELECTION_TIMEOUT_MS="1000",
            CEPTRA_RAFT_HEARTBEAT_MS="200",
        )
        self.assertEqual(
            o["admin-allowed-spiffe"], ["spiffe://ops.example/ingest", "spiffe://clients.example"]
        )
        # a trust domain with a trailing slash is that trust domain
        slash = parse(CEPTRA_ADMIN_ALLOWED_SPIFFE="spiffe://clients.example/")
        self.assertEqual(slash["admin-allowed-spiffe"], ["spiffe://clients.example"])
        self.assertEqual(o["raft-election-timeout-ms"], 1000)

    def test_errors(self) -> None:
        for env, value, why in (
            ("CEPTRA_ADMIN_ALLOWED_SPIFFE", "ops-admin", "not a SPIFFE ID"),
            # an empty trust domain would match every SPIFFE ID of the bundle
            ("CEPTRA_ADMIN_ALLOWED_SPIFFE", "spiffe://", "the trust domain is empty"),
            ("CEPTRA_ADMIN_ALLOWED_SPIFFE", "spiffe://Ops.Example/a", "lowercase"),
            ("CEPTRA_ADMIN_ALLOWED_SPIFFE", "spiffe://ops.example/a/", "trailing"),
            ("CEPTRA_RAFT_ELECTION_TIMEOUT_MS", "5", "out of range"),
            ("CEPTRA_RAFT_HEARTBEAT_MS", "400", "at most half"),
            (
                "CEPTRA_FEED_STALE_MS",
                "1500",
                "at least twice --feed-interval-ms (CEPTRA_FEED_INTERVAL_MS) (1000)",
            ),
            ("CEPTRA_SNAPSHOT_THRESHOLD", "0", "out of range"),
            ("CEPTRA_MAX_BATCH_BYTES", "10", "out of range"),
        ):
            with self.assertRaises(ConfigError) as cm:
                parse(**{env: value})
            self.assertIn(env, str(cm.exception))
            self.assertIn(why, str(cm.exception))
