"""
Configuration loading, the command line and the twistd plugin surface.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, cast

from twisted.application.service import IService
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from suite.daemon import ConfigError
from suite.spacecomms.config import ConfigInvalid, loadConfig, parseAddress, parseConfig
from suite.spacecomms.tap import Options, makeService
from tests.support.process import scriptArgs, twistdArgs

GUIDE = """
# Node identity
node:
  id: "node-prod-01"
  name: "Production Node 01"

# Network settings
server:
  host: "0.0.0.0"
  port: 8080
  tls:
    enabled: true
    cert_path: "CERTDIR/node.crt"
    key_path: "CERTDIR/node.key"

# API authentication
api:
  auth:
    enabled: true
    tokens:
      - id: "admin"
        secret: "${SPACECOMMS_ADMIN_TOKEN}"
        permissions: ["read", "write", "admin"]
      - id: "readonly"
        secret: "${SPACECOMMS_READONLY_TOKEN}"
        permissions: ["read"]

# Peer connections
peers:
  - id: "peer-operator-a"
    address: "https://operator-a.example.com:8443"
    auth_token: "${PEER_A_TOKEN}"
    policies:
      accept_cdm: true
      accept_object_state: true
      forward_cdm: true

# Storage
storage:
  type: "memory" # or "file" for persistence
  file_path: "/var/lib/spacecomms/data"
  cleanup:
    enabled: true
    cdm_retention_hours: 168 # 7 days
    object_retention_hours: 720 # 30 days

# Logging
logging:
  level: "info" # debug, info, warn, error
  format: "json" # json or pretty
  output: "stdout" # stdout or file path

# Protocol settings
protocol:
  heartbeat_interval_seconds: 30
  session_timeout_seconds: 120
  max_hop_count: 10
