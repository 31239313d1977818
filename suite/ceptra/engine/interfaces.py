"""
Interfaces of the CEP engine.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IPartitionEngine"]


class IPartitionEngine(Interface):
    """
    The deterministic CEP state of one partition.  The partition's Raft
    state machine calls L{apply} in log order with each committed entry;
    the admin API reads L{query} and L{status}.
    """

    partition = Attribute("The partition number results are tagged with.")

    def apply(index: int, payload: bytes, results: bool = True) -> list[dict[str, object]]:
        """
        Apply one committed entry; return its results (never raises for bad
        content).  With C{results} false, window and pattern results are not
        built (the state is the same either way).
        """

    def snapshot() -> bytes:
        """
        The whole state, for C{PartitionEngine.restore}.
        """

    def stateHash() -> str:
        """
        Hex SHA-256 of the canonical state; equal on replicas that applied
        the same log.
        """

    def query(rule: str, group: str | None = None) -> dict[str, object]:
        """
        Current window values of C{rule} (C{KeyError} for an unknown rule).
        """

    def status() -> dict[str, object]:
        """
        Rule versions, watermark, counters and the last applied index.
        """
