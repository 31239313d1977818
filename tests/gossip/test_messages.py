"""
Tests for the memberlist wire format: golden bytes written out by hand
from the format (Go struct field names as msgpack map keys, msgpack's
original spec, raw IP bytes), LZW, the keyring, and strict decoding.
"""

from __future__ import annotations

import random
import struct
import zlib

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from twisted.trial.unittest import SynchronousTestCase

from suite.gossip.codec import Codec
from suite.gossip.fields import BadMAC, Incomplete, MalformedPacket, checkMeta, decodeMeta, encodeMeta
from suite.gossip.lzw import LZWError, compress, decompress
from suite.gossip.messages import (
    Ack,
    Alive,
    Dead,
    ErrorReply,
    IndirectPing,
    Left,
    MemberState,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    User,
    encodeMessage,
)
from suite.gossip.security import DecryptError, Keyring, parseKey

PING = (
    b"\x00"  # pingMsg
    b"\x85"  # a map of 5
    b"\xa5SeqNo\x07"
    b"\xa4Node\xa1b"
    b"\xaaSourceAddr\xa4\x7f\x00\x00\x01"  # raw IP bytes as a raw string
    b"\xaaSourcePort\xcd\x1f\x0a"  # 7946 as uint16
    b"\xaaSourceNode\xa1a"
)
ALIVE = (
    b"\x04"  # aliveMsg
    b"\x86"
    b"\xabIncarnation\x01"
    b"\xa4Node\xa1a"
    b"\xa4Addr\xa4\x0a\x00\x00\x01"
    b"\xa4Port\xcd\x1f\x0a"
    b"\xa4Meta\xa2\xff\x80"  # Serf's tags: 255 and an empty msgpack map
    b"\xa3Vsn\xa6\x01\x05\x02\x02\x05\x04"  # pmin pmax pcur dmin dmax dcur
)
SERF_VSN = bytes([1, 5, 2, 2, 5, 4])