"""

ENV = {
    "SPACECOMMS_ADMIN_TOKEN": "admin-secret-123",
    "SPACECOMMS_READONLY_TOKEN": "read-secret-123",
    "PEER_A_TOKEN": "peer-a-secret",
}


class ConfigTests(SynchronousTestCase):
    """
    The guide's YAML, expansion, overrides and error paths.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        for name in ("node.crt", "node.key", "ca.crt"):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write("x")

    def write(self, text: str) -> str:
        path = os.path.join(self.dir, "config.yaml")
        with open(path, "w") as f:
            f.write(text.replace("CERTDIR", self.dir))
        return path

    def test_guideConfig(self) -> None:
        """
        The guide's configuration loads exactly as written, with every
        value in place and secrets expanded.
        """
        cfg = loadConfig(self.write(GUIDE), ENV)
        self.assertEqual(
            (cfg.node_id, cfg.node_name, cfg.host, cfg.port),
            ("node-prod-01", "Production Node 01", "0.0.0.0", 8080),
        )
        self.assertTrue(cfg.tls_enabled)
        self.assertEqual(
            {t.id: t.permissions for t in cfg.tokens},
            {"admin": ("read", "write", "admin"), "readonly": ("read",)},
        )
        self.assertEqual(cfg.tokens[0].secret, "admin-secret-123")
        peer = cfg.peers[0]
        self.assertEqual(
            (peer.id, peer.host, peer.port, peer.auth_token),
            ("peer-operator-a", "operator-a.example.com", 8443, "peer-a-secret"),
        )
        self.assertTrue(peer.policies.forward_cdm)
        self.assertEqual(
            (cfg.storage_type, cfg.cleanup_enabled, cfg.cdm_retention_hours, cfg.object_retention_hours),
            ("memory", True, 168, 720),
        )
        self.assertEqual((cfg.log_level, cfg.log_format, cfg.log_output), ("info", "json", "stdout"))
        self.assertEqual(
            (cfg.heartbeat_interval_seconds, cfg.session_timeout_seconds, cfg.max_hop_count), (30, 120, 10)
        )
        self.assertNotIn("admin-secret-123", repr(cfg))

    def test_exampleConfig(self) -> None:
        """
        conf/spacecomms/config.yaml is valid once its files exist, and the
        demo configuration is valid as it is.
        """
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "conf", "spacecomms", "config.yaml")) as f:
            text = f.read()
        text = text.replace("/etc/spacecomms/certs", "CERTDIR").replace("/var/lib/spacecomms", "CERTDIR")
        cfg = loadConfig(self.write(text), ENV)
        self.assertEqual(
            (cfg.storage_type, cfg.peer_port, cfg.peers[0].policies.rate_limit_burst), ("file", 8443, 1000)
        )
        demo = loadConfig(
            os.path.join(root, "conf", "spacecomms", "demo.yaml"), {"SPACECOMMS_DEMO_PORT": "18080"}
        )
        self.assertEqual(
            (demo.port, demo.peer_port, demo.tls_enabled, demo.tokens[0].secret),
            (18080, 8443, False, "demo-admin-token"),
        )

    def test_guideConfigCANextToCertificate(self) -> None:
        """
        The guide's YAML exactly (no ca_path) takes ca.crt from beside the
        certificate; without that file the key is named.
        """
        cfg = loadConfig(self.write(GUIDE), ENV)
        self.assertEqual(cfg.ca_path, os.path.join(self.dir, "ca.crt"))
        os.remove(os.path.join(self.dir, "ca.crt"))
        e = self.assertRaises(ConfigInvalid, loadConfig, self.write(GUIDE), ENV)
        self.assertEqual(len(e.reasons), 1)
        self.assertTrue(e.reasons[0].startswith("server.tls.ca_path: not set, no ca.crt next to"))

    def test_missingVariableAndDefault(self) -> None:
        """
        An unset ${VAR} names the key that uses it; ${VAR:-default} works.
        """
        env = dict(ENV)
        del env["PEER_A_TOKEN"]
        text = GUIDE.replace(
            'key_path: "CERTDIR/node.key"',
            'key_path: "CERTDIR/node.key"\n    ca_path: "${CA:-CERTDIR/ca.crt}"',
        )
        e = self.assertRaises(ConfigInvalid, loadConfig, self.write(text), env)
        self.assertEqual(e.reasons, ["peers[0].auth_token: environment variable PEER_A_TOKEN is not set"])

    def test_errorsNameKeyPaths(self) -> None:
        """
        Every problem is reported, each naming its key path.
        """
        doc = {
            "node": {"id": "bad id!"},
            "server": {"port": 70000, "colour": "red"},
            "api": {"auth": {"enabled": False}},
            "peers": [
                {"id": "ok", "address": "https://a:1"},
                {"id": "p2", "address": "gopher://x"},
                {"id": "ok", "address": "b:2", "policies": {"accept_cdm": "perhaps"}},
            ],
            "storage": {"type": "disk"},
            "logging": {"level": "loud", "format": "xml"},
            "protocol": {"heartbeat_interval_seconds": 10, "session_timeout_seconds": 5, "max_hop_count": 0},
        }
        e = self.assertRaises(ConfigInvalid, parseConfig, doc, {})
        text = "\n".join(e.reasons)
        for path in (
            "node.id:",
            "server.port:",
            "server.colour:",
            "peers[1].address:",
            "peers[2].id: duplicate",
            "peers[2].policies.accept_cdm:",
            "storage.type:",
            "logging.level:",
            "logging.format:",
            "protocol.session_timeout_seconds:",
            "protocol.max_hop_count:",
        ):
            self.assertIn(path, text)

    def test_protocolLimitsPeersAccept(self) -> None:
        """
        A message_ttl_seconds over a day or a max_hop_count over 64 (the
        ttl and path every peer accepts) would make every peer refuse this
        node's messages as invalid: both are refused naming the key, as is
        a reconnect_max_seconds below reconnect_initial_seconds; the
        bounds themselves are accepted.
        """
        base = {"node": {"id": "n"}, "api": {"auth": {"enabled": False}}}
        for proto, key in (
            ({"message_ttl_seconds": 86401}, "protocol.message_ttl_seconds: must be between 1 and 86400"),
            ({"max_hop_count": 65}, "protocol.max_hop_count: must be between 1 and 64"),
            (
                {"reconnect_initial_seconds": 60, "reconnect_max_seconds": 30},
                "protocol.reconnect_max_seconds: must be at least reconnect_initial_seconds (60)",
            ),
        ):
            e = self.assertRaises(ConfigInvalid, parseConfig, {**base, "protocol": proto}, {})
            self.assertEqual(len(e.reasons), 1, e.reasons)
            self.assertIn(key, e.reasons[0])
        cfg = parseConfig(
            {
                **base,
                "protocol": {
                    "message_ttl_seconds": 86400,
                    "max_hop_count": 64,
                    "reconnect_initial_seconds": 5,
                    "reconnect_max_seconds": 5,
                },
            },
            {},
        )
        self.assertEqual((cfg.message_ttl_seconds, cfg.max_hop_count), (86400, 64))

    def test_exposureWarnings(self) -> None:
        """
        A valid configuration that leaves the node open gets one warning
        line per opening at start-up: no API tokens, tokens in clear text
        beyond loopback, a peer without a shared token; the guide's
        loopback API with tokens and peer tokens gets none.
        """
        from suite.spacecomms.service import exposureWarnings

        def warnings(**doc: object) -> list[str]:
            base: dict[str, object] = {
                "node": {"id": "n"},
                "api": {"auth": {"tokens": [{"id": "a", "secret": "token-12345"}]}},
                "peers": [{"id": "p", "address": "p:1", "auth_token": "peer-token-1"}],
            }
            return exposureWarnings(parseConfig({**base, **doc}, {}))

        self.assertEqual(warnings(), [])
        self.assertEqual(warnings(server={"host": "::1"}), [])
        [line] = warnings(api={"auth": {"enabled": False}})
        self.assertTrue(
            line.startswith("api.auth.enabled is false: anyone who reaches the API on 127.0.0.1:8080")
        )
        [line] = warnings(server={"host": "0.0.0.0"})
        self.assertTrue(line.startswith("server.tls.api is false: API bearer tokens cross the network"))
        # The guide's example: memory storage beside a file path.
        [line] = warnings(storage={"type": "memory", "file_path": "/var/lib/spacecomms/data"})
        self.assertTrue(line.startswith("storage.type is memory: everything this node holds is lost"))
        self.assertEqual(warnings(storage={"type": "memory"}), [])
        [line] = warnings(peers=[{"id": "p", "address": "p:1"}])
        self.assertEqual(
            line, "peers[0].auth_token is empty: any node that claims to be p is accepted as that peer"
        )

    def test_apiAndPeerPortsDiffer(self) -> None:
        """
        The API and the peer listener on one port of one address (or of the
        wildcard) is refused naming server.peer_port; on two addresses it
        is fine.
        """
        base = {"node": {"id": "n"}, "api": {"auth": {"enabled": False}}}
        for server in ({"port": 8443}, {"port": 9000, "peer_port": 9000, "host": "127.0.0.1"}):
            e = self.assertRaises(ConfigInvalid, parseConfig, {**base, "server": server}, {})
            self.assertEqual(len(e.reasons), 1, e.reasons)
            self.assertTrue(e.reasons[0].startswith("server.peer_port: must differ from server.port"))
        parseConfig(
            {
                **base,
                "server": {"port": 9000, "peer_port": 9000, "host": "127.0.0.1", "peer_host": "127.0.0.2"},
            },
            {},
        )

    def test_secretFiles(self) -> None:
        """
        An API token's secret_file and a peer's auth_token_file hold the
        secret (a secrets manager's mount; the trailing newline is not
        part of it); an unreadable or short file, or both forms at once,
        is refused naming the key; POST /peers cannot name a file.
        """
        secret = os.path.join(self.dir, "admin.token")
        peerToken = os.path.join(self.dir, "peer.token")
        with open(secret, "w") as f:
            f.write("admin-secret-from-file\n")
        with open(peerToken, "w") as f:
            f.write("peer-secret-from-file")
        cfg = parseConfig(
            {
                "node": {"id": "n"},
                "api": {
                    "auth": {"tokens": [{"id": "admin", "secret_file": secret, "permissions": ["admin"]}]}
                },
                "peers": [{"id": "p", "address": "p:1", "auth_token_file": peerToken}],
            },
            {},
        )
        self.assertEqual(cfg.tokens[0].secret, "admin-secret-from-file")
        self.assertEqual(cfg.peers[0].auth_token, "peer-secret-from-file")
        with open(os.path.join(self.dir, "short"), "w") as f:
            f.write("short\n")
        for token, peer, reason in (
            (
                {"secret_file": os.path.join(self.dir, "missing")},
                {},
                "api.auth.tokens[0].secret_file: cannot read",
            ),
            (
                {"secret_file": os.path.join(self.dir, "short")},
                {},
                "api.auth.tokens[0].secret_file: must be at least 8 characters",
            ),
            (
                {"secret_file": secret, "secret": "admin-secret-1"},
                {},
                "api.auth.tokens[0].secret_file: set secret or secret_file, not both",
            ),
            (
                {"secret_file": secret},
                {"auth_token_file": self.dir},
                "peers[0].auth_token_file: cannot read",
            ),
            (
                {"secret_file": secret},
                {"auth_token_file": peerToken, "auth_token": "x"},
                "peers[0].auth_token_file: set auth_token or auth_token_file, not both",
            ),
        ):
            doc = {
                "node": {"id": "n"},
                "api": {"auth": {"tokens": [{"id": "admin", **token}]}},
                "peers": [{"id": "p", "address": "p:1", **peer}],
            }
            e = self.assertRaises(ConfigInvalid, parseConfig, doc, {})
            self.assertEqual(len(e.reasons), 1, e.reasons)
            self.assertIn(reason, e.reasons[0])
        from suite.spacecomms.config import _Checker, parsePeer

        c = _Checker({})
        parsePeer(c, {"id": "p", "address": "p:1", "auth_token_file": peerToken}, "body")
        self.assertEqual(
            c.errors, ["body.auth_token_file: unknown key (expected id, address, auth_token, policies)"]
        )

    def test_environmentOverrides(self) -> None:
        """
        SPACECOMMS_LOG_LEVEL overrides logging.level; SPACECOMMS_ADMIN_TOKEN
        and SPACECOMMS_READONLY_TOKEN provide the two tokens.
        """
        doc = {"node": {"id": "n1"}, "logging": {"level": "info"}}
        cfg = parseConfig(
            doc,
            {
                "SPACECOMMS_LOG_LEVEL": "debug",
                "SPACECOMMS_ADMIN_TOKEN": "a-secret-1",
                "SPACECOMMS_READONLY_TOKEN": "r-secret-1",
            },
        )
        self.assertEqual(cfg.log_level, "debug")
        self.assertEqual(
            {t.id: (t.secret, t.permissions) for t in cfg.tokens},
            {"admin": ("a-secret-1", ("read", "write", "admin")), "readonly": ("r-secret-1", ("read",))},
        )
        e = self.assertRaises(ConfigInvalid, parseConfig, doc, {"SPACECOMMS_LOG_LEVEL": "chatty"})
        self.assertIn(
            "SPACECOMMS_LOG_LEVEL: unknown log level 'chatty' (use debug, info, warn, error)", e.reasons
        )
        # A token from the environment meets the same length rule as one in
        # the file (a three-character admin token is refused, not used).
        for name in ("SPACECOMMS_ADMIN_TOKEN", "SPACECOMMS_READONLY_TOKEN"):
            e = self.assertRaises(ConfigInvalid, parseConfig, doc, {name: "abc", "OTHER": "x"})
            self.assertTrue(any(r.startswith(f"{name}: must be 8") for r in e.reasons), e.reasons)
            self.assertNotIn("abc", " ".join(e.reasons))

    def test_tokenSecretsDistinct(self) -> None:
        """
        Two tokens with one secret are refused, naming both ids and not the
        secret.
        """
        doc = {
            "node": {"id": "n1"},
            "api": {
                "auth": {
                    "tokens": [
                        {"id": "a", "secret": "same-secret-1", "permissions": ["read"]},
                        {"id": "b", "secret": "same-secret-1", "permissions": ["admin"]},
                    ]
                }
            },
        }
        e = self.assertRaises(ConfigInvalid, parseConfig, doc, {})
        self.assertEqual(e.reasons, ["api.auth.tokens: tokens 'a' and 'b' share the same secret"])

    def test_badYAMLAndMissingFile(self) -> None:
        """
        Unreadable files and broken YAML are one reason naming the file.
        """
        e = self.assertRaises(ConfigInvalid, loadConfig, self.write("node: [\n"), {})
        self.assertIn("invalid YAML", e.reasons[0])
        self.assertIn("config.yaml", str(e))
        e = self.assertRaises(ConfigInvalid, loadConfig, os.path.join(self.dir, "missing.yaml"), {})
        self.assertIn("cannot read the file", str(e))

    def test_duplicateKeys(self) -> None:
        """
        A key given twice in one mapping (two `server:` sections, `id` twice
        in a peer) is refused naming its line, rather than the last one
        silently winning; YAML merge keys still work.
        """
        e = self.assertRaises(
            ConfigInvalid,
            loadConfig,
            self.write("node: {id: a}\nserver:\n  port: 1\nserver:\n  port: 2\n"),
            {},
        )
        self.assertEqual(e.reasons, ["line 4: invalid YAML (duplicate key 'server')"])
        text = (
            "node: {id: a}\napi: {auth: {enabled: false}}\npeers:\n  - id: p\n    address: p:1\n    id: q\n"
        )
        e = self.assertRaises(ConfigInvalid, loadConfig, self.write(text), {})
        self.assertEqual(e.reasons, ["line 6: invalid YAML (duplicate key 'id')"])
        merged = "x-peer: &p {address: p:1}\nnode: {id: a}\napi: {auth: {enabled: false}}\npeers:\n  - <<: *p\n    id: p\n"
        e = self.assertRaises(ConfigInvalid, loadConfig, self.write(merged), {})
        self.assertEqual([r.split(":")[0] for r in e.reasons], ["x-peer"])

    def test_parseAddress(self) -> None:
        """
        Peer addresses take the guide's https://host:port form and others.
        """
        self.assertEqual(
            parseAddress("https://operator-a.example.com:8443"), ("operator-a.example.com", 8443, "https")
        )
        self.assertEqual(parseAddress("127.0.0.1:9"), ("127.0.0.1", 9, "https"))
        self.assertEqual(parseAddress("tls://[::1]:9"), ("::1", 9, "tls"))
        self.assertRaises(ValueError, parseAddress, "https://a b")


