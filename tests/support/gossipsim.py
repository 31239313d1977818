"""
A deterministic gossip cluster simulator.

N L{GossipNode}s share one L{task.Clock} and one seeded L{random.Random}
(node RNGs and the network's are drawn from it); packets travel over
L{suite.gossip.memory.MemoryNetwork} with per-node loss, delay, symmetric
and one-way partitions; nodes crash (stop without a word) and restart (a
new node with the same name and address, incarnation 0).  Every listener
event is recorded as C{(time, observer, event, member)}.

Replay a failing scenario with C{GOSSIP_SEED=<seed> pytest tests/gossip/test_simulation.py}.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
from twisted.internet.task import Clock
from zope.interface import implementer

from suite.gossip.fields import Address
from suite.gossip.interfaces import IGossipDelegate, IMembershipListener
from suite.gossip.member import Member
from suite.gossip.memory import MemoryNetwork
from suite.gossip.node import GossipNode
from suite.gossip.settings import GossipSettings


class ScenarioFailure(AssertionError):
    pass


@implementer(IMembershipListener)
class Recorder:
    """
    Records one observer's listener events into the simulation's history.
    """

    def __init__(self, sim: Simulation, observer: str) -> None:
        self.sim, self.observer = sim, observer

    def _record(self, event: str, member: Member) -> None:
        self.sim.events.append((self.sim.clock.seconds(), self.observer, event, member.name))

    def memberJoined(self, member: Member) -> None:
        self._record("joined", member)

    def memberUpdated(self, member: Member) -> None:
        self._record("updated", member)

    def memberSuspected(self, member: Member) -> None:
        self._record("suspect", member)

    def memberDied(self, member: Member) -> None:
        self._record("dead", member)

    def memberLeft(self, member: Member) -> None:
        self._record("left", member)


@implementer(IGossipDelegate)
class VersionedState:
    """
    A delegate holding per-origin versioned entries (origin -> (version,
    value)): a node bumps its own entry with L{set}, which it broadcasts;
    push-pull and broadcasts merge by version, never by wall clock; a
    broadcast that brought news is broadcast again.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self.entries: dict[str, tuple[int, str]] = {}
        self.messages: list[bytes] = []
        self.merged: list[tuple[bytes, bool]] = []
        self.gossip: GossipNode | None = None

    def set(self, value: str) -> None:
        version = self.entries.get(self.node, (0, ""))[0] + 1
        self.entries[self.node] = (version, value)
        if self.gossip is not None:
            self.gossip.queueBroadcast(msgpack.packb([[self.node, version, value]]))

    def _mergeEntries(self, data: bytes) -> list[list[Any]]:
        try:
            entries = msgpack.unpackb(data)
        except Exception:
            return []
        newer = []
        for origin, version, value in entries:
            if version > self.entries.get(origin, (0, ""))[0]:
                self.entries[origin] = (version, value)
                newer.append([origin, version, value])
        return newer

    def notifyMsg(self, data: bytes) -> None:
        self.messages.append(data)
        newer = self._mergeEntries(data)
        if newer and self.gossip is not None:
            # Pass on what was news (as Serf does with its events): the
            # node's own broadcasts reach only a few members each.
            self.gossip.queueBroadcast(msgpack.packb(newer))

    def localState(self, join: bool) -> bytes:
        return msgpack.packb([[o, v, x] for o, (v, x) in sorted(self.entries.items())])

    def mergeRemoteState(self, data: bytes, join: bool) -> None:
        self.merged.append((data, join))
        self._mergeEntries(data)


