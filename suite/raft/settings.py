"""
Settings of a Raft node and the error a non-leader answers with.
"""

from __future__ import annotations

from dataclasses import dataclass


class NotLeader(Exception):
    """
    This node cannot serve the request; C{leader} is a hint (or None) and
    C{reason} says why.
    """

    def __init__(self, leader: str | None, reason: str) -> None:
        super().__init__(f"not leader: {reason}" + (f" (leader is {leader})" if leader else ""))
        self.leader = leader
        self.reason = reason


@dataclass
class RaftSettings:
    """
    Timing and size knobs (seconds and bytes).
    """

    electionTimeoutMin: float = 0.150
    electionTimeoutMax: float = 0.300
    heartbeatInterval: float = 0.050
    maxAppendBytes: int = 256 * 1024
    maxInflight: int = 64
    snapshotThreshold: int = 10000
    snapshotChunkBytes: int = 64 * 1024
    maxSessions: int = 10000
    maxPendingProposals: int = 20000
    catchupMargin: int = 8
    leaseReads: bool = False


__all__ = ["NotLeader", "RaftSettings"]
