"""
An in-memory network for gossip nodes in one process, driven by one clock.

Every packet and state exchange goes through L{MemoryNetwork.route}, which
a simulator may override (or configure through C{drop}/C{delay}/C{blocked})
to lose, delay or cut traffic, symmetrically or one way.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from suite.gossip.fields import Address
from suite.gossip.interfaces import IGossipTransport, IPacketReceiver

__all__ = ["MemoryNetwork", "MemoryTransport"]


class MemoryNetwork:
    """
    Addresses to listening transports, with loss, delay and cuts.

    @ivar drop: a function of (source, destination) giving the loss
        probability of one packet on that link.
    @ivar blocked: links (source, destination) that carry nothing.
    """

    def __init__(self, clock: IReactorTime, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.rng = rng or random.Random(0)
        self.endpoints: dict[Address, MemoryTransport] = {}
        self.blocked: set[tuple[Address, Address]] = set()
        self.drop: Callable[[Address, Address], float] = lambda src, dst: 0.0
        self.minDelay, self.maxDelay = 0.001, 0.005
        #: Extra one-way delay of every packet from or to an address (a slow
        #: node).
        self.slow: dict[Address, float] = {}
        self.delivered = 0
        self.dropped = 0

    def transport(self, address: Address, maxPacketBytes: int = 1400) -> MemoryTransport:
        """
        A transport bound to C{address} on this network.
        """
        return MemoryTransport(self, address, maxPacketBytes)

    def _delay(self) -> float:
        return self.rng.uniform(self.minDelay, self.maxDelay)

    def passes(self, src: Address, dst: Address) -> bool:
        """
        Whether one message from C{src} to C{dst} gets through now.
        """
        if (src, dst) in self.blocked:
            return False
        p = self.drop(src, dst)
        return not (p > 0 and self.rng.random() < p)

    def sendPacket(self, src: Address, dst: Address, data: bytes) -> None:
        if not self.passes(src, dst):
            self.dropped += 1
            return
        extra = self.slow.get(src, 0.0) + self.slow.get(dst, 0.0)
        self.clock.callLater(self._delay() + extra, self._arrive, src, dst, data)

    def _arrive(self, src: Address, dst: Address, data: bytes) -> None:
        t = self.endpoints.get(dst)
        if t is not None and t.receiver is not None and (src, dst) not in self.blocked:
            self.delivered += 1
            t.receiver.packetReceived(data, src)

    def exchange(self, src: Address, dst: Address, data: bytes) -> Deferred[bytes]:
        """
        A state exchange: the request and the reply each travel like a
        reliable stream (no loss, but cut by C{blocked} either way and
        refused by a missing listener).
        """
        d: Deferred[bytes] = Deferred()

        def request() -> None:
            t = self.endpoints.get(dst)
            if (src, dst) in self.blocked or t is None or t.receiver is None:
                d.errback(ConnectionRefusedError(str(dst)))
                return
            reply = t.receiver.stateReceived(data, src)
            if reply is None:
                d.errback(ConnectionRefusedError("closed without a reply"))
                return
            self.clock.callLater(self._delay(), response, reply)

        def response(reply: bytes) -> None:
            if (dst, src) in self.blocked or src not in self.endpoints:
                d.errback(ConnectionRefusedError("reply lost"))
            else:
                d.callback(reply)

        self.clock.callLater(self._delay(), request)
        return d


@implementer(IGossipTransport)
class MemoryTransport:
    """
    One node's attachment to a L{MemoryNetwork}.
    """

    def __init__(self, network: MemoryNetwork, address: Address, maxPacketBytes: int = 1400) -> None:
        self.network = network
        self.address = address
        self.maxPacketBytes = maxPacketBytes
        self.receiver: IPacketReceiver | None = None

    def startListening(self, receiver: IPacketReceiver) -> None:
        if self.address in self.network.endpoints:
            raise OSError(f"address {self.address} in use")
        self.receiver = receiver
        self.network.endpoints[self.address] = self

    def stopListening(self) -> None:
        self.receiver = None
        if self.network.endpoints.get(self.address) is self:
            del self.network.endpoints[self.address]

    def sendPacket(self, address: Address, data: bytes) -> None:
        if len(data) > self.maxPacketBytes:
            raise ValueError(f"packet of {len(data)} bytes exceeds {self.maxPacketBytes}")
        if self.receiver is not None:
            self.network.sendPacket(self.address, address, data)

    def exchangeState(self, address: Address, data: bytes) -> Deferred[bytes]:
        if self.receiver is None:
            return fail(ConnectionRefusedError("not listening"))
        return self.network.exchange(self.address, address, data)
