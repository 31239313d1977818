"""
C{specter client}: tunnel a local target through the gateways, list,
connect to and release tunnel hostnames.
"""

__all__: list[str] = []
