"""
Tests for the gossip wire format.
"""

from __future__ import annotations

import random

import msgpack
from twisted.trial.unittest import SynchronousTestCase

from suite.gossip.messages import (
    PACKET_OVERHEAD,
    Ack,
    Alive,
    BadMAC,
    Dead,
    IndirectPing,
    Left,
    MalformedPacket,
    MemberState,
    Nack,
    Ping,
    PushPull,
    Suspect,
    checkMeta,
    decodePushPull,
    encodeMessage,
    encodePushPull,
    packPacket,
    unpackPacket,
)

EXAMPLES = [
    Ping(1, "b", "a", ("10.0.0.1", 7946)),
    IndirectPing(2, "c", ("10.0.0.3", 7946), "a", ("10.0.0.1", 7946), True),
    Ack(3, "b"),
    Nack(4, "c"),
    Alive("a", 7, ("::1", 7946), {"services": ["web"], "health": "ok"}),
    Suspect("b", 2, "a"),
    Dead("b", 2, "a"),
    Left("c", 9),
]


class PacketTests(SynchronousTestCase):
    """
    Packets round-trip, and anything else is refused.
    """

    def test_roundTrip(self) -> None:
        """
        Every message type survives packing and unpacking, in order.
        """
        packet = packPacket([encodeMessage(m) for m in EXAMPLES])
        self.assertEqual(unpackPacket(packet), EXAMPLES)

    def test_manyMessages(self) -> None:
        """
        More than 15 messages use the 3-byte array header.
        """
        msgs = [Ack(i, "x") for i in range(40)]
        self.assertEqual(unpackPacket(packPacket([encodeMessage(m) for m in msgs])), msgs)

    def test_authenticated(self) -> None:
        """
        With a key the packet carries a MAC that is checked.
        """
        packet = packPacket([encodeMessage(EXAMPLES[0])], key=b"k" * 32)
        self.assertEqual(unpackPacket(packet, key=b"k" * 32), [EXAMPLES[0]])
        self.assertRaises(BadMAC, unpackPacket, packet, b"j" * 32)
        self.assertRaises(BadMAC, unpackPacket, packet, None)
        plain = packPacket([encodeMessage(EXAMPLES[0])])
        self.assertRaises(BadMAC, unpackPacket, plain, b"k" * 32)
        tampered = bytearray(packet)
        tampered[-1] ^= 1
        self.assertRaises(BadMAC, unpackPacket, bytes(tampered), b"k" * 32)

    def test_overheadBound(self) -> None:
        """
        L{PACKET_OVERHEAD} covers header, MAC and array header.
        """
        encoded = [encodeMessage(Ack(i, "x")) for i in range(100)]
        packet = packPacket(encoded, key=b"k" * 32)
        self.assertLessEqual(len(packet), sum(map(len, encoded)) + PACKET_OVERHEAD)

    def test_malformed(self) -> None:
        """
        Wrong magic, version, flags, body shapes, field types and oversize
        packets all raise L{MalformedPacket}.
        """
        good = packPacket([encodeMessage(EXAMPLES[0])])
        bad = [
            b"",
            b"x" + good[1:],
            good[:1] + b"\x02" + good[2:],
            good[:2] + b"\x80" + good[3:],
            good[:3] + msgpack.packb([]),
            good[:3] + msgpack.packb({"a": 1}),
            good[:3] + msgpack.packb([[99, 1]]),
            good[:3] + msgpack.packb([[1, "x", "b", "a", "h", 1]]),
            good[:3] + msgpack.packb([[1, 1, "b", "a", "h", 70000]]),
            good[:3] + msgpack.packb([[1, -1, "b", "a", "h", 1]]),
            good[:3] + msgpack.packb([[5, "", 1, "h", 1, {}]]),
            good[:3] + msgpack.packb([[5, "a", 1, "h", 1, []]]),
            good[:3] + msgpack.packb([[2, 1, "t", "h", 1, "s", "h", 1, 1]]),
            good[:3] + b"\xc1",
            good + b"\x00",
        ]
        for data in bad:
            self.assertRaises(MalformedPacket, unpackPacket, data)
        self.assertRaises(MalformedPacket, unpackPacket, good, None, len(good) - 1)

    def test_fuzz(self) -> None:
        """
        Random mutations of valid packets either decode or raise
        L{MalformedPacket}, never anything else.
        """
        rng = random.Random(7)
        base = packPacket([encodeMessage(m) for m in EXAMPLES])
        for _ in range(3000):
            data = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(3, len(data))] = rng.randrange(256)
            if rng.random() < 0.3:
                del data[rng.randrange(3, len(data)) :]
            try:
                unpackPacket(bytes(data))
            except MalformedPacket:
                pass


class PushPullTests(SynchronousTestCase):
    """
    Push-pull frames.
    """

    def test_roundTrip(self) -> None:
        """
        States survive encoding, with and without a key.
        """
        pp = PushPull(
            True,
            [
                MemberState("a", ("10.0.0.1", 7946), 3, "alive", {"x": 1}),
                MemberState("b", ("10.0.0.2", 7946), 0, "dead", {}),
            ],
            b"user state",
        )
        self.assertEqual(decodePushPull(encodePushPull(pp)), pp)
        sealed = encodePushPull(pp, b"s" * 16)
        self.assertEqual(decodePushPull(sealed, b"s" * 16), pp)
        self.assertRaises(BadMAC, decodePushPull, sealed, b"t" * 16)

    def test_malformed(self) -> None:
        """
        Unknown statuses and bad shapes are refused.
        """
        header = bytes([0x47, 1, 0])
        for body in (
            [True, [["a", "h", 1, 0, "zombie", {}]], b""],
            [1, [], b""],
            [True, {}, b""],
            [True],
            [True, []],
            [True, [], "text"],
        ):
            self.assertRaises(MalformedPacket, decodePushPull, header + msgpack.packb(body))
        self.assertRaises(MalformedPacket, decodePushPull, header + b"x" * 100, None, 50)


class MetaTests(SynchronousTestCase):
    """
    Metadata limits.
    """

    def test_limit(self) -> None:
        """
        Metadata must have string keys, be encodable, and fit the limit.
        """
        self.assertEqual(checkMeta({"services": ["a"]}, 64), {"services": ["a"]})
        self.assertRaises(ValueError, checkMeta, {"x": "y" * 100}, 64)
        self.assertRaises(ValueError, checkMeta, {1: "y"}, 64)
        self.assertRaises(ValueError, checkMeta, {"x": object()}, 64)
