"""
The messages of HashiCorp memberlist's protocol, as values, and their
bodies on the wire: one type byte and a msgpack map keyed by the field
names of memberlist's Go structs (see L{suite.gossip.fields}).  How
messages travel in packets and streams is L{suite.gossip.codec}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from suite.gossip.fields import (
    ACK,
    ALIVE,
    DEAD,
    DEFAULT_VSN,
    INDIRECT_PING,
    META_MAX,
    NACK,
    PING,
    STATES,
    SUSPECT,
    USER,
    Address,
    MalformedPacket,
    Meta,
    decodeMeta,
    encodeMeta,
    pack,
    packIP,
    rawBytes,
    text,
    uint,
    unpackIP,
    unpackMap,
    versions,
)

__all__ = [
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
    "encodeMessage",
    "decodeMessage",
    "encodeMemberState",
    "decodeMemberState",
]


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


def encodeMessage(m: Message) -> bytes:
    """
    One message: its type byte and body.
    """
    if isinstance(m, Ping):
        return bytes([PING]) + pack(
            {
                "SeqNo": m.seq,
                "Node": m.target,
                "SourceAddr": packIP(m.address[0]),
                "SourcePort": m.address[1],
                "SourceNode": m.source,
            }
        )
    if isinstance(m, IndirectPing):
        return bytes([INDIRECT_PING]) + pack(
            {
                "SeqNo": m.seq,
                "Target": packIP(m.targetAddress[0]),
                "Port": m.targetAddress[1],
                "Node": m.target,
                "Nack": m.wantNack,
                "SourceAddr": packIP(m.address[0]),
                "SourcePort": m.address[1],
                "SourceNode": m.source,
            }
        )
    if isinstance(m, Ack):
        return bytes([ACK]) + pack({"SeqNo": m.seq, "Payload": m.payload})
    if isinstance(m, Nack):
        return bytes([NACK]) + pack({"SeqNo": m.seq})
    if isinstance(m, Alive):
        return bytes([ALIVE]) + pack(
            {
                "Incarnation": m.incarnation,
                "Node": m.name,
                "Addr": packIP(m.address[0]),
                "Port": m.address[1],
                "Meta": encodeMeta(m.meta) if m.rawMeta is None else m.rawMeta,
                "Vsn": m.vsn,
            }
        )
    if isinstance(m, Suspect):
        return bytes([SUSPECT]) + pack({"Incarnation": m.incarnation, "Node": m.name, "From": m.source})
    if isinstance(m, Dead):
        return bytes([DEAD]) + pack({"Incarnation": m.incarnation, "Node": m.name, "From": m.source})
    if isinstance(m, Left):
        return bytes([DEAD]) + pack({"Incarnation": m.incarnation, "Node": m.name, "From": m.name})
    return bytes([USER]) + m.data


def _sourceAddress(d: dict[bytes, Any], source: Address) -> Address:
    raw, port = d.get(b"SourceAddr"), d.get(b"SourcePort")
    if raw and port:
        return (unpackIP(raw), uint(port, 16, "port"))
    return source


def decodeMessage(kind: int, body: bytes, source: Address) -> Message:
    """
    The message of type C{kind} whose body is C{body}, received from
    C{source} (whose address fills in for a ping without one).
    """
    if kind == USER:
        return User(body)
    d = unpackMap(body)
    if kind == PING:
        return Ping(
            uint(d.get(b"SeqNo", 0), 32, "sequence number"),
            text(d.get(b"Node", b""), "target", empty=True),
            text(d.get(b"SourceNode", b""), "source", empty=True),
            _sourceAddress(d, source),
        )
    if kind == INDIRECT_PING:
        port = uint(d.get(b"Port", 0), 16, "port")
        if not port:
            raise MalformedPacket("indirect ping without a port")
        return IndirectPing(
            uint(d.get(b"SeqNo", 0), 32, "sequence number"),
            text(d.get(b"Node", b""), "target", empty=True),
            (unpackIP(d.get(b"Target")), port),
            text(d.get(b"SourceNode", b""), "source", empty=True),
            _sourceAddress(d, source),
            d.get(b"Nack", False) is True,
        )
    if kind == ACK:
        return Ack(
            uint(d.get(b"SeqNo", 0), 32, "sequence number"), rawBytes(d.get(b"Payload"), "payload", 4096)
        )
    if kind == NACK:
        return Nack(uint(d.get(b"SeqNo", 0), 32, "sequence number"))
    if kind == ALIVE:
        port = uint(d.get(b"Port", 0), 16, "port")
        if not port:
            raise MalformedPacket("alive without a port")
        raw = rawBytes(d.get(b"Meta"), "metadata", META_MAX)
        return Alive(
            text(d.get(b"Node")),
            uint(d.get(b"Incarnation", 0), 32, "incarnation"),
            (unpackIP(d.get(b"Addr")), port),
            decodeMeta(raw),
            versions(d.get(b"Vsn")),
            raw,
        )
    if kind in (SUSPECT, DEAD):
        name = text(d.get(b"Node"))
        incarnation = uint(d.get(b"Incarnation", 0), 32, "incarnation")
        source_ = text(d.get(b"From", b""), "source", empty=True)
        if kind == SUSPECT:
            return Suspect(name, incarnation, source_)
        if source_ == name:
            return Left(name, incarnation)
        return Dead(name, incarnation, source_)
    raise MalformedPacket(f"unexpected message type {kind}")


def encodeMemberState(s: MemberState) -> bytes:
    """
    One member's state as a push-pull stream carries it.
    """
    return pack(
        {
            "Name": s.name,
            "Addr": packIP(s.address[0]),
            "Port": s.address[1],
            "Meta": encodeMeta(s.meta) if s.rawMeta is None else s.rawMeta,
            "Incarnation": s.incarnation,
            "State": STATES.index(s.status),
            "Vsn": s.vsn,
        }
    )


def decodeMemberState(n: Any) -> MemberState:
    """
    One member's state from a push-pull stream (an unpacked msgpack map).
    """
    if not isinstance(n, dict):
        raise MalformedPacket("bad node state")
    state = n.get(b"State", 0)
    if not isinstance(state, int) or isinstance(state, bool) or not 0 <= state < len(STATES):
        raise MalformedPacket(f"bad node state {state!r}")
    port = uint(n.get(b"Port", 0), 16, "port")
    if not port:
        raise MalformedPacket("node state without a port")
    raw = rawBytes(n.get(b"Meta"), "metadata", META_MAX)
    return MemberState(
        text(n.get(b"Name")),
        (unpackIP(n.get(b"Addr")), port),
        uint(n.get(b"Incarnation", 0), 32, "incarnation"),
        STATES[state],
        decodeMeta(raw),
        versions(n.get(b"Vsn")),
        raw,
    )
