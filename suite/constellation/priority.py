"""
Node priority for leader election: lower number, higher priority.
"""

from __future__ import annotations

__all__ = ["nodePriority", "HIGH_PRIORITY", "NORMAL_PRIORITY"]

#: Priority of nodes whose name contains "cloudserver".
HIGH_PRIORITY = 10
#: Priority of every other node.
NORMAL_PRIORITY = 50


def nodePriority(nodeName: str) -> int:
    """
    C{10} for a node whose name contains C{cloudserver} (any case: host
    names are case-insensitive), C{50} for any other node.
    """
    return HIGH_PRIORITY if "cloudserver" in nodeName.lower() else NORMAL_PRIORITY
