"""
The member table: every remote member's core and machine, peer selection
by status, the shuffled probe order and reaping.

Each member's status is what its machine last announced (L{observe}, fed
by the machine's C{notify} output), stamped with the time it changed; a
member this node forgets or stops tracking has none.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from twisted.internet.interfaces import IReactorTime

from suite.gossip.member import Member, MemberCore, MemberInputs, Standing, Status

__all__ = ["Roster", "LIVE", "REACHABLE"]

#: Members that count towards the cluster size and are probed.
LIVE = frozenset({Status.ALIVE, Status.SUSPECT})
#: Members gossip goes to (dead ones too, so they can refute).
REACHABLE = frozenset({Status.ALIVE, Status.SUSPECT, Status.DEAD})


class Roster:
    """
    Remote members by name, each a L{MemberCore} and its machine.
    """

    def __init__(self, clock: IReactorTime, rng: random.Random) -> None:
        self.clock, self.rng = clock, rng
        self._members: dict[str, tuple[MemberCore, MemberInputs]] = {}
        self._standing: dict[str, Standing] = {}
        self._probeOrder: list[str] = []
        self._probeIndex = 0

    def get(self, name: str) -> tuple[MemberCore, MemberInputs] | None:
        """
        The core and machine of C{name}, removed or not.
        """
        return self._members.get(name)

    def known(self, name: str) -> bool:
        """
        True if C{name} is a member not removed.
        """
        return name in self._standing

    def observe(self, member: Member) -> None:
        """
        Record the status a member machine announced (the time only when
        the status changes).
        """
        status = Status(member.status)
        known = self._standing.get(member.name)
        if member.name in self._members and (known is None or known.status is not status):
            self._standing[member.name] = Standing(status, self.clock.seconds())

    def add(self, core: MemberCore, machine: MemberInputs) -> None:
        """
        Add (or replace a removed) member, at a random place in the rest of
        the current probe round.
        """
        self._members[core.name] = (core, machine)
        self._standing[core.name] = Standing(Status.ALIVE, self.clock.seconds())
        self._probeOrder.insert(self.rng.randint(self._probeIndex, len(self._probeOrder)), core.name)

    def current(self) -> Iterator[tuple[MemberCore, MemberInputs, Standing]]:
        """
        Every member not removed, with its standing.
        """
        for core, machine in self._members.values():
            standing = self._standing.get(core.name)
            if standing is not None:
                yield core, machine, standing

    def snapshots(self) -> list[Member]:
        """
        Every member not removed, as L{Member}s.
        """
        return [core.snapshot(standing.status) for core, _, standing in self.current()]

    def snapshot(self, name: str) -> Member | None:
        """
        C{name} as a L{Member}, or None if unknown or removed.
        """
        entry = self._members.get(name)
        standing = self._standing.get(name)
        if entry is None or standing is None:
            return None
        return entry[0].snapshot(standing.status)

    def pick(self, k: int, statuses: frozenset[Status], recentDead: float | None = None) -> list[MemberCore]:
        """
        Up to C{k} random members in C{statuses}; dead ones only if they
        died less than C{recentDead} seconds ago (when given).
        """
        now = self.clock.seconds()
        candidates = [
            c
            for c, _, s in self.current()
            if s.status in statuses
            and (s.status is not Status.DEAD or recentDead is None or now - s.since < recentDead)
        ]
        if len(candidates) <= k:
            self.rng.shuffle(candidates)
            return candidates
        return self.rng.sample(candidates, k)

    def liveCount(self) -> int:
        """
        Members alive or suspect, this node included.
        """
        return 1 + sum(1 for _, _, s in self.current() if s.status in LIVE)

    def nextProbeTarget(self) -> tuple[MemberCore, Status] | None:
        """
        The next live member of the shuffled round (a new round when this
        one is used up), or None if there is none.
        """
        for _ in range(2):
            while self._probeIndex < len(self._probeOrder):
                name = self._probeOrder[self._probeIndex]
                self._probeIndex += 1
                entry = self._members.get(name)
                standing = self._standing.get(name)
                if entry is not None and standing is not None and standing.status in LIVE:
                    return entry[0], standing.status
            self._probeOrder = [c.name for c, _, _ in self.current()]
            self.rng.shuffle(self._probeOrder)
            self._probeIndex = 0
        return None

    def reap(self, after: float) -> None:
        """
        Forget members dead or left for more than C{after} seconds.
        """
        now = self.clock.seconds()
        for core, machine, standing in list(self.current()):
            if standing.status in (Status.DEAD, Status.LEFT) and now - standing.since > after:
                machine.removed()
                del self._members[core.name]
                del self._standing[core.name]

    def removeAll(self) -> None:
        """
        Tell every machine it is removed (the node stops).
        """
        for _, machine in self._members.values():
            machine.removed()
        self._standing.clear()
