"""
Parsing of the address, size and URI values Specter's flags take, and the
repeatable listener flags with their environment fallbacks.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from suite.daemon import ConfigError
from suite.netutil import isIPAddress, isLoopbackHost

__all__ = [
    "parseSize",
    "parseHostPort",
    "parsePeerAddress",
    "rpcEndpoint",
    "clientEndpoint",
    "privateSocket",
    "isLoopbackEndpoint",
    "splitEnv",
    "ListenMixin",
    "parseAcme",
    "parseAcmeNS",
]

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KIB|MB|MIB|GB|GIB|K|M|G)?\s*$", re.IGNORECASE)
_UNITS = {
    None: 1,
    "B": 1,
    "K": 1024,
    "KB": 1000,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1000**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1000**3,
    "GIB": 1024**3,
}


def parseSize(flag: str, text: str) -> int:
    """
    Parse a byte size such as C{16KiB}, C{1MB} or C{4096}.
    """
    m = _SIZE.match(text)
    if not m:
        raise ConfigError(f"{flag}: {text!r} is not a size (examples: 16KiB, 1MiB, 4096)")
    value = int(m.group(1)) * _UNITS[m.group(2).upper() if m.group(2) else None]
    if value <= 0:
        raise ConfigError(f"{flag}: size must be positive")
    return value


def parseHostPort(flag: str, text: str, defaultPort: int | None = None) -> tuple[str, int]:
    """
    Parse C{HOST:PORT} or C{[V6]:PORT}; C{defaultPort} fills a bare host.
    """
    text = text.strip()
    host: str
    port: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"{flag}: {text!r} has an unclosed '['")
        host, rest = text[1:end], text[end + 1 :]
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    if port is None or port == "":
        if defaultPort is None:
            raise ConfigError(f"{flag}: {text!r} needs a port (HOST:PORT)")
        return host, defaultPort
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag}: {text!r} has an invalid port")
    if not host:
        host = "0.0.0.0"
    return host, int(port)


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def parsePeerAddress(flag: str, text: str) -> tuple[str, int]:
    """
    Parse the address of a ring node, C{HOST:PORT} (port 443 when left
    out): HOST must be an IP address, C{localhost} or a DNS name with at
    least one dot, so a stray word (C{--join nonsense}) is a usage error
    rather than a name that never resolves.
    """
    host, port = parseHostPort(flag, text, 443)
    if isIPAddress(host):
        return host, port
    name = host.rstrip(".")
    labels = name.split(".")
    if name != "localhost" and (len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels)):
        raise ConfigError(
            f"{flag}: {text!r} is not HOST:PORT (HOST: an IP address or a DNS name such as node1.example.com)"
        )
    return name, port


def rpcEndpoint(flag: str, uri: str) -> str:
    """
    Turn C{tcp://HOST:PORT} or C{unix:///path.sock} into a Twisted endpoint
    string.  Plain endpoint strings (C{tcp:PORT:interface=...},
    C{unix:PATH}) pass through.
    """
    if uri.startswith("unix://"):
        path = uri[len("unix://") :]
        if not path.startswith("/") or ":" in path:
            raise ConfigError(f"{flag}: {uri!r} must be unix:///absolute/path.sock (no ':')")
        return f"unix:{path}"
    if uri.startswith("tcp://"):
        host, port = parseHostPort(flag, uri[len("tcp://") :])
        host = host.replace(":", "\\:")
        return f"tcp:{port}:interface={host}"
    if uri.startswith(("tcp:", "unix:")):
        return uri
    raise ConfigError(f"{flag}: {uri!r} must be tcp://HOST:PORT or unix:///path.sock")


def privateSocket(flag: str, endpoint: str) -> str:
    """
    A unix server endpoint string whose socket is created 0600 (owner
    only), after checking that its directory exists and is not writable by
    everyone (where anyone could replace the socket); other endpoints pass
    through.
    """
    import os
    import stat

    if not endpoint.startswith("unix:"):
        return endpoint
    path = endpoint[len("unix:") :].split(":", 1)[0]
    parent = os.path.dirname(path) or "."
    try:
        mode = os.stat(parent).st_mode
    except OSError as e:
        raise ConfigError(f"{flag}: socket directory {parent}: {e.strerror}") from None
    if mode & stat.S_IWOTH:
        raise ConfigError(
            f"{flag}: socket directory {parent} is writable by everyone; use a directory only this user (or its group) can write"
        )
    if ":mode=" in endpoint:
        return endpoint
    return f"unix:{path}:mode=600"


def clientEndpoint(flag: str, uri: str) -> str:
    """
    The client endpoint string that reaches the server endpoint C{uri}.
    """
    server = rpcEndpoint(flag, uri)
    if server.startswith("unix:"):
        return server
    parts = dict(p.split("=", 1) for p in server.split(":")[2:] if "=" in p)
    port = server.split(":")[1]
    host = parts.get("interface", "127.0.0.1").replace("\\:", ":")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"tcp:host={host}:port={port}"


def isLoopbackEndpoint(endpoint: str) -> bool:
    """
    Whether a server endpoint string binds only loopback or a unix socket.
    """
    if endpoint.startswith("unix:"):
        return True
    m = re.search(r"interface=([^:]+(?:\\:[^:]*)*)", endpoint)
    if not m:
        return False
    return isLoopbackHost(m.group(1).replace("\\:", ":"))


def splitEnv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


class ListenMixin:
    """
    C{--listen-addr}/C{--listen-tcp}/C{--listen-udp}, repeatable, with the
    comma-separated environment fallbacks.
    """

    def _initListen(self: Any) -> None:
        self["listen-addr"] = []
        self["listen-tcp"] = []
        self["listen-udp"] = []

    def opt_listen_addr(self: Any, value: str) -> None:
        """
        Shared TCP+UDP bind HOST:PORT (repeatable or comma-separated; env LISTEN_ADDR).
        """
        self["listen-addr"].extend(splitEnv(value))

    def opt_listen_tcp(self: Any, value: str) -> None:
        """
        TCP-only bind HOST:PORT, overrides --listen-addr for TCP (repeatable; env LISTEN_TCP).
        """
        self["listen-tcp"].extend(splitEnv(value))

    def opt_listen_udp(self: Any, value: str) -> None:
        """
        UDP-only bind HOST:PORT for QUIC (repeatable; env LISTEN_UDP).
        """
        self["listen-udp"].extend(splitEnv(value))

    def _finishListen(self: Any, defaultPort: int) -> None:
        env = self.environ
        flagOf = {"listen-addr": "--listen-addr", "listen-tcp": "--listen-tcp", "listen-udp": "--listen-udp"}
        for key, name in (
            ("listen-addr", "LISTEN_ADDR"),
            ("listen-tcp", "LISTEN_TCP"),
            ("listen-udp", "LISTEN_UDP"),
        ):
            if not self[key] and env.get(name):
                self[key] = splitEnv(env[name])
                # an error names where the value came from
                flagOf[key] = f"{name} ({flagOf[key]})"
        for key in flagOf:
            self[key] = [parseHostPort(flagOf[key], v, defaultPort) for v in self[key]]
        self["tcp-binds"] = list(self["listen-tcp"] or self["listen-addr"])
        self["udp-binds"] = list(self["listen-udp"] or self["listen-addr"])


def parseAcme(flag: str, value: str) -> tuple[str, str]:
    """
    C{acme://EMAIL@ACME_ZONE}: the account's e-mail address (one C{@}, no
    spaces, a domain with a dot) and the zone (a DNS name, returned
    lower-case without a trailing dot).
    """
    from suite.pki.names import dnsName

    m = re.fullmatch(r"acme://(.+)@([^@/]+)", value)
    if not m or "@" not in m.group(1):
        raise ConfigError(f"{flag}: {value!r} must look like acme://EMAIL@ACME_ZONE")
    email, zone = m.group(1), m.group(2)
    local, _, domain = email.rpartition("@")
    problem = None
    if not local or "@" in local or any(c.isspace() or ord(c) < 32 or c in '<>()[],;:\\"' for c in local):
        problem = f"{email!r} is not an e-mail address"
    else:
        try:
            if "." not in dnsName(domain).strip("."):
                problem = f"{email!r} is not an e-mail address (its domain has no dot)"
        except ValueError:
            problem = f"{email!r} is not an e-mail address"
    if problem is not None:
        raise ConfigError(f"{flag}: EMAIL of acme://EMAIL@ACME_ZONE: {problem}")
    try:
        zone = dnsName(zone)
    except ValueError:
        raise ConfigError(
            f"{flag}: ACME_ZONE of acme://EMAIL@ACME_ZONE: {zone!r} is not a DNS name"
        ) from None
    if zone.startswith("*"):
        raise ConfigError(f"{flag}: ACME_ZONE of acme://EMAIL@ACME_ZONE: {zone!r} is not a DNS name")
    return email, zone


def parseAcmeNS(value: str) -> tuple[str, list[str]]:
    name, sep, addrs = value.partition("/")
    if not sep or not name or not addrs:
        raise ConfigError(f"--acme-ns: {value!r} must look like ns1.zone/IPv4[,IPv6]")
    out = []
    for a in addrs.split(","):
        try:
            out.append(str(ipaddress.ip_address(a.strip())))
        except ValueError:
            raise ConfigError(f"--acme-ns: {a!r} is not an IP address") from None
    return name, out
