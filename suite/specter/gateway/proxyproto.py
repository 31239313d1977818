"""
PROXY protocol (v1 and v2) on the gateway's TCP listeners.

With C{--proxy-protocol} a visitor connection must start with a PROXY
header (the load balancer's); one without it, or with a malformed one, is
closed (that connection only).  Connections that authenticate with a
certificate (ring, overlay and tunnel links, which may dial a node directly
rather than through the balancer) may come without a header: the TLS
port notes that and the ALPN dispatcher refuses headerless visitors.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory

__all__ = ["ProxyHeaderWrapper", "ProxyHeaderFactory", "headerless"]

_TLS_HANDSHAKE = b"\x16"


class ProxyHeaderWrapper(HAProxyProtocolWrapper):
    """
    Reads a PROXY header; a connection opening with a TLS handshake record
    instead is passed through and marked C{headerless}.
    """

    headerless = False

    def dataReceived(self, data: bytes) -> None:
        if self.headerless:
            self.wrappedProtocol.dataReceived(data)
            return
        if (
            self._proxyInfo is None
            and self._parser is None
            and data[:1] == _TLS_HANDSHAKE
            and self.factory.allowHeaderless
        ):
            self.headerless = True
            self.wrappedProtocol.dataReceived(data)
            return
        super().dataReceived(data)


class ProxyHeaderFactory(HAProxyWrappingFactory):
    """
    Wraps the TLS (or plain HTTP) factory with PROXY header parsing.
    """

    protocol = ProxyHeaderWrapper  # type: ignore[assignment]
    noisy = False

    def __init__(self, wrappedFactory: Any, allowHeaderless: bool) -> None:
        super().__init__(wrappedFactory)
        self.allowHeaderless = allowHeaderless


def headerless(tls: Any) -> bool:
    """
    Whether the connection under TLS transport C{tls} came without a PROXY
    header although one is required for visitors.
    """
    return bool(getattr(getattr(tls, "transport", None), "headerless", False))
