"""
The gossip wire format.

A packet (one UDP datagram, or the body of one push-pull frame) is::

    magic 0x47 ('G') | version 0x01 | flags | [HMAC-SHA256, 32 bytes] | body

Flag bit 0 says a MAC is present; it covers every byte after it.  The body
of a UDP packet is a msgpack array of messages, each itself an array whose
first item is a small integer type code (L{Ping} is C{[1, seq, target,
source, host, port]}, ...).  The first message of a probe packet is the
probe; the rest are piggybacked updates.  The body of a push-pull frame is
C{[join, [state, ...]]} where a state is C{[name, host, port, incarnation,
status, meta]}.

Decoding is strict: wrong magic, version, MAC, types or trailing bytes
raise L{MalformedPacket}, which the node drops with a rate-limited log line.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import msgpack

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
    "Message",
    "Update",
    "MemberState",
    "PushPull",
    "MalformedPacket",
    "BadMAC",
    "encodeMessage",
    "packPacket",
    "unpackPacket",
    "encodePushPull",
    "decodePushPull",
    "checkMeta",
    "PACKET_OVERHEAD",
]

Address = tuple[str, int]
Meta = Mapping[str, Any]

MAGIC = 0x47
VERSION = 1
FLAG_MAC = 0x01
MAC_BYTES = 32
#: Header + MAC + the largest msgpack array header a packet uses.
PACKET_OVERHEAD = 3 + MAC_BYTES + 3

STATUSES = ("alive", "suspect", "dead", "left")


class MalformedPacket(ValueError):
    """
    Bytes that are not a packet of this protocol.
    """


class BadMAC(MalformedPacket):
    """
    A packet whose MAC is missing, unexpected or wrong.
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
    Answer to probe C{seq}.
    """

    seq: int
    source: str


@dataclass(frozen=True)
class Nack:
    """
    An indirect prober is alive but had no answer from the target.
    """

    seq: int
    source: str


@dataclass(frozen=True)
class Alive:
    """
    C{name} is alive at C{incarnation}, reachable at C{address}.
    """

    name: str
    incarnation: int
    address: Address
    meta: Meta = field(default_factory=dict)


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
    C{name} left the cluster gracefully at C{incarnation}.
    """

    name: str
    incarnation: int


@dataclass(frozen=True)
class User:
    """
    A user message (a daemon's broadcast, opaque to the protocol).
    """

    data: bytes


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


@dataclass(frozen=True)
class PushPull:
    """
    A full-state exchange; C{join} marks the first one of a joining node.
    """

    join: bool
    states: Sequence[MemberState]
    userState: bytes = b""


_CODES: dict[type, int] = {
    Ping: 1,
    IndirectPing: 2,
    Ack: 3,
    Nack: 4,
    Alive: 5,
    Suspect: 6,
    Dead: 7,
    Left: 8,
    User: 9,
}


def _fields(m: Message) -> list[Any]:
    if isinstance(m, Ping):
        return [m.seq, m.target, m.source, m.address[0], m.address[1]]
    if isinstance(m, IndirectPing):
        return [m.seq, m.target, *m.targetAddress, m.source, *m.address, m.wantNack]
    if isinstance(m, Ack | Nack):
        return [m.seq, m.source]
    if isinstance(m, Alive):
        return [m.name, m.incarnation, m.address[0], m.address[1], dict(m.meta)]
    if isinstance(m, Suspect | Dead):
        return [m.name, m.incarnation, m.source]
    if isinstance(m, User):
        return [m.data]
    return [m.name, m.incarnation]


def encodeMessage(m: Message) -> bytes:
    """
    One message as a msgpack array (an item of a packet body).
    """
    return msgpack.packb([_CODES[type(m)], *_fields(m)], use_bin_type=True)  # type: ignore[no-any-return]


