"""
C{goop.json}: the only configuration source of a Goop2 peer directory.

The file holds exactly the keys of the operator guide.  Unknown keys are
reported as warnings (returned by L{loadConfig}), a wrong value is refused
with a L{ConfigError} naming the key, and an absent file is written with the
defaults on first start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from suite.daemon import ConfigError
from suite.goop.jsonutil import parseJSON
from suite.goop.limits import peerNameProblem

__all__ = ["GoopConfig", "loadConfig", "defaultDocument", "writeConfig", "CONFIG_NAME", "parseHostPort"]

CONFIG_NAME = "goop.json"
MAX_CONFIG_BYTES = 256 * 1024

#: section -> key -> (default, validator)
Validator = Callable[[str, Any], Any]


def _str(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{CONFIG_NAME}: {key}: must be a string")
    if len(v) > 1024:
        raise ConfigError(f"{CONFIG_NAME}: {key}: longer than 1024 characters")
    return v


def _line(key: str, v: Any) -> str:
    """One line of display text (a label, an email address): no control characters."""
    text = _str(key, v)
    if not all(c.isprintable() or c == " " for c in text):
        raise ConfigError(f"{CONFIG_NAME}: {key}: {text[:80]!r} holds a control character (one line of text)")
    return text


def _peerName(key: str, v: Any) -> str:
    """The peer's own short name (C{profile.name}); C{""} for none."""
    text = _str(key, v)
    problem = peerNameProblem(text)
    if problem:
        raise ConfigError(f"{CONFIG_NAME}: {key}: {text[:80]!r} is not a peer name: {problem}")
    return text


def _basePath(key: str, v: Any) -> str:
    """
    A URL path prefix such as C{/rendezvous}: "" or "/" for the root;
    segments of letters, digits, C{.}, C{_}, C{~} and C{-}.
    """
    text = _str(key, v).strip("/")
    if not text:
        return ""
    segments = text.split("/")
    for seg in segments:
        if (
            not seg
            or seg in (".", "..")
            or not all(c.isascii() and (c.isalnum() or c in "._~-") for c in seg)
        ):
            raise ConfigError(f'{CONFIG_NAME}: {key}: {v!r} is not a URL path such as "/rendezvous"')
    return "/" + "/".join(segments)


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{CONFIG_NAME}: {key}: must be true or false")
    return v


