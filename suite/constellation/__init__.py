"""
Constellation agent: options, node priority, the service catalog and the
Traefik HTTP provider rendered from it.
"""

__all__: list[str] = []
