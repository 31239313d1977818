"""
Dissemination: the queues of membership updates and user messages, the
piggybacking of both onto every packet this node sends, and the periodic
gossip round that sends them to a few random members.
"""

from __future__ import annotations

from collections.abc import Callable

from suite.gossip.broadcast import TransmitQueue
from suite.gossip.codec import COMPOUND_ITEM_OVERHEAD, Codec
from suite.gossip.fields import Address
from suite.gossip.interfaces import IGossipTransport
from suite.gossip.messages import Message, User, encodeMessage
from suite.gossip.roster import REACHABLE, Roster
from suite.gossip.settings import GossipSettings

__all__ = ["Disseminator"]


class Disseminator:
    """
    Queues updates and user messages and sends packets carrying them.

    @ivar oldProtocol: addresses of members before memberlist protocol 5,
        whose packets carry no CRC.
    """

    def __init__(
        self,
        settings: GossipSettings,
        codec: Codec,
        transport: IGossipTransport,
        roster: Roster,
        count: Callable[[str], None],
    ) -> None:
        self.settings, self.codec, self.transport, self.roster = settings, codec, transport, roster
        self._count = count
        self.oldProtocol: set[Address] = set()

        def limit() -> int:
            return settings.retransmitLimit(roster.liveCount())

        self.updates = TransmitQueue(limit)
        self.userMessages = TransmitQueue(limit, settings.maxUserBroadcasts)
        self._userSeq = 0

    def budget(self) -> int:
        """
        The bytes one packet has for messages.
        """
        return self.settings.maxPacketBytes - self.codec.overhead() - COMPOUND_ITEM_OVERHEAD

    def queueUpdate(self, key: str, encoded: bytes) -> None:
        """
        Queue an encoded membership update about C{key} (replacing one
        queued about the same member).
        """
        self.updates.queue(key, encoded)

    def queueUser(self, data: bytes) -> None:
        """
        Queue a user message for the cluster.

        @raise ValueError: if it is too large for a packet.
        """
        encoded = encodeMessage(User(data))
        if len(encoded) > self.budget():
            raise ValueError(
                f"user message of {len(data)} bytes does not fit in a {self.settings.maxPacketBytes}-byte packet"
            )
        self._userSeq += 1
        self.userMessages.queue(str(self._userSeq), encoded)

    def clear(self) -> None:
        """
        Drop everything queued.
        """
        self.updates.clear()
        self.userMessages.clear()

    def send(self, address: Address, message: Message, *extra: Message) -> None:
        """
        Send C{message} (and C{extra}) with as many queued messages as fit.
        """
        encoded = [encodeMessage(message)] + [encodeMessage(e) for e in extra]
        budget = self.budget() - sum(len(e) + COMPOUND_ITEM_OVERHEAD for e in encoded[1:]) - len(encoded[0])
        self.sendRaw(address, encoded + self.piggyback(budget))

    def piggyback(self, budget: int) -> list[bytes]:
        """
        Queued messages that fit in C{budget} bytes: membership updates
        first, then user messages in what is left.
        """
        taken = self.updates.take(budget, COMPOUND_ITEM_OVERHEAD)
        left = budget - sum(len(e) + COMPOUND_ITEM_OVERHEAD for e in taken)
        return taken + self.userMessages.take(left, COMPOUND_ITEM_OVERHEAD)

    def sendRaw(self, address: Address, encoded: list[bytes]) -> None:
        """
        Pack C{encoded} messages into one packet to C{address}.
        """
        self._count("packetsSent")
        packet = self.codec.packPacket(
            encoded, crc=address not in self.oldProtocol, compressed=self.settings.compressPackets
        )
        self.transport.sendPacket(address, packet)

    def gossipRound(self) -> None:
        """
        Send what is queued to C{gossipNodes} random members (recently dead
        ones included, so they can refute).
        """
        s = self.settings
        if len(self.updates) or len(self.userMessages):
            for core in self.roster.pick(s.gossipNodes, REACHABLE, recentDead=s.gossipToTheDead):
                encoded = self.piggyback(self.budget())
                if not encoded:
                    break
                self.sendRaw(core.address, encoded)
