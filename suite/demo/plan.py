"""
What the demo starts: one L{DemoDaemon} per daemon, with its arguments,
environment and the URLs printed for the operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DemoDaemon:
    """
    One process of the demo; C{argv[0]} is a console script of the virtualenv.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    urls: list[tuple[str, str]] = field(default_factory=list)


def plan(base: str) -> list[DemoDaemon]:
    """
    The daemons of the demo, with state under C{base}.
    """
    return []
