"""
Checks on server endpoint strings for admin-like surfaces (admin site,
manhole, RPC): they listen on loopback or a unix socket unless the operator
explicitly allows more.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat

__all__ = ["splitEndpoint", "isLoopbackHost", "loopbackEndpoint", "checkSocketDirectory", "EndpointError"]


#: A backslash escape (the escaped character captured), or a bare NUL.
_ESCAPE = re.compile(r"\\(.)|\0", re.DOTALL)


class EndpointError(ValueError):
    """
    An endpoint string is malformed or not allowed here; the message names
    the string and the reason.
    """


def _rawPieces(text: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == ":":
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    pieces.append("".join(current))
    return pieces


def _unescape(text: str) -> str:
    """
    C{text} with each backslash escape replaced by the character it escapes
    (and any bare NUL dropped).
    """
    return _ESCAPE.sub(lambda m: m.group(1) or "", text)


def splitEndpoint(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    Split a server endpoint string as L{serverFromString} does:
    C{"tcp:8080:interface=127.0.0.1"} gives C{("tcp", ["8080"],
    {"interface": "127.0.0.1"})}.  Backslash escapes (C{\\:}) are honoured.

    @raise EndpointError: for an empty string.
    """
    if not description or not description.strip():
        raise EndpointError("empty endpoint description")
    pieces = _rawPieces(description)
    kind = _unescape(pieces[0]).strip().lower()
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for piece in pieces[1:]:
        kv = _rawKeyValue(piece)
        if kv is None:
            args.append(_unescape(piece))
        else:
            kwargs[kv[0]] = kv[1]
    return kind, args, kwargs


def _rawKeyValue(piece: str) -> tuple[str, str] | None:
    i = 0
    while i < len(piece):
        if piece[i] == "\\":
            i += 2
            continue
        if piece[i] == "=":
            return _unescape(piece[:i]), _unescape(piece[i + 1 :])
        i += 1
    return None


def isLoopbackHost(host: str) -> bool:
    """
    Whether C{host} names the loopback interface (C{127.0.0.0/8}, C{::1},
    C{localhost}).
    """
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checkSocketDirectory(path: str, what: str = "endpoint") -> None:
    """
    Refuse a unix socket path whose directory anyone may write to: another
    user could replace the socket there (and receive what clients send it).
    A directory that does not exist is left to the listen to report.

    @raise EndpointError: naming C{what} and the directory.
    """
    parent = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(parent).st_mode
    except OSError:
        return
    if mode & stat.S_IWOTH:
        raise EndpointError(
            f"{what} unix:{path}: the socket directory {parent} is writable by everyone; "
            f"use a directory only this user (or its group) can write"
        )


_TCP_KINDS = {"tcp": 1, "tcp6": 1, "ssl": 5}
_DEFAULT_LOOPBACK = {"tcp": "127.0.0.1", "tcp6": "\\:\\:1", "ssl": "127.0.0.1"}


def loopbackEndpoint(description: str, allowRemote: bool = False, what: str = "endpoint") -> str:
    """
    Check that C{description} listens on loopback or a unix socket and return
    it, with C{interface=127.0.0.1} (or C{::1}) added to a TCP endpoint that
    names no interface (so the default is loopback, never all interfaces),
    and C{mode=600} to a unix endpoint that names no mode (owner only); a
    unix socket's directory must not be writable by everyone
    (L{checkSocketDirectory}).

    @param allowRemote: allow any interface and any endpoint type.
    @param what: the flag or setting, for the message (C{"--admin"}).
    @raise EndpointError: naming C{what}, the description and the reason.
    """
    kind, args, kwargs = splitEndpoint(description)
    if kind == "unix":
        if not args and "address" not in kwargs:
            raise EndpointError(f"{what} {description!r}: a unix endpoint needs a path")
        checkSocketDirectory(kwargs.get("address") or args[0], what)
        # Twisted makes the socket 0666 unless told otherwise: owner only.
        return description if "mode" in kwargs else f"{description}:mode=600"
    if kind in _TCP_KINDS:
        ifacePosition = _TCP_KINDS[kind]
        interface = kwargs.get("interface")
        if interface is None and len(args) > ifacePosition and kind != "ssl":
            interface = args[ifacePosition]
        if not args and "port" not in kwargs:
            raise EndpointError(f"{what} {description!r}: a {kind} endpoint needs a port")
        if interface is None:
            if allowRemote:
                return description
            return f"{description}:interface={_DEFAULT_LOOPBACK[kind]}"
        if not allowRemote and not isLoopbackHost(interface or "0.0.0.0"):
            raise EndpointError(
                f"{what} {description!r} listens on {interface or 'all interfaces'}, which is not loopback; "
                f"use interface=127.0.0.1 or a unix socket (remote access must be "
                f"allowed explicitly)"
            )
        return description
    if kind == "systemd" or allowRemote:
        return description
    raise EndpointError(
        f"{what} {description!r}: endpoint type {kind!r} is not allowed here; "
        f"use tcp:PORT:interface=127.0.0.1 or unix:PATH"
    )
