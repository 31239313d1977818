"""
The fields of HashiCorp memberlist's wire format, shared by the message
bodies (L{suite.gossip.messages}) and the packet and stream layers
(L{suite.gossip.codec}).

A message is one type byte and a msgpack map whose keys are the field names
of memberlist's Go structs (msgpack's original spec: strings and byte
strings both travel as raw strings, no bin or str8 types).  Addresses are
raw IP bytes (4 or 16) and a port; metadata is raw bytes (see
L{encodeMeta}); C{Vsn} is six raw bytes: protocol min, max, current, then
the delegate's min, max, current.

Decoding is strict about what it uses (types, ranges, sizes) and ignores
map keys it does not know, as memberlist's decoder does; anything wrong
raises L{MalformedPacket}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import msgpack

__all__ = [
    "Address",
    "Meta",
    "MalformedPacket",
    "BadMAC",
    "Incomplete",
    "encodeMeta",
    "decodeMeta",
    "checkMeta",
    "pack",
    "packIP",
    "unpackIP",
    "text",
    "uint",
    "rawBytes",
    "versions",
    "unpackMap",
    "unpackOne",
    "DEFAULT_VSN",
    "PROTOCOL_MIN",
    "PROTOCOL_MAX",
    "PROTOCOL_CURRENT",
    "STATES",
    "MAX_NAME",
    "META_MAX",
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


def pack(obj: Any) -> bytes:
    """
    msgpack in its original spec (strings and bytes both raw), as memberlist writes.
    """
    return msgpack.packb(obj, use_bin_type=False)


def packIP(host: str) -> bytes:
    """
    The raw bytes (4 or 16) of an IP address.
    """
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        raise ValueError(f"gossip addresses must be IP addresses, not {host!r}") from None


def unpackIP(raw: Any) -> str:
    """
    An IP address from raw bytes (an IPv4-mapped IPv6 address as IPv4).
    """
    if not isinstance(raw, bytes) or len(raw) not in (4, 16):
        raise MalformedPacket("bad address")
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def text(v: Any, what: str = "name", empty: bool = False) -> str:
    """
    A UTF-8 string field of at most L{MAX_NAME} bytes (non-empty unless C{empty}).
    """
    if not isinstance(v, bytes) or len(v) > MAX_NAME or (not v and not empty):
        raise MalformedPacket(f"bad {what}")
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket(f"bad {what}") from None


def uint(v: Any, bits: int, what: str) -> int:
    """
    An unsigned integer field of C{bits} bits.
    """
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**bits:
        raise MalformedPacket(f"bad {what}")
    return v


def rawBytes(v: Any, what: str, limit: int) -> bytes:
    """
    A byte-string field of at most C{limit} bytes (absent: empty).
    """
    if v is None:
        return b""
    if not isinstance(v, bytes) or len(v) > limit:
        raise MalformedPacket(f"bad {what}")
    return v


def versions(v: Any) -> bytes:
    """
    A C{Vsn} field: six version bytes (absent: L{DEFAULT_VSN}).
    """
    raw = rawBytes(v, "versions", 64)
    if raw and len(raw) < 6:
        raise MalformedPacket("bad versions")
    if raw and (raw[0] == 0 or raw[1] == 0 or raw[0] > raw[1]):
        raise MalformedPacket(f"bad protocol versions {list(raw[:3])}")
    return raw[:6] if raw else DEFAULT_VSN


def unpackMap(body: bytes) -> dict[bytes, Any]:
    """
    A message body that must be one msgpack map.
    """
    obj = unpackOne(body)
    if not isinstance(obj, dict):
        raise MalformedPacket("message is not a map")
    return obj


def unpackOne(body: bytes) -> Any:
    """
    One msgpack object, with bounded string and binary lengths.
    """
    try:
        return msgpack.unpackb(body, raw=True, strict_map_key=False, max_bin_len=1 << 26, max_str_len=1 << 26)
    except Exception as e:  # untrusted input: any decoder error is malformed
        raise MalformedPacket(f"bad msgpack: {e.__class__.__name__}") from None


def encodeMeta(meta: Meta) -> bytes:
    """
    Metadata as memberlist carries it, in Serf's tag encoding (the byte
    255 and a msgpack map), which a Serf agent shows as tags.
    """
    return b"\xff" + pack(dict(meta))


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
        except Exception:  # not Serf tags: read as a role below
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
