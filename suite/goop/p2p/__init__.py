"""Peer-to-peer streams: TLS bound to the peer key, site and data protocols, discovery."""

__all__: list[str] = []