class OptionsTests(SynchronousTestCase):
    """
    The plugin's Options and makeService.
    """

    def _config(self) -> str:
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        path = os.path.join(d, "c.yaml")
        with open(path, "w") as f:
            f.write(
                'node: {id: n1}\nserver: {port: 0, peer_port: 0}\napi: {auth: {tokens: [{id: a, secret: "${T}", permissions: [read]}]}}\n'
            )
        return path

    def test_configFromFlagSubcommandOrEnvironment(self) -> None:
        """
        --config, `start --config` and SPACECOMMS_CONFIG all name the file;
        none of them is a usage error naming --config.
        """
        o = Options(environ={})
        o.parseOptions(["--config", "x.yaml"])
        self.assertEqual(o["config"], "x.yaml")
        o = Options(environ={})
        o.parseOptions(["start", "--config", "y.yaml"])
        self.assertEqual(o["config"], "y.yaml")
        o = Options(environ={"SPACECOMMS_CONFIG": "z.yaml"})
        o.parseOptions([])
        self.assertEqual(o["config"], "z.yaml")
        e = self.assertRaises(usage.UsageError, Options(environ={}).parseOptions, [])
        self.assertIsInstance(e, ConfigError)
        self.assertIn("--config", str(e))
        # Before and after the subcommand: one file, or a usage error.
        o = Options(environ={})
        o.parseOptions(["--config", "x.yaml", "start", "--config", "x.yaml"])
        self.assertEqual(o["config"], "x.yaml")
        e = self.assertRaises(
            usage.UsageError,
            Options(environ={}).parseOptions,
            ["--config", "x.yaml", "start", "--config", "y.yaml"],
        )
        self.assertEqual(str(e), "--config: given twice, as x.yaml and y.yaml: name one file")

    def test_makeService(self) -> None:
        """
        makeService builds the node under a memory reactor and listens for
        the API and peers when started.
        """
        path = self._config()
        o = Options(environ={"T": "token-12345"})
        o.parseOptions(["--config", path])
        reactor = MemoryReactorClock()
        service = makeService(o, reactor=reactor, installSignals=False)
        self.assertTrue(IService.providedBy(service))
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 2)
        self.assertEqual({s[3] for s in reactor.tcpServers}, {"127.0.0.1", "0.0.0.0"})
        service.stopService()

    def test_makeServiceValidateConfig(self) -> None:
        """
        `twistd spacecomms validate-config` checks and exits instead of
        running the node: 0 when valid, 1 when not.
        """
        path = self._config()
        for environ, code in (({"T": "token-12345"}, 0), ({}, 1)):
            o = Options(environ=environ)
            o.parseOptions(["validate-config", "--config", path])
            e = self.assertRaises(
                SystemExit, makeService, o, reactor=MemoryReactorClock(), installSignals=False
            )
            self.assertEqual(e.code, code)

    def test_makeServiceBadConfig(self) -> None:
        """
        A bad configuration exits with code 2.
        """
        path = self._config()
        o = Options(environ={})
        o.parseOptions(["--config", path])
        e = self.assertRaises(SystemExit, makeService, o, reactor=MemoryReactorClock(), installSignals=False)
        self.assertEqual(e.code, 2)


