"""
Packets and streams of HashiCorp memberlist's wire format: the layers
around the messages of L{suite.gossip.messages}.

A UDP packet is, from the outside in::

    [244 | label length | label]          label, when one is configured
    [encrypted: version | nonce | AES-GCM(...) ]  with a keyring (AAD: the label)
    [12 | CRC-32 (IEEE, big-endian) of the rest]  to members speaking protocol 5
    [9 | msgpack {Algo: 0, Buf: LZW(...)}]        compressed, when it is smaller
    [7 | count | count x uint16 length | messages] compound, or one message

A stream (TCP: push-pull, fallback ping, user message) is the label header,
then either C{10 | uint32 length | encrypted payload} (AAD: those five
bytes and the label) or the plain message, possibly compressed; a push-pull
message is C{6}, a msgpack header C{{Nodes, UserStateLen, Join}}, C{Nodes}
msgpack node states and C{UserStateLen} raw bytes of the delegate's state.

Decoding is strict about what it uses (types, ranges, sizes, nesting, the
label, the keys, the checksum); anything wrong raises L{MalformedPacket}.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import msgpack

from suite.gossip.fields import (
    ACK,
    COMPOUND,
    COMPRESS,
    ENCRYPT,
    ERR,
    HAS_CRC,
    HAS_LABEL,
    PING,
    PUSH_PULL,
    USER,
    Address,
    BadMAC,
    Incomplete,
    MalformedPacket,
    pack,
    text,
    unpackMap,
)
from suite.gossip.lzw import LZWError, compress, decompress
from suite.gossip.messages import (
    Ack,
    ErrorReply,
    Message,
    Ping,
    PushPull,
    User,
    decodeMemberState,
    decodeMessage,
    encodeMemberState,
    encodeMessage,
)
from suite.gossip.security import ENCRYPT_OVERHEAD, DecryptError, Keyring

__all__ = ["Codec", "COMPOUND_ITEM_OVERHEAD", "MAX_COMPOUND"]

#: Most messages in one compound (its count is one byte).
MAX_COMPOUND = 255
#: Deepest nesting of compound/compress/crc wrappers accepted.
MAX_DEPTH = 4
#: Bytes a compound adds per message (its uint16 length).
COMPOUND_ITEM_OVERHEAD = 2
COMPOUND_HEADER = 2
CRC_OVERHEAD = 5
#: Packets shorter than this are not worth trying to compress (LZW in
#: Python is the costliest step of sending; short packets rarely shrink).
COMPRESS_MIN = 256


def _labelHeader(label: str) -> bytes:
    if not label:
        return b""
    raw = label.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("a gossip label is at most 255 bytes")
    return bytes([HAS_LABEL, len(raw)]) + raw


def _removeLabel(data: bytes) -> tuple[bytes, str]:
    if not data or data[0] != HAS_LABEL:
        return data, ""
    if len(data) < 2:
        raise Incomplete("truncated label header")
    size = data[1]
    if size == 0:
        raise MalformedPacket("empty label")
    if len(data) < 2 + size:
        raise Incomplete("truncated label")
    try:
        return data[2 + size :], data[2 : 2 + size].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("bad label") from None


def _compressed(payload: bytes) -> bytes:
    return bytes([COMPRESS]) + pack({"Algo": 0, "Buf": compress(payload)})


def _decompressed(body: bytes, limit: int) -> bytes:
    d = unpackMap(body)
    if d.get(b"Algo", 0) != 0:
        raise MalformedPacket(f"unknown compression {d.get(b'Algo')!r}")
    buf = d.get(b"Buf")
    if not isinstance(buf, bytes):
        raise MalformedPacket("bad compressed buffer")
    try:
        out = decompress(buf, limit)
    except LZWError as e:
        raise MalformedPacket(str(e)) from None
    if not out:
        raise MalformedPacket("empty compressed payload")
    return out


class Codec:
    """
    Packets and streams for one node's configuration: its keyring (or none),
    its label, its limits.

    @ivar compressStreams: compress push-pull streams (memberlist does by
        default).
    """

    def __init__(
        self,
        keyring: Keyring | None = None,
        label: str = "",
        maxPacketBytes: int = 65536,
        maxStateBytes: int = 4 * 1024 * 1024,
        compressStreams: bool = True,
    ) -> None:
        self.keyring = keyring
        self.label = label
        self._labelHeader = _labelHeader(label)
        self.maxPacketBytes = maxPacketBytes
        self.maxStateBytes = maxStateBytes
        self.compressStreams = compressStreams

    def overhead(self) -> int:
        """
        Bytes a packet adds to its messages before their per-message
        compound overhead (label, encryption, checksum, compound header).
        """
        extra = len(self._labelHeader) + CRC_OVERHEAD + COMPOUND_HEADER
        if self.keyring is not None:
            extra += ENCRYPT_OVERHEAD
        return extra

    # -- packets

    def packPacket(self, encoded: Sequence[bytes], crc: bool = True, compressed: bool = False) -> bytes:
        """
        One packet of already encoded messages (L{encodeMessage}).
        """
        if not encoded:
            raise ValueError("a packet needs a message")
        if len(encoded) == 1:
            payload = encoded[0]
        else:
            if len(encoded) > MAX_COMPOUND:
                raise ValueError("too many messages for one packet")
            payload = (
                bytes([COMPOUND, len(encoded)])
                + b"".join(struct.pack(">H", len(e)) for e in encoded)
                + b"".join(encoded)
            )
        if compressed and len(payload) >= COMPRESS_MIN:
            smaller = _compressed(payload)
            if len(smaller) < len(payload):
                payload = smaller
        if crc:
            payload = bytes([HAS_CRC]) + struct.pack(">I", zlib.crc32(payload)) + payload
        if self.keyring is not None:
            payload = self.keyring.encrypt(payload, self.label.encode("utf-8"))
        return self._labelHeader + payload

    def unpackPacket(self, data: bytes, source: Address = ("0.0.0.0", 0)) -> list[Message]:
        """
        Check and decode one packet from C{source} (whose address fills in
        for a ping without one).

        @raise MalformedPacket: for anything but a well-formed packet
            (L{BadMAC} when decryption fails).
        """
        if len(data) > self.maxPacketBytes:
            raise MalformedPacket(f"packet of {len(data)} bytes exceeds {self.maxPacketBytes}")
        try:
            body, label = _removeLabel(data)
        except Incomplete as e:
            raise MalformedPacket(str(e)) from None
        if label != self.label:
            raise MalformedPacket(f"packet label {label!r} is not this cluster's")
        if self.keyring is not None:
            try:
                body = self.keyring.decrypt(body, label.encode("utf-8"))
            except DecryptError as e:
                raise BadMAC(f"decryption failed: {e}") from None
        out: list[Message] = []
        self._commands(body, source, out, 0)
        if not out:
            raise MalformedPacket("no messages")
        return out

    def _commands(self, body: bytes, source: Address, out: list[Message], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise MalformedPacket("messages nested too deeply")
        if not body:
            raise MalformedPacket("missing message type")
        kind = body[0]
        if kind == HAS_CRC:
            if len(body) < CRC_OVERHEAD:
                raise MalformedPacket("truncated checksum")
            (expected,) = struct.unpack_from(">I", body, 1)
            if zlib.crc32(body[5:]) != expected:
                raise MalformedPacket("checksum mismatch")
            self._commands(body[5:], source, out, depth + 1)
        elif kind == COMPOUND:
            if len(body) < 2:
                raise MalformedPacket("truncated compound")
            count = body[1]
            lengths = body[2 : 2 + 2 * count]
            if len(lengths) < 2 * count:
                raise MalformedPacket("truncated compound lengths")
            pos = 2 + 2 * count
            for (size,) in struct.iter_unpack(">H", lengths):
                if pos + size > len(body):
                    raise MalformedPacket("truncated compound part")
                self._commands(body[pos : pos + size], source, out, depth + 1)
                pos += size
        elif kind == COMPRESS:
            self._commands(_decompressed(body[1:], self.maxPacketBytes * 4), source, out, depth + 1)
        else:
            out.append(decodeMessage(kind, body[1:], source))

    # -- streams

    def encodeStream(self, message: PushPull | Ping | Ack | User | ErrorReply) -> bytes:
        """
        One stream message, compressed, encrypted and labelled as
        configured.
        """
        if isinstance(message, PushPull):
            parts = [
                bytes([PUSH_PULL]),
                pack(
                    {
                        "Nodes": len(message.states),
                        "UserStateLen": len(message.userState),
                        "Join": message.join,
                    }
                ),
            ]
            parts.extend(encodeMemberState(s) for s in message.states)
            parts.append(message.userState)
            plain = b"".join(parts)
        elif isinstance(message, User):
            plain = bytes([USER]) + pack({"UserMsgLen": len(message.data)}) + message.data
        elif isinstance(message, ErrorReply):
            plain = bytes([ERR]) + pack({"Error": message.error})
        else:
            plain = encodeMessage(message)
        if self.compressStreams:
            plain = _compressed(plain)
        if self.keyring is not None:
            size = len(plain) + ENCRYPT_OVERHEAD
            header = bytes([ENCRYPT]) + struct.pack(">I", size)
            plain = header + self.keyring.encrypt(plain, header + self.label.encode("utf-8"))
        return self._labelHeader + plain

    def decodeStream(
        self, data: bytes, source: Address = ("0.0.0.0", 0)
    ) -> PushPull | Ping | Ack | User | ErrorReply:
        """
        Decode one stream message from the bytes read so far.

        @raise Incomplete: if more bytes may complete it.
        @raise MalformedPacket: if no more bytes can.
        """
        if len(data) > self.maxStateBytes + 64 + len(self._labelHeader):
            raise MalformedPacket(f"stream of over {self.maxStateBytes} bytes")
        if not data:
            raise Incomplete("empty stream")
        body, label = _removeLabel(data)
        if label != self.label:
            raise MalformedPacket(f"stream label {label!r} is not this cluster's")
        if not body:
            raise Incomplete("empty stream")
        if body[0] == ENCRYPT:
            if self.keyring is None:
                raise BadMAC("the stream is encrypted and no key is configured")
            if len(body) < 5:
                raise Incomplete("truncated length")
            (size,) = struct.unpack_from(">I", body, 1)
            if size > self.maxStateBytes:
                raise MalformedPacket(f"encrypted stream of {size} bytes exceeds {self.maxStateBytes}")
            if len(body) < 5 + size:
                raise Incomplete("truncated encrypted stream")
            if len(body) > 5 + size:
                raise MalformedPacket("bytes after the encrypted stream")
            try:
                body = self.keyring.decrypt(body[5:], body[:5] + label.encode("utf-8"))
            except DecryptError as e:
                raise BadMAC(f"decryption failed: {e}") from None
            return self._plainStream(body, source, final=True)
        if self.keyring is not None:
            raise BadMAC("the stream is not encrypted")
        return self._plainStream(body, source, final=False)

    def _plainStream(
        self, body: bytes, source: Address, final: bool
    ) -> PushPull | Ping | Ack | User | ErrorReply:
        if not body:
            raise MalformedPacket("empty stream message")
        kind = body[0]
        if kind == COMPRESS:
            obj, end = self._objects(body, 1, 1, final)
            inner = _decompressed(pack(obj[0]), self.maxStateBytes)
            if inner[0] == COMPRESS:
                raise MalformedPacket("compressed twice")
            return self._plainStream(inner, source, final=True)
        if kind == PUSH_PULL:
            (header,), pos = self._objects(body, 1, 1, final)
            if not isinstance(header, dict):
                raise MalformedPacket("bad push-pull header")
            count = header.get(b"Nodes", 0)
            userLength = header.get(b"UserStateLen", 0)
            join = header.get(b"Join", False)
            if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1 << 20:
                raise MalformedPacket("bad node count")
            if not isinstance(userLength, int) or not 0 <= userLength <= self.maxStateBytes:
                raise MalformedPacket("bad user state length")
            if not isinstance(join, bool):
                raise MalformedPacket("bad join flag")
            nodes, pos = self._objects(body, pos, count, final)
            if len(body) < pos + userLength:
                if final:
                    raise MalformedPacket("truncated user state")
                raise Incomplete("user state")
            if final and len(body) > pos + userLength:
                raise MalformedPacket("bytes after the push-pull state")
            return PushPull(join, [decodeMemberState(n) for n in nodes], body[pos : pos + userLength])
        if kind == USER:
            (header,), pos = self._objects(body, 1, 1, final)
            length = header.get(b"UserMsgLen", 0) if isinstance(header, dict) else -1
            if not isinstance(length, int) or not 0 <= length <= self.maxStateBytes:
                raise MalformedPacket("bad user message length")
            if len(body) < pos + length:
                if final:
                    raise MalformedPacket("truncated user message")
                raise Incomplete("user message")
            return User(body[pos : pos + length])
        if kind == ERR:
            (obj,), _ = self._objects(body, 1, 1, final)
            error = obj.get(b"Error", b"") if isinstance(obj, dict) else b""
            return ErrorReply(text(error, "error", empty=True))
        if kind in (PING, ACK):
            (obj,), pos = self._objects(body, 1, 1, final)
            message = decodeMessage(kind, pack(obj), source)
            assert isinstance(message, Ping | Ack)
            return message
        raise MalformedPacket(f"unexpected stream message type {kind}")

    def _objects(self, body: bytes, start: int, count: int, final: bool) -> tuple[list[Any], int]:
        limit = self.maxStateBytes + 1024
        unpacker = msgpack.Unpacker(
            raw=True,
            strict_map_key=False,
            max_buffer_size=max(len(body), limit),
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=1 << 20,
            max_map_len=1 << 16,
        )
        unpacker.feed(body[start:])
        out = []
        try:
            for _ in range(count):
                out.append(unpacker.unpack())
        except msgpack.OutOfData:
            if final:
                raise MalformedPacket("truncated stream message") from None
            raise Incomplete("more msgpack") from None
        except Exception as e:  # untrusted input: any decoder error is malformed
            raise MalformedPacket(f"bad msgpack: {e.__class__.__name__}") from None
        return out, start + unpacker.tell()
