"""
Small network helpers shared by several packages.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

# Twisted is imported where it is used: the Lua worker processes use
# isIPAddress (through suite.goop.lua.ssrf) and load no Twisted at all
# (docs/performance.md, Goop resident memory).
if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort

__all__ = ["isIPAddress", "isLoopbackHost", "noDelay", "boundPort", "dropConnection", "peerText"]


def isIPAddress(text: str) -> bool:
    """
    True if C{text} is a literal IPv4 or IPv6 address (no brackets, no zone).
    """
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def isLoopbackHost(host: str) -> bool:
    """
    True if C{host} is C{localhost} or a literal loopback address.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def noDelay(transport: Any) -> None:
    """
    Turn Nagle's algorithm off on the TCP connection under C{transport},
    looking through wrapping transports (TLS, policies) a few layers deep:
    small request/response frames must not wait for delayed ACKs.  A
    transport without the option (a unix socket, a test transport) is left
    alone.
    """
    for _ in range(4):
        if transport is None:
            return
        # Asked of the class: wrappers that proxy unknown attributes to
        # what they wrap would otherwise claim the method themselves.
        if getattr(type(transport), "setTcpNoDelay", None) is not None:
            try:
                transport.setTcpNoDelay(True)
            except (OSError, AttributeError, NotImplementedError):
                pass
            return
        transport = getattr(transport, "transport", None)


def boundPort(port: IListeningPort) -> int:
    """
    The port number a TCP or UDP listener is bound to (the one the system
    chose for port 0).

    @raise TypeError: when C{port} does not listen on an IP address.
    """
    from twisted.internet.address import IPv4Address, IPv6Address

    address = port.getHost()
    if not isinstance(address, (IPv4Address, IPv6Address)):
        raise TypeError(f"not an IP listener: {address!r}")
    return address.port


def dropConnection(transport: Any) -> None:
    """
    Close C{transport} at once, without waiting for buffered output to be
    sent: a peer that reads nothing would hold a graceful close open.
    Transports without C{abortConnection} are closed gracefully.
    """
    if transport is None:
        return
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


def peerText(transport: Any) -> str:
    """
    The peer of C{transport} for a log line: its host, or C{-}.
    """
    try:
        peer = transport.getPeer()
    except Exception:  # only names the peer in a log line
        return "-"
    return str(getattr(peer, "host", None) or peer)