class WebPageTests(SynchronousTestCase):
    """
    The API refuses, on loopback connections, what only a web page in a
    browser on the host sends (with auth off nothing else would stop it).
    """

    def setUp(self) -> None:
        from suite.spacecomms.service import SpaceCommsService

        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        path = os.path.join(d, "c.yaml")
        with open(path, "w") as f:
            f.write("node: {id: n1}\nserver: {port: 8080, peer_port: 0}\napi: {auth: {enabled: false}}\n")
        self.service = SpaceCommsService(loadConfig(path, {}), MemoryReactorClock(), environ={})

    def request(self, head: str, body: bytes = b"", local: str = "127.0.0.1") -> bytes:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        site = self.service.site
        proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert proto is not None
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", local, 8080), peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)
        )
        proto.makeConnection(transport)
        length = f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n" if body else ""
        proto.dataReceived(f"{head}\r\n{length}\r\n".encode() + body)
        proto.connectionLost(None)
        return transport.value()

    def test_guideCurlAnswered(self) -> None:
        """
        What the guide's curl commands send (C{Host: localhost:8080}, no
        C{Origin}) is served; so is C{127.0.0.1} and C{[::1]}.
        """
        for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080"):
            out = self.request(
                f"GET /peers HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*"
            )
            self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:200])
        out = self.request(
            "POST /objects HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0", b'{"object_id": "X1"}'
        )
        self.assertTrue(out.startswith(b"HTTP/1.1 201 "), out[:200])

    def test_reboundHostRefused(self) -> None:
        """
        A foreign C{Host} on a loopback connection (a DNS-rebinding page) is
        421 with a reason, for reads as well as writes.
        """
        out = self.request("GET /cdms HTTP/1.1\r\nHost: evil.example:8080")
        self.assertTrue(out.startswith(b"HTTP/1.1 421 "), out[:200])
        self.assertIn(b"not this loopback listener", out)
        self.assertNotIn(b"cdms", out.partition(b"\r\n\r\n")[2])

    def test_crossSitePostRefused(self) -> None:
        """
        A POST with a foreign C{Origin} (a page on another site posting to
        C{http://127.0.0.1:8080}) is 403 and changes nothing; a GET with the
        same C{Origin} is answered (the browser keeps its reply from the page).
        """
        out = self.request(
            "POST /objects HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nOrigin: https://evil.example",
            b'{"object_id": "X1"}',
        )
        self.assertTrue(out.startswith(b"HTTP/1.1 403 "), out[:200])
        self.assertIn(b"refused", out)
        out = self.request("GET /objects HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nOrigin: https://evil.example")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:200])
        self.assertNotIn(b"X1", out)

    def test_remoteConnectionsUnaffected(self) -> None:
        """
        A connection that arrived on another address (the API exposed with
        C{server.host}) is not checked: clients send the name they dialled.
        """
        out = self.request("GET /peers HTTP/1.1\r\nHost: node.example:8080", local="10.0.0.1")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:200])


