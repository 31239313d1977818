"""
Sequence pattern rules: "A then B within T" and "A not followed by B within T".

Patterns see the partition's accepted on-time events in event-time order:
an event is released to them once the watermark has passed it (C{ts <
watermark}), ordered by C{(ts, arrival)}.  Late events never reach patterns.

In every group (after the rule's C{where} filter):

  - relaxed: an A is matched by the first later B with C{tb - ta <= T}; one B
    completes every A pending in its group;
  - strict: an A is matched only when the very next event of its group is a
    B with C{tb - ta <= T};
  - negation emits an A once it can no longer be matched: when the
    watermark passes C{ta + T} (relaxed) or, under strict contiguity, also
    as soon as the group's next event is not a matching B.

An event can be both an A and a B: it first completes earlier A's, then
starts its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from suite.ceptra.engine.context import Context, groupOf
from suite.ceptra.engine.rules import PatternSpec

__all__ = ["PatternRule"]


class PatternRule:
    """
    The state of one pattern rule in one partition.

    Pending A's are C{[ta, seq, group, event_id, alive]}, kept in release
    order in one deque (their deadlines C{ta + T} are in the same order) and
    per group.
    """

    def __init__(self, spec: PatternSpec, since: int) -> None:
        self.spec = spec
        self.since = since
        self.name = spec.name
        self.pending: deque[list[Any]] = deque()
        self.byGroup: dict[str, list[list[Any]]] = {}
        self.seq = 0
        self.overflow = 0
        self.matches = 0

    def onOrdered(self, ev: dict[str, Any], ts: int, ctx: Context) -> None:
        """
        One released event, in event-time order.
        """
        spec = self.spec
        self.expire(ts, ctx)
        if spec.where is not None and not spec.where(ev):
            return
        group = groupOf(spec.groupBy, ev) if spec.groupBy else "*"
        waiting = self.byGroup.get(group)
        within = spec.withinMs
        if waiting:
            isB = spec.then(ev)
            if spec.strict:
                a = waiting[0]
                a[4] = False
                del self.byGroup[group]
                if isB and ts - a[0] <= within:
                    if not spec.negate:
                        self._match(a, group, ev, ts, ctx)
                elif spec.negate:
                    self._match(a, group, None, 0, ctx)
            elif isB:
                for a in waiting:
                    a[4] = False
                    if not spec.negate:
                        self._match(a, group, ev, ts, ctx)
                del self.byGroup[group]
        if spec.first(ev):
            waiting = self.byGroup.get(group)
            if waiting is None:
                if len(self.byGroup) >= spec.maxGroups:
                    self.overflow += 1
                    return
                waiting = self.byGroup[group] = []
            a = [ts, self.seq, group, ev["event_id"], True]
            self.seq += 1
            waiting.append(a)
            self.pending.append(a)

    def _match(self, a: list[Any], group: str, ev: dict[str, Any] | None, ts: int, ctx: Context) -> None:
        self.matches += 1
        if ev is None:
            ctx.emit("match", self.name, group, a[0], a[0] + self.spec.withinMs, {"first": a[3]})
        else:
            ctx.emit("match", self.name, group, a[0], ts, {"first": a[3], "then": ev["event_id"]})

    def expire(self, now: int, ctx: Context) -> None:
        """
        Drop the A's whose deadline lies before C{now} (every event up to the
        deadline has been seen); under negation, emit them.
        """
        pending = self.pending
        within = self.spec.withinMs
        while pending and pending[0][0] + within < now:
            a = pending.popleft()
            if not a[4]:
                continue
            a[4] = False
            group = a[2]
            waiting = self.byGroup[group]
            waiting.remove(a)
            if not waiting:
                del self.byGroup[group]
            if self.spec.negate:
                self._match(a, group, None, 0, ctx)

    def pendingOf(self, group: str) -> list[dict[str, Any]]:
        """
        The A's of C{group} waiting for their B.
        """
        return [{"ts": a[0], "event_id": a[3]} for a in self.byGroup.get(group, [])]

    def dump(self) -> Any:
        """
        Canonical JSON form of the rule's state.
        """
        return {
            "pending": [[a[0], a[1], a[2], a[3]] for a in self.pending if a[4]],
            "seq": self.seq,
            "overflow": self.overflow,
            "matches": self.matches,
        }

    def capture(self, copy: bool = True) -> Callable[[Callable[[], None]], Any]:
        """
        Freeze the rule's state now (its L{dump}, which holds no live
        state); the function returned gives it, in any thread.
        """
        state = self.dump()
        return lambda pause: state

    def load(self, obj: Any) -> None:
        """
        Inverse of L{dump}.
        """
        self.pending = deque()
        self.byGroup = {}
        for ta, seq, group, eid in obj["pending"]:
            a = [ta, seq, group, eid, True]
            self.pending.append(a)
            self.byGroup.setdefault(group, []).append(a)
        self.seq = obj["seq"]
        self.overflow = obj["overflow"]
        self.matches = obj["matches"]
