"""
The tunnel link frame format.

Every frame is a 9-byte header followed by its payload::

    type (1 byte) | stream id (4 bytes, big endian) | length (4 bytes, big endian) | payload

Stream 0 carries C{CONTROL} frames (a msgpack map each); streams opened by
the gateway have odd ids, streams opened by the client even ids.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack

__all__ = [
    "HEADER",
    "OPEN",
    "DATA",
    "WINDOW",
    "CLOSE",
    "RESET",
    "CONTROL",
    "FRAME_NAMES",
    "MAX_PAYLOAD",
    "FrameError",
    "FrameDecoder",
    "encodeFrame",
    "encodeControl",
    "decodeControl",
]

HEADER = struct.Struct("!BII")
OPEN, DATA, WINDOW, CLOSE, RESET, CONTROL = range(6)
FRAME_NAMES = {
    OPEN: "OPEN",
    DATA: "DATA",
    WINDOW: "WINDOW",
    CLOSE: "CLOSE",
    RESET: "RESET",
    CONTROL: "CONTROL",
}
#: The largest payload a peer may send in one frame.
MAX_PAYLOAD = 1024 * 1024
_WINDOW = struct.Struct("!I")


class FrameError(Exception):
    """
    The peer broke the frame format; the link is closed.
    """


def encodeFrame(kind: int, stream: int, payload: bytes = b"") -> bytes:
    """
    One frame as bytes.
    """
    return HEADER.pack(kind, stream, len(payload)) + payload


def encodeControl(message: dict[str, Any]) -> bytes:
    """
    A C{CONTROL} frame carrying C{message}.
    """
    return encodeFrame(CONTROL, 0, msgpack.packb(message, use_bin_type=True))


def decodeControl(payload: bytes) -> dict[str, Any]:
    """
    Decode a C{CONTROL} or C{OPEN} payload; a malformed one is a L{FrameError}.
    """
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as e:  # untrusted input: any decoder error is malformed
        raise FrameError(f"malformed control payload: {e}") from None
    if not isinstance(message, dict):
        raise FrameError("control payload is not a map")
    return message


def encodeWindow(increment: int) -> bytes:
    """
    The payload of a C{WINDOW} frame.
    """
    return _WINDOW.pack(increment)


def decodeWindow(payload: bytes) -> int:
    """
    The increment a C{WINDOW} payload grants.
    """
    if len(payload) != 4:
        raise FrameError("WINDOW payload must be 4 bytes")
    return int(_WINDOW.unpack(payload)[0])


class FrameDecoder:
    """
    Cut a byte stream into frames and hand each to C{deliver(kind, stream,
    payload)}.  A frame longer than C{maxPayload} is a L{FrameError}.
    """

    def __init__(self, deliver: Callable[[int, int, bytes], None], maxPayload: int = MAX_PAYLOAD) -> None:
        self._deliver = deliver
        self._buffer = b""
        self._max = maxPayload

    def feed(self, data: bytes) -> None:
        """
        Add received bytes; deliver every complete frame.
        """
        buf = self._buffer + data if self._buffer else data
        size = len(buf)
        offset = 0
        unpack = HEADER.unpack_from
        deliver = self._deliver
        limit = self._max
        while size - offset >= 9:
            kind, stream, length = unpack(buf, offset)
            if length > limit:
                raise FrameError(f"frame of {length} bytes exceeds the {limit}-byte limit")
            end = offset + 9 + length
            if end > size:
                break
            deliver(kind, stream, buf[offset + 9 : end])
            offset = end
        self._buffer = buf[offset:] if offset < size else b""
