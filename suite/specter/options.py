"""
Command-line surface of Specter: C{server} and C{dns} (twistd subcommands)
plus the console-only C{client}, C{pki} and C{kv} helpers.

Every flag and environment variable named in the operator guide is parsed
and validated here, in one place; errors are one line naming the flag.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from suite.daemon import ConfigError, DaemonOptions
from suite.logging import Secret
from suite.specter.addresses import (
    ListenMixin,
    clientEndpoint,
    isLoopbackEndpoint,
    parseAcme,
    parseAcmeNS,
    parseHostPort,
    parsePeerAddress,
    parseSize,
    rpcEndpoint,
    splitEnv,
)
from suite.specter.tunnel.frames import MAX_PAYLOAD

__all__ = [
    "ServerOptions",
    "DNSOptions",
    "Options",
    "ConsoleOptions",
    "KVOptions",
    "ClientOptions",
    "parseSize",
    "parseHostPort",
    "rpcEndpoint",
    "isLoopbackEndpoint",
]

KV_BACKENDS = ("aof", "sqlite", "memory")
#: Bounds of --transport-buffer (the size of each socket read and of the
#: write buffer before back-pressure) and --proxy-buffer (the DATA frame
#: size, at most a frame's largest payload).
MIN_BUFFER = 1024
MAX_TRANSPORT_BUFFER = 16 * 1024 * 1024
DEFAULT_RPC = "tcp://127.0.0.1:11180"
DEFAULT_INTERNAL = "tcp://127.0.0.1:9999"
LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


class ServerOptions(ListenMixin, DaemonOptions):
    """
    C{specter server}: a ring node (Chord vnodes + replicated KV).
    """

    optFlags = [
        [
            "cert-env",
            None,
            "Load the CA bundle from base64 env CERT_CA, CERT_NODE, CERT_NODE_KEY, CERT_CLIENT_CA, CERT_CLIENT_CA_KEY.",
        ],
        ["proxy-protocol", None, "Require a PROXY protocol header on the TCP listeners (gateway)."],
        [
            "aof-sync",
            None,
            "aof backend: acknowledge each write only once it is also fsynced (group commit), not "
            "just written: a power loss then loses no acknowledged write either.",
        ],
        [
            "rpc-allow-remote",
            None,
            "Allow --listen-rpc on a non-loopback TCP address (TCP clients authenticate with DATA/rpc.token, "
            "but the RPC has no TLS).",
        ],
        [
            "bootstrap",
            None,
            "Found a new ring even though the data directory remembers one (only when that ring is gone for good).",
        ],
    ]
    optParameters = [
        ["data-dir", None, None, "Data directory (required; alias --data). Vnode i keeps its KV in DATA/i."],
        [
            "cert-dir",
            None,
            None,
            "CA bundle directory: ca.crt client-ca.crt client-ca.key node.crt node.key (alias --cert).",
        ],
        [
            "acme",
            None,
            None,
            "ACME certificates for every --apex and its wildcard, DNS-01 through managed.ACME_ZONE: acme://EMAIL@ACME_ZONE.",
        ],
        [
            "acme-directory",
            None,
            LETSENCRYPT_DIRECTORY,
            "ACME directory URL (https; default Let's Encrypt production).",
        ],
        [
            "acme-ca",
            None,
            None,
            "PEM file of extra trust roots for the ACME server's HTTPS (default: the system roots).",
        ],
        [
            "dns-resolver",
            None,
            None,
            "DNS server HOST[:PORT] (default port 53) used to check custom domains' _acme-challenge CNAMEs (default: the system resolver).",
        ],
        [
            "join",
            None,
            None,
            "Advertise address HOST:PORT of a ring member to join (comma-separated for several); without it a node rejoins the ring its data directory remembers, or founds one when the directory is fresh.",
        ],
        ["virtual", None, "5", "Virtual nodes (vnodes) per process."],
        [
            "advertise-addr",
            None,
            None,
            "Routable HOST:PORT other nodes and clients dial; hashed into the node identity (default: first TCP bind, or 127.0.0.1:443).",
        ],
        [
            "listen-http",
            None,
            None,
            "HTTP listener for CONNECT and HTTPS redirect (gateway; default 80 when advertised port is 443).",
        ],
        [
            "listen-rpc",
            None,
            DEFAULT_RPC,
            "KV/vnode RPC endpoint: tcp://HOST:PORT or unix:///path.sock (no authentication).",
        ],
        [
            "listen-internal",
            None,
            DEFAULT_INTERNAL,
            "Loopback helper serving /healthz, /readyz, /metrics and (with credentials) /_internal.",
        ],
        ["transport-buffer", None, "16KiB", "Read/write buffer size for client transports (gateway)."],
        ["proxy-buffer", None, "16KiB", "Buffer size when proxying HTTP to clients (gateway)."],
        ["auth_user", None, None, "User for /_internal basic auth (env INTERNAL_USER; also --auth-user)."],
        [
            "auth_pass",
            None,
            None,
            "Password for /_internal basic auth (env INTERNAL_PASS; also --auth-pass).",
        ],
        ["sentry", None, None, "Sentry DSN: send errors, with info-level breadcrumbs (env SENTRY_DSN)."],
        [
            "auth-ldap",
            None,
            None,
            "Also accept /_internal users by LDAP simple bind: ldap://HOST[:PORT], ldaps://... or an endpoint string.",
        ],
        [
            "auth-ldap-dn",
            None,
            None,
            "Bind DN template for --auth-ldap, e.g. uid={username},ou=people,dc=example,dc=org.",
        ],
        [
            "auth-ldap-group",
            None,
            None,
            "Optional LDAP group filter the user must match; it must name the user with {dn} "
            "or {username}, e.g. (&(objectClass=groupOfNames)(cn=ops)(member={dn})).",
        ],
        ["kv", None, "aof", "KV backend: aof (default), sqlite or memory (tests only)."],
        ["replicas", None, "3", "Copies of each key (owner + R-1 successors on distinct processes)."],
        [
            "aof-flush-interval",
            None,
            "3",
            "Seconds between fsyncs of the AOF files (a write is in the file before it is acknowledged).",
        ],
        [
            "tombstone-horizon",
            None,
            "604800",
            "Seconds a deleted key's tombstone is kept (7 days); copies of a ring kept apart "
            "longer may bring deleted keys back when they merge.",
        ],
        [
            "stabilize-interval",
            None,
            "0.5",
            "Seconds between stabilize / fix-fingers / check-predecessor rounds (jittered).",
        ],
        ["rpc-timeout", None, "3", "Seconds before a node-to-node call is given up."],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(environ)
        self["apex"] = []
        self["acme-ns"] = []
        self._explicit: set[str] = set()
        self._initListen()

    def opt_data(self, value: str) -> None:
        """
        Alias for --data-dir.
        """
        self["data-dir"] = value

    def opt_cert(self, value: str) -> None:
        """
        Alias for --cert-dir.
        """
        self["cert-dir"] = value

    def opt_apex(self, value: str) -> None:
        """
        Apex hostname served by the gateway (repeatable; the first is the default SNI).
        """
        self["apex"].append(value.strip().rstrip(".").lower())

    def opt_acme_ns(self, value: str) -> None:
        """
        Accepted for symmetry with specter dns, where it belongs; unused by the server.
        """
        self["acme-ns"].append(parseAcmeNS(value))

    def opt_transport_buffer(self, value: str) -> None:
        """
        Read/write buffer size for client transports (gateway; default 16KiB).
        """
        self._explicit.add("transport-buffer")
        self["transport-buffer"] = value

    def opt_proxy_buffer(self, value: str) -> None:
        """
        Buffer size when proxying HTTP to clients (gateway; default 16KiB).
        """
        self._explicit.add("proxy-buffer")
        self["proxy-buffer"] = value

    def _number(self, key: str, kind: type, low: float, high: float) -> Any:
        try:
            value = kind(self[key])
        except (TypeError, ValueError):
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"--{key}: {self[key]!r} is not {what}") from None
        if not low <= value <= high:
            raise ConfigError(f"--{key}: must be between {low} and {high}")
        return value

    def postOptions(self) -> None:
        super().postOptions()
        self.envFallback("auth_user", "INTERNAL_USER")
        self.envFallback("auth_pass", "INTERNAL_PASS")
        _sentryOption(self)
        if not self["data-dir"]:
            raise ConfigError("--data-dir: required (alias --data)")
        if not self["cert-env"] and not self["cert-dir"]:
            raise ConfigError("--cert-dir: a CA bundle is required (--cert-dir/--cert DIR or --cert-env)")
        if self["cert-env"] and self["cert-dir"]:
            raise ConfigError("--cert-env: give either --cert-dir or --cert-env, not both")
        self["virtual"] = self._number("virtual", int, 1, 64)
        self["replicas"] = self._number("replicas", int, 1, 7)
        self["aof-flush-interval"] = self._number("aof-flush-interval", float, 0.01, 300)
        self["tombstone-horizon"] = self._number("tombstone-horizon", float, 60, 10 * 365 * 86400)
        self["stabilize-interval"] = self._number("stabilize-interval", float, 0.01, 60)
        self["rpc-timeout"] = self._number("rpc-timeout", float, 0.1, 120)
        if self["kv"] not in KV_BACKENDS:
            raise ConfigError(f"--kv: {self['kv']!r} is not one of {', '.join(KV_BACKENDS)}")
        if self["aof-sync"] and self["kv"] != "aof":
            raise ConfigError(
                f"--aof-sync: only for --kv aof (--kv {self['kv']} "
                + ("acknowledges after its commit)" if self["kv"] == "sqlite" else "keeps nothing on disk)")
            )
        for key, high in (("transport-buffer", MAX_TRANSPORT_BUFFER), ("proxy-buffer", MAX_PAYLOAD)):
            self[key] = parseSize(f"--{key}", str(self[key]))
            if not MIN_BUFFER <= self[key] <= high:
                raise ConfigError(
                    f"--{key}: must be between {MIN_BUFFER // 1024}KiB and {high // (1024 * 1024)}MiB "
                    f"(not {self[key]} bytes)"
                )
        if self["acme"]:
            self["acme"] = parseAcme("--acme", self["acme"])
            if not self["apex"]:
                raise ConfigError("--acme: certificates are for the --apex names; give at least one --apex")
        self["acme-directory"] = _checkDirectory(self["acme-directory"])
        self["acme-ca-pems"] = _readTrustRoots(self["acme-ca"]) if self["acme-ca"] else []
        if self["dns-resolver"]:
            self["dns-resolver"] = parseHostPort("--dns-resolver", self["dns-resolver"], 53)
        user, password = self["auth_user"], self["auth_pass"]
        if bool(user) != bool(password):
            raise ConfigError(
                "--auth_user: --auth_user and --auth_pass (INTERNAL_USER/INTERNAL_PASS) go together"
            )
        self["auth_pass"] = Secret(password) if password else None
        if bool(self["auth-ldap"]) != bool(self["auth-ldap-dn"]):
            raise ConfigError("--auth-ldap: --auth-ldap and --auth-ldap-dn go together")
        if self["auth-ldap-dn"] and "{username}" not in self["auth-ldap-dn"]:
            raise ConfigError("--auth-ldap-dn: the template must contain {username}")
        self._finishListen(443)
        if self["advertise-addr"]:
            self["advertise-addr"] = parsePeerAddress("--advertise-addr", self["advertise-addr"])
            if self["advertise-addr"][0] in ("0.0.0.0", "::"):
                raise ConfigError("--advertise-addr: must be a routable address, not a wildcard")
        elif self["tcp-binds"]:
            host, port = self["tcp-binds"][0]
            self["advertise-addr"] = ("127.0.0.1" if host in ("0.0.0.0", "::") else host, port)
        else:
            self["advertise-addr"] = ("127.0.0.1", 443)
        if not self["tcp-binds"]:
            self["tcp-binds"] = [("0.0.0.0", self["advertise-addr"][1])]
        if self["join"]:
            self["join"] = [parsePeerAddress("--join", j) for j in splitEnv(self["join"])]
            if not self["join"]:
                raise ConfigError("--join: give the HOST:PORT of a ring member")
        else:
            self["join"] = []
        if self["bootstrap"] and self["join"]:
            raise ConfigError("--bootstrap: founds a new ring; it does not go with --join")
        if self["listen-http"] is not None:
            self["listen-http"] = parseHostPort(
                "--listen-http",
                self["listen-http"] if ":" in self["listen-http"] else f":{self['listen-http']}",
                80,
            )
        if not self["apex"]:
            gatewayOnly = self.gatewayFlags()
            if gatewayOnly:
                raise ConfigError(
                    f"{gatewayOnly[0]}: needs --apex: {', '.join(gatewayOnly)} configure the gateway, "
                    "which runs only when at least one --apex is given"
                )
        self["rpc-endpoint"] = rpcEndpoint("--listen-rpc", self["listen-rpc"])
        if not self["rpc-allow-remote"] and not isLoopbackEndpoint(self["rpc-endpoint"]):
            raise ConfigError(
                "--listen-rpc: refusing a non-loopback TCP bind for the RPC, which has no TLS (use --rpc-allow-remote to accept the risk)"
            )
        self["internal-endpoint"] = rpcEndpoint("--listen-internal", self["listen-internal"])
        if not isLoopbackEndpoint(self["internal-endpoint"]):
            raise ConfigError("--listen-internal: must bind loopback or a unix socket")

    def gatewayFlags(self) -> list[str]:
        """
        The gateway-only flags given explicitly (they need an C{--apex}).
        """
        given = []
        if self["listen-udp"]:
            given.append("--listen-udp")
        if self["listen-http"] is not None:
            given.append("--listen-http")
        if self["proxy-protocol"]:
            given.append("--proxy-protocol")
        for key in ("transport-buffer", "proxy-buffer"):
            if key in self._explicit:
                given.append(f"--{key}")
        return given

    def laterFeatures(self) -> list[str]:
        """
        Documented features that were asked for but are not built yet.
        """
        wanted = []
        if self["listen-udp"]:
            wanted.append("QUIC/UDP listeners (--listen-udp)")
        if self["listen-http"] is not None:
            wanted.append("HTTP CONNECT/redirect listener (--listen-http)")
        if self["proxy-protocol"]:
            wanted.append("PROXY protocol (--proxy-protocol)")
        for key in ("transport-buffer", "proxy-buffer"):
            if key in self._explicit:
                wanted.append(f"gateway buffer tuning (--{key})")
        return wanted


def _sentryOption(options: DaemonOptions) -> None:
    """
    C{--sentry}, else C{SENTRY_DSN}: a malformed DSN names where it came from
    (never echoing the key).
    """
    given = bool(options["sentry"])
    options.envFallback("sentry", "SENTRY_DSN")
    if options["sentry"]:
        from suite.sentry import checkDSN

        checkDSN("--sentry" if given else "SENTRY_DSN (--sentry)", options["sentry"])


def _checkDirectory(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError as e:
        raise ConfigError(f"--acme-directory: {url!r}: {e}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"--acme-directory: {url!r} must be an https:// URL")
    return url


def _readTrustRoots(path: str) -> list[bytes]:
    import re

    from cryptography import x509

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"--acme-ca: cannot read {path}: {e.strerror}") from None
    pems = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)
    if not pems:
        raise ConfigError(f"--acme-ca: {path} holds no PEM certificate")
    for pem in pems:
        try:
            x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise ConfigError(f"--acme-ca: {path} holds a certificate that cannot be parsed") from None
    return [pem + b"\n" for pem in pems]


class DNSOptions(ListenMixin, DaemonOptions):
    """
    C{specter dns}: the ACME DNS-01 solver answering TXT from the ring KV.
    """

    optParameters = [
        ["acme", None, None, "ACME URI acme://EMAIL@ACME_ZONE (same as the servers')."],
        ["rpc", None, DEFAULT_RPC, "A server's --listen-rpc: tcp://HOST:PORT or unix:///path.sock."],
        [
            "rpc-token-file",
            None,
            None,
            "The server's RPC token (its DATA/rpc.token) for a tcp:// --rpc (env SPECTER_RPC_TOKEN_FILE); "
            "unset: the loopback node's own, when this user can read it.",
        ],
        [
            "rate-limit",
            None,
            "0",
            "UDP queries per second per source address (burst twice that); 0: no limit.",
        ],
        [
            "listen-internal",
            None,
            None,
            "Loopback helper serving /healthz, /readyz and /metrics, e.g. tcp://127.0.0.1:9953 (off by default).",
        ],
        ["sentry", None, None, "Sentry DSN: send errors, with info-level breadcrumbs (env SENTRY_DSN)."],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(environ)
        self["acme-ns"] = []
        self._initListen()

    def opt_acme_ns(self, value: str) -> None:
        """
        Authoritative NS and glue: ns1.zone/IPv4[,IPv6] (repeatable).
        """
        self["acme-ns"].append(parseAcmeNS(value))

    def opt_listen_udp(self, value: str) -> None:
        """
        UDP-only bind HOST:PORT, overrides --listen-addr for UDP (repeatable; env LISTEN_UDP).
        """
        self["listen-udp"].extend(splitEnv(value))

    def postOptions(self) -> None:
        super().postOptions()
        _sentryOption(self)
        if not self["acme"]:
            raise ConfigError("--acme: required (acme://EMAIL@ACME_ZONE)")
        self["acme"] = parseAcme("--acme", self["acme"])
        if not self["acme-ns"]:
            raise ConfigError("--acme-ns: at least one ns1.zone/IPv4[,IPv6] is required")
        self["rpc-client"] = clientEndpoint("--rpc", self["rpc"])
        self["rpc-token"] = _rpcToken(self, None, self.environ)
        try:
            self["rate-limit"] = float(self["rate-limit"])
        except ValueError:
            raise ConfigError(f"--rate-limit: {self['rate-limit']!r} is not a number") from None
        if not 0 <= self["rate-limit"] <= 1_000_000:
            raise ConfigError("--rate-limit: must be between 0 and 1000000")
        self._finishListen(53)
        if self["listen-internal"]:
            self["internal-endpoint"] = rpcEndpoint("--listen-internal", self["listen-internal"])
            if not isLoopbackEndpoint(self["internal-endpoint"]):
                raise ConfigError("--listen-internal: must bind loopback or a unix socket")
        else:
            self["internal-endpoint"] = None
        from suite.specter.dns.zone import checkZone

        checkZone(self["acme"][1], [name for name, _ in self["acme-ns"]])


def _rpcToken(options: Any, dataDir: str | None, environ: Mapping[str, str] | None) -> Secret | None:
    """
    The RPC token a client sends over a tcp:// --rpc (see
    L{suite.specter.rpcauth.clientToken}); None for a unix socket, whose
    peer is authenticated by its user.
    """
    from suite.specter.rpcauth import clientToken

    if options["rpc-client"].startswith("unix:") and not options["rpc-token-file"]:
        return None
    token = clientToken(options["rpc-token-file"], dataDir, environ)
    return None if token is None else Secret(token.decode())


def _bindEnviron(cls: type[DaemonOptions], environ: Mapping[str, str]) -> Any:
    def make() -> DaemonOptions:
        return cls(environ)

    make.__doc__ = cls.__doc__
    return make


class Options(DaemonOptions):
    """
    twistd specter: C{server} (ring node) or C{dns} (ACME DNS solver).
    """

    subCommands: list[list[Any]] = [
        ["server", None, ServerOptions, "Run a ring node (Chord vnodes, replicated KV, RPC)."],
        ["dns", None, DNSOptions, "Run the ACME DNS-01 solver."],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(environ)
        env = self.environ
        subs: list[list[Any]] = []
        for name, short, parser, doc in type(self).subCommands:
            if isinstance(parser, type) and issubclass(parser, DaemonOptions):
                parser = _bindEnviron(parser, env)
            subs.append([name, short, parser, doc])
        self.subCommands = subs

    def postOptions(self) -> None:
        super().postOptions()
        if self.subCommand is None:
            raise ConfigError("a subcommand is required: server or dns")
        sub = self.subOptions
        if self["verbose"]:
            sub["verbose"] = True
        for key in ("manhole", "manhole-keys"):
            if self.get(key) and not sub.get(key):
                sub[key] = self[key]


class KVOptions(usage.Options):
    """
    C{specter kv put|get|delete|list|append|contains|remove|stats} through --listen-rpc.
    """

    optParameters = [
        ["rpc", None, DEFAULT_RPC, "The server's --listen-rpc: tcp://HOST:PORT or unix:///path.sock."],
        [
            "rpc-token-file",
            None,
            None,
            "The server's RPC token (its DATA/rpc.token) for a tcp:// --rpc (env SPECTER_RPC_TOKEN_FILE); "
            "unset: the loopback node's own, when this user can read it.",
        ],
        [
            "data-dir",
            None,
            None,
            "The server's data directory (alias --data): read its rpc.token when no token file is given.",
        ],
        ["timeout", None, "10", "Seconds to wait for an answer."],
    ]

    def opt_data(self, value: str) -> None:
        """
        Alias of --data-dir.
        """
        self["data-dir"] = value

    ACTIONS = {
        "put": 2,
        "get": 1,
        "delete": 1,
        "list": 1,
        "append": 2,
        "contains": 2,
        "remove": 2,
        "stats": 0,
        "lookup": 1,
    }

    #: The arguments of each action, as the help shows them.
    USAGE = {
        "put": ("KEY VALUE", "store VALUE under KEY"),
        "get": ("KEY", "print the value of KEY (exit 1 when absent)"),
        "delete": ("KEY", "remove KEY"),
        "list": ("KEY", "print the list stored under KEY"),
        "append": ("KEY VALUE", "append VALUE to the list under KEY"),
        "contains": ("KEY VALUE", "whether the list under KEY holds VALUE"),
        "remove": ("KEY VALUE", "remove VALUE from the list under KEY"),
        "stats": ("", "the node's counters"),
        "lookup": ("KEY", "the vnode that owns KEY"),
    }
    synopsis = "[options] ACTION [ARGS]"

    def getUsage(self, width: int | None = None) -> str:
        lines = [super().getUsage(width).rstrip("\n"), "Actions:"]
        for action, (args, what) in self.USAGE.items():
            lines.append(f"    {(action + ' ' + args).strip():20} {what}")
        return "\n".join(lines) + "\n"

    def parseArgs(self, action: str, *args: str) -> None:  # type: ignore[override]
        if action in self.ACTIONS and ("--help" in args or "-h" in args):
            argNames, what = self.USAGE[action]
            sys.stdout.write(
                f"{self.getSynopsis().replace('ACTION [ARGS]', f'{action} {argNames}').rstrip()}\n"
            )
            sys.stdout.write(f"{what[0].upper()}{what[1:]}, through --rpc.\n")
            raise SystemExit(0)
        if action not in self.ACTIONS:
            raise ConfigError(f"kv: unknown action {action!r} (one of {', '.join(self.ACTIONS)})")
        if len(args) != self.ACTIONS[action]:
            raise ConfigError(f"kv {action}: expects {self.ACTIONS[action]} argument(s)")
        self["action"] = action
        self["args"] = list(args)

    def postOptions(self) -> None:
        self["rpc-client"] = clientEndpoint("--rpc", self["rpc"])
        # the console's environment (tests pass their own)
        self["rpc-token"] = _rpcToken(
            self, self["data-dir"], getattr(getattr(self, "parent", None), "environ", None)
        )
        try:
            self["timeout"] = float(self["timeout"])
        except ValueError:
            raise ConfigError(f"--timeout: {self['timeout']!r} is not a number") from None
        if not 0 < self["timeout"] <= 3600:
            raise ConfigError("--timeout: must be more than 0 and at most 3600 seconds")


class ClientOptions(usage.Options):
    """
    C{specter client tunnel|ls|connect|release|acme|validate} (gateway client;
    replaced by the client's own options when that is part of this build).
    """

    def parseArgs(self, *args: str) -> None:
        self["args"] = list(args)


def _clientOptions() -> Any:
    try:
        from suite.specter.client.commands import ClientOptions as Real
    except ImportError:
        return ClientOptions
    return Real


def _pkiOptions() -> Any:
    from suite.pki.options import PKIOptions

    return PKIOptions


class ConsoleOptions(Options):
    """
    The C{specter} console script: the daemon subcommands plus client helpers.
    """

    subCommands = Options.subCommands + [
        ["client", None, _clientOptions(), "Gateway client: tunnel, ls, connect, release, acme, validate."],
        ["pki", None, _pkiOptions(), "Private CA: init DIR --node HOST, node, client."],
        [
            "kv",
            None,
            KVOptions,
            "Ring KV through --listen-rpc: put, get, delete, list, append, contains, remove, stats, lookup.",
        ],
    ]