def _arrayHeader(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return b"\xdc" + struct.pack(">H", n)
    raise ValueError("too many messages")


def _seal(body: bytes, key: bytes | None) -> bytes:
    if key is None:
        return bytes([MAGIC, VERSION, 0]) + body
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return bytes([MAGIC, VERSION, FLAG_MAC]) + mac + body


def _open(data: bytes, key: bytes | None) -> bytes:
    if len(data) < 4 or data[0] != MAGIC:
        raise MalformedPacket("not a gossip packet")
    if data[1] != VERSION:
        raise MalformedPacket(f"unsupported version {data[1]}")
    flags = data[2]
    if flags & ~FLAG_MAC:
        raise MalformedPacket(f"unknown flags {flags:#x}")
    if key is None:
        if flags & FLAG_MAC:
            raise BadMAC("authenticated packet but no key is configured")
        return data[3:]
    if not flags & FLAG_MAC:
        raise BadMAC("packet without a MAC")
    if len(data) < 3 + MAC_BYTES + 1:
        raise MalformedPacket("truncated")
    mac, body = data[3 : 3 + MAC_BYTES], data[3 + MAC_BYTES :]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise BadMAC("MAC mismatch")
    return body


def packPacket(encoded: Sequence[bytes], key: bytes | None = None) -> bytes:
    """
    A packet of already encoded messages (L{encodeMessage}), sealed with
    C{key} when given.
    """
    return _seal(_arrayHeader(len(encoded)) + b"".join(encoded), key)


def _unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as e:
        raise MalformedPacket(f"bad msgpack: {e.__class__.__name__}") from None


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > 255:
        raise MalformedPacket("bad name")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**63:
        raise MalformedPacket("bad integer")
    return v


def _addr(host: Any, port: Any) -> Address:
    if not isinstance(host, str) or not host or len(host) > 255:
        raise MalformedPacket("bad host")
    p = _int(port)
    if not 0 < p < 65536:
        raise MalformedPacket("bad port")
    return (host, p)


def _meta(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise MalformedPacket("bad metadata")
    return v


def _decodeOne(item: Any) -> Message:
    if not isinstance(item, list) or not item:
        raise MalformedPacket("message is not an array")
    code, args = item[0], item[1:]
    try:
        if code == 1 and len(args) == 5:
            return Ping(_int(args[0]), _str(args[1]), _str(args[2]), _addr(args[3], args[4]))
        if code == 2 and len(args) == 8:
            if not isinstance(args[7], bool):
                raise MalformedPacket("bad flag")
            return IndirectPing(
                _int(args[0]),
                _str(args[1]),
                _addr(args[2], args[3]),
                _str(args[4]),
                _addr(args[5], args[6]),
                args[7],
            )
        if code == 3 and len(args) == 2:
            return Ack(_int(args[0]), _str(args[1]))
        if code == 4 and len(args) == 2:
            return Nack(_int(args[0]), _str(args[1]))
        if code == 5 and len(args) == 5:
            return Alive(_str(args[0]), _int(args[1]), _addr(args[2], args[3]), _meta(args[4]))
        if code == 6 and len(args) == 3:
            return Suspect(_str(args[0]), _int(args[1]), _str(args[2]))
        if code == 7 and len(args) == 3:
            return Dead(_str(args[0]), _int(args[1]), _str(args[2]))
        if code == 8 and len(args) == 2:
            return Left(_str(args[0]), _int(args[1]))
        if code == 9 and len(args) == 1 and isinstance(args[0], bytes):
            return User(args[0])
    except TypeError:
        raise MalformedPacket("bad field") from None
    raise MalformedPacket(f"unknown message {code!r}/{len(args)}")


def unpackPacket(data: bytes, key: bytes | None = None, maxBytes: int = 65536) -> list[Message]:
    """
    Check and decode one packet.

    @raise MalformedPacket: for anything but a well-formed packet (L{BadMAC}
        for authentication failures).
    """
    if len(data) > maxBytes:
        raise MalformedPacket(f"packet of {len(data)} bytes exceeds {maxBytes}")
    items = _unpack(_open(data, key))
    if not isinstance(items, list) or not items:
        raise MalformedPacket("body is not a non-empty array")
    return [_decodeOne(i) for i in items]


def encodePushPull(pp: PushPull, key: bytes | None = None) -> bytes:
    """
    A sealed push-pull frame body.
    """
    states = [[s.name, s.address[0], s.address[1], s.incarnation, s.status, dict(s.meta)] for s in pp.states]
    return _seal(msgpack.packb([pp.join, states, pp.userState], use_bin_type=True), key)


def decodePushPull(data: bytes, key: bytes | None = None, maxBytes: int = 4 * 1024 * 1024) -> PushPull:
    """
    Check and decode a push-pull frame body.

    @raise MalformedPacket: as L{unpackPacket}.
    """
    if len(data) > maxBytes:
        raise MalformedPacket("state frame too large")
    body = _unpack(_open(data, key))
    if (
        not isinstance(body, list)
        or len(body) != 3
        or not isinstance(body[0], bool)
        or not isinstance(body[2], bytes)
    ):
        raise MalformedPacket("bad push-pull body")
    if not isinstance(body[1], list):
        raise MalformedPacket("bad state list")
    states = []
    for s in body[1]:
        if not isinstance(s, list) or len(s) != 6 or s[4] not in STATUSES:
            raise MalformedPacket("bad member state")
        states.append(MemberState(_str(s[0]), _addr(s[1], s[2]), _int(s[3]), s[4], _meta(s[5])))
    return PushPull(body[0], states, body[2])


def checkMeta(meta: Meta, maxBytes: int) -> dict[str, Any]:
    """
    A copy of C{meta} if it is a dict with string keys whose encoding fits
    in C{maxBytes}.

    @raise ValueError: otherwise, saying why.
    """
    if not isinstance(meta, Mapping) or not all(isinstance(k, str) for k in meta):
        raise ValueError("metadata must be a mapping with string keys")
    copy = dict(meta)
    try:
        size = len(msgpack.packb(copy, use_bin_type=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata is not encodable: {e}") from None
    if size > maxBytes:
        raise ValueError(f"metadata is {size} bytes encoded; the limit is {maxBytes}")
    return copy


def messagesSize(encoded: Iterable[bytes]) -> int:
    """
    Bytes used by these encoded messages inside a packet.
    """
    return sum(len(e) for e in encoded)
