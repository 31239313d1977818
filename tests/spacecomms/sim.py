"""
An in-memory network of SpaceComms nodes for deterministic simulation:
one Clock, a seeded RNG, per-message delay, drop, partition and crash.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import implementer

from suite.spacecomms.config import Config, PeerConfig, Policies
from suite.spacecomms.envelope import Envelope, decodeEnvelope
from suite.spacecomms.interfaces import IPeerLink, IRecordStore
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.store import MemoryStore, Record

TOKEN = "sim-token-12345678"


def stored(store: IRecordStore, kind: str, key: str) -> Record:
    """
    The record of C{kind} named C{key} in C{store}; failing the test when
    there is none.
    """
    record = store.get(kind, key)
    if record is None:
        raise AssertionError(f"no {kind} {key!r} in the store")
    return record


@implementer(IReactorTime)
class SkewedClock:
    """
    The simulation's clock as a node whose system clock is C{offset}
    seconds off sees it (timers still run on the shared clock).
    """

    def __init__(self, clock: Clock, offset: float) -> None:
        self.clock = clock
        self.offset = offset

    def seconds(self) -> float:
        return self.clock.seconds() + self.offset

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall:
        return self.clock.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return self.clock.getDelayedCalls()


@implementer(IPeerLink)
class SimLink:
    """
    One direction of a simulated session: what node C{src} holds to reach
    C{peerId}.
    """

    def __init__(self, net: SimNet, src: str, peerId: str) -> None:
        self.net = net
        self.src = src
        self.peerId = peerId
        self.up = True
        self.sent: list[Envelope] = []

    def sendEnvelope(self, envelope: Envelope) -> None:
        self.sent.append(envelope)
        self.net.transmit(self, envelope.encode())

    def close(self, reason: str) -> None:
        self.net.disconnect(self.src, self.peerId)


class SimNet:
    """
    Nodes joined by simulated sessions.  Messages on one link keep their
    order unless C{reorder} is set; each takes a random delay.
    """

    def __init__(self, seed: int, dropRate: float = 0.0, reorder: bool = False) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.rng = random.Random(seed)
        self.dropRate = dropRate
        self.reorder = reorder
        self.nodes: dict[str, SpaceNode] = {}
        self.stores: dict[str, MemoryStore] = {}
        self.configs: dict[str, Config] = {}
        self.links: dict[tuple[str, str], SimLink] = {}
        self.lastArrival: dict[tuple[str, str], float] = {}
        self.events: list[dict[str, Any]] = []
        #: While not None, sent messages wait here until L{release}d.
        self.held: list[tuple[SimLink, bytes]] | None = None
        globalLogPublisher.addObserver(cast(ILogObserver, self.events.append))

    def stop(self) -> None:
        globalLogPublisher.removeObserver(cast(ILogObserver, self.events.append))
        for n in self.nodes.values():
            n.stop()

    def addNode(self, name: str, peers: dict[str, Policies], **overrides: Any) -> SpaceNode:
        cfg = Config(
            node_id=name,
            node_name=name,
            peers=tuple(PeerConfig(p, f"https://{p}:1", p, 1, TOKEN, pol) for p, pol in peers.items()),
            heartbeat_interval_seconds=1,
            session_timeout_seconds=5,
            resync_grace_seconds=5,
            **overrides,
        )
        self.configs[name] = cfg
        store = self.stores.setdefault(name, MemoryStore())
        node = SpaceNode(cfg, store, self.clock)
        node.start()
        self.nodes[name] = node
        return node

    def connect(self, a: str, b: str) -> None:
        # The HELLO exchange: each side checks the other's HELLO (and so
        # learns its capabilities and the own_sequence it states).
        for src, dst in ((a, b), (b, a)):
            hello = Envelope(
                "HELLO", src, self.nodes[src].helloPayload(dst), timestamp=self.clock.seconds(), path=(src,)
            )
            verdict = self.nodes[dst].checkHello(decodeEnvelope(hello.encode()), None)
            assert verdict is None, verdict
        ab, ba = SimLink(self, a, b), SimLink(self, b, a)
        self.links[(a, b)], self.links[(b, a)] = ab, ba
        self.nodes[a].sessionEstablished(ab)
        self.nodes[b].sessionEstablished(ba)

    def disconnect(self, a: str, b: str) -> None:
        for src, dst in ((a, b), (b, a)):
            link = self.links.pop((src, dst), None)
            if link is not None:
                link.up = False
                if src in self.nodes:
                    self.nodes[src].sessionLost(link, "simulated disconnect")

    def crash(self, name: str) -> None:
        for a, b in list(self.links):
            if name in (a, b):
                self.disconnect(a, b)
        self.nodes.pop(name).stop()

    def restart(self, name: str, clock: IReactorTime | None = None) -> SpaceNode:
        """
        Start C{name} again on its store (replace C{self.stores[name]}
        first to lose it), on the shared clock or on C{clock}.
        """
        cfg = self.configs[name]
        node = SpaceNode(cfg, self.stores[name], clock or self.clock)
        node.start()
        self.nodes[name] = node
        return node

    def hold(self) -> None:
        """
        Keep every message sent from now on until the test releases it, in
        the order the test chooses (L{release}, L{releaseAll}).
        """
        self.held = []

    def release(self, src: str, dst: str, messageType: str) -> None:
        """
        Deliver now the first held message of C{messageType} from C{src} to
        C{dst} (dropped, as on the wire, if that session is gone).
        """
        assert self.held is not None
        for i, (link, data) in enumerate(self.held):
            if (link.src, link.peerId) == (src, dst) and decodeEnvelope(data).message_type == messageType:
                del self.held[i]
                self._arrive(link, data)
                return
        raise AssertionError(f"no {messageType} held from {src} to {dst}")

    def releaseAll(self) -> None:
        """
        Deliver the held messages in the order they were sent, and those
        they cause, until none is left; then stop holding.
        """
        while self.held:
            link, data = self.held.pop(0)
            self._arrive(link, data)
        self.held = None

    def transmit(self, link: SimLink, data: bytes) -> None:
        if self.held is not None:
            self.held.append((link, data))
            return
        if self.rng.random() < self.dropRate:
            return
        key = (link.src, link.peerId)
        at = self.clock.seconds() + self.rng.uniform(0.001, 0.05)
        if not self.reorder:
            at = max(at, self.lastArrival.get(key, 0.0) + 1e-6)
            self.lastArrival[key] = at
        self.clock.callLater(at - self.clock.seconds(), self._arrive, link, data)

    def _arrive(self, link: SimLink, data: bytes) -> None:
        back = self.links.get((link.peerId, link.src))
        if not link.up or back is None or link.peerId not in self.nodes:
            return
        self.nodes[link.peerId].envelopeReceived(back, decodeEnvelope(data))

    def run(self, seconds: float, step: float = 0.01) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def state(self, name: str, kind: str = "cdm") -> dict[str, tuple[bool, str | None]]:
        return {r.key: (r.active, r.reason) for r in self.stores[name].records(kind)}

    def applied(self) -> list[tuple[str, str]]:
        return [
            (e["node"], e["message_id"])
            for e in self.events
            if e.get("log_format", "").startswith("routing decision: applied")
        ]

    def logged(self, text: str) -> list[dict[str, Any]]:
        return [e for e in self.events if text in e.get("log_format", "")]