class CommandLineTests(SynchronousTestCase):
    """
    The console script and twistd, as real processes.
    """

    def _exec(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **env})

    def test_validateConfig(self) -> None:
        """
        validate-config exits 0 for a valid file, and 1 with every reason on
        its own line for an invalid one.
        """
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        good = os.path.join(d, "good.yaml")
        with open(good, "w") as f:
            f.write("node: {id: n1}\napi: {auth: {enabled: false}}\n")
        r = self._exec(scriptArgs("spacecomms", "validate-config", "--config", good), {})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("valid", r.stdout)
        bad = os.path.join(d, "bad.yaml")
        with open(bad, "w") as f:
            f.write(
                "node: {id: n1}\nserver: {port: -1}\npeers: [{id: p, address: 'x y'}]\napi: {auth: {enabled: false}}\n"
            )
        r = self._exec(scriptArgs("spacecomms", "validate-config", "--config", bad), {})
        self.assertEqual(r.returncode, 1)
        lines = r.stderr.splitlines()
        self.assertTrue(any("server.port:" in line for line in lines), r.stderr)
        self.assertTrue(any("peers[0].address:" in line for line in lines), r.stderr)
        self.assertNotIn("Traceback", r.stderr)

    def test_twistdBadConfigOneLine(self) -> None:
        """
        twistd spacecomms with a broken file prints one line and exits 2.
        """
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        bad = os.path.join(d, "bad.yaml")
        with open(bad, "w") as f:
            f.write("node: {}\n")
        r = self._exec(twistdArgs("spacecomms", "--config", bad), {})
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("node.id: is required", r.stderr)

    def test_storeInUseOneLine(self) -> None:
        """
        A second node on a file store another process holds exits 2 with
        one line naming storage.file_path and the holder, before it touches
        the store: the running node's log is neither replayed nor replaced
        (a compaction by the second would send the first's appends to an
        unlinked file).  validate-config still passes (it checks a file, not
        whether it is in use).
        """
        from twisted.internet.task import Clock

        from suite.spacecomms.store import FileStore, Record

        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        data = os.path.join(d, "data")
        holder = FileStore(data, Clock())
        holder.lock()
        holder.load()
        self.addCleanup(holder.close)
        holder.put(Record("object", "SAT-1", "n1", 1, body={"x": 1}))
        before = os.stat(data)
        cfg = os.path.join(d, "c.yaml")
        with open(cfg, "w") as f:
            f.write(
                "node: {id: n1}\nserver: {port: 0, peer_port: 0}\napi: {auth: {enabled: false}}\n"
                f"storage: {{type: file, file_path: {data}}}\n"
            )
        r = self._exec(twistdArgs("spacecomms", "--config", cfg), {})
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("storage.file_path:", r.stderr)
        self.assertIn(f"in use by process {os.getpid()}", r.stderr)
        after = os.stat(data)
        self.assertEqual((after.st_ino, after.st_size), (before.st_ino, before.st_size))
        r = self._exec(scriptArgs("spacecomms", "validate-config", "--config", cfg), {})
        self.assertEqual(r.returncode, 0, r.stderr)