def _int(lo: int, hi: int) -> Validator:
    def check(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{CONFIG_NAME}: {key}: must be an integer")
        if not lo <= v <= hi:
            raise ConfigError(f"{CONFIG_NAME}: {key}: must be between {lo} and {hi}, got {v}")
        return v

    return check


def parseHostPort(text: str) -> tuple[str, int]:
    """
    Split C{host:port} (C{[v6]:port} accepted); raise C{ValueError}.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("expected HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    p = int(port)
    if not 0 <= p <= 65535:
        raise ValueError("port out of range")
    return host, p


def _hostPort(key: str, v: Any) -> str:
    text = _str(key, v)
    if text == "":
        return text
    try:
        host, _ = parseHostPort(text)
        ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError as e:
        raise ConfigError(f"{CONFIG_NAME}: {key}: {text!r} is not IP:PORT ({e})") from None
    return text


def _url(key: str, v: Any) -> str:
    text = _str(key, v)
    if text and not (text.startswith("http://") or text.startswith("https://")):
        raise ConfigError(f"{CONFIG_NAME}: {key}: must be an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def _mdnsTag(key: str, v: Any) -> str:
    text = _str(key, v)
    if (text and not all(c.isascii() and (c.isalnum() or c == "-") for c in text)) or len(text) > 15:
        raise ConfigError(f"{CONFIG_NAME}: {key}: a DNS-SD service name: letters, digits and '-', at most 15")
    return text


def _listenAddr(key: str, v: Any) -> str:
    """
    The IP address the P2P streams bind (C{p2p.listen_addr}); C{""} for
    every IPv4 interface.  Returned in its canonical form.
    """
    text = _str(key, v)
    if text == "":
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(
            f'{CONFIG_NAME}: {key}: {text[:80]!r} is not an IP address ("" for all interfaces)'
        ) from None


def _nameList(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > 64:
        raise ConfigError(f"{CONFIG_NAME}: {key}: must be a list of at most 64 host names")
    out = []
    for item in v:
        name = _str(key, item).strip().lower().rstrip(".")
        if not name or len(name) > 253 or not all(c.isalnum() or c in "-._:" for c in name):
            raise ConfigError(f"{CONFIG_NAME}: {key}: {item!r} is not a host name")
        out.append(name)
    return tuple(out)


def _addressList(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > 64:
        raise ConfigError(f"{CONFIG_NAME}: {key}: must be a list of at most 64 IP addresses or networks")
    out = []
    for item in v:
        try:
            out.append(str(ipaddress.ip_network(_str(key, item), strict=False)))
        except ValueError:
            raise ConfigError(f"{CONFIG_NAME}: {key}: {item!r} is not an IP address or network") from None
    return tuple(out)


def _interfaceList(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > 64:
        raise ConfigError(f"{CONFIG_NAME}: {key}: must be a list of at most 64 IP addresses")
    out = []
    for item in v:
        try:
            out.append(str(ipaddress.ip_address(_str(key, item))))
        except ValueError:
            raise ConfigError(f"{CONFIG_NAME}: {key}: {item!r} is not an IP address") from None
    return tuple(out)


SCHEMA: dict[str, dict[str, tuple[Any, Validator]]] = {
    "profile": {"label": ("", _line), "name": ("", _peerName), "email": ("", _line)},
    "p2p": {
        "listen_port": (0, _int(0, 65535)),
        "listen_addr": ("", _listenAddr),
        "mdns_tag": ("goop-mdns", _mdnsTag),
        "mdns_interfaces": ([], _interfaceList),
    },
    "presence": {
        "ttl_seconds": (120, _int(5, 86400)),
        "heartbeat_seconds": (30, _int(1, 3600)),
        "rendezvous_wan": ("", _url),
        "rendezvous_host": (False, _bool),
        "rendezvous_port": (8787, _int(0, 65535)),
        "rendezvous_base_path": ("", _basePath),
        "rendezvous_only": (False, _bool),
        "templates_dir": ("templates", _str),
        "peer_db_path": ("", _str),
        "trusted_proxies": ([], _addressList),
    },
    "viewer": {"http_addr": ("", _hostPort), "allowed_hosts": ([], _nameList)},
}

#: Keys beyond the guide's example (security settings): accepted, but not
#: written into a new goop.json.
EXTENSIONS = {
    "profile.name",
    "p2p.listen_addr",
    "p2p.mdns_interfaces",
    "presence.trusted_proxies",
    "presence.rendezvous_base_path",
    "viewer.allowed_hosts",
}

#: Top-level keys of the guide's "client configuration" example, mapped onto
#: their place in the schema: C{site} is the site's display name, C{peerName}
#: the peer's own short name.
LEGACY = {
    "site": ("profile", "label"),
    "peerName": ("profile", "name"),
    "rendezvous": ("presence", "rendezvous_wan"),
}


@dataclass(frozen=True)
class GoopConfig:
    """
    A validated C{goop.json}, plus the directory it came from.
    """

    directory: str
    label: str = ""
    peerName: str = ""
    email: str = ""
    listenPort: int = 0
    listenAddr: str = ""
    mdnsTag: str = "goop-mdns"
    ttlSeconds: int = 120
    heartbeatSeconds: int = 30
    rendezvousWan: str = ""
    rendezvousHost: bool = False
    rendezvousPort: int = 8787
    rendezvousBasePath: str = ""
    rendezvousOnly: bool = False
    templatesDir: str = "templates"
    peerDbPath: str = ""
    httpAddr: str = ""
    allowedHosts: tuple[str, ...] = ()
    mdnsInterfaces: tuple[str, ...] = ()
    trustedProxies: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def path(self, *parts: str) -> str:
        """A path inside the peer directory."""
        return os.path.join(self.directory, *parts)

    @property
    def templatesPath(self) -> str:
        return self.templatesDir if os.path.isabs(self.templatesDir) else self.path(self.templatesDir)

    @property
    def peerDbFile(self) -> str:
        if not self.peerDbPath:
            return ""
        return self.peerDbPath if os.path.isabs(self.peerDbPath) else self.path(self.peerDbPath)

    @property
    def displayLabel(self) -> str:
        return self.label or os.path.basename(os.path.abspath(self.directory))


def defaultDocument() -> dict[str, dict[str, Any]]:
    """The document written on first start."""
    return {
        s: {k: d for k, (d, _) in keys.items() if f"{s}.{k}" not in EXTENSIONS} for s, keys in SCHEMA.items()
    }


def writeConfig(directory: str, document: dict[str, Any]) -> None:
    """
    Atomically and durably write C{document} as the directory's
    C{goop.json}: the new file is flushed to disk before it replaces the old
    one, and the directory after, so a crash or power loss leaves either the
    old or the new settings, never an empty file.
    """
    path = os.path.join(directory, CONFIG_NAME)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def readDocument(directory: str) -> dict[str, Any]:
    """Read the raw JSON document (ConfigError naming the file on failure)."""
    path = os.path.join(directory, CONFIG_NAME)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = parseJSON(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    return doc


def validateDocument(directory: str, doc: dict[str, Any]) -> GoopConfig:
    """Validate a raw document; return the config with its warnings."""
    warnings: list[str] = []
    values: dict[str, Any] = {}
    for s, keys in SCHEMA.items():
        for k, (d, _) in keys.items():
            values[f"{s}.{k}"] = d
    legacy: dict[str, tuple[str, Any]] = {}
    for top, value in doc.items():
        if top in LEGACY:
            s, k = LEGACY[top]
            key = f"{s}.{k}"
            parsed = SCHEMA[s][k][1](top, value)
            legacy[key] = (top, parsed)
            warnings.append(f"{CONFIG_NAME}: {top}: legacy key, read as {key}")
            continue
        if top not in SCHEMA:
            warnings.append(f"{CONFIG_NAME}: {top}: unknown key, ignored")
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{CONFIG_NAME}: {top}: must be an object")
        for k, v in value.items():
            if k not in SCHEMA[top]:
                warnings.append(f"{CONFIG_NAME}: {top}.{k}: unknown key, ignored")
                continue
            values[f"{top}.{k}"] = SCHEMA[top][k][1](f"{top}.{k}", v)
    # Each legacy key has its own place; the explicit key, when also set,
    # wins (whatever the order in the file), and a different legacy value is
    # named in a warning.
    for key, (name, value) in legacy.items():
        s, k = key.split(".")
        section = doc.get(s)
        if isinstance(section, dict) and k in section:
            if values[key] != value:
                warnings.append(f"{CONFIG_NAME}: {name} ({value!r}) ignored: {key} ({values[key]!r}) is set")
        else:
            values[key] = value
    if values["presence.rendezvous_only"] and not values["presence.rendezvous_host"]:
        warnings.append(
            f"{CONFIG_NAME}: presence.rendezvous_only: set without rendezvous_host; no hub will run"
        )
    addr = values["viewer.http_addr"]
    if addr and parseHostPort(addr)[0] not in ("127.0.0.1", "::1", "localhost"):
        warnings.append(
            f"{CONFIG_NAME}: viewer.http_addr: {addr} is not loopback; put an authenticating proxy in front"
        )
    templates = os.path.realpath(os.path.join(directory, values["presence.templates_dir"]))
    peerDir = os.path.realpath(directory)
    if templates == peerDir or peerDir.startswith(templates.rstrip(os.sep) + os.sep):
        # The store serves its sub-directories to anyone: lua/ would be one.
        raise ConfigError(
            f"{CONFIG_NAME}: presence.templates_dir: {values['presence.templates_dir']!r} is the peer "
            'directory or holds it; use a directory of its own (default "templates")'
        )
    if values["presence.heartbeat_seconds"] >= values["presence.ttl_seconds"]:
        raise ConfigError(
            f"{CONFIG_NAME}: presence.heartbeat_seconds: must be smaller than presence.ttl_seconds"
        )
    return GoopConfig(
        directory=directory,
        label=values["profile.label"],
        peerName=values["profile.name"],
        email=values["profile.email"],
        listenPort=values["p2p.listen_port"],
        listenAddr=values["p2p.listen_addr"],
        mdnsTag=values["p2p.mdns_tag"],
        ttlSeconds=values["presence.ttl_seconds"],
        heartbeatSeconds=values["presence.heartbeat_seconds"],
        rendezvousWan=values["presence.rendezvous_wan"],
        rendezvousHost=values["presence.rendezvous_host"],
        rendezvousPort=values["presence.rendezvous_port"],
        rendezvousBasePath=values["presence.rendezvous_base_path"],
        rendezvousOnly=values["presence.rendezvous_only"],
        templatesDir=values["presence.templates_dir"],
        peerDbPath=values["presence.peer_db_path"],
        httpAddr=values["viewer.http_addr"],
        allowedHosts=tuple(values["viewer.allowed_hosts"]),
        mdnsInterfaces=tuple(values["p2p.mdns_interfaces"]),
        trustedProxies=tuple(values["presence.trusted_proxies"]),
        warnings=tuple(warnings),
    )


def loadConfig(directory: str, create: bool = True) -> GoopConfig:
    """
    Load and validate C{DIR/goop.json}, creating the directory and a default
    file when absent (and C{create} is true).
    """
    if not os.path.isdir(directory):
        if not create or os.path.lexists(directory):
            raise ConfigError(f"{directory}: not a directory (the peer directory)")
        parent = os.path.dirname(os.path.abspath(directory))
        if not os.path.isdir(parent):
            # A mistyped path would otherwise start a new peer (new identity)
            # in a tree created for it.
            raise ConfigError(f"{directory}: cannot create the peer directory: {parent} does not exist")
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass
        except OSError as e:
            raise ConfigError(f"{directory}: cannot create the peer directory: {e.strerror}") from None
    if not os.path.exists(os.path.join(directory, CONFIG_NAME)):
        if not create:
            raise ConfigError(f"{os.path.join(directory, CONFIG_NAME)}: does not exist")
        try:
            writeConfig(directory, defaultDocument())
        except OSError as e:
            raise ConfigError(f"{os.path.join(directory, CONFIG_NAME)}: cannot write: {e.strerror}") from None
    return validateDocument(directory, readDocument(directory))
