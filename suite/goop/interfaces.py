"""
Interfaces of the Goop2 packages.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IRendezvousHub", "IDataStore", "ILuaEngine", "IGroupTransport", "IPeerDirectory"]


class IRendezvousHub(Interface):
    """The hub service; the web resources call it, the tap starts it."""

    registry = Attribute("The L{PeerRegistry} of live peers.")

    def publish(body: bytes, signature: str, ip: str) -> dict:  # type: ignore[misc]
        """Verify and apply a signed publication; raise PublishError."""

    def sync() -> object:
        """Exchange changes with the shared peer DB (when configured)."""


class IDataStore(Interface):
    """A peer's C{data.db}; the data protocol and Lua call it."""

    def execute(caller: str, request: dict) -> object:  # type: ignore[misc]
        """Run one data-protocol request for C{caller}; Deferred of the response dict."""


class ILuaEngine(Interface):
    """Runs Lua data functions off the reactor thread."""

    def call(caller: str, function: str, params: object) -> object:  # type: ignore[misc]
        """Deferred firing with the function's result; fails with LuaError."""

    def list() -> list:  # type: ignore[misc]
        """Names of the available functions."""


class IGroupTransport(Interface):
    """How a group host talks to one member (a line-oriented connection)."""

    def sendMessage(message: dict) -> None:  # type: ignore[misc]
        """Queue one message for the member."""

    def close() -> None:  # type: ignore[misc]
        """Drop the member's connection."""


class IPeerDirectory(Interface):
    """Where a peer learns about other peers (hub, mDNS)."""

    def peers() -> list:  # type: ignore[misc]
        """Known peers as dicts with peer_id, label, addrs."""
