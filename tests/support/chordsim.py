"""
A deterministic in-memory network for Chord simulations: one L{Clock}, a
seeded RNG, message delay, drops and process crashes.  Every message is
round-tripped through msgpack, as on the real wire.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.kv.memory import MemoryStore
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef, vnodeId
from suite.specter.chord.node import ChordConfig, ChordNode
from suite.specter.interfaces import IChordTransport, IRingState

__all__ = ["SimNetwork", "SimTransport", "Cluster", "ThreadedStore", "MemoryRingState"]


def _copy(value: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False)


class SimNetwork:
    """
    Delivers calls between L{ChordNode}s after a random delay; may drop
    requests and replies; crashed processes neither receive nor answer.
    """

    def __init__(
        self, clock: Clock, rng: random.Random, drop: float = 0.0, delay: tuple[float, float] = (0.001, 0.02)
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.drop = drop
        self.delay = delay
        self.nodes: dict[str, ChordNode] = {}
        self.crashed: set[str] = set()
        #: the transport of each address's current life: calls still made
        #: by an earlier life (a crashed process) go nowhere
        self.current: dict[str, Any] = {}
        self.messages = 0
        #: while partitioned, the group of each address: messages between
        #: groups are lost (addresses in no group reach everyone)
        self.groups: dict[str, int] = {}

    def partition(self, *groups: list[str]) -> None:
        """
        Cut the network between C{groups} (lists of addresses) until L{heal}.
        """
        self.groups = {a: i for i, g in enumerate(groups) for a in g}

    def heal(self) -> None:
        self.groups = {}

    def _cut(self, src: str, dst: str) -> bool:
        a, b = self.groups.get(src), self.groups.get(dst)
        return a is not None and b is not None and a != b

    def _delay(self) -> float:
        return self.rng.uniform(*self.delay)

    def _lost(self, *addrs: str) -> bool:
        if any(a in self.crashed or a not in self.nodes for a in addrs) or self._cut(*addrs):
            return True
        return self.rng.random() < self.drop

    def deliver(
        self,
        src: str,
        dst: str,
        vid: int | None,
        method: str,
        args: list[Any],
        timeout: float,
        sender: Any = None,
    ) -> Deferred[Any]:
        self.messages += 1
        d: Deferred[Any] = Deferred()
        timer = self.clock.callLater(timeout, lambda: d.errback(RemoteError(E.TIMEOUT, f"{method} to {dst}")))
        payload = _copy([vid, method, args])
        if self._lost(src, dst) or (sender is not None and self.current.get(src) is not sender):
            return d

        def reply(result: Any) -> None:
            if not timer.active() or self._lost(src, dst):
                return
            timer.cancel()
            if isinstance(result, Failure):
                err = (
                    result.value
                    if isinstance(result.value, RemoteError)
                    else RemoteError(E.INTERNAL, str(result.value))
                )
                d.errback(RemoteError.fromWire(_copy(err.toWire())))
            else:
                d.callback(_copy(result))

        def arrive() -> None:
            if dst in self.crashed:
                return
            node = self.nodes[dst]
            node.dispatch(payload[0], payload[1], payload[2]).addBoth(
                lambda r: self.clock.callLater(self._delay(), reply, r)
            )

        self.clock.callLater(self._delay(), arrive)
        return d


class ThreadedStore(MemoryStore):
    """
    A L{MemoryStore} whose exports, imports and digests answer later, like
    the SQLite backend's work done in its writer thread: usually within a
    few milliseconds, now and then after seconds (a long transaction).
    """

    def __init__(self, clock: Clock, rng: random.Random, slow: float = 0.1, origin: int = 0) -> None:
        super().__init__(clock, origin=origin)
        self.rng = rng
        self.slow = slow

    def _later(self, result: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        delay = self.rng.uniform(0.5, 2.5) if self.rng.random() < self.slow else self.rng.uniform(0.001, 0.02)
        self.clock.callLater(delay, d.callback, result)
        return d

    def exportRange(self, low: int, high: int) -> Deferred[Any]:
        records = self.table.inRange(low, high)
        return self._later(records)

    def importRecords(self, records: Any) -> Deferred[Any]:
        d = self._later(None)
        # applied in the writer thread before the answer comes back
        return d.addCallback(lambda _: super(ThreadedStore, self).importRecords(records))

    def digestRange(self, low: int, high: int, buckets: int = 1) -> Deferred[Any]:
        return self._later(self.table.digests(low, high, buckets))


@implementer(IRingState)
class MemoryRingState:
    """
    A process's ring-state file kept in memory, surviving its restarts.
    """

    def __init__(self) -> None:
        self.saved: dict[str, Any] | None = None
        self.saves = 0

    def load(self) -> dict[str, Any] | None:
        return _copy(self.saved) if self.saved is not None else None

    def save(self, state: dict[str, Any]) -> Deferred[None]:
        self.saved = _copy(state)
        self.saves += 1
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d


@implementer(IChordTransport)
class SimTransport:
    """
    One process's view of the L{SimNetwork}.
    """

    def __init__(self, net: SimNetwork, addr: str) -> None:
        self.net = net
        self.addr = addr
        net.current[addr] = self

    def call(
        self, addr: str, vnodeId: int | None, method: str, args: list[Any], timeout: float
    ) -> Deferred[Any]:
        return self.net.deliver(self.addr, addr, vnodeId, method, args, timeout, self)


class Cluster:
    """
    Processes of a simulated ring, and the invariants checked at the end.
    """

    def __init__(
        self,
        seed: int = 1,
        drop: float = 0.0,
        config: ChordConfig | None = None,
        threaded: bool = False,
        slow: float = 0.1,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.rng = random.Random(seed)
        self.net = SimNetwork(self.clock, self.rng, drop=drop)
        self.config = config or ChordConfig(
            virtual=4, replicas=3, successors=12, stabilizeInterval=0.5, rpcTimeout=1.0
        )
        self.threaded = threaded
        self.slow = slow
        #: what each process keeps on disk across its restarts
        self.disks: dict[str, tuple[dict[int, Any], MemoryRingState]] = {}

    def _store(self, name: str, index: int) -> Any:
        stores = self.disks[name][0]
        if index not in stores:
            origin = vnodeId(name, index)
            if self.threaded:
                stores[index] = ThreadedStore(
                    self.clock, random.Random(self.rng.random()), self.slow, origin=origin
                )
            else:
                stores[index] = MemoryStore(self.clock, origin=origin)
        return stores[index]

    def add(self, name: str, seed: str | None, bootstrap: bool = False) -> ChordNode:
        """
        Start process C{name} (joining through C{seed}); a name used before
        comes back with the stores and ring state of its earlier life.
        """
        if name not in self.disks:
            self.disks[name] = ({}, MemoryRingState())
        node = ChordNode(
            name,
            SimTransport(self.net, name),
            self.clock,
            self.config,
            lambda i: self._store(name, i),
            rng=random.Random(self.rng.random()),
            ringState=self.disks[name][1],
        )
        self.net.crashed.discard(name)
        self.net.nodes[name] = node
        node.start(seed, bootstrap=bootstrap)
        return node

    def stop(self, name: str) -> Deferred[Any]:
        """
        SIGTERM: the process's vnodes leave; it is gone once they have.
        """
        node = self.net.nodes[name]

        def gone(result: Any) -> Any:
            node.stop()
            self.net.crashed.add(name)
            return result

        return node.leave().addBoth(gone)

    def crash(self, name: str) -> None:
        self.net.crashed.add(name)
        self.net.nodes[name].stop()

    def run(self, seconds: float, step: float = 0.01) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def live(self) -> list[ChordNode]:
        return [n for a, n in self.net.nodes.items() if a not in self.net.crashed]

    def activeVnodes(self) -> list[Any]:
        out = [v for n in self.live() for v in n.vnodes if v.serving and not v.gone]
        return sorted(out, key=lambda v: v.ref.id)

    def expectedOwner(self, kid: int) -> Any:
        ring = self.activeVnodes()
        for v in ring:
            if v.ref.id >= kid:
                return v
        return ring[0]

    def expectedReplicas(self, owner: Any) -> list[VnodeRef]:
        ring = self.activeVnodes()
        i = ring.index(owner)
        out: list[VnodeRef] = []
        seen = {owner.ref.addr}
        for k in range(1, len(ring)):
            v = ring[(i + k) % len(ring)]
            if len(out) >= self.config.replicas - 1:
                break
            if v.ref.addr not in seen:
                seen.add(v.ref.addr)
                out.append(v.ref)
        return out

    def ringProblems(self) -> list[str]:
        """
        Successor lists that differ from the sorted ring of active vnodes.
        """
        ring = self.activeVnodes()
        problems = []
        n = len(ring)
        for i, v in enumerate(ring):
            want = [ring[(i + k) % n].ref for k in range(1, min(self.config.successors, n - 1) + 1)] or [
                v.ref
            ]
            if v.succs[: len(want)] != want:
                problems.append(f"{v.ref.short()} successors differ")
            pred = ring[(i - 1) % n].ref
            if v.pred != pred and not (n == 1 and v.pred == v.ref):
                problems.append(f"{v.ref.short()} predecessor {v.pred} != {pred}")
        return problems
