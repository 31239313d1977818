"""
suite.specter.chord: the ring of virtual nodes (ids, membership machine,
maintenance, key transfer, replication) and its node-to-node wire.
"""

__all__: list[str] = []
