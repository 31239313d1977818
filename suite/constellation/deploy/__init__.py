"""
C{constellation deploy}: declarative, idempotent deployment of a stack of
services (a YAML file) onto the Docker engine, placed across the cluster.
"""

__all__: list[str] = []
