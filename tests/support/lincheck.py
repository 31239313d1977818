"""
A linearizability checker for key/value histories.

Wing & Gong's search with Lowe's memoisation (the approach porcupine uses),
applied per key (P-compositionality: a history of independent keys is
linearizable iff each key's sub-history is).  An operation whose outcome is
unknown (the client gave up) is treated as returning at +infinity with any
result, so it may or may not have taken effect.

Operations on one key:

  - ("put", v) -> previous value
  - ("append", v) -> new value
  - ("delete", None) -> previous value
  - ("cas", [expected, new]) -> True (and the value becomes new) if the
    value was expected, else False
  - ("get", None) -> value
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INFINITY = float("inf")
UNKNOWN = object()


@dataclass
class Operation:
    client: str
    key: str
    op: str
    value: Any
    call: float
    ret: float = INFINITY
    result: Any = UNKNOWN


def step(state: Any, op: Operation) -> tuple[bool, Any]:
    """
    The sequential model of one key: (result matches?, new state).
    """
    if op.op == "put":
        return (op.result is UNKNOWN or op.result == state), op.value
    if op.op == "append":
        new = (state or "") + op.value
        return (op.result is UNKNOWN or op.result == new), new
    if op.op == "delete":
        return (op.result is UNKNOWN or op.result == state), None
    if op.op == "cas":
        expected, new = op.value
        swapped = state == expected
        return (op.result is UNKNOWN or op.result == swapped), (new if swapped else state)
    if op.op == "get":
        return (op.result is UNKNOWN or op.result == state), state
    raise ValueError(op.op)


def checkKey(ops: list[Operation], limit: int = 2_000_000) -> bool:
    """
    True if this single-key history is linearizable.
    """
    # Events: (time, isReturn, opIndex); calls sort before returns at equal times.
    events: list[tuple[float, int, int]] = []
    for i, o in enumerate(ops):
        events.append((o.call, 0, i))
        events.append((o.ret, 1, i))
    events.sort()
    n = len(events)
    # A doubly linked list over event positions.
    nxt: list[int] = list(range(1, n + 1))
    prv: list[int] = list(range(-1, n - 1))
    head: list[int] = [0 if n else n]
    retPos: dict[int, int] = {}
    for pos, (_, isRet, i) in enumerate(events):
        if isRet:
            retPos[i] = pos

    def unlink(pos: int) -> None:
        p, q = prv[pos], nxt[pos]
        if p >= 0:
            nxt[p] = q
        else:
            head[0] = q
        if q < n:
            prv[q] = p

    def relink(pos: int) -> None:
        p, q = prv[pos], nxt[pos]
        if p >= 0:
            nxt[p] = pos
        else:
            head[0] = pos
        if q < n:
            prv[q] = pos

    state: Any = None
    linearized: int = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []  # (callPos, previous state)
    entry = head[0]
    steps = 0
    while head[0] < n:
        steps += 1
        if steps > limit:
            raise RuntimeError("linearizability search exceeded its step limit")
        if entry >= n:
            return False
        _, isRet, i = events[entry]
        if not isRet:
            ok, newState = step(state, ops[i])
            if ok:
                bits = linearized | (1 << i)
                key = (bits, _freeze(newState))
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state = newState
                    linearized = bits
                    unlink(entry)
                    unlink(retPos[i])
                    entry = head[0]
                    continue
            entry = nxt[entry]
        else:
            if not stack:
                return False
            callPos, state = stack.pop()
            i = events[callPos][2]
            linearized &= ~(1 << i)
            relink(retPos[i])
            relink(callPos)
            entry = nxt[callPos]
    return True


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def checkHistory(ops: list[Operation]) -> list[str]:
    """
    Check a whole multi-key history; return the keys that are not
    linearizable (empty when the history is linearizable).
    """
    byKey: dict[str, list[Operation]] = {}
    for o in ops:
        byKey.setdefault(o.key, []).append(o)
    return [k for k, sub in sorted(byKey.items()) if not checkKey(sub)]
