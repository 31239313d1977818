"""
Options for C{twistd constellation} / C{constellation}: the guide's
environment (C{TS_HOSTNAME}, C{DOMAIN}, C{PUBLIC_IP}, C{CONFIG_PATH},
C{SECRETS_PATH}, C{DATA_DIR}, C{CLOUDFLARE_ZONE_ID}) and tuning flags
(C{--bind-addr}, C{--bind-port}, C{--raft-port}), each variable also a flag.
An unset C{--bind-addr} is None here: L{suite.constellation.bind} chooses it.
The variables are read here, in L{Options.postOptions}, and nowhere else.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import Any

from twisted.logger import Logger
from twisted.python import usage

from suite.daemon import ConfigError, DaemonOptions, EnvTable, envParameters

__all__ = ["Options", "ENV", "DEFAULT_HTTP_PROVIDER", "warnPlaceholderDomain", "warnPrivatePublicIP"]

DEFAULT_HTTP_PROVIDER = "tcp:8081:interface=127.0.0.1"

#: flag -> (environment variable, default, help); default None: unset.
ENV: EnvTable = {
    "ts-hostname": (
        "TS_HOSTNAME",
        None,
        "Tailscale hostname, used as the node name. Default: the system hostname.",
    ),
    "domain": (
        "DOMAIN",
        "example.org",
        "Domain name for services (default example.org, with a warning: set your own).",
    ),
    "public-ip": (
        "PUBLIC_IP",
        None,
        "Public IP address of this node; auto-detected from --public-ip-sources when unset.",
    ),
    "config-path": ("CONFIG_PATH", "/opt/constellation/volumes", "Path for service volumes."),
    "secrets-path": ("SECRETS_PATH", "/opt/constellation/secrets", "Path for secrets (cf-api-token.txt)."),
    "data-dir": (
        "DATA_DIR",
        "/opt/constellation/data",
        "Path for Raft data (raft/logs, raft/stable, raft/snapshots).",
    ),
    "cloudflare-zone-id": (
        "CLOUDFLARE_ZONE_ID",
        None,
        "Cloudflare zone ID for DNS updates; setting it selects the Cloudflare DNS provider "
        "(token from SECRETS_PATH/cf-api-token.txt).",
    ),
    # Suite additions:
    "http-provider": (
        "CONSTELLATION_HTTP_PROVIDER",
        DEFAULT_HTTP_PROVIDER,
        "Endpoint of the Traefik HTTP provider (and /healthz, /readyz, /metrics).",
    ),
    "join": (
        "CONSTELLATION_JOIN",
        None,
        "Comma-separated HOST[:PORT] gossip peers to join (port 7946 by default); none: the peers "
        "--discover finds, else bootstrap a new cluster.",
    ),
    "discover": (
        "CONSTELLATION_DISCOVER",
        "tailscale",
        "Peer discovery when --join is not given: tailscale (the online peers of this node's tailnet, "
        "read from tailscaled at start-up) or none.",
    ),
    "tailscale-socket": (
        "CONSTELLATION_TAILSCALE_SOCKET",
        "/var/run/tailscale/tailscaled.sock",
        "Socket of the local tailscaled's API, read by --discover tailscale.",
    ),
    "bind-addr": (
        "CONSTELLATION_BIND_ADDR",
        None,
        "Gossip and Raft bind address (an IP; 0.0.0.0: all interfaces). Unset: all interfaces with a "
        "gossip key; without one the address routing towards the first IP --join peer, else this node's "
        "Tailscale address, else loopback only.",
    ),
    "gossip-key-file": (
        "CONSTELLATION_GOSSIP_KEY_FILE",
        None,
        "File with the cluster's gossip keyring: base64 AES keys (16, 24 or 32 bytes, as 'serf keygen' "
        "prints), one a line, the primary first; gossip is encrypted with AES-GCM as memberlist does. "
        "The Raft TLS identity is derived from the primary key unless --raft-cert-dir is set.",
    ),
    "docker": (
        "CONSTELLATION_DOCKER",
        None,
        "Docker Engine API endpoint to monitor (unix:/var/run/docker.sock); unset: no Docker monitoring.",
    ),
    "docker-label": (
        "CONSTELLATION_DOCKER_LABEL",
        None,
        "Comma-separated label selectors (KEY or KEY=VALUE) of the containers this agent watches; none: all.",
    ),
    "docker-interval": ("CONSTELLATION_DOCKER_INTERVAL", "10", "Seconds between Docker health checks."),
    "service-address": (
        "CONSTELLATION_SERVICE_ADDRESS",
        None,
        "Address at which other nodes reach this node's host-network and published container ports. "
        "Default: the gossip address.",
    ),
    "entrypoints": (
        "CONSTELLATION_ENTRYPOINTS",
        "websecure",
        "Comma-separated Traefik entry points of the default routers.",
    ),
    "cert-resolver": (
        "CONSTELLATION_CERT_RESOLVER",
        "letsencrypt",
        "Traefik certificate resolver of the default routers; 'none': no TLS on them.",
    ),
    "roles": ("CONSTELLATION_ROLES", None, "Comma-separated roles of this node, published to the cluster."),
    "public-ip-sources": (
        "CONSTELLATION_PUBLIC_IP_SOURCES",
        "https://api.ipify.org,https://ifconfig.me/ip,https://icanhazip.com",
        "Comma-separated URLs answering this node's public IP, tried in order when PUBLIC_IP is unset; "
        "'none': no detection.",
    ),
    "dns-provider": (
        "CONSTELLATION_DNS_PROVIDER",
        None,
        "DNS provider of the DNS writer: cloudflare, rfc2136 or none. "
        "Default: cloudflare when CLOUDFLARE_ZONE_ID is set, rfc2136 when --dns-server is set, else none.",
    ),
    "dns-server": (
        "CONSTELLATION_DNS_SERVER",
        None,
        "HOST:PORT of the primary server taking RFC 2136 updates (port 53 by default).",
    ),
    "dns-zone": ("CONSTELLATION_DNS_ZONE", None, "Zone updated over RFC 2136. Default: DOMAIN."),
    "tsig-key-file": (
        "CONSTELLATION_TSIG_KEY_FILE",
        None,
        "BIND key file (tsig-keygen output) signing RFC 2136 updates and zone transfers.",
    ),
    "cloudflare-api": (
        "CONSTELLATION_CLOUDFLARE_API",
        "https://api.cloudflare.com/client/v4",
        "Base URL of the Cloudflare v4 API.",
    ),
    "dns-interval": (
        "CONSTELLATION_DNS_INTERVAL",
        "60",
        "Seconds between DNS reconciles (also run on changes).",
    ),
    "raft-cert-dir": (
        "CONSTELLATION_RAFT_CERT_DIR",
        None,
        "Suite PKI bundle directory for Raft mTLS (node certificate named after the node). "
        "Default: an identity derived from the gossip key.",
    ),
    "raft-bootstrap-wait": (
        "CONSTELLATION_RAFT_BOOTSTRAP_WAIT",
        "5",
        "Seconds a node with an empty data directory waits for an existing Raft group before founding one.",
    ),
    "raft-remove-after": (
        "CONSTELLATION_RAFT_REMOVE_AFTER",
        "60",
        "Seconds a Raft member must be dead or gone in gossip before the leader removes it.",
    ),
    "raft-election-ms": (
        "CONSTELLATION_RAFT_ELECTION_MS",
        "1000",
        "Raft election timeout floor in milliseconds (randomised up to twice it; heartbeats at a fifth).",
    ),
    "lease-seconds": (
        "CONSTELLATION_LEASE_SECONDS",
        "5",
        "Duration of the lb_leader and dns_writer leases; renewed every fifth of it.",
    ),
    "warp-probe-url": (
        "CONSTELLATION_WARP_PROBE_URL",
        "https://www.cloudflare.com/cdn-cgi/trace",
        "URL fetched to test WARP egress (2xx: healthy).",
    ),
    "warp-probe-from": (
        "CONSTELLATION_WARP_PROBE_FROM",
        "container",
        "Where the WARP egress probe runs: container (inside the WARP container, through the tunnel) "
        "or host (from the agent: this host's egress only).",
    ),
    "warp-interval": ("CONSTELLATION_WARP_INTERVAL", "30", "Seconds between WARP health checks."),
    "gossip-profile": (
        "CONSTELLATION_GOSSIP_PROFILE",
        "lan",
        "Gossip timers: lan (memberlist's LAN defaults), wan (memberlist's WAN timers, for slow or "
        "relayed links) or local (fast; loopback clusters and tests).",
    ),
}

_HOSTLABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_ZONE_ID = re.compile(r"^[0-9a-f]{32}$")


def _label(flag: str) -> str:
    if flag in ENV:
        return f"--{flag} ({ENV[flag][0]})"
    return f"--{flag}"


def _isDomain(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and len(labels) >= 2 and all(_HOSTLABEL.match(x) for x in labels)


def _port(raw: Any, flag: str) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{_label(flag)}: {raw!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"{_label(flag)}: {value} is out of range 1-65535")
    return value


def _peer(item: str) -> str:
    """
    Check one C{HOST[:PORT]} (C{[V6]:PORT}, or a bare IPv6 address) peer.
    """
    host, port = item, None
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"{_label('join')}: {item!r} is not HOST[:PORT]")
        port = rest[1:] or None
    elif item.count(":") == 1:
        host, _, port = item.partition(":")
    if port is not None:
        _port(port, "join")
    if not host:
        raise ConfigError(f"{_label('join')}: {item!r} has no host")
    return item


class Options(DaemonOptions):
    """
    C{constellation [options]}: the Constellation agent.
    """

    synopsis = "[options]"
    longdesc = (
        "Run the Constellation agent: gossip membership on --bind-addr:--bind-port "
        "(joined through --join) and the Traefik HTTP provider "
        "(/, /api/http/routers, /api/http/services, /api/http/middlewares, "
        "/api/state) with /healthz, /readyz and /metrics.  "
        "With --docker it watches the engine's containers every --docker-interval seconds "
        "and gossips their health.  Raft on --raft-port (data under DATA_DIR/raft) holds the "
        "lb_leader and dns_writer leases; the DNS writer keeps the apex, *.DOMAIN and "
        "*.NODE.DOMAIN records (Cloudflare or RFC 2136); --warp-container turns on WARP "
        "egress health checks."
    )
    optFlags: list[list[Any]] = [
        ["allow-remote-provider", None, "Allow --http-provider on a non-loopback interface."],
        ["bootstrap", None, "Found a new Raft group now if the data directory is empty."],
        ["dns-dry-run", None, "Log the DNS plan and the changes the writer would make; write nothing."],
    ] + DaemonOptions.optFlags
    optParameters: list[list[Any]] = (
        envParameters(ENV)
        + [
            ["bind-port", None, "7946", "Gossip port (TCP and UDP)."],
            ["raft-port", None, "8300", "Raft port."],
            [
                "warp-container",
                None,
                None,
                "Name of the WARP gateway container to monitor (needs --docker).",
            ],
        ]
        + DaemonOptions.optParameters
    )

    compData = usage.Completions(
        optActions={
            "config-path": usage.CompleteDirs(),
            "secrets-path": usage.CompleteDirs(),
            "data-dir": usage.CompleteDirs(),
        }
    )

    def postOptions(self) -> None:
        super().postOptions()
        self.envDefaults(ENV)
        if not self["ts-hostname"]:
            self["ts-hostname"] = socket.gethostname().split(".")[0]
        name = self["ts-hostname"]
        if not _HOSTLABEL.match(name):
            raise ConfigError(
                f"{_label('ts-hostname')}: {name!r} is not a host name (letters, digits and '-', at most 63)"
            )
        self.placeholderDomain = self["domain"] == ENV["domain"][1] and not self.environ.get("DOMAIN")
        domain = self["domain"].strip().lower()
        if not _isDomain(domain):
            raise ConfigError(f"{_label('domain')}: {domain!r} is not a domain name")
        self["domain"] = domain.rstrip(".")
        if self["public-ip"]:
            try:
                self["public-ip"] = ipaddress.ip_address(self["public-ip"].strip()).compressed
            except ValueError:
                raise ConfigError(
                    f"{_label('public-ip')}: {self['public-ip']!r} is not an IP address"
                ) from None
        zone = self["cloudflare-zone-id"]
        if zone:
            zone = zone.strip()
            if not _ZONE_ID.match(zone):
                raise ConfigError(
                    f"{_label('cloudflare-zone-id')}: {zone!r} is not a zone ID (32 hex digits)"
                )
            self["cloudflare-zone-id"] = zone
        if self["bind-addr"]:
            try:
                self["bind-addr"] = ipaddress.ip_address(self["bind-addr"].strip()).compressed
            except ValueError:
                raise ConfigError(
                    f"{_label('bind-addr')}: {self['bind-addr']!r} is not an IP address"
                ) from None
        else:
            self["bind-addr"] = None  # chosen by suite.constellation.bind
        self["bind-port"] = _port(self["bind-port"], "bind-port")
        self["raft-port"] = _port(self["raft-port"], "raft-port")
        if self["bind-port"] == self["raft-port"]:
            raise ConfigError("--raft-port: must differ from --bind-port")
        peers: list[str] = []
        for item in (self["join"] or "").split(","):
            item = item.strip()
            if item:
                peers.append(_peer(item))
        self["join"] = peers
        try:
            interval = float(self["docker-interval"])
        except ValueError:
            interval = 0.0
        if not 0.1 <= interval <= 3600:
            raise ConfigError(
                f"{_label('docker-interval')}: {self['docker-interval']!r} is not 0.1-3600 seconds"
            )
        self["docker-interval"] = interval
        self["docker-label"] = [x.strip() for x in (self["docker-label"] or "").split(",") if x.strip()]
        self["roles"] = [x.strip() for x in (self["roles"] or "").split(",") if x.strip()]
        self["entrypoints"] = [x.strip() for x in (self["entrypoints"] or "").split(",") if x.strip()]
        if not self["entrypoints"]:
            raise ConfigError(f"{_label('entrypoints')}: no entry point given")
        if self["cert-resolver"] in ("none", ""):
            self["cert-resolver"] = None
        sources = (self["public-ip-sources"] or "").strip()
        self["public-ip-sources"] = (
            [] if sources == "none" else [x.strip() for x in sources.split(",") if x.strip()]
        )
        for url in self["public-ip-sources"]:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{_label('public-ip-sources')}: {url!r} is not an http(s) URL")
        if self["service-address"]:
            try:
                self["service-address"] = ipaddress.ip_address(self["service-address"].strip()).compressed
            except ValueError:
                raise ConfigError(
                    f"{_label('service-address')}: {self['service-address']!r} is not an IP address"
                ) from None
        if self["docker"]:
            from suite.constellation.docker import parseDockerEndpoint

            try:
                parseDockerEndpoint(None, self["docker"])
            except (ValueError, TypeError, KeyError) as e:
                raise ConfigError(
                    f"{_label('docker')}: {self['docker']!r} is not an endpoint ({e})"
                ) from None
        for flag, lo, hi in (
            ("dns-interval", 1, 86400),
            ("raft-bootstrap-wait", 0, 3600),
            ("raft-remove-after", 1, 86400 * 30),
            ("raft-election-ms", 50, 60000),
            ("lease-seconds", 0.5, 600),
            ("warp-interval", 1, 3600),
        ):
            try:
                value = float(self[flag])
            except (TypeError, ValueError):
                value = float("nan")
            if not lo <= value <= hi:
                raise ConfigError(f"{_label(flag)}: {self[flag]!r} is not a number in {lo}-{hi}")
            self[flag] = value
        if self["lease-seconds"] * 1000 < 2 * self["raft-election-ms"]:
            raise ConfigError(
                f"{_label('lease-seconds')}: must be at least twice the Raft election timeout "
                f"({self['raft-election-ms'] / 1000:g} s)"
            )
        provider = (self["dns-provider"] or "").strip().lower()
        if not provider and self["cloudflare-zone-id"] and self["dns-server"]:
            raise ConfigError(
                f"{_label('dns-provider')}: both {_label('cloudflare-zone-id')} and {_label('dns-server')} "
                "are set: name the provider to use (cloudflare or rfc2136)"
            )
        if not provider:
            provider = (
                "cloudflare" if self["cloudflare-zone-id"] else "rfc2136" if self["dns-server"] else "none"
            )
        if provider not in ("cloudflare", "rfc2136", "none"):
            raise ConfigError(f"{_label('dns-provider')}: {provider!r} is not cloudflare, rfc2136 or none")
        self["dns-provider"] = provider
        if provider == "cloudflare" and not self["cloudflare-zone-id"]:
            raise ConfigError(f"{_label('cloudflare-zone-id')}: required by --dns-provider cloudflare")
        if provider != "rfc2136":
            for flag in ("dns-server", "tsig-key-file", "dns-zone"):
                if self[flag]:
                    raise ConfigError(
                        f"{_label(flag)}: only used by --dns-provider rfc2136 (the provider is {provider})"
                    )
        if provider == "rfc2136":
            if not self["dns-server"]:
                raise ConfigError(f"{_label('dns-server')}: required by --dns-provider rfc2136")
            if not self["tsig-key-file"]:
                raise ConfigError(f"{_label('tsig-key-file')}: required by --dns-provider rfc2136")
            host, port = self["dns-server"].strip(), "53"
            if host.startswith("["):
                host, _, rest = host[1:].partition("]")
                port = rest.lstrip(":") or "53"
            elif host.count(":") == 1:
                host, _, port = host.partition(":")
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ConfigError(f"{_label('dns-server')}: {host!r} is not an IP address") from None
            self["dns-server"] = (host, _port(port, "dns-server"))
            zone = (self["dns-zone"] or self["domain"]).strip().lower().rstrip(".")
            if not _isDomain(zone):
                raise ConfigError(f"{_label('dns-zone')}: {zone!r} is not a domain name")
            self["dns-zone"] = zone
        if self["warp-container"] and not self["docker"]:
            raise ConfigError("--warp-container: needs --docker (the engine the container runs on)")
        probe = (self["warp-probe-url"] or "").strip()
        if probe in ("none", ""):
            self["warp-probe-url"] = None
        elif not probe.startswith(("http://", "https://")):
            raise ConfigError(f"{_label('warp-probe-url')}: {probe!r} is not an http(s) URL")
        discover = (self["discover"] or "").strip().lower()
        if discover not in ("tailscale", "none"):
            raise ConfigError(f"{_label('discover')}: {self['discover']!r} is not tailscale or none")
        self["discover"] = discover
        if self["warp-probe-from"] not in ("container", "host"):
            raise ConfigError(
                f"{_label('warp-probe-from')}: {self['warp-probe-from']!r} is not container or host"
            )
        if self["gossip-profile"] not in ("lan", "wan", "local"):
            raise ConfigError(
                f"{_label('gossip-profile')}: {self['gossip-profile']!r} is not lan, wan or local"
            )


def warnPrivatePublicIP(options: Mapping[str, Any]) -> None:
    """
    Say so when C{PUBLIC_IP} is not a globally routable address (a
    private, loopback or documentation address): the DNS records point at
    it.  A warning, not an error: split-horizon zones use such addresses.
    """
    raw = options.get("public-ip")
    if raw and not ipaddress.ip_address(raw).is_global:
        Logger(namespace="constellation.options").warn(
            "{flag}: {ip} is not a public address; the DNS records of this node will point at it",
            flag=_label("public-ip"),
            ip=raw,
        )


def warnPlaceholderDomain(options: Mapping[str, Any]) -> None:
    """
    Say so when the agent runs with the placeholder domain (no C{--domain}
    or C{DOMAIN}).  Called once when the service is built: the console
    script parses its options twice (its own check, then twistd's), and a
    warning from parsing would be logged twice.
    """
    if getattr(options, "placeholderDomain", False):
        Logger(namespace="constellation.options").warn(
            "{flag} not set: routers are built for the placeholder domain {domain}; set your own",
            flag=_label("domain"),
            domain=ENV["domain"][1],
        )