class GoldenTests(SynchronousTestCase):
    """
    Every message type against bytes derived from the format.
    """

    def test_ping(self) -> None:
        m = Ping(7, "b", "a", ("127.0.0.1", 7946))
        self.assertEqual(encodeMessage(m), PING)
        self.assertEqual(Codec().unpackPacket(PING), [m])

    def test_alive(self) -> None:
        m = Alive("a", 1, ("10.0.0.1", 7946), {}, SERF_VSN)
        self.assertEqual(encodeMessage(m), ALIVE)
        self.assertEqual(Codec().unpackPacket(ALIVE), [m])

    def test_others(self) -> None:
        cases: list[tuple[Message, bytes]] = [
            (
                IndirectPing(3, "c", ("10.0.0.3", 7946), "a", ("10.0.0.1", 7946), True),
                b"\x01\x88\xa5SeqNo\x03\xa6Target\xa4\x0a\x00\x00\x03\xa4Port\xcd\x1f\x0a\xa4Node\xa1c"
                b"\xa4Nack\xc3\xaaSourceAddr\xa4\x0a\x00\x00\x01\xaaSourcePort\xcd\x1f\x0a\xaaSourceNode\xa1a",
            ),
            (Ack(300), b"\x02\x82\xa5SeqNo\xcd\x01\x2c\xa7Payload\xa0"),
            (Nack(1), b"\x0b\x81\xa5SeqNo\x01"),
            (Suspect("b", 2, "a"), b"\x03\x83\xabIncarnation\x02\xa4Node\xa1b\xa4From\xa1a"),
            (Dead("b", 2, "a"), b"\x05\x83\xabIncarnation\x02\xa4Node\xa1b\xa4From\xa1a"),
            # A leave is a dead message from the member itself.
            (Left("b", 2), b"\x05\x83\xabIncarnation\x02\xa4Node\xa1b\xa4From\xa1b"),
            (User(b"\x00raw"), b"\x08\x00raw"),
        ]
        for message, expected in cases:
            self.assertEqual(encodeMessage(message), expected, message)
            self.assertEqual(Codec().unpackPacket(expected), [message], message)

    def test_memberlistVariants(self) -> None:
        """
        What memberlist may send and we do not: fields in another order,
        unknown fields, IPv4 as 16 bytes, bin types, a ping without a source
        (answered to the packet's source), an ack with a payload.
        """
        body = msgpack.packb(
            {
                "Vsn": SERF_VSN,
                "Node": b"x",
                "Extra": [1, 2],
                "Port": 7000,
                "Addr": bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7]),
                "Incarnation": 9,
                "Meta": b"\xff" + msgpack.packb({"role": "db"}),
            },
            use_bin_type=True,
        )
        self.assertEqual(
            Codec().unpackPacket(b"\x04" + body),
            [Alive("x", 9, ("192.0.2.7", 7000), {"role": "db"}, SERF_VSN)],
        )
        ping = b"\x00" + msgpack.packb({"SeqNo": 5, "Node": "me"})
        self.assertEqual(Codec().unpackPacket(ping, ("10.1.1.1", 99)), [Ping(5, "me", "", ("10.1.1.1", 99))])
        ack = b"\x02" + msgpack.packb({"SeqNo": 5, "Payload": b"\x01coords"}, use_bin_type=True)
        self.assertEqual(Codec().unpackPacket(ack), [Ack(5, b"\x01coords")])

    def test_meta(self) -> None:
        """
        Metadata travels as Serf's tags (255 and a msgpack map); a bare role
        string is read as Serf's role tag; the limit is memberlist's 512.
        """
        self.assertEqual(encodeMeta({}), b"\xff\x80")
        self.assertEqual(decodeMeta(b""), {})
        self.assertEqual(encodeMeta({"role": "web"}), b"\xff\x81\xa4role\xa3web")
        self.assertEqual(decodeMeta(b"\xff\x81\xa4role\xa3web"), {"role": "web"})
        self.assertEqual(decodeMeta(b"web"), {"role": "web"})
        self.assertEqual(decodeMeta(b"\xfe\xff"), {"raw": b"\xfe\xff"})
        self.assertEqual(checkMeta({"services": ["a"]}, 64), {"services": ["a"]})
        self.assertRaises(ValueError, checkMeta, {"x": "y" * 100}, 64)
        self.assertRaises(ValueError, checkMeta, {"x": "y" * 600}, 4096)
        self.assertRaises(ValueError, checkMeta, {1: "y"}, 64)
        self.assertRaises(ValueError, checkMeta, {"x": object()}, 64)


