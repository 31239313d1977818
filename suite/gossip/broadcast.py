"""
The queue of updates waiting to be piggybacked on outgoing packets.

Each update is about one member (its key); a newer update about the same
member replaces the queued one.  An update is sent at most
C{retransmitLimit} times (lambda * log N), those sent least often first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TransmitQueue"]


@dataclass
class _Pending:
    encoded: bytes
    transmits: int
    order: int


class TransmitQueue:
    """
    Pending updates with bounded retransmission.
    """

    def __init__(self, limit: Callable[[], int], maxItems: int | None = None) -> None:
        self._limit = limit
        self._maxItems = maxItems
        self._items: dict[str, _Pending] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: str, encoded: bytes) -> None:
        """
        Queue C{encoded} (one encoded message) about member C{key}, replacing
        whatever was queued about it.
        """
        self._items[key] = _Pending(encoded, 0, -next(self._order))
        if self._maxItems is not None and len(self._items) > self._maxItems:
            # Drop the most transmitted, oldest first (memberlist prunes the
            # same way when its user queue overflows).
            worst = max(self._items.items(), key=lambda kv: (kv[1].transmits, kv[1].order))
            del self._items[worst[0]]

    def take(self, budget: int, overhead: int = 0) -> list[bytes]:
        """
        Updates that fit in C{budget} bytes (each costing C{overhead} more),
        fewest-sent and newest first; each one taken counts as one
        transmission.
        """
        if not self._items or budget <= 0:
            return []
        limit = self._limit()
        chosen: list[bytes] = []
        for key, p in sorted(self._items.items(), key=lambda kv: (kv[1].transmits, kv[1].order)):
            if len(p.encoded) + overhead > budget:
                continue
            budget -= len(p.encoded) + overhead
            chosen.append(p.encoded)
            p.transmits += 1
            if p.transmits >= limit:
                del self._items[key]
            if budget < 16:
                break
        return chosen

    def clear(self) -> None:
        """
        Drop everything pending.
        """
        self._items.clear()