class StoreLockTests(SynchronousTestCase):
    """
    One FileStore per file at a time.
    """

    def test_lock(self) -> None:
        """
        A second lock on the same store fails naming the holder's pid until
        the first store closes.
        """
        from twisted.internet.task import Clock

        from suite.spacecomms.store import FileStore, StoreLocked

        path = os.path.join(os.path.abspath(self.mktemp()))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        first, second = FileStore(path, Clock()), FileStore(path, Clock())
        first.lock()
        first.lock()  # idempotent
        e = self.assertRaises(StoreLocked, second.lock)
        self.assertIn(f"process {os.getpid()}", str(e))
        first.close()
        second.lock()
        second.close()


class StartupChecksTests(SynchronousTestCase):
    """
    validate-config runs the checks start-up runs.
    """

    def test_storeThatCannotLoad(self) -> None:
        """
        A file store that cannot be replayed and rewritten at start-up (a
        full disk, a directory it cannot write) stops makeService with one
        line naming storage.file_path and exit code 2, not a traceback from
        startService; the lock is let go.
        """
        import errno

        from suite.spacecomms.store import FileStore

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        path = os.path.join(base, "a.yaml")
        with open(path, "w") as f:
            f.write(
                f"node: {{id: A}}\napi: {{auth: {{enabled: false}}}}\nstorage: {{type: file, file_path: {base}/data}}\n"
            )

        def full(target: str, frames: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", target + ".compact")

        original = FileStore.__dict__["_writeSnapshot"]
        self.addCleanup(setattr, FileStore, "_writeSnapshot", original)
        FileStore._writeSnapshot = staticmethod(full)  # type: ignore[method-assign,assignment]
        o = Options(environ={})
        o.parseOptions(["--config", path])
        e = self.assertRaises(SystemExit, makeService, o, reactor=MemoryReactorClock(), installSignals=False)
        self.assertEqual(e.code, 2)
        from suite.spacecomms.config import loadConfig
        from suite.spacecomms.service import SpaceCommsService

        e2 = self.assertRaises(ConfigError, SpaceCommsService, loadConfig(path, {}), MemoryReactorClock())
        self.assertEqual(
            str(e2),
            f"storage.file_path: cannot load {base}/data: No space left on device ({base}/data.compact)",
        )

    def test_keyNotMatchingCertificate(self) -> None:
        """
        A TLS key that does not belong to the certificate makes
        validate-config exit 1 naming server.tls.key_path, as start-up
        refuses it; the matching key is valid.
        """
        import io

        from suite.spacecomms.cli import validateConfig
        from tests.spacecomms.support import makeCertificates

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        dirs = makeCertificates(base, ["A", "B"])
        path = os.path.join(base, "a.yaml")

        def check(keyDir: str) -> tuple[int, str, str]:
            with open(path, "w") as f:
                f.write(
                    "node: {id: A}\napi: {auth: {enabled: false}}\nserver:\n  tls:\n    enabled: true\n"
                    f"    cert_path: {dirs['A']}/node.crt\n    key_path: {keyDir}/node.key\n"
                    f"    ca_path: {dirs['A']}/ca.crt\n"
                )
            o = Options()
            o.parseOptions(["validate-config", "--config", path])
            out, err = io.StringIO(), io.StringIO()
            return validateConfig(o, out, err), out.getvalue(), err.getvalue()

        code, out, err = check(dirs["B"])
        self.assertEqual(code, 1, out)
        self.assertIn("server.tls.key_path", err)
        self.assertIn("does not match server.tls.cert_path", err)
        self.assertIn("invalid (1 problem)", err)
        code, out, err = check(dirs["A"])
        self.assertEqual(code, 0, err)
        self.assertIn("valid", out)

    def test_storeIsADirectory(self) -> None:
        """
        A store path that is a directory (which start-up cannot open) makes
        validate-config exit 1 naming storage.file_path.
        """
        import io

        from suite.spacecomms.cli import validateConfig

        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "store"))
        path = os.path.join(base, "a.yaml")
        with open(path, "w") as f:
            f.write(
                f"node: {{id: A}}\napi: {{auth: {{enabled: false}}}}\nstorage: {{type: file, file_path: {base}/store}}\n"
            )
        o = Options()
        o.parseOptions(["validate-config", "--config", path])
        err = io.StringIO()
        self.assertEqual(validateConfig(o, io.StringIO(), err), 1)
        self.assertIn("storage.file_path: ", err.getvalue())
        self.assertIn("is a directory", err.getvalue())


