"""
The reference replicated state machine: a small key/value map.

Commands are msgpack arrays C{[op, key, value]}; results are plain values:

  - C{["put", k, v]} -> previous value or None
  - C{["append", k, v]} -> the new value (old + v)
  - C{["delete", k, None]} -> previous value or None
  - C{["cas", k, [expected, new]]} -> True if the value was C{expected}
  - C{["get", k, None]} -> the value (a read through the log)

Linearizable reads that skip the log go through L{suite.raft.node.RaftNode.readIndex}
and then L{KeyValueStateMachine.get}.
"""

from __future__ import annotations

from typing import Any

import msgpack
from zope.interface import implementer

from suite.raft.interfaces import IRaftStateMachine


def encodeCommand(op: str, key: str, value: Any = None) -> bytes:
    """
    Encode one KV command.
    """
    packed: bytes = msgpack.packb([op, key, value], use_bin_type=True)
    return packed


@implementer(IRaftStateMachine)
class KeyValueStateMachine:
    """
    A dict of str -> str replicated through Raft.
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.appliedIndex = 0

    def apply(self, index: int, command: bytes) -> object:
        self.appliedIndex = index
        try:
            op, key, value = msgpack.unpackb(command, raw=False)
        except Exception:  # deterministic apply: a bad command is an answer
            return ["error", "malformed command"]
        if op == "put":
            old = self.data.get(key)
            self.data[key] = value
            return old
        if op == "append":
            new = (self.data.get(key) or "") + str(value)
            self.data[key] = new
            return new
        if op == "delete":
            return self.data.pop(key, None)
        if op == "cas":
            expected, new = value
            if self.data.get(key) == expected:
                self.data[key] = new
                return True
            return False
        if op == "get":
            return self.data.get(key)
        return ["error", f"unknown operation {op!r}"]

    def get(self, key: str) -> Any:
        """
        Read the local value (linearizable after a read index).
        """
        return self.data.get(key)

    def snapshot(self) -> bytes:
        packed: bytes = msgpack.packb([self.appliedIndex, self.data], use_bin_type=True)
        return packed

    def restore(self, data: bytes) -> None:
        self.appliedIndex, self.data = msgpack.unpackb(data, raw=False)
