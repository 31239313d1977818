"""
The gossip wire format: HashiCorp memberlist's.

A message is one type byte and a msgpack map whose keys are the field names
of memberlist's Go structs (msgpack's original spec: strings and byte
strings both travel as raw strings, no bin or str8 types).  Addresses are
raw IP bytes (4 or 16) and a port; metadata is raw bytes (see
L{encodeMeta}); C{Vsn} is six raw bytes: protocol min, max, current, then
the delegate's min, max, current.

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
label, the keys, the checksum) and ignores map keys it does not know, as
memberlist's decoder does; anything wrong raises L{MalformedPacket}.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import msgpack

from suite.gossip.lzw import LZWError, compress, decompress
from suite.gossip.security import ENCRYPT_OVERHEAD, DecryptError, Keyring

__all__ = [
    "Address",
    "Ping",
    "IndirectPing",
    "Ack",
    "Nack",
    "Alive",
    "Suspect",
    "Dead",
    "Left",
    "User",
    "ErrorReply",
    "Message",
    "Update",
    "MemberState",
    "PushPull",
    "MalformedPacket",
    "BadMAC",
    "Incomplete",
    "Codec",
    "encodeMessage",
    "encodeMeta",
    "decodeMeta",
    "checkMeta",
    "DEFAULT_VSN",
    "PROTOCOL_MIN",
    "PROTOCOL_MAX",
    "PROTOCOL_CURRENT",
]

Address = tuple[str, int]
Meta = Mapping[str, Any]

PING, INDIRECT_PING, ACK, SUSPECT, ALIVE, DEAD, PUSH_PULL, COMPOUND = range(8)
USER, COMPRESS, ENCRYPT, NACK, HAS_CRC, ERR = range(8, 14)
HAS_LABEL = 244

#: The protocol versions this implementation understands and speaks.
PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_CURRENT = 1, 5, 2
#: What memberlist itself advertises with no delegate versions; a node
#: joining Serf agents advertises Serf's delegate range instead (see
#: L{suite.gossip.settings.GossipSettings.delegateVersions}).
DEFAULT_VSN = bytes([PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_CURRENT, 0, 0, 0])

STATES = ("alive", "suspect", "dead", "left")
#: Longest node name accepted (memberlist has no limit; DNS names fit).
MAX_NAME = 512
#: memberlist's metadata limit.
META_MAX = 512
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


class MalformedPacket(ValueError):
    """
    Bytes that are not a packet or stream of this protocol.
    """


class BadMAC(MalformedPacket):
    """
    A payload that is not encrypted when it must be, or that no key opens.
    (The name is the one earlier releases used for authentication
    failures.)
    """


class Incomplete(MalformedPacket):
    """
    A stream that may still become a message with more bytes.
    """


@dataclass(frozen=True)
class Ping:
    """
    A direct probe of C{target}; answer with an L{Ack} to C{address}.
    """

    seq: int
    target: str
    source: str
    address: Address


@dataclass(frozen=True)
class IndirectPing:
    """
    Ask the receiver to probe C{target} at C{targetAddress} on behalf of
    C{source} (at C{address}), forwarding the ack, or a L{Nack} if
    C{wantNack} and none comes.
    """

    seq: int
    target: str
    targetAddress: Address
    source: str
    address: Address
    wantNack: bool


@dataclass(frozen=True)
class Ack:
    """
    Answer to probe C{seq}; C{payload} is the ping delegate's (Serf sends
    network coordinates).
    """

    seq: int
    payload: bytes = b""


@dataclass(frozen=True)
class Nack:
    """
    An indirect prober is alive but had no answer from the target.
    """

    seq: int


@dataclass(frozen=True)
class Alive:
    """
    C{name} is alive at C{incarnation}, reachable at C{address}, speaking
    the versions in C{vsn}.
    """

    name: str
    incarnation: int
    address: Address
    meta: Meta = field(default_factory=dict)
    vsn: bytes = DEFAULT_VSN
    #: The metadata bytes as received, passed on unchanged (memberlist
    #: compares them: re-encoding a foreign member's tags would make it
    #: refute).
    rawMeta: bytes | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Suspect:
    """
    C{source} suspects C{name} at C{incarnation}.
    """

    name: str
    incarnation: int
    source: str


@dataclass(frozen=True)
class Dead:
    """
    C{source} declares C{name} dead at C{incarnation}.
    """

    name: str
    incarnation: int
    source: str


@dataclass(frozen=True)
class Left:
    """
    C{name} left the cluster gracefully at C{incarnation} (on the wire: a
    dead message from the member itself).
    """

    name: str
    incarnation: int


@dataclass(frozen=True)
class User:
    """
    A user message (a delegate's broadcast, opaque to the protocol).
    """

    data: bytes


@dataclass(frozen=True)
class ErrorReply:
    """
    A stream peer's error report.
    """

    error: str


Message = Union[Ping, IndirectPing, Ack, Nack, Alive, Suspect, Dead, Left, User]
#: The messages about a member's state, gossiped and queued per member.
Update = Union[Alive, Suspect, Dead, Left]


@dataclass(frozen=True)
class MemberState:
    """
    One member as carried by push-pull.
    """

    name: str
    address: Address
    incarnation: int
    status: str
    meta: Meta
    vsn: bytes = DEFAULT_VSN
    rawMeta: bytes | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PushPull:
    """
    A full-state exchange; C{join} marks the first one of a joining node;
    C{userState} is the delegate's.
    """

    join: bool
    states: Sequence[MemberState]
    userState: bytes = b""


# -- fields ------------------------------------------------------------------


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=False)  # type: ignore[no-any-return]


def _ip(host: str) -> bytes:
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        raise ValueError(f"gossip addresses must be IP addresses, not {host!r}") from None


def _host(raw: Any) -> str:
    if not isinstance(raw, bytes) or len(raw) not in (4, 16):
        raise MalformedPacket("bad address")
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _str(v: Any, what: str = "name", empty: bool = False) -> str:
    if not isinstance(v, bytes) or len(v) > MAX_NAME or (not v and not empty):
        raise MalformedPacket(f"bad {what}")
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket(f"bad {what}") from None


def _uint(v: Any, bits: int, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**bits:
        raise MalformedPacket(f"bad {what}")
    return v


def _bytes(v: Any, what: str, limit: int) -> bytes:
    if v is None:
        return b""
    if not isinstance(v, bytes) or len(v) > limit:
        raise MalformedPacket(f"bad {what}")
    return v


def _vsn(v: Any) -> bytes:
    raw = _bytes(v, "versions", 64)
    if raw and len(raw) < 6:
        raise MalformedPacket("bad versions")
    if raw and (raw[0] == 0 or raw[1] == 0 or raw[0] > raw[1]):
        raise MalformedPacket(f"bad protocol versions {list(raw[:3])}")
    return raw[:6] if raw else DEFAULT_VSN


def _map(body: bytes) -> dict[bytes, Any]:
    obj = _unpackOne(body)
    if not isinstance(obj, dict):
        raise MalformedPacket("message is not a map")
    return obj


def _unpackOne(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=True, strict_map_key=False, max_bin_len=1 << 26, max_str_len=1 << 26)
    except Exception as e:
        raise MalformedPacket(f"bad msgpack: {e.__class__.__name__}") from None


def encodeMeta(meta: Meta) -> bytes:
    """
    Metadata as memberlist carries it, in Serf's tag encoding (the byte
    255 and a msgpack map), which a Serf agent shows as tags.
    """
    return b"\xff" + _pack(dict(meta))


def decodeMeta(raw: bytes) -> dict[str, Any]:
    """
    Metadata from the wire: Serf's tag encoding, or (a Serf agent with only
    a role) the role as text; anything else is kept as C{{"raw": bytes}}.
    """
    if not raw:
        return {}
    if raw[0] == 0xFF:
        try:
            value = msgpack.unpackb(raw[1:], raw=False, strict_map_key=True)
        except Exception:
            value = None
        if isinstance(value, dict):
            return value
    try:
        return {"role": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw": raw}


def checkMeta(meta: Meta, maxBytes: int) -> dict[str, Any]:
    """
    A copy of C{meta} if it is a dict with string keys whose encoding fits
    in C{maxBytes} (and memberlist's 512).

    @raise ValueError: otherwise, saying why.
    """
    if not isinstance(meta, Mapping) or not all(isinstance(k, str) for k in meta):
        raise ValueError("metadata must be a mapping with string keys")
    copy = dict(meta)
    try:
        size = len(encodeMeta(copy))
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata is not encodable: {e}") from None
    limit = min(maxBytes, META_MAX)
    if size > limit:
        raise ValueError(f"metadata is {size} bytes encoded; the limit is {limit}")
    return copy


# -- messages ----------------------------------------------------------------


def encodeMessage(m: Message) -> bytes:
    """
    One message: its type byte and body.
    """
    if isinstance(m, Ping):
        return bytes([PING]) + _pack(
            {
                "SeqNo": m.seq,
                "Node": m.target,
                "SourceAddr": _ip(m.address[0]),
                "SourcePort": m.address[1],
                "SourceNode": m.source,
            }
        )
    if isinstance(m, IndirectPing):
        return bytes([INDIRECT_PING]) + _pack(
            {
                "SeqNo": m.seq,
                "Target": _ip(m.targetAddress[0]),
                "Port": m.targetAddress[1],
                "Node": m.target,
                "Nack": m.wantNack,
                "SourceAddr": _ip(m.address[0]),
                "SourcePort": m.address[1],
                "SourceNode": m.source,
            }
        )
    if isinstance(m, Ack):
        return bytes([ACK]) + _pack({"SeqNo": m.seq, "Payload": m.payload})
    if isinstance(m, Nack):
        return bytes([NACK]) + _pack({"SeqNo": m.seq})
    if isinstance(m, Alive):
        return bytes([ALIVE]) + _pack(
            {
                "Incarnation": m.incarnation,
                "Node": m.name,
                "Addr": _ip(m.address[0]),
                "Port": m.address[1],
                "Meta": encodeMeta(m.meta) if m.rawMeta is None else m.rawMeta,
                "Vsn": m.vsn,
            }
        )
    if isinstance(m, Suspect):
        return bytes([SUSPECT]) + _pack({"Incarnation": m.incarnation, "Node": m.name, "From": m.source})
    if isinstance(m, Dead):
        return bytes([DEAD]) + _pack({"Incarnation": m.incarnation, "Node": m.name, "From": m.source})
    if isinstance(m, Left):
        return bytes([DEAD]) + _pack({"Incarnation": m.incarnation, "Node": m.name, "From": m.name})
    return bytes([USER]) + m.data


def _sourceAddress(d: dict[bytes, Any], source: Address) -> Address:
    raw, port = d.get(b"SourceAddr"), d.get(b"SourcePort")
    if raw and port:
        return (_host(raw), _uint(port, 16, "port"))
    return source


def _decodeMessage(kind: int, body: bytes, source: Address) -> Message:
    if kind == USER:
        return User(body)
    d = _map(body)
    if kind == PING:
        return Ping(
            _uint(d.get(b"SeqNo", 0), 32, "sequence number"),
            _str(d.get(b"Node", b""), "target", empty=True),
            _str(d.get(b"SourceNode", b""), "source", empty=True),
            _sourceAddress(d, source),
        )
    if kind == INDIRECT_PING:
        port = _uint(d.get(b"Port", 0), 16, "port")
        if not port:
            raise MalformedPacket("indirect ping without a port")
        return IndirectPing(
            _uint(d.get(b"SeqNo", 0), 32, "sequence number"),
            _str(d.get(b"Node", b""), "target", empty=True),
            (_host(d.get(b"Target")), port),
            _str(d.get(b"SourceNode", b""), "source", empty=True),
            _sourceAddress(d, source),
            d.get(b"Nack", False) is True,
        )
    if kind == ACK:
        return Ack(
            _uint(d.get(b"SeqNo", 0), 32, "sequence number"), _bytes(d.get(b"Payload"), "payload", 4096)
        )
    if kind == NACK:
        return Nack(_uint(d.get(b"SeqNo", 0), 32, "sequence number"))
    if kind == ALIVE:
        port = _uint(d.get(b"Port", 0), 16, "port")
        if not port:
            raise MalformedPacket("alive without a port")
        raw = _bytes(d.get(b"Meta"), "metadata", META_MAX)
        return Alive(
            _str(d.get(b"Node")),
            _uint(d.get(b"Incarnation", 0), 32, "incarnation"),
            (_host(d.get(b"Addr")), port),
            decodeMeta(raw),
            _vsn(d.get(b"Vsn")),
            raw,
        )
    if kind in (SUSPECT, DEAD):
        name = _str(d.get(b"Node"))
        incarnation = _uint(d.get(b"Incarnation", 0), 32, "incarnation")
        source_ = _str(d.get(b"From", b""), "source", empty=True)
        if kind == SUSPECT:
            return Suspect(name, incarnation, source_)
        if source_ == name:
            return Left(name, incarnation)
        return Dead(name, incarnation, source_)
    raise MalformedPacket(f"unexpected message type {kind}")


# -- packets -----------------------------------------------------------------


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
    return bytes([COMPRESS]) + _pack({"Algo": 0, "Buf": compress(payload)})


def _decompressed(body: bytes, limit: int) -> bytes:
    d = _map(body)
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
            out.append(_decodeMessage(kind, body[1:], source))

    # -- streams

    def encodeStream(self, message: PushPull | Ping | Ack | User | ErrorReply) -> bytes:
        """
        One stream message, compressed, encrypted and labelled as
        configured.
        """
        if isinstance(message, PushPull):
            parts = [
                bytes([PUSH_PULL]),
                _pack(
                    {
                        "Nodes": len(message.states),
                        "UserStateLen": len(message.userState),
                        "Join": message.join,
                    }
                ),
            ]
            for s in message.states:
                parts.append(
                    _pack(
                        {
                            "Name": s.name,
                            "Addr": _ip(s.address[0]),
                            "Port": s.address[1],
                            "Meta": encodeMeta(s.meta) if s.rawMeta is None else s.rawMeta,
                            "Incarnation": s.incarnation,
                            "State": STATES.index(s.status),
                            "Vsn": s.vsn,
                        }
                    )
                )
            parts.append(message.userState)
            plain = b"".join(parts)
        elif isinstance(message, User):
            plain = bytes([USER]) + _pack({"UserMsgLen": len(message.data)}) + message.data
        elif isinstance(message, ErrorReply):
            plain = bytes([ERR]) + _pack({"Error": message.error})
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
            inner = _decompressed(_pack(obj[0]), self.maxStateBytes)
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
            return PushPull(join, [_nodeState(n) for n in nodes], body[pos : pos + userLength])
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
            return ErrorReply(_str(error, "error", empty=True))
        if kind in (PING, ACK):
            (obj,), pos = self._objects(body, 1, 1, final)
            message = _decodeMessage(kind, _pack(obj), source)
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
        except Exception as e:
            raise MalformedPacket(f"bad msgpack: {e.__class__.__name__}") from None
        return out, start + unpacker.tell()


def _nodeState(n: Any) -> MemberState:
    if not isinstance(n, dict):
        raise MalformedPacket("bad node state")
    state = n.get(b"State", 0)
    if not isinstance(state, int) or isinstance(state, bool) or not 0 <= state < len(STATES):
        raise MalformedPacket(f"bad node state {state!r}")
    port = _uint(n.get(b"Port", 0), 16, "port")
    if not port:
        raise MalformedPacket("node state without a port")
    raw = _bytes(n.get(b"Meta"), "metadata", META_MAX)
    return MemberState(
        _str(n.get(b"Name")),
        (_host(n.get(b"Addr")), port),
        _uint(n.get(b"Incarnation", 0), 32, "incarnation"),
        STATES[state],
        decodeMeta(raw),
        _vsn(n.get(b"Vsn")),
        raw,
    )