class LogObserverTests(SynchronousTestCase):
    """
    The observer C{spacecomms start} installs filters like the suite's: by
    level, and without Twisted's "Starting factory <... at 0x...>" chatter
    at info (it appeared on every start).
    """

    def test_filtered(self) -> None:
        """Info drops debug events and factory chatter; debug keeps both."""
        import json

        from twisted.logger import LogLevel

        from suite.spacecomms import logsetup

        before = dict(logsetup._settings)
        self.addCleanup(logsetup._settings.update, before)
        out = os.path.abspath(self.mktemp())
        events = [
            {
                "log_level": LogLevel.info,
                "log_format": "Starting factory {factory!r}",
                "factory": "F",
                "log_namespace": "x",
                "log_time": 1.0,
            },
            {"log_level": LogLevel.debug, "log_format": "frame", "log_namespace": "x", "log_time": 1.0},
            {"log_level": LogLevel.info, "log_format": "kept", "log_namespace": "x", "log_time": 1.0},
        ]
        for level, expected in (("info", ["kept"]), ("debug", ["Starting factory 'F'", "frame", "kept"])):
            if os.path.exists(out):
                os.remove(out)
            logsetup.configure("json", level, out)
            observer = logsetup.observer()
            for e in events:
                observer(dict(e))
            with open(out) as f:
                self.assertEqual([json.loads(line)["msg"] for line in f], expected, level)


class ReloadTests(SynchronousTestCase):
    """
    SIGHUP reload (L{SpaceCommsService.reload}) over a memory reactor.
    """

    def setUp(self) -> None:
        from twisted.logger import ILogObserver, globalLogPublisher

        from suite.spacecomms import logsetup

        self.path = os.path.abspath(self.mktemp())
        self.events: list[dict] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        before = dict(logsetup._settings)
        self.addCleanup(logsetup._settings.update, before)
        self.addCleanup(logsetup._live.clear)

    def write(self, logging: str, server: str = "") -> None:
        with open(self.path, "w") as f:
            f.write(
                "node: {id: n1}\n"
                f"server: {{port: 0, peer_port: 0{server}}}\n"
                'api: {auth: {tokens: [{id: a, secret: "token-12345", permissions: [read]}]}}\n'
                f"logging: {{{logging}}}\n"
            )

    def lines(self, text: str) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if text in e.get("log_format", "")]

    def test_levelAppliedOthersNamed(self) -> None:
        """
        A reload applies logging.level at once (the observer twistd built
        and the debug-only lines follow it); logging.format, logging.output
        and server.max_body_bytes are named, by their keys, as needing a
        restart and keep their values; an invalid file is refused naming the
        file and the reason, and changes nothing.
        """
        from io import StringIO

        from twisted.logger import Logger

        from suite import logging as suitelogging
        from suite.spacecomms import logsetup
        from suite.spacecomms.config import loadConfig
        from suite.spacecomms.service import SpaceCommsService

        self.write("level: info")
        logsetup.configure("json", "info", "stderr")
        built = logsetup.observer()
        out = StringIO()
        cast(Any, built).base = suitelogging.jsonObserver(out)
        cast(Any, built).setLevel("info")
        probe = Logger(namespace="probe", observer=built)
        service = SpaceCommsService(loadConfig(self.path, {}), MemoryReactorClock(), environ={})
        probe.debug("probe line one")
        self.assertFalse(logsetup.debugEnabled())

        self.write("level: debug, format: pretty, output: stderr", ", max_body_bytes: 2048")
        self.assertTrue(service.reload())
        self.assertTrue(logsetup.debugEnabled())
        probe.debug("probe line two")
        self.assertNotIn("probe line one", out.getvalue())
        self.assertIn("probe line two", out.getvalue())
        [warning] = self.lines("need a restart")
        self.assertIn("logging.format, logging.output, server.max_body_bytes", warning)
        self.assertEqual((service.config.log_format, service.config.max_body_bytes), ("json", 1024 * 1024))
        self.assertIn("logging level debug", self.lines("configuration reloaded")[-1])

        with open(self.path, "a") as f:
            f.write("bogus: 1\n")
        self.assertFalse(service.reload())
        [failed] = self.lines("config reload failed")
        self.assertIn(f"keeping the old configuration: {self.path}: bogus: unknown section", failed)
        self.assertTrue(logsetup.debugEnabled())

    def test_rotatedSecretFile(self) -> None:
        """
        A token kept in a secret_file is rotated by rewriting the file and
        sending SIGHUP: the new secret is accepted, the old one no longer.
        """
        from suite.spacecomms.config import loadConfig
        from suite.spacecomms.service import SpaceCommsService

        secret = self.path + ".token"
        with open(secret, "w") as f:
            f.write("first-secret-123\n")
        with open(self.path, "w") as f:
            f.write(
                "node: {id: n1}\nserver: {port: 0, peer_port: 0}\n"
                f'api: {{auth: {{tokens: [{{id: a, secret_file: "{secret}", permissions: [read]}}]}}}}\n'
            )
        service = SpaceCommsService(loadConfig(self.path, {}), MemoryReactorClock(), environ={})
        assert service.checker is not None
        self.assertEqual(service.checker.check("first-secret-123"), "a")
        with open(secret, "w") as f:
            f.write("second-secret-456\n")
        self.assertTrue(service.reload())
        self.assertEqual(service.checker.check("second-secret-456"), "a")
        self.assertIsNone(service.checker.check("first-secret-123"))

    def test_logFileReopened(self) -> None:
        """
        SIGHUP reopens a logging.output file, so after logrotate moved it
        away the node writes to a new file at the configured path; if the
        path cannot be opened the node says so and keeps the old file.
        """
        from twisted.logger import Logger

        from suite.spacecomms import logsetup
        from suite.spacecomms.config import loadConfig
        from suite.spacecomms.service import SpaceCommsService

        logPath = self.path + ".log"
        self.write(f'level: info, output: "{logPath}"')
        config = loadConfig(self.path, {})
        logsetup.configure("json", "info", logPath)
        built = logsetup.observer()
        self.addCleanup(lambda: cast(Any, built).stream.close())
        probe = Logger(namespace="probe", observer=built)
        service = SpaceCommsService(config, MemoryReactorClock(), environ={})
        probe.info("before rotation")
        os.rename(logPath, logPath + ".1")
        probe.info("still the old file")
        self.assertTrue(service.reload())
        probe.info("after rotation")
        with open(logPath + ".1") as f:
            old = f.read()
        with open(logPath) as f:
            new = f.read()
        self.assertIn("before rotation", old)
        self.assertIn("still the old file", old)
        self.assertNotIn("after rotation", old)
        self.assertIn("after rotation", new)

        os.rename(logPath, logPath + ".2")
        os.mkdir(logPath)  # the path cannot be opened as a file now
        self.assertTrue(service.reload())
        [line] = self.lines("cannot reopen the log file")
        self.assertIn(
            f"cannot reopen the log file {logPath}: Is a directory; still writing to the old one", line
        )
        probe.info("kept writing")
        with open(logPath + ".2") as f:
            self.assertIn("kept writing", f.read())


