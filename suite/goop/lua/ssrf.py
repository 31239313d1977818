"""
HTTP for Lua functions, guarded against server-side request forgery.

The host name is resolved once; if any address is not globally routable
(loopback, private, link-local, multicast, reserved, unspecified, CGNAT...)
the request is refused.  The connection then goes to the address that was
checked (the Host header and TLS server name carry the name), so a second,
different DNS answer (rebinding) cannot redirect it.  Redirects are not
followed; responses are size-limited.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from suite.netutil import isIPAddress

__all__ = ["guardedRequest", "SSRFError", "checkAddress", "Resolver"]

MAX_RESPONSE_BYTES = 1024 * 1024
MAX_BODY_BYTES = 256 * 1024
Resolver = Callable[[str, int], list[str]]


class SSRFError(Exception):
    """The request was refused before any connection was made."""


def systemResolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(i[4][0]) for i in infos))


def checkAddress(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Raise L{SSRFError} unless C{address} is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (
        not ip.is_global
        or ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        raise SSRFError(f"refused: {address} is not a public address")
    return ip


def guardedRequest(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    resolver: Resolver = systemResolver,
    connect: Callable[[tuple[str, int], float], socket.socket] = socket.create_connection,
) -> tuple[int, dict[str, str], bytes]:
    """Perform one HTTP(S) request after the SSRF checks (blocking)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SSRFError("only http:// and https:// URLs with a host are allowed")
    if parts.username or parts.password:
        raise SSRFError("credentials in URLs are not allowed")
    if method not in ("GET", "POST", "PUT", "DELETE", "HEAD"):
        raise SSRFError(f"method not allowed: {method}")
    if body is not None and len(body) > MAX_BODY_BYTES:
        raise SSRFError("request body too large")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [host] if isIPAddress(host) else resolver(host, port)
    except OSError as e:
        raise SSRFError(f"cannot resolve {host}: {e}") from None
    if not addresses:
        raise SSRFError(f"cannot resolve {host}")
    for a in addresses:
        checkAddress(a)
    target = addresses[0]
    # Loaded at a worker's first goop.http call, not at its start: the
    # client and TLS modules are about 6 MB resident in each worker, and
    # most functions never call out (docs/performance.md).
    import http.client
    import ssl

    sock = connect((target, port), timeout)
    try:
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read(MAX_RESPONSE_BYTES + 1)
        if len(data) > MAX_RESPONSE_BYTES:
            raise SSRFError("response larger than 1 MiB")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        sock.close()
