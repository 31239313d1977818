"""
The replicated leases: the lease names, L{Lease}, L{LeaseSettings}, the
lease commands and L{LeaseStateMachine}, the Raft state machine that
applies them (see L{suite.constellation.leases} for the protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgpack
from zope.interface import implementer

from suite.constellation.priority import nodePriority
from suite.raft.interfaces import IRaftStateMachine

LB_LEADER = "lb_leader"
DNS_WRITER = "dns_writer"
LEASES = (LB_LEADER, DNS_WRITER)
_LABEL = {LB_LEADER: "LB leader", DNS_WRITER: "DNS writer"}
_MAX_NAME = 64


@dataclass(frozen=True)
class Lease:
    """
    The replicated state of one lease.
    """

    holder: str | None
    token: int
    duration: float


@dataclass
class LeaseSettings:
    """
    Seconds: a grant or renewal lasts C{duration}; the holder renews every
    C{renewInterval}; C{drift} bounds the relative rate error of two
    nodes' monotonic clocks; C{margin} is added to the wait before a lease
    held by another node is granted; a node of better priority must be seen
    alive for C{handoverAfter} before the holder hands over to it.
    """

    duration: float = 5.0
    renewInterval: float = 1.0
    drift: float = 0.02
    margin: float = 0.2
    handoverAfter: float = 3.0

    def holderValidity(self) -> float:
        return self.duration * (1.0 - self.drift)

    def takeoverWait(self) -> float:
        return self.duration * (1.0 + self.drift) + self.margin


def encodeLeaseCommand(op: str, name: str, holder: str, token: int, duration: float = 0.0) -> bytes:
    """
    One lease command for L{LeaseStateMachine.apply}.
    """
    return msgpack.packb([op, name, holder, token, duration])


@implementer(IRaftStateMachine)
class LeaseStateMachine:
    """
    The replicated leases.  Deterministic: no clocks; L{listeners} are told
    C{(name, lease, op, ok)} after every applied command.
    """

    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}
        self.listeners: list[Callable[[str, Lease, str, bool], None]] = []

    def get(self, name: str) -> Lease:
        return self.leases.get(name) or Lease(None, 0, 0.0)

    def apply(self, index: int, command: bytes) -> list[bool | int | str | None]:
        """
        Apply one lease command; the proposer gets back C{[applied, token,
        holder, reason]} (C{reason} empty when applied).
        """
        try:
            op, name, holder, token, duration = msgpack.unpackb(command, raw=False)
            if not (
                isinstance(op, str)
                and isinstance(name, str)
                and isinstance(holder, str)
                and isinstance(token, int)
                and isinstance(duration, (int, float))
                and 0 < len(name) <= _MAX_NAME
                and len(holder) <= _MAX_NAME
            ):
                raise TypeError("field types")
        except Exception:  # deterministic apply: a bad command is an answer
            return [False, 0, None, "malformed lease command"]
        current = self.get(name)
        ok = False
        if op == "grant" and current.token == token and holder:
            current = Lease(holder, token + 1, float(duration))
            ok = True
        elif op in ("renew", "release") and current.holder == holder and current.token == token:
            current = Lease(holder if op == "renew" else None, token, current.duration)
            ok = True
        if ok:
            self.leases[name] = current
        for listener in list(self.listeners):
            listener(name, current, op, ok)
        return [ok, current.token, current.holder, "" if ok else "lease changed"]

    def snapshot(self) -> bytes:
        return msgpack.packb({k: [v.holder, v.token, v.duration] for k, v in sorted(self.leases.items())})

    def restore(self, data: bytes) -> None:
        raw = msgpack.unpackb(data, raw=False)
        self.leases = {str(k): Lease(v[0], int(v[1]), float(v[2])) for k, v in raw.items()}


def candidateOrder(name: str) -> tuple[int, str]:
    """
    Sort key of lease candidates: priority (lower wins), then name.
    """
    return (nodePriority(name), name)