class KeptPeersTests(SynchronousTestCase):
    """
    Peers added with POST /peers are kept beside a file store (PATH.peers)
    and come back after a restart.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.path = os.path.join(self.base, "a.yaml")
        self.write([])

    def write(self, peers: list[str]) -> None:
        with open(self.path, "w") as f:
            f.write(
                "node: {id: A}\napi: {auth: {enabled: false}}\n"
                f"storage: {{type: file, file_path: {self.base}/data}}\n"
                f"peers: [{', '.join(peers)}]\n"
            )

    def service(self) -> Any:
        from suite.spacecomms.config import loadConfig
        from suite.spacecomms.service import SpaceCommsService

        service = SpaceCommsService(loadConfig(self.path, {}), MemoryReactorClock(), environ={})
        service.node.start()
        return service

    def test_keptAcrossRestarts(self) -> None:
        """
        A peer added through the API is written to PATH.peers (mode 0600:
        it holds the token) and is back after a restart; one removed stays
        removed; once the configuration file lists the same id, the file's
        entry is the one used.
        """
        import stat

        from suite.spacecomms.config import PeerConfig, Policies

        first = self.service()
        first.addPeer(PeerConfig("C", "https://c:1", "c", 1, "peer-token-c", Policies(forward_cdm=False)))
        first.addPeer(PeerConfig("D", "https://d:1", "d", 1, "peer-token-d", Policies()))
        kept = os.path.join(self.base, "data.peers")
        self.assertEqual(stat.S_IMODE(os.stat(kept).st_mode), 0o600)
        first.node.stop()

        second = self.service()
        self.assertEqual(sorted(second.node.peerConfigs), ["C", "D"])
        self.assertFalse(second.node.peerConfigs["C"].policies.forward_cdm)
        self.assertEqual(second.node.peerConfigs["D"].auth_token, "peer-token-d")
        self.assertTrue(second.removePeer("D"))
        second.node.stop()

        self.write(['{id: C, address: "https://c.example:2", auth_token: file-token-c}'])
        third = self.service()
        self.assertEqual(sorted(third.node.peerConfigs), ["C"])
        self.assertEqual(third.node.peerConfigs["C"].address, "https://c.example:2")
        self.assertEqual(sorted(third.apiPeers), [])
        third.node.stop()

    def test_badFileStopsStartUp(self) -> None:
        """
        A PATH.peers that is not what the node wrote stops start-up naming
        the file, rather than dropping peers silently.
        """
        from suite.spacecomms.config import loadConfig
        from suite.spacecomms.service import SpaceCommsService, startupChecks

        for text, reason in (
            ("{", "not valid JSON"),
            ('[{"peer_id": "x y", "address": "h:1"}]', "[0].peer_id"),
        ):
            with open(os.path.join(self.base, "data.peers"), "w") as f:
                f.write(text)
            e = self.assertRaises(
                ConfigError, SpaceCommsService, loadConfig(self.path, {}), MemoryReactorClock()
            )
            self.assertIn(f"{self.base}/data.peers", str(e))
            self.assertIn(reason, str(e))
            self.assertIn("fix or remove it", str(e))
            # validate-config runs the same check.
            self.assertEqual(
                str(self.assertRaises(ConfigError, startupChecks, loadConfig(self.path, {}))), str(e)
            )
