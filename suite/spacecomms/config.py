"""
The SpaceComms YAML configuration: loading, C{${VAR}} expansion, checking
and the environment overrides.  Every problem is reported as
C{key.path: reason}; L{loadConfig} collects all of them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from suite.daemon import ConfigError
from suite.spacecomms.envelope import MAX_PATH, MAX_TTL_SECONDS

__all__ = [
    "Config",
    "ConfigInvalid",
    "PeerConfig",
    "Policies",
    "TokenConfig",
    "loadConfig",
    "parseConfig",
    "parseAddress",
    "PERMISSIONS",
]

PERMISSIONS = ("read", "write", "admin")
LEVELS = ("debug", "info", "warn", "warning", "error", "critical", "trace")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigInvalid(ConfigError):
    """
    The configuration has one or more problems; C{reasons} lists each as
    C{key.path: reason}.
    """

    def __init__(self, reasons: list[str], source: str = "") -> None:
        self.reasons = reasons
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(reasons))


@dataclass(frozen=True)
class Policies:
    """
    What this node accepts from, and forwards to, one peer.
    """

    accept_cdm: bool = True
    accept_object_state: bool = True
    forward_cdm: bool = True
    forward_object_state: bool = True
    rate_limit_per_second: float = 500.0
    rate_limit_burst: int = 1000


@dataclass(frozen=True)
class PeerConfig:
    """
    One configured peer.
    """

    id: str
    address: str
    host: str
    port: int
    auth_token: str = field(repr=False)
    policies: Policies = Policies()


@dataclass(frozen=True)
class TokenConfig:
    """
    One API bearer token.
    """

    id: str
    secret: str = field(repr=False)
    permissions: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    """
    The whole checked configuration.
    """

    node_id: str
    node_name: str
    host: str = "127.0.0.1"
    port: int = 8080
    peer_host: str = "0.0.0.0"
    peer_port: int = 8443
    tls_enabled: bool = False
    cert_path: str | None = None
    key_path: str | None = None
    ca_path: str | None = None
    #: Where peer trust comes from, stated at start-up.
    ca_source: str = "server.tls.ca_path"
    #: Lowest TLS version accepted on peer and API connections: "1.2" or "1.3".
    tls_min_version: str = "1.2"
    api_tls: bool = False
    max_body_bytes: int = 1024 * 1024
    auth_enabled: bool = True
    tokens: tuple[TokenConfig, ...] = ()
    peers: tuple[PeerConfig, ...] = ()
    storage_type: str = "memory"
    file_path: str | None = None
    cleanup_enabled: bool = False
    cdm_retention_hours: float = 168.0
    object_retention_hours: float = 720.0
    log_level: str = "info"
    log_format: str = "json"
    log_output: str = "stdout"
    heartbeat_interval_seconds: float = 30.0
    session_timeout_seconds: float = 120.0
    max_hop_count: int = 10
    message_ttl_seconds: float = 300.0
    resync_grace_seconds: float = 30.0
    max_frame_bytes: int = 1024 * 1024
    reconnect_initial_seconds: float = 1.0
    reconnect_max_seconds: float = 30.0
    max_clock_skew_seconds: float = 300.0
    anti_entropy_interval_seconds: float = 10.0
    override_nodes: tuple[str, ...] = ()
    path: str = ""


class _Checker:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.errors: list[str] = []

    def error(self, path: str, reason: str) -> None:
        self.errors.append(f"{path}: {reason}")

    def expand(self, value: Any, path: str) -> Any:
        if isinstance(value, str):

            def sub(m: re.Match[str]) -> str:
                name, default = m.group(1), m.group(2)
                got = self.environ.get(name)
                if got in (None, ""):
                    if default is not None:
                        return default
                    self.error(path, f"environment variable {name} is not set")
                    return ""
                return got

            return _VAR.sub(sub, value)
        if isinstance(value, list):
            return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.expand(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        return value

    def section(self, doc: Mapping[str, Any], key: str, path: str, allowed: set[str]) -> dict[str, Any]:
        value = doc.get(key)
        full = f"{path}.{key}" if path else key
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(full, "must be a mapping")
            return {}
        for k in value:
            if k not in allowed:
                self.error(f"{full}.{k}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return value

    def string(
        self, d: Mapping[str, Any], key: str, path: str, default: str | None = None, required: bool = False
    ) -> str | None:
        value = d.get(key)
        if value is None:
            if required:
                self.error(f"{path}.{key}" if path else key, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.error(f"{path}.{key}" if path else key, "must be a string")
            return default
        return str(value)

    def boolean(self, d: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if not isinstance(value, bool):
            self.error(f"{path}.{key}", "must be true or false")
            return default
        return value

    def number(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        lo: float,
        hi: float,
        integer: bool = False,
    ) -> Any:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                pass
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (integer and not isinstance(value, int))
        ):
            self.error(f"{path}.{key}", f"must be {'an integer' if integer else 'a number'}")
            return default
        if not lo <= value <= hi:
            self.error(f"{path}.{key}", f"must be between {lo:g} and {hi:g}, got {value}")
            return default
        return value


#: Largest secret file read (a secret is at most 4096 characters).
MAX_SECRET_FILE_BYTES = 16 * 1024


def readSecretFile(c: _Checker, d: Mapping[str, Any], key: str, path: str) -> str | None:
    """
    The secret in the file named by C{d[key]} (a secrets manager's mount,
    re-read at every reload so a rotated secret applies on SIGHUP), without
    its trailing newline; None, with the problem noted, when it cannot be
    read.
    """
    name = c.string(d, key, path)
    if name is None:
        return None
    full = f"{path}.{key}"
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as e:
        c.error(full, f"cannot read {name} ({e.strerror or e})")
        return None
    if len(data) > MAX_SECRET_FILE_BYTES:
        c.error(full, f"{name} is larger than {MAX_SECRET_FILE_BYTES} bytes")
        return None
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        c.error(full, f"{name} is not UTF-8 text")
        return None


def parseAddress(address: str) -> tuple[str, int, str]:
    """
    Split a peer address (C{https://host:port}, C{tls://host:port},
    C{tcp://host:port} or C{host:port}) into host, port and scheme.

    @raise ValueError: naming what is wrong.
    """
    m = re.match(
        r"^(?:(https|tls|tcp)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?/?$", address.strip()
    )
    if not m:
        raise ValueError(f"not a peer address (use https://HOST:PORT): {address[:80]!r}")
    scheme = m.group(1) or "https"
    host = m.group(2).strip("[]")
    port = int(m.group(3) or 8443)
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return host, port, scheme


def parsePeer(c: _Checker, raw: Any, path: str, fromFile: bool = False) -> PeerConfig | None:
    """
    Check one peer entry (from the file or from C{POST /peers}; only the
    file may name an C{auth_token_file}).
    """
    if not isinstance(raw, dict):
        c.error(path, "must be a mapping")
        return None
    allowed = {"id", "peer_id", "address", "auth_token", "policies"} | (
        {"auth_token_file"} if fromFile else set()
    )
    for k in raw:
        if k not in allowed:
            expected = "id, address, auth_token" + (", auth_token_file" if fromFile else "") + ", policies"
            c.error(f"{path}.{k}", f"unknown key (expected {expected})")
    key = "id" if "id" in raw or "peer_id" not in raw else "peer_id"
    pid = c.string(raw, key, path, required=True)
    if pid is not None and not _ID.match(pid):
        c.error(f"{path}.{key}", f"must be 1-64 letters, digits, '.', '_' or '-', got {pid[:80]!r}")
        pid = None
    address = c.string(raw, "address", path, required=True)
    host, port = "", 0
    if address is not None:
        try:
            host, port, _ = parseAddress(address)
        except ValueError as e:
            c.error(f"{path}.address", str(e))
            address = None
    token = c.string(raw, "auth_token", path, default="")
    if fromFile and raw.get("auth_token_file") is not None:
        if raw.get("auth_token") is not None:
            c.error(f"{path}.auth_token_file", "set auth_token or auth_token_file, not both")
        token = readSecretFile(c, raw, "auth_token_file", path)
        if token is not None and len(token) > 4096:
            c.error(f"{path}.auth_token_file", "the token must be at most 4096 characters")
    pol = c.section(raw, "policies", path, {f for f in Policies.__dataclass_fields__})
    pp = f"{path}.policies"
    policies = Policies(
        accept_cdm=c.boolean(pol, "accept_cdm", pp, True),
        accept_object_state=c.boolean(pol, "accept_object_state", pp, True),
        forward_cdm=c.boolean(pol, "forward_cdm", pp, True),
        forward_object_state=c.boolean(pol, "forward_object_state", pp, True),
        rate_limit_per_second=c.number(pol, "rate_limit_per_second", pp, 500.0, 0.001, 1e6),
        rate_limit_burst=c.number(pol, "rate_limit_burst", pp, 1000, 1, 10**7, integer=True),
    )
    if pid is None or address is None:
        return None
    return PeerConfig(pid, address, host, port, token or "", policies)


def _certificateCount(path: str) -> int:
    """
    PEM certificates in C{path} (0 when it cannot be read).
    """
    try:
        with open(path, "rb") as f:
            return f.read().count(b"-----BEGIN CERTIFICATE-----")
    except OSError:
        return 0


def parseConfig(doc: Any, environ: Mapping[str, str] | None = None, source: str = "") -> Config:
    """
    Check a parsed YAML document and build a L{Config}, applying
    C{${VAR}} expansion and the C{SPACECOMMS_*} environment overrides.

    @raise ConfigInvalid: listing every problem.
    """
    env = os.environ if environ is None else environ
    c = _Checker(env)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigInvalid(["(top level): must be a mapping of sections"], source)
    top = {"node", "server", "api", "peers", "storage", "logging", "protocol"}
    for k in doc:
        if k not in top:
            c.error(str(k), f"unknown section (expected one of: {', '.join(sorted(top))})")
    doc = c.expand(doc, "")
    node = c.section(doc, "node", "", {"id", "name"})
    nodeId = c.string(node, "id", "node", required=True) or ""
    if nodeId and not _ID.match(nodeId):
        c.error("node.id", f"must be 1-64 letters, digits, '.', '_' or '-', got {nodeId[:80]!r}")
    nodeName = c.string(node, "name", "node", default=nodeId) or nodeId

    server = c.section(doc, "server", "", {"host", "port", "peer_host", "peer_port", "tls", "max_body_bytes"})
    tls = c.section(
        server, "tls", "server", {"enabled", "cert_path", "key_path", "ca_path", "api", "min_version"}
    )
    tlsEnabled = c.boolean(tls, "enabled", "server.tls", False)
    paths: dict[str, str | None] = {}
    for key in ("cert_path", "key_path", "ca_path"):
        paths[key] = c.string(tls, key, "server.tls", required=tlsEnabled and key != "ca_path")
        p = paths[key]
        if tlsEnabled and p and not os.path.isfile(p):
            c.error(f"server.tls.{key}", f"no such file: {p}")
    caSource = "server.tls.ca_path"
    if tlsEnabled and paths["ca_path"] is None and paths["cert_path"]:
        # The guide's example names no CA: take ca.crt next to the node
        # certificate, else the issuers that follow it in a full-chain file.
        beside = os.path.join(os.path.dirname(paths["cert_path"]), "ca.crt")
        if os.path.isfile(beside):
            paths["ca_path"] = beside
            caSource = f"ca.crt next to server.tls.cert_path ({beside})"
        elif _certificateCount(paths["cert_path"]) >= 2:
            caSource = f"the last issuer certificate in server.tls.cert_path ({paths['cert_path']})"
        else:
            c.error(
                "server.tls.ca_path",
                f"not set, no ca.crt next to server.tls.cert_path ({beside}), and server.tls.cert_path "
                "holds no issuer certificate after the node's: name the CA that signs every peer's certificate",
            )
    minVersion = str(tls.get("min_version", "1.2")).strip().removeprefix("TLSv")
    if minVersion not in ("1.2", "1.3"):
        c.error("server.tls.min_version", f'must be "1.2" or "1.3", got {tls.get("min_version")!r}')
        minVersion = "1.2"

    auth = c.section(c.section(doc, "api", "", {"auth"}), "auth", "api", {"enabled", "tokens"})
    authEnabled = c.boolean(auth, "enabled", "api.auth", True)
    tokens: list[TokenConfig] = []
    rawTokens = auth.get("tokens") or []
    if not isinstance(rawTokens, list):
        c.error("api.auth.tokens", "must be a list")
        rawTokens = []
    for i, t in enumerate(rawTokens):
        tp = f"api.auth.tokens[{i}]"
        if not isinstance(t, dict):
            c.error(tp, "must be a mapping")
            continue
        for k in t:
            if k not in ("id", "secret", "secret_file", "permissions"):
                c.error(f"{tp}.{k}", "unknown key (expected id, secret or secret_file, permissions)")
        tid = c.string(t, "id", tp, required=True)
        secretKey = "secret"
        if t.get("secret_file") is not None:
            secretKey = "secret_file"
            if t.get("secret") is not None:
                c.error(f"{tp}.secret_file", "set secret or secret_file, not both")
            secret = readSecretFile(c, t, "secret_file", tp)
        else:
            secret = c.string(t, "secret", tp, required=True)
        if secret is not None and len(secret) < 8 and not any(e.startswith(f"{tp}.secret") for e in c.errors):
            c.error(f"{tp}.{secretKey}", "must be at least 8 characters")
        if secret is not None and len(secret) > 4096:
            c.error(f"{tp}.{secretKey}", "must be at most 4096 characters")
        perms = t.get("permissions", ["read"])
        if not isinstance(perms, list) or not perms or any(p not in PERMISSIONS for p in perms):
            c.error(f"{tp}.permissions", "must be a non-empty list of read, write, admin")
            perms = []
        if tid and secret:
            tokens.append(TokenConfig(tid, secret, tuple(perms)))
    for envName, tid, perms in (
        ("SPACECOMMS_ADMIN_TOKEN", "admin", ("read", "write", "admin")),
        ("SPACECOMMS_READONLY_TOKEN", "readonly", ("read",)),
    ):
        value = env.get(envName)
        if value and not 8 <= len(value) <= 4096:
            c.error(envName, "must be 8 to 4096 characters (the API token it sets)")
        elif value:
            tokens = [t for t in tokens if t.id != tid and t.secret != value]
            tokens.append(TokenConfig(tid, value, perms))
    ids = [t.id for t in tokens]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        c.error("api.auth.tokens", f"duplicate token id {dup!r}")
    bySecret: dict[str, str] = {}
    for t in tokens:
        if t.secret in bySecret and bySecret[t.secret] != t.id:
            c.error("api.auth.tokens", f"tokens {bySecret[t.secret]!r} and {t.id!r} share the same secret")
        bySecret.setdefault(t.secret, t.id)
    if authEnabled and not tokens and not rawTokens:
        # (Listed tokens that were all refused have said why already.)
        c.error(
            "api.auth.tokens", "auth is enabled but no tokens are configured (set SPACECOMMS_ADMIN_TOKEN)"
        )

    peers: list[PeerConfig] = []
    rawPeers = doc.get("peers") or []
    if not isinstance(rawPeers, list):
        c.error("peers", "must be a list")
        rawPeers = []
    for i, p in enumerate(rawPeers):
        peer = parsePeer(c, p, f"peers[{i}]", fromFile=True)
        if peer is not None:
            if peer.id == nodeId:
                c.error(f"peers[{i}].id", "must differ from node.id")
            if any(q.id == peer.id for q in peers):
                c.error(f"peers[{i}].id", f"duplicate peer id {peer.id!r}")
            peers.append(peer)

    storage = c.section(doc, "storage", "", {"type", "file_path", "cleanup"})
    stype = c.string(storage, "type", "storage", default="memory") or "memory"
    if stype not in ("memory", "file"):
        c.error("storage.type", f"must be memory or file, got {stype!r}")
    filePath = c.string(storage, "file_path", "storage", required=stype == "file")
    if stype == "file" and filePath:
        parent = os.path.dirname(os.path.abspath(filePath))
        if not os.path.isdir(parent):
            c.error("storage.file_path", f"directory does not exist: {parent}")
    cleanup = c.section(
        storage, "cleanup", "storage", {"enabled", "cdm_retention_hours", "object_retention_hours"}
    )

    logging = c.section(doc, "logging", "", {"level", "format", "output"})
    level = c.string(logging, "level", "logging", default="info") or "info"
    envLevel = env.get("SPACECOMMS_LOG_LEVEL")
    if envLevel:
        if envLevel.lower() not in LEVELS:
            c.error("SPACECOMMS_LOG_LEVEL", f"unknown log level {envLevel!r} (use debug, info, warn, error)")
        else:
            level = envLevel
    if level.lower() not in LEVELS:
        c.error("logging.level", f"unknown log level {level!r} (use debug, info, warn, error)")
    fmt = c.string(logging, "format", "logging", default="json") or "json"
    if fmt not in ("json", "pretty"):
        c.error("logging.format", f"must be json or pretty, got {fmt!r}")
    output = c.string(logging, "output", "logging", default="stdout") or "stdout"
    if output not in ("stdout", "stderr"):
        parent = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(parent):
            c.error("logging.output", f"directory does not exist: {parent}")

    proto = c.section(
        doc,
        "protocol",
        "",
        {
            "heartbeat_interval_seconds",
            "session_timeout_seconds",
            "max_hop_count",
            "message_ttl_seconds",
            "resync_grace_seconds",
            "max_frame_bytes",
            "reconnect_initial_seconds",
            "reconnect_max_seconds",
            "max_clock_skew_seconds",
            "anti_entropy_interval_seconds",
            "override_nodes",
        },
    )
    overrideNodes = proto.get("override_nodes") or []
    if not isinstance(overrideNodes, list) or not all(
        isinstance(n, str) and _ID.match(n) for n in overrideNodes
    ):
        c.error("protocol.override_nodes", "must be a list of node ids")
        overrideNodes = []
    hb = c.number(proto, "heartbeat_interval_seconds", "protocol", 30.0, 0.05, 86400)
    timeout = c.number(proto, "session_timeout_seconds", "protocol", 120.0, 0.1, 86400 * 7)
    if timeout <= hb:
        c.error("protocol.session_timeout_seconds", "must be greater than heartbeat_interval_seconds")
    initial = c.number(proto, "reconnect_initial_seconds", "protocol", 1.0, 0.01, 3600)
    ceiling = c.number(proto, "reconnect_max_seconds", "protocol", 30.0, 0.01, 86400)
    if ceiling < initial:
        c.error("protocol.reconnect_max_seconds", f"must be at least reconnect_initial_seconds ({initial:g})")
    cfg = Config(
        node_id=nodeId,
        node_name=nodeName,
        host=c.string(server, "host", "server", default="127.0.0.1") or "127.0.0.1",
        port=c.number(server, "port", "server", 8080, 0, 65535, integer=True),
        peer_host=c.string(server, "peer_host", "server", default="0.0.0.0") or "0.0.0.0",
        peer_port=c.number(server, "peer_port", "server", 8443, 0, 65535, integer=True),
        tls_enabled=tlsEnabled,
        cert_path=paths["cert_path"],
        key_path=paths["key_path"],
        ca_path=paths["ca_path"],
        ca_source=caSource,
        tls_min_version=minVersion,
        api_tls=c.boolean(tls, "api", "server.tls", False) and tlsEnabled,
        max_body_bytes=c.number(
            server, "max_body_bytes", "server", 1024 * 1024, 1024, 64 * 1024 * 1024, integer=True
        ),
        auth_enabled=authEnabled,
        tokens=tuple(tokens),
        peers=tuple(peers),
        storage_type=stype,
        file_path=filePath,
        cleanup_enabled=c.boolean(cleanup, "enabled", "storage.cleanup", False),
        cdm_retention_hours=c.number(cleanup, "cdm_retention_hours", "storage.cleanup", 168.0, 0.0001, 1e6),
        object_retention_hours=c.number(
            cleanup, "object_retention_hours", "storage.cleanup", 720.0, 0.0001, 1e6
        ),
        log_level=level.lower(),
        log_format=fmt,
        log_output=output,
        heartbeat_interval_seconds=hb,
        session_timeout_seconds=timeout,
        # A message's path holds at most MAX_PATH nodes and its ttl at most
        # MAX_TTL_SECONDS: every peer refuses anything beyond as invalid.
        max_hop_count=c.number(proto, "max_hop_count", "protocol", 10, 1, MAX_PATH, integer=True),
        message_ttl_seconds=c.number(proto, "message_ttl_seconds", "protocol", 300.0, 1, MAX_TTL_SECONDS),
        resync_grace_seconds=c.number(proto, "resync_grace_seconds", "protocol", 30.0, 0, 86400),
        max_frame_bytes=c.number(
            proto, "max_frame_bytes", "protocol", 1024 * 1024, 4096, 64 * 1024 * 1024, integer=True
        ),
        reconnect_initial_seconds=initial,
        reconnect_max_seconds=ceiling,
        max_clock_skew_seconds=c.number(proto, "max_clock_skew_seconds", "protocol", 300.0, 1, 86400),
        anti_entropy_interval_seconds=c.number(
            proto, "anti_entropy_interval_seconds", "protocol", 10.0, 0, 86400
        ),
        override_nodes=tuple(overrideNodes),
        path=source,
    )
    wildcard = ("0.0.0.0", "::", "")
    if (
        cfg.port == cfg.peer_port != 0
        and (cfg.host == cfg.peer_host or cfg.host in wildcard or cfg.peer_host in wildcard)
        and not any(e.startswith(("server.port", "server.peer_port")) for e in c.errors)
    ):
        c.error(
            "server.peer_port",
            f"must differ from server.port ({cfg.port}): the API and the peer listener cannot share a port",
        )
    if c.errors:
        raise ConfigInvalid(c.errors, source)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """
    YAML's safe loader, refusing a key given twice in one mapping (which
    plain YAML loading settles silently in favour of the last).
    """

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for keyNode, _ in node.value:
                if keyNode.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(keyNode, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: the loader itself says so
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", keyNode.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def loadConfig(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """
    Read, expand and check the YAML file at C{path}.

    @raise ConfigInvalid: naming the file and every problem.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigInvalid([f"cannot read the file ({e.strerror or e})"], path)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigInvalid([f"larger than {MAX_CONFIG_BYTES} bytes"], path)
    try:
        doc = yaml.load(data, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigInvalid([f"{where}: invalid YAML ({problem})"], path)
    return parseConfig(doc, environ, path)
