"""
Ring identities: 64-bit positions, vnode references and interval tests.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from suite.kv.records import RING_BITS, RING_SIZE, inRange, ringId

__all__ = [
    "RING_BITS",
    "RING_SIZE",
    "VnodeRef",
    "vnodeId",
    "ringId",
    "inRange",
    "between",
    "ref",
    "fingerStart",
]


class VnodeRef(NamedTuple):
    """
    How one vnode names another: its ring position, its process's
    advertise address (C{HOST:PORT}) and its index in that process.
    """

    id: int
    addr: str
    index: int  # type: ignore[assignment]

    def short(self) -> str:
        return f"{self.addr}#{self.index}@{self.id:016x}"


def vnodeId(advertise: str, index: int) -> int:
    """
    The ring position of vnode C{index} of the process advertised at C{advertise}.
    """
    return int.from_bytes(hashlib.sha1(f"{advertise}/{index}".encode()).digest()[:8], "big")


def between(x: int, low: int, high: int) -> bool:
    """
    Whether C{x} lies strictly inside the ring interval C{(low, high)};
    C{low == high} means everything except that point.
    """
    if low < high:
        return low < x < high
    if low > high:
        return x > low or x < high
    return x != low


def ref(value: Any) -> VnodeRef | None:
    """
    Decode a vnode reference received from the wire (a list) or None.
    """
    if value is None:
        return None
    if isinstance(value, VnodeRef):
        return value
    i, addr, index = value
    return VnodeRef(int(i), str(addr), int(index))


def fingerStart(nodeId: int, k: int) -> int:
    """
    The start of finger C{k}: C{(nodeId + 2**k) mod 2**64}.
    """
    return (nodeId + (1 << k)) % RING_SIZE


_ = (inRange, ringId)