class Simulation:
    """
    One seeded cluster on one clock.
    """

    def __init__(self, seed: int, settings: GossipSettings | None = None, key: bytes | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock, random.Random(self.rng.random()))
        self.network.drop = self._loss
        self.settings = settings or GossipSettings()
        self.key = key
        self.nodes: dict[str, GossipNode] = {}
        self.addresses: dict[str, Address] = {}
        self.down: set[str] = set()
        self.loss: dict[Address, float] = {}
        self.baseLoss = 0.0
        self.events: list[tuple[float, str, str, str]] = []
        self.withState = False
        self.states: dict[str, VersionedState] = {}

    def _loss(self, src: Address, dst: Address) -> float:
        return max(self.baseLoss, self.loss.get(src, 0.0), self.loss.get(dst, 0.0))

    def address(self, name: str) -> Address:
        return self.addresses.setdefault(
            name, (f"10.0.{len(self.addresses) // 250}.{len(self.addresses) % 250 + 1}", 7946)
        )

    def add(self, name: str, meta: dict[str, Any] | None = None) -> GossipNode:
        """
        A new node (not started) named C{name}, replacing any earlier one.
        """
        addr = self.address(name)
        state = VersionedState(name) if self.withState else None
        node = GossipNode(
            name,
            addr,
            self.network.transport(addr, self.settings.maxPacketBytes),
            self.clock,
            self.settings,
            key=self.key,
            listener=Recorder(self, name),
            meta=meta,
            rng=random.Random(self.rng.random()),
            delegate=state,
        )
        if state is not None:
            state.gossip = node
            self.states[name] = state
        self.nodes[name] = node
        self.down.discard(name)
        return node

    def start(self, name: str, seeds: Iterable[str]) -> None:
        self.nodes[name].start([self.address(s) for s in seeds])

    def cluster(self, n: int, seeds: int = 1, spread: float = 2.0) -> list[str]:
        """
        Add C{n} nodes and start them at random times within C{spread}
        seconds, each joining through the first C{seeds} nodes.
        """
        names = [f"n{i:02d}" for i in range(n)]
        for name in names:
            self.add(name)
        seedNames = names[:seeds]
        self.start(names[0], [])
        for name in names[1:]:
            self.clock.callLater(self.rng.uniform(0, spread), self.start, name, seedNames)
        self.run(spread)
        return names

    def crash(self, name: str) -> None:
        """
        Stop C{name} silently: no leave, packets to it vanish.
        """
        self.nodes[name].stop()
        self.down.add(name)

    def restart(self, name: str, seeds: Iterable[str]) -> GossipNode:
        node = self.add(name)
        node.start([self.address(s) for s in seeds if s != name])
        return node

    def partition(self, *groups: Iterable[str]) -> None:
        """
        Cut every link between different groups, both ways.
        """
        sets = [[self.address(n) for n in g] for g in groups]
        for i, g in enumerate(sets):
            for j, h in enumerate(sets):
                if i != j:
                    self.network.blocked |= {(a, b) for a in g for b in h}

    def oneWay(self, sources: Iterable[str], destinations: Iterable[str]) -> None:
        """
        Cut the links from C{sources} to C{destinations} only.
        """
        dsts = [self.address(d) for d in destinations]
        self.network.blocked |= {(self.address(s), d) for s in sources for d in dsts}

    def heal(self) -> None:
        self.network.blocked = set()

    def live(self) -> list[str]:
        return sorted(n for n in self.nodes if n not in self.down)

    def view(self, observer: str) -> dict[str, str]:
        return {m.name: m.status for m in self.nodes[observer].members()}

    def run(self, seconds: float) -> None:
        """
        Advance simulated time by C{seconds}, one due call at a time.
        """
        end = self.clock.seconds() + seconds
        calls = self.clock.calls
        while calls and calls[0].getTime() <= end:
            self.clock.advance(max(0.0, calls[0].getTime() - self.clock.seconds()))
        self.clock.advance(end - self.clock.seconds())

    def runUntil(self, predicate: Callable[[], bool], limit: float, what: str, step: float = 0.25) -> float:
        """
        Run until C{predicate()} holds (checked every C{step}); return the
        simulated time it took.

        @raise ScenarioFailure: after C{limit} seconds.
        """
        start = self.clock.seconds()
        while not predicate():
            if self.clock.seconds() - start > limit:
                self.fail(f"{what} not reached within {limit:.1f} s of simulated time")
            self.run(step)
        return self.clock.seconds() - start

    def allAlive(self, names: Iterable[str] | None = None) -> bool:
        """
        Every live node sees exactly the live nodes (or C{names}) as alive.
        """
        expected = set(self.live() if names is None else names)
        return all({m for m, s in self.view(n).items() if s == "alive"} == expected for n in self.live())

    def allSee(self, member: str, status: str) -> bool:
        return all(self.view(n).get(member) == status for n in self.live() if n != member)

    def eventsAbout(self, member: str, event: str) -> list[tuple[float, str, str, str]]:
        return [e for e in self.events if e[3] == member and e[2] == event]

    def fail(self, why: str) -> None:
        views = {n: {m: s for m, s in self.view(n).items() if s != "alive"} for n in self.live()}
        raise ScenarioFailure(
            f"seed {self.seed}: {why} at t={self.clock.seconds():.2f}\n"
            f"non-alive members per live node: {views}\n"
            f"replay: GOSSIP_SEED={self.seed} .venv/bin/python -m pytest -q tests/gossip/test_simulation.py"
        )

    def stopAll(self) -> None:
        for name in self.live():
            self.nodes[name].stop()
