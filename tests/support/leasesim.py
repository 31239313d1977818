"""
A seeded simulation of the lease keepers on real L{RaftNode}s.

Each node has its own reactor clock (Raft and keeper timers) and its own
monotonic clock (lease validity), both running at a node-specific rate;
the network and disks come from L{tests.support.raftsim}.  Faults:
partitions, process pauses (SIGSTOP: the node's clocks keep running but
none of its code runs, and its timers fire in a burst when it resumes),
wall-clock jumps (the reactor clock leaps forward; the monotonic clock does
not), and crashes with restart from disk.  Every C{step} seconds the
checker asks each running node which lease it is acting under and fails
on two nodes acting for one lease at the same time, or on a fencing token
that goes backwards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from suite.constellation.leases import LEASES, LeaseKeeper, LeaseSettings, LeaseStateMachine
from suite.raft.messages import Configuration
from suite.raft.node import RaftNode, RaftSettings
from tests.support.raftsim import Disk, Faults, SimNetwork, SimStorage, SimTransport


class LeaseViolation(AssertionError):
    pass


@dataclass
class _Node:
    name: str
    rate: float
    disk: Disk = field(default_factory=Disk)
    clock: Clock = field(default_factory=Clock)
    offset: float = 0.0
    paused: bool = False
    crashed: bool = False
    pausedFor: float = 0.0
    raft: Any = None
    keeper: Any = None
    storage: Any = None
    transport: Any = None

    def monotonic(self) -> float:
        return self.offset + self.clock.seconds() * self.rate


class LeaseSimulation:
    def __init__(
        self,
        seed: int,
        names: tuple[str, ...] = ("cloudserver1", "edge2", "edge3"),
        settings: LeaseSettings | None = None,
        rateSpread: float = 0.005,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.net = Clock()
        self.network = SimNetwork(self.net, self.rng, Faults(drop=0.02, minDelay=0.001, maxDelay=0.02))
        self.settings = settings or LeaseSettings(
            duration=1.0, renewInterval=0.2, drift=0.02, margin=0.05, handoverAfter=0.5
        )
        self.raftSettings = RaftSettings()
        self.config = Configuration(frozenset(names))
        self.nodes = {
            n: _Node(n, 1.0 + self.rng.uniform(-rateSpread, rateSpread), offset=self.rng.uniform(0, 1000))
            for n in names
        }
        self.acting: dict[str, tuple[str, int] | None] = dict.fromkeys(LEASES)
        self.lastToken: dict[str, int] = dict.fromkeys(LEASES, 0)
        self.actingTime: dict[str, float] = dict.fromkeys(LEASES, 0.0)
        self.tokensSeen: dict[str, set[tuple[str, int]]] = {name: set() for name in LEASES}
        self.events: list[str] = []
        for node in self.nodes.values():
            self._boot(node)

    def _candidates(self, me: str) -> list[str]:
        return [n for n, node in self.nodes.items() if n != me and not node.crashed]

    def _boot(self, node: _Node) -> None:
        node.storage = SimStorage(node.disk, node.clock, self.rng, self.network.faults)
        node.transport = SimTransport(self.network, node.name)
        machine = LeaseStateMachine()
        node.raft = RaftNode(
            node.name,
            node.clock,
            node.storage,
            node.transport,
            machine,
            self.config,
            self.raftSettings,
            random.Random(self.rng.random()),
        )
        node.keeper = LeaseKeeper(
            node.raft,
            machine,
            node.clock,
            node.monotonic,
            self.settings,
            candidates=lambda n=node.name: self._candidates(n),  # type: ignore[misc]
        )
        Deferred.fromCoroutine(node.raft.start())
        node.keeper.start()
        node.crashed = False

    # -- faults ------------------------------------------------------------

    def pause(self, name: str) -> None:
        node = self.nodes[name]
        if not node.crashed:
            node.paused = True
            node.transport.up = False
            self.events.append(f"{self.net.seconds():.2f} pause {name}")

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        if node.paused:
            node.paused = False
            node.transport.up = True
            node.clock.advance(node.pausedFor * node.rate)
            node.pausedFor = 0.0
            self.events.append(f"{self.net.seconds():.2f} resume {name}")

    def jump(self, name: str, seconds: float) -> None:
        """
        The node's wall clock (its reactor's time) leaps ahead; its
        monotonic clock does not.
        """
        node = self.nodes[name]
        node.offset -= seconds * node.rate
        node.clock.advance(seconds)
        self.events.append(f"{self.net.seconds():.2f} jump {name} +{seconds:.1f}s")

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        if node.crashed:
            return
        node.storage.crash()
        # Raft fails the keeper's pending proposals; the keeper's timers are
        # on the clock the node leaves behind, so none of its code runs again.
        node.raft.stop()
        node.transport.up = False
        node.crashed = True
        node.paused = False
        node.clock = Clock()
        self.events.append(f"{self.net.seconds():.2f} crash {name}")

    def restart(self, name: str) -> None:
        node = self.nodes[name]
        if node.crashed:
            node.clock.advance(self.net.seconds())
            self._boot(node)
            self.events.append(f"{self.net.seconds():.2f} restart {name}")

    # -- running -----------------------------------------------------------

    def run(self, seconds: float, step: float = 0.005) -> None:
        end = self.net.seconds() + seconds
        while self.net.seconds() < end:
            self.net.advance(step)
            for node in self.nodes.values():
                if node.crashed:
                    continue
                if node.paused:
                    node.pausedFor += step
                else:
                    node.clock.advance(step * node.rate)
            self.check(step)

    def check(self, step: float) -> None:
        for lease in LEASES:
            holders = []
            for node in self.nodes.values():
                if node.crashed or node.paused:
                    continue
                token = node.keeper.acting(lease)
                if token is not None:
                    holders.append((node.name, token))
            if len(holders) > 1:
                raise LeaseViolation(
                    f"seed {self.seed}: {lease} acted on by {holders} at {self.net.seconds():.3f}\n"
                    + "\n".join(self.events[-20:])
                )
            if holders:
                name, token = holders[0]
                if token < self.lastToken[lease]:
                    raise LeaseViolation(
                        f"seed {self.seed}: {lease} token went back to {token} "
                        f"(was {self.lastToken[lease]}) on {name}"
                    )
                for other, t in self.tokensSeen[lease]:
                    if t == token and other != name:
                        raise LeaseViolation(
                            f"seed {self.seed}: token {token} of {lease} used by {other} and {name}"
                        )
                self.tokensSeen[lease].add((name, token))
                self.lastToken[lease] = token
                self.actingTime[lease] += step

    def chaos(self, seconds: float) -> None:
        """
        Random faults for C{seconds}, then heal everything.
        """
        end = self.net.seconds() + seconds
        names = sorted(self.nodes)
        while self.net.seconds() < end:
            roll = self.rng.random()
            victim = self.rng.choice(names)
            if roll < 0.25:
                a = {victim}
                self.network.partition(a, set(names) - a)
                self.events.append(f"{self.net.seconds():.2f} partition {victim}")
            elif roll < 0.4:
                self.network.heal()
                self.events.append(f"{self.net.seconds():.2f} heal")
            elif roll < 0.6:
                self.pause(victim)
            elif roll < 0.7:
                self.jump(victim, self.rng.uniform(0.5, 30.0))
            elif roll < 0.8:
                self.crash(victim)
            for name in names:
                if self.nodes[name].paused and self.rng.random() < 0.5:
                    self.resume(name)
                if self.nodes[name].crashed and self.rng.random() < 0.5:
                    self.restart(name)
            self.run(self.rng.uniform(0.2, 3.0))
        self.network.heal()
        for name in names:
            self.resume(name)
            self.restart(name)
