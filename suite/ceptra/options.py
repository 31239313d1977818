"""
Options for C{twistd ceptra} / C{ceptra}: every C{CEPTRA_*} variable of
the operator guide, each also a flag.  The flag wins over the variable;
the variables are read here, in L{Options.postOptions}, and nowhere else.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

from twisted.python import usage

from suite.daemon import ConfigError, DaemonOptions, EnvTable, envParameters
from suite.netutil import isIPAddress
from suite.pki.verify import parseSpiffeId
from suite.web.endpoint import isLoopbackHost
from suite.web.listen import hostPortEndpoint, parseHostPort

__all__ = ["Options", "ENV"]

#: flag -> (environment variable, default or None, help)
ENV: EnvTable = {
    "control-plane-url": (
        "CEPTRA_CONTROL_PLANE_URL",
        None,
        "Control-plane base URL: https:// (the node's mTLS identity), or http:// on loopback only. Required.",
    ),
    "cp-routing-path": (
        "CEPTRA_CP_ROUTING_PATH",
        "/routing",
        "Control-plane path of the routing (placement) feed.",
    ),
    "cp-feature-path": (
        "CEPTRA_CP_FEATURE_PATH",
        "/features",
        "Control-plane path of the feature-flag feed.",
    ),
    "cp-warmup-path": (
        "CEPTRA_CP_WARMUP_PATH",
        "/warmup",
        "Control-plane path of the warmup readiness feed.",
    ),
    "cp-activation-path": (
        "CEPTRA_CP_ACTIVATION_PATH",
        "/activation",
        "Control-plane path of the activation barrier feed.",
    ),
    "admin-bind": (
        "CEPTRA_ADMIN_BIND",
        "127.0.0.1:26020",
        "Admin HTTP listener HOST:PORT (/healthz, /readyz, /metrics).",
    ),
    "raft-bind": ("CEPTRA_RAFT_BIND", "127.0.0.1:26021", "Raft transport listener HOST:PORT."),
    "advertise-host": (
        "CEPTRA_ADVERTISE_HOST",
        None,
        "Hostname or IP peers use to reach this node; must be in the certificate's SANs. Default: the Raft bind host.",
    ),
    "tls-identity-cert": (
        "CEPTRA_TLS_IDENTITY_CERT",
        None,
        "PEM certificate of this node (SPIFFE URI SAN). Required.",
    ),
    "tls-identity-key": (
        "CEPTRA_TLS_IDENTITY_KEY",
        None,
        "PEM private key of the identity certificate. Required.",
    ),
    "tls-trust-bundle": (
        "CEPTRA_TLS_TRUST_BUNDLE",
        None,
        "PEM CA bundle trusted for peers and the control plane. Required.",
    ),
    "node-spiffe": (
        "CEPTRA_NODE_SPIFFE",
        None,
        "This node's SPIFFE ID (spiffe://TRUST-DOMAIN/PATH); must equal the certificate's URI SAN. Required.",
    ),
    "raft-client-timeout-ms": (
        "CEPTRA_RAFT_CLIENT_TIMEOUT_MS",
        "2000",
        "Timeout of one outbound Raft RPC, in ms (1-600000).",
    ),
    "raft-client-retry-attempts": (
        "CEPTRA_RAFT_CLIENT_RETRY_ATTEMPTS",
        "3",
        "Attempts per outbound Raft RPC before giving up (1-100).",
    ),
    "raft-client-backoff-ms": (
        "CEPTRA_RAFT_CLIENT_BACKOFF_MS",
        "100",
        "Initial backoff between Raft RPC retries, in ms (0-600000).",
    ),
    "data-dir": (
        "CEPTRA_DATA_DIR",
        "target/ceptra-clustor",
        "Storage root, relative to the working directory (the runbook's default; "
        "use an absolute path such as /var/lib/ceptra/NODE in production).",
    ),
    "wal-dir": ("CEPTRA_WAL_DIR", None, "Raft WAL directory. Default: ${CEPTRA_DATA_DIR}/wal."),
    "snapshot-dir": (
        "CEPTRA_SNAPSHOT_DIR",
        None,
        "Snapshot directory. Default: ${CEPTRA_DATA_DIR}/snapshots.",
    ),
    # Suite additions (not in the upstream guide):
    "admin-tls": (
        "CEPTRA_ADMIN_TLS",
        "mtls",
        "Admin listener security: mtls (HTTPS with the node identity, client "
        "certificates from the trust bundle required) or off (plain HTTP, loopback only).",
    ),
    "feed-interval-ms": (
        "CEPTRA_FEED_INTERVAL_MS",
        "1000",
        "Control-plane feed poll interval, in ms (50-600000).",
    ),
    "feed-stale-ms": (
        "CEPTRA_FEED_STALE_MS",
        "30000",
        "Feed age after which it is logged as stale and the placement feed fails /readyz, in ms "
        "(at least twice --feed-interval-ms).",
    ),
    "feed-timeout-ms": ("CEPTRA_FEED_TIMEOUT_MS", "5000", "Timeout of one feed fetch, in ms (1-600000)."),
    "admin-allowed-spiffe": (
        "CEPTRA_ADMIN_ALLOWED_SPIFFE",
        "",
        "Comma-separated SPIFFE IDs (or trust domains spiffe://DOMAIN) allowed on the mTLS admin listener, "
        "besides the cluster's nodes (from the routing feed). Empty: nodes only.",
    ),
    "raft-election-timeout-ms": (
        "CEPTRA_RAFT_ELECTION_TIMEOUT_MS",
        "500",
        "Raft election timeout floor, in ms (randomised up to twice it; 20-60000).",
    ),
    "raft-heartbeat-ms": (
        "CEPTRA_RAFT_HEARTBEAT_MS",
        "100",
        "Raft heartbeat interval, in ms (at most half the election timeout).",
    ),
    "snapshot-threshold": (
        "CEPTRA_SNAPSHOT_THRESHOLD",
        "2000",
        "Applied log entries (batches) between engine snapshots (1-10000000; each replica uses it +-25%, "
        "so replicas of a partition do not snapshot at once).",
    ),
    "ready-max-lag": (
        "CEPTRA_READY_MAX_LAG",
        "1000",
        "Largest gap between a partition's committed and match index (entries) that /readyz accepts.",
    ),
    "max-batch-bytes": (
        "CEPTRA_MAX_BATCH_BYTES",
        "4194304",
        "Largest ingest request body, in bytes (1024-67108864).",
    ),
    "retired-keep-s": (
        "CEPTRA_RETIRED_KEEP_S",
        "86400",
        "How long the data of a replica moved off this node is kept under ${CEPTRA_DATA_DIR}/retired "
        "once its group removed it, in seconds (0-31536000; 0: deleted at the next check, within a minute).",
    ),
    "ingest-combine-ms": (
        "CEPTRA_INGEST_COMBINE_MS",
        "0",
        "How long a partition's leader collects concurrent ingest requests into one Raft entry, "
        "in ms (0-100; 0: the requests that arrive in the same reactor turn).",
    ),
}

_INT_RANGES: dict[str, tuple[int, int]] = {
    "raft-client-timeout-ms": (1, 600_000),
    "raft-client-retry-attempts": (1, 100),
    "raft-client-backoff-ms": (0, 600_000),
    "feed-interval-ms": (50, 600_000),
    "feed-stale-ms": (1, 86_400_000),
    "feed-timeout-ms": (1, 600_000),
    "raft-election-timeout-ms": (20, 60_000),
    "raft-heartbeat-ms": (5, 30_000),
    "snapshot-threshold": (1, 10_000_000),
    "ready-max-lag": (0, 1_000_000_000),
    "max-batch-bytes": (1024, 64 * 1024 * 1024),
    "ingest-combine-ms": (0, 100),
    "retired-keep-s": (0, 31_536_000),
}

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _label(flag: str) -> str:
    return f"--{flag} ({ENV[flag][0]})"


def _isHost(value: str) -> bool:
    return isIPAddress(value) or bool(_HOSTNAME.match(value))


class Options(DaemonOptions):
    """
    C{ceptra [options]}: a CEPtra node on Clustor.  Each flag falls back to
    the C{CEPTRA_*} variable named in its help.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a CEPtra node: loads the mTLS identity, creates the data/WAL/"
        "snapshot directories (with a .write_probe), follows the control-plane "
        "feeds and serves /healthz, /readyz and /metrics on CEPTRA_ADMIN_BIND. "
        "Every flag falls back to the environment variable shown."
    )
    optParameters: list[list[Any]] = envParameters(ENV) + DaemonOptions.optParameters

    compData = usage.Completions(
        optActions={
            "tls-identity-cert": usage.CompleteFiles("*.crt *.pem"),
            "tls-identity-key": usage.CompleteFiles("*.key *.pem"),
            "tls-trust-bundle": usage.CompleteFiles("*.crt *.pem"),
            "data-dir": usage.CompleteDirs(),
            "wal-dir": usage.CompleteDirs(),
            "snapshot-dir": usage.CompleteDirs(),
            "admin-tls": usage.CompleteList(["mtls", "off"]),
        }
    )

    def postOptions(self) -> None:
        super().postOptions()
        self.envDefaults(ENV)
        for flag in (
            "control-plane-url",
            "tls-identity-cert",
            "tls-identity-key",
            "tls-trust-bundle",
            "node-spiffe",
        ):
            if not self[flag]:
                raise ConfigError(f"{_label(flag)}: required (the runtime always needs it)")
        self._checkURL()
        for flag in ("cp-routing-path", "cp-feature-path", "cp-warmup-path", "cp-activation-path"):
            path = self[flag]
            if not path.startswith("/") or any(c in path for c in "?# \t"):
                raise ConfigError(f"{_label(flag)}: {path!r} must be an absolute path starting with '/'")
        for flag, (low, high) in _INT_RANGES.items():
            raw = self[flag]
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise ConfigError(f"{_label(flag)}: {raw!r} is not a whole number") from None
            if not low <= value <= high:
                raise ConfigError(f"{_label(flag)}: {value} is out of range {low}-{high}")
            self[flag] = value
        if self["feed-stale-ms"] < 2 * self["feed-interval-ms"]:
            # Fetched every interval, a feed is that old before each refresh:
            # a smaller threshold would make it stale (and readiness fail)
            # between every two polls.
            raise ConfigError(
                f"{_label('feed-stale-ms')}: {self['feed-stale-ms']} must be at least twice "
                f"{_label('feed-interval-ms')} ({self['feed-interval-ms']})"
            )
        if self["raft-heartbeat-ms"] * 2 > self["raft-election-timeout-ms"]:
            raise ConfigError(
                f"{_label('raft-heartbeat-ms')}: {self['raft-heartbeat-ms']} must be at most half of "
                f"{_label('raft-election-timeout-ms')} ({self['raft-election-timeout-ms']})"
            )
        allowed = []
        for entry in (a.strip() for a in (self["admin-allowed-spiffe"] or "").split(",")):
            if not entry:
                continue
            try:
                # (normalised: a trust domain as spiffe://DOMAIN, without a
                # trailing slash, so it allows that domain and no other)
                allowed.append(str(parseSpiffeId(entry)))
            except ValueError as e:
                raise ConfigError(
                    f"{_label('admin-allowed-spiffe')}: {entry!r} is not a SPIFFE ID or trust domain ({e})"
                ) from None
        self["admin-allowed-spiffe"] = allowed
        if self["admin-tls"] not in ("mtls", "off"):
            raise ConfigError(f"{_label('admin-tls')}: {self['admin-tls']!r} must be mtls or off")
        adminHost, adminPort = parseHostPort(self["admin-bind"], _label("admin-bind"))
        raftHost, raftPort = parseHostPort(self["raft-bind"], _label("raft-bind"))
        self["admin-endpoint"] = hostPortEndpoint(adminHost, adminPort)
        self["raft-host"], self["raft-port"] = raftHost, raftPort
        self["raft-endpoint"] = hostPortEndpoint(raftHost, raftPort)
        spiffe = self["node-spiffe"]
        try:
            parseSpiffeId(spiffe, allowTrustDomain=False)
        except ValueError as e:
            why = str(e).removeprefix(f"{spiffe!r} is not a SPIFFE ID: ").removeprefix(f"{spiffe!r} ")
            raise ConfigError(
                f"{_label('node-spiffe')}: {spiffe!r} is not a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH): {why}"
            ) from None
        advertise = self["advertise-host"]
        if not advertise:
            if raftHost in ("0.0.0.0", "::"):
                raise ConfigError(
                    f"{_label('advertise-host')}: required when {_label('raft-bind')} binds every interface"
                )
            advertise = raftHost
        advertise = advertise.strip("[]")
        if not _isHost(advertise):
            raise ConfigError(f"{_label('advertise-host')}: {advertise!r} is not a hostname or IP address")
        self["advertise-host"] = advertise
        if not self["wal-dir"]:
            self["wal-dir"] = os.path.join(self["data-dir"], "wal")
        if not self["snapshot-dir"]:
            self["snapshot-dir"] = os.path.join(self["data-dir"], "snapshots")

    def _checkURL(self) -> None:
        url = self["control-plane-url"]
        parts = urlsplit(url)
        label = _label("control-plane-url")
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"{label}: {url!r} must start with http:// or https://")
        if not parts.hostname:
            raise ConfigError(f"{label}: {url!r} has no host")
        if parts.username is not None or parts.password is not None:
            # never used (the node authenticates with its mTLS identity), and
            # the URL is logged: a password in it would be too
            raise ConfigError(
                f"{label}: credentials in the URL are not used and would be logged; "
                "give https://HOST[:PORT] (the node authenticates with its mTLS identity)"
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"{label}: {url!r} must not have a query or fragment")
        if parts.scheme == "http" and not isLoopbackHost(parts.hostname):
            # The routing feed decides where partitions and their data go:
            # off this host it comes over mTLS only.
            raise ConfigError(
                f"{label}: {url!r}: plain http:// is allowed only on loopback; "
                "use https:// (the node's mTLS identity)"
            )
        try:
            _ = parts.port
        except ValueError:
            raise ConfigError(f"{label}: {url!r} has an invalid port") from None
        self["control-plane-url"] = url.rstrip("/")
