"""
Tunnel links: the multiplexed stream protocol between a gateway and a
C{specter client}, and the client's link lifecycle machine.
"""

__all__: list[str] = []