class PacketTests(SynchronousTestCase):
    """
    Compound, compress, CRC, label and encryption layers.
    """

    def test_compound(self) -> None:
        packet = Codec().packPacket([PING, ALIVE], crc=False)
        self.assertEqual(packet, b"\x07\x02" + struct.pack(">HH", len(PING), len(ALIVE)) + PING + ALIVE)
        self.assertEqual(len(Codec().unpackPacket(packet)), 2)
        self.assertRaises(MalformedPacket, Codec().unpackPacket, packet[:-1])

    def test_crc(self) -> None:
        packet = Codec().packPacket([PING])
        self.assertEqual(packet, b"\x0c" + struct.pack(">I", zlib.crc32(PING)) + PING)
        self.assertEqual(Codec().unpackPacket(packet), Codec().unpackPacket(PING))
        broken = packet[:-1] + b"b"
        self.assertRaises(MalformedPacket, Codec().unpackPacket, broken)

    def test_compress(self) -> None:
        alives = [encodeMessage(Alive(f"node-{i}", 1, ("10.0.0.1", 7946), {}, SERF_VSN)) for i in range(5)]
        packet = Codec().packPacket(alives, crc=False, compressed=True)
        self.assertEqual(packet[0], 9)
        self.assertEqual(msgpack.unpackb(packet[1:], raw=True)[b"Algo"], 0)
        self.assertLess(len(packet), sum(map(len, alives)))
        self.assertEqual(len(Codec().unpackPacket(packet)), 5)
        # Not smaller: sent as it is.
        self.assertEqual(Codec().packPacket([PING], crc=False, compressed=True), PING)

    def test_label(self) -> None:
        labelled = Codec(label="abc")
        packet = labelled.packPacket([PING], crc=False)
        self.assertEqual(packet, b"\xf4\x03abc" + PING)
        self.assertEqual(len(labelled.unpackPacket(packet)), 1)
        self.assertRaises(MalformedPacket, Codec().unpackPacket, packet)
        self.assertRaises(MalformedPacket, labelled.unpackPacket, PING)
        self.assertRaises(MalformedPacket, Codec(label="abd").unpackPacket, packet)

    def test_encrypt(self) -> None:
        """
        Version 1: version byte, nonce, AES-GCM with the label as AAD; every
        key of the ring decrypts, the primary encrypts; version 0 (padded)
        is read too.
        """
        old, new = b"o" * 16, b"n" * 32
        ring = Keyring([new, old])
        nonce = bytes(range(12))
        sealed = ring.encrypt(b"payload", b"lbl", nonce=nonce)
        self.assertEqual(sealed, b"\x01" + nonce + AESGCM(new).encrypt(nonce, b"payload", b"lbl"))
        self.assertEqual(Keyring([old, new]).decrypt(sealed, b"lbl"), b"payload")
        self.assertRaises(DecryptError, Keyring([old]).decrypt, sealed, b"lbl")
        self.assertRaises(DecryptError, ring.decrypt, sealed, b"other")
        padded = b"payload" + b"\x09" * 9
        v0 = b"\x00" + nonce + AESGCM(old).encrypt(nonce, padded, None)
        self.assertEqual(ring.decrypt(v0), b"payload")
        self.assertRaises(DecryptError, ring.decrypt, b"\x02" + bytes(40))
        self.assertRaises(DecryptError, ring.decrypt, b"\x01" + bytes(10))

        codec = Codec(Keyring([new]), label="lbl")
        packet = codec.packPacket([PING], crc=False)
        self.assertEqual(packet[:6], b"\xf4\x03lbl\x01")
        self.assertEqual(Keyring([new]).decrypt(packet[5:], b"lbl"), PING)
        self.assertEqual(len(Codec(ring, label="lbl").unpackPacket(packet)), 1)
        self.assertRaises(BadMAC, Codec(Keyring([old]), label="lbl").unpackPacket, packet)
        self.assertRaises(BadMAC, Codec(Keyring([new])).unpackPacket, PING)

    def test_keys(self) -> None:
        """
        Keys are base64 of 16, 24 or 32 bytes, as `serf keygen` prints.
        """
        self.assertEqual(
            parseKey("cg8StVXbQJ0gPvMd9o7yrg=="), bytes.fromhex("720f12b555db409d203ef31df68ef2ae")
        )
        for bad in ("not base64!", "c2hvcnQ=", ""):
            self.assertRaises(ValueError, parseKey, bad)
        self.assertRaises(ValueError, Keyring, [])
        self.assertRaises(ValueError, Keyring, [b"x" * 20])
        ring = Keyring.fromBase64(["# primary", "cg8StVXbQJ0gPvMd9o7yrg==", ""])
        self.assertEqual(len(ring.keys), 1)

    def test_limits(self) -> None:
        self.assertRaises(MalformedPacket, Codec(maxPacketBytes=10).unpackPacket, ALIVE)
        self.assertRaises(MalformedPacket, Codec().unpackPacket, b"")
        self.assertRaises(MalformedPacket, Codec().unpackPacket, b"\x63\x80")
        # Compress nested past the depth limit.
        payload = PING
        for _ in range(6):
            payload = b"\x09" + msgpack.packb({"Algo": 0, "Buf": compress(payload)})
        self.assertRaises(MalformedPacket, Codec().unpackPacket, payload)
        # A compression bomb stops at the limit.
        bomb = b"\x09" + msgpack.packb({"Algo": 0, "Buf": compress(b"\x08" + b"a" * 1_000_000)})
        self.assertRaises(MalformedPacket, Codec(maxPacketBytes=65536).unpackPacket, bomb)

    def test_garbage(self) -> None:
        """
        Random bytes and random mutations of valid packets raise only
        MalformedPacket.
        """
        rng = random.Random(14)
        ring = Keyring([b"k" * 16])
        valid = [
            Codec().packPacket([PING, ALIVE]),
            Codec().packPacket([ALIVE] * 4, compressed=True),
            Codec(label="x").packPacket([PING]),
        ]
        for i in range(3000):
            if i % 3 == 0:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
            else:
                mutated = bytearray(rng.choice(valid))
                for _ in range(rng.randrange(1, 4)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                data = bytes(mutated)
            for codec in (Codec(), Codec(ring), Codec(label="x")):
                try:
                    codec.unpackPacket(data)
                except MalformedPacket:
                    pass
            for codec in (Codec(), Codec(ring)):
                try:
                    codec.decodeStream(data)
                except MalformedPacket:
                    pass


class StreamTests(SynchronousTestCase):
    """
    Push-pull and the other stream messages.
    """

    pp = PushPull(
        True,
        [
            MemberState("a", ("10.0.0.1", 7946), 3, "alive", {"x": 1}, SERF_VSN),
            MemberState("b", ("10.0.0.2", 7946), 0, "dead", {}, SERF_VSN),
            MemberState("c", ("10.0.0.3", 7946), 4, "left", {}, SERF_VSN),
        ],
        b"user state",
    )

    def test_golden(self) -> None:
        """
        The plain layout: type, header, node states, raw user state.
        """
        one = PushPull(False, [MemberState("a", ("10.0.0.1", 7946), 1, "suspect", {}, SERF_VSN)], b"us")
        expected = (
            b"\x06"
            b"\x83\xa5Nodes\x01\xacUserStateLen\x02\xa4Join\xc2"
            b"\x87\xa4Name\xa1a\xa4Addr\xa4\x0a\x00\x00\x01\xa4Port\xcd\x1f\x0a\xa4Meta\xa2\xff\x80"
            b"\xabIncarnation\x01\xa5State\x01\xa3Vsn\xa6\x01\x05\x02\x02\x05\x04"
            b"us"
        )
        plain = Codec(compressStreams=False)
        self.assertEqual(plain.encodeStream(one), expected)
        self.assertEqual(plain.decodeStream(expected), one)
        # Every proper prefix is incomplete; it never decodes early.
        for i in range(len(expected)):
            self.assertRaises(Incomplete, plain.decodeStream, expected[:i])

    def test_compressedAndEncrypted(self) -> None:
        """
        Compressed as memberlist sends by default; encrypted as
        C{10 | length | payload} with those five bytes and the label as AAD.
        """
        for codec in (Codec(), Codec(Keyring([b"k" * 32])), Codec(Keyring([b"k" * 32]), label="L")):
            data = codec.encodeStream(self.pp)
            self.assertEqual(codec.decodeStream(data), self.pp)
            for i in range(0, len(data) - 1, 7):
                self.assertRaises(Incomplete, codec.decodeStream, data[:i])
        data = Codec(Keyring([b"k" * 32])).encodeStream(self.pp)
        self.assertEqual(data[0], 10)
        (size,) = struct.unpack(">I", data[1:5])
        self.assertEqual(size, len(data) - 5)
        self.assertRaises(BadMAC, Codec().decodeStream, data)
        self.assertRaises(BadMAC, Codec(Keyring([b"j" * 32])).decodeStream, data)
        self.assertRaises(BadMAC, Codec(Keyring([b"k" * 32])).decodeStream, Codec().encodeStream(self.pp))
        self.assertEqual(Codec().encodeStream(self.pp)[0], 9)

    def test_otherMessages(self) -> None:
        plain = Codec(compressStreams=False)
        self.assertEqual(plain.encodeStream(User(b"hi")), b"\x08\x81\xaaUserMsgLen\x02hi")
        for message in (User(b"hi"), Ping(1, "b", "a", ("10.0.0.1", 1)), Ack(1), ErrorReply("nope")):
            self.assertEqual(Codec().decodeStream(Codec().encodeStream(message)), message)

    def test_malformed(self) -> None:
        """
        Bad states, counts and lengths are refused.
        """
        plain = Codec(compressStreams=False)

        def stream(header: object, *nodes: object, tail: bytes = b"") -> bytes:
            return b"\x06" + b"".join(msgpack.packb(x) for x in (header, *nodes)) + tail

        node = {"Name": "a", "Addr": b"\x0a\x00\x00\x01", "Port": 1, "State": 0}
        self.assertEqual(len(plain.decodeStream(stream({"Nodes": 1}, node)).states), 1)  # type: ignore[union-attr]
        for bad in (
            stream({"Nodes": 1}, {**node, "State": 7}),
            stream({"Nodes": 1}, {**node, "Port": 0}),
            stream({"Nodes": 1}, {**node, "Addr": b"\x01\x02"}),
            stream({"Nodes": 1}, {**node, "Vsn": b"\x00\x05\x02\x00\x00\x00"}),
            stream({"Nodes": -1}),
            stream({"Nodes": 1, "Join": 1}, node),
            stream({"Nodes": 0, "UserStateLen": 10**9}),
            stream([1, 2]),
            b"\x05" + msgpack.packb({}),
        ):
            self.assertRaises(MalformedPacket, plain.decodeStream, bad)
        self.assertRaises(MalformedPacket, Codec(maxStateBytes=100).decodeStream, b"\x06" + b"x" * 300)


class LZWTests(SynchronousTestCase):
    """
    LZW as Go's compress/lzw (LSB, 8-bit literals) writes it.
    """

    def test_golden(self) -> None:
        """
        Codes by hand: clear (256), literals, the code being defined (258 =
        "aa", the KwKwK case), end (257); 9 bits each, packed LSB first.
        """

        def pack(*codes: int) -> bytes:
            bits = sum(c << (9 * i) for i, c in enumerate(codes))
            return bits.to_bytes((9 * len(codes) + 7) // 8, "little")

        self.assertEqual(compress(b""), pack(256, 257))
        self.assertEqual(compress(b"a"), pack(256, 97, 257))
        self.assertEqual(compress(b"aaa"), pack(256, 97, 258, 257))
        self.assertEqual(compress(b"abab"), pack(256, 97, 98, 258, 257))
        self.assertEqual(decompress(pack(256, 97, 258, 257), 100), b"aaa")
        # A clear code anywhere restarts the table; no initial clear is fine.
        self.assertEqual(decompress(pack(97, 98, 256, 99, 257), 100), b"abc")

    def test_roundTrip(self) -> None:
        """
        Random, repetitive and long inputs (past the 12-bit table reset).
        """
        rng = random.Random(3)
        for n in (1, 2, 100, 5000, 70000):
            for data in (
                bytes(rng.randrange(256) for _ in range(n)),
                bytes(rng.choice(b"ab") for _ in range(n)),
                b"x" * n,
            ):
                self.assertEqual(decompress(compress(data), n), data)

    def test_invalid(self) -> None:
        self.assertRaises(LZWError, decompress, compress(b"abc")[:-2], 100)
        self.assertRaises(LZWError, decompress, compress(b"a" * 1000), 100)
        self.assertRaises(LZWError, decompress, (256 | 300 << 9 | 257 << 18).to_bytes(4, "little"), 100)
