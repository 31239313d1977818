"""
Small helpers shared by the gateway tests.
"""

from __future__ import annotations

from typing import Any


def listenLocal(factory: Any) -> tuple[Any, int]:
    """
    Listen on an OS-chosen loopback port; return the port object and number.
    """
    from twisted.internet import reactor

    port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return port, int(port.getHost().port)
