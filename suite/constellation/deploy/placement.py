"""
Which nodes run a service.

A service's C{placement} names candidate nodes (C{nodes}, in order of
preference; default: every live node), how many of them run it
(C{replicas}, default 1, or C{all}) and, without a node list, which end of
the priority order is preferred (C{priority: high}, the default, prefers
the lowest priority number, as leader election does; C{low} the highest).
Ties are broken by node name, so every agent computes the same answer
from the same cluster view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from suite.constellation.deploy.spec import ServiceSpec

__all__ = ["choose", "clusterPlacer", "localPlacer"]


def choose(spec: ServiceSpec, nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """
    The names of the live nodes (C{nodes} as in C{/api/state}) that run C{spec}.
    """
    alive = {
        str(n["name"]): int(n.get("priority") or 50) for n in nodes if n.get("status", "alive") == "alive"
    }
    if spec.placementNodes:
        order = [n for n in spec.placementNodes if n in alive]
    else:
        sign = 1 if spec.priority == "high" else -1
        order = sorted(alive, key=lambda n: (sign * alive[n], n))
    return order if spec.replicas == 0 else order[: spec.replicas]


def clusterPlacer(
    nodes: Sequence[Mapping[str, Any]], local: str
) -> Callable[[ServiceSpec], tuple[bool, str]]:
    """
    Placement from an agent's cluster view: does C{local} run a service?
    """

    def placed(spec: ServiceSpec) -> tuple[bool, str]:
        chosen = choose(spec, nodes)
        if not chosen:
            return False, "no live node matches its placement"
        return local in chosen, "on " + ", ".join(chosen)

    return placed


def localPlacer(local: str) -> Callable[[ServiceSpec], tuple[bool, str]]:
    """
    Placement without an agent: every service whose node list is empty or names C{local}.
    """

    def placed(spec: ServiceSpec) -> tuple[bool, str]:
        if not spec.placementNodes or local in spec.placementNodes:
            return True, ""
        return False, "for " + ", ".join(spec.placementNodes)

    return placed
