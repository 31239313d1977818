"""
What the gateway's HTTP/2 front end relies on in C{h2} and C{hpack} beyond
their documented API, kept in this one module: HPACK codecs that remember
whole header blocks, and a one-call response sender.

HPACK encoding and decoding that remember whole header blocks.

An HTTP/2 client sends nearly the same request headers on every stream of
a connection, and once they are in the dynamic table the block it sends
is the same bytes each time; a tunnel target answers with nearly the same
response headers.  The pure-Python C{hpack} codec walks every field of
every block (about a third of the gateway's HTTP/2 CPU time before this
module).  Here a block is decoded (or a header list encoded) once per
state of the dynamic table: as long as the table is unchanged, the same
input gives the same output, so it is looked up instead.

  - L{CachingDecoder}: block bytes -> header list, valid while the
    decoder's dynamic table is unchanged; a block that changes the table
    (a literal with incremental indexing, a size update) is not cached, and
    any table change empties the cache.
  - L{CachingEncoder}: header list -> block bytes, likewise for the
    encoder's table: the first time a list is encoded its fields enter the
    table (the table changes, nothing is cached); the next time every
    field is indexed, the table does not change and the block is kept.

L{sendGoAway} queues a GOAWAY frame without moving C{h2}'s connection
state machine to CLOSED: C{close_connection} does, and C{h2} then refuses
to send (or receive) anything more on the streams in flight, which a
graceful shutdown lets finish (RFC 9113, section 6.8).  L{remoteOpen}
tells whether the visitor still sends on a stream (its state machine).

L{sendResponse} sends a short response's HEADERS and DATA frames in one
call, doing what C{H2Connection.send_headers} and C{send_data} do for a
server's response (the same state machine inputs, window accounting and
frames) without building frame objects, re-encoding the header names and
values or checking what the front end already guarantees (bytes, a
non-informational C{:status} first, a body within the windows and frame
size).

This relies on C{hpack}'s C{HeaderTable.add} and C{maxsize} being the only
ways its dynamic table changes, on C{h2.connection.H2Connection} calling
its C{encoder.encode} and C{decoder.decode}, and on the state machines,
windows and send buffer of C{h2}'s connection and streams as
L{sendResponse} uses them.  C{tests/specter/gateway/test_h2internals.py}
checks each (fingerprints of the C{h2} methods mirrored here, and that
both ways of sending give the same bytes and the same state), and setup.cfg
caps C{h2} and C{hpack} below their next major releases.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from h2.connection import ConnectionInputs, H2Connection
from h2.stream import StreamInputs, StreamState
from hpack import Decoder, Encoder
from hpack.table import HeaderTable

__all__ = [
    "CachingDecoder",
    "CachingEncoder",
    "installCachingCodecs",
    "sendResponse",
    "sendGoAway",
    "remoteOpen",
    "CACHE_ENTRIES",
    "CACHE_BLOCK_BYTES",
]

#: Blocks remembered per codec (per connection) for one table state.
CACHE_ENTRIES = 64
#: Longest header block remembered.
CACHE_BLOCK_BYTES = 2048


class _CountingTable(HeaderTable):
    """
    A header table counting its changes (C{generation}).
    """

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class CachingDecoder(Decoder):
    """
    An HPACK decoder answering repeated blocks from a cache.
    """

    def __init__(self, maxHeaderListSize: int) -> None:
        super().__init__(maxHeaderListSize)
        self.header_table = _CountingTable()
        self._cache: dict[bytes, Any] = {}
        self._state: tuple[int, int, int] = (-1, 0, 0)

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table: _CountingTable = self.header_table  # type: ignore[assignment]
        # what a block's meaning and acceptance depend on: the table and
        # the limits (both change only through settings)
        state = (table.generation, self.max_header_list_size, self.max_allowed_table_size)
        if state == self._state:
            found = self._cache.get(data)
            if found is not None and found[0] == raw:
                return found[1]
        headers = super().decode(data, raw)
        if table.generation == state[0] and len(data) <= CACHE_BLOCK_BYTES:
            cache = self._cache
            if self._state != state:
                cache.clear()
                self._state = state
            if len(cache) < CACHE_ENTRIES:
                cache[bytes(data)] = (raw, headers)
        return headers


class CachingEncoder(Encoder):
    """
    An HPACK encoder answering repeated header lists from a cache.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _CountingTable()
        self._cache: dict[tuple[Any, ...], bytes] = {}
        self._generation = 0

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        table: _CountingTable = self.header_table  # type: ignore[assignment]
        if isinstance(headers, dict) or not huffman:
            return super().encode(headers, huffman)
        key = tuple(headers)
        generation = table.generation
        if generation == self._generation and not table.resized:
            found = self._cache.get(key)
            if found is not None:
                return found
        block = super().encode(key, huffman)
        if table.generation == generation and len(block) <= CACHE_BLOCK_BYTES:
            cache = self._cache
            if self._generation != generation:
                cache.clear()
                self._generation = generation
            if len(cache) < CACHE_ENTRIES:
                cache[key] = block
        return block


def installCachingCodecs(connection: Any) -> None:
    """
    Give an C{h2} connection caching HPACK codecs; call before any frame
    is sent or received (the tables start empty).
    """
    connection.encoder = CachingEncoder()
    connection.decoder = CachingDecoder(connection.decoder.max_header_list_size)


_FRAME = struct.Struct("!HBBBL")  # 24-bit length as (high 16, low 8), type, flags, stream id
_HEADERS, _CONTINUATION, _DATA = 0x1, 0x9, 0x0
_END_STREAM, _END_HEADERS = 0x1, 0x4


def _frameHeader(kind: int, flags: int, sid: int, length: int) -> bytes:
    return _FRAME.pack(length >> 8, length & 0xFF, kind, flags, sid)


def sendResponse(
    connection: H2Connection, sid: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
) -> bool:
    """
    Queue a response on stream C{sid} of server C{connection}: HEADERS
    (C{headers}: bytes, C{:status} first and not 1xx), then C{body} as one
    DATA frame if not empty, the stream ended with the last frame if
    C{end}; as C{send_headers} and C{send_data} would.

    @return: False, having done nothing, when this path does not apply
        (the stream is unknown, or C{body} does not fit the windows or one
        frame): then use C{h2}'s own calls.
    """
    stream = connection.streams.get(sid)
    if stream is None:
        return False
    size = len(body)
    limit = connection.max_outbound_frame_size
    if size and (
        size > limit
        or size > stream.outbound_flow_control_window
        or size > connection.outbound_flow_control_window
    ):
        return False
    connection.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    machine = stream.state_machine
    machine.process_input(StreamInputs.SEND_HEADERS)
    block = connection.encoder.encode(headers)
    endOnHeaders = end and not size
    if endOnHeaders:
        machine.process_input(StreamInputs.SEND_END_STREAM)
    stream.request_method = None  # what send_headers records for a response head
    flags = _END_STREAM if endOnHeaders else 0
    if len(block) <= limit:
        out = [_frameHeader(_HEADERS, flags | _END_HEADERS, sid, len(block)), block]
    else:
        pieces = [block[i : i + limit] for i in range(0, len(block), limit)]
        out = [_frameHeader(_HEADERS, flags, sid, len(pieces[0])), pieces[0]]
        for i, piece in enumerate(pieces[1:], 2):
            last = _END_HEADERS if i == len(pieces) else 0
            out += [_frameHeader(_CONTINUATION, last, sid, len(piece)), piece]
    if size:
        connection.state_machine.process_input(ConnectionInputs.SEND_DATA)
        machine.process_input(StreamInputs.SEND_DATA)
        if end:
            machine.process_input(StreamInputs.SEND_END_STREAM)
        out += [_frameHeader(_DATA, _END_STREAM if end else 0, sid, size), body]
        stream.outbound_flow_control_window -= size
        connection.outbound_flow_control_window -= size
    connection._data_to_send += b"".join(out)
    return True


_GOAWAY = 0x7


def sendGoAway(connection: H2Connection, lastStreamId: int, code: int) -> None:
    """
    Queue GOAWAY (C{lastStreamId}, C{code}) on C{connection}, leaving its
    state machine open so the streams up to C{lastStreamId} can finish.
    """
    payload = struct.pack("!LL", lastStreamId & 0x7FFFFFFF, code)
    connection._data_to_send += _frameHeader(_GOAWAY, 0, 0, len(payload)) + payload


def remoteOpen(connection: H2Connection, sid: int) -> bool:
    """
    Whether the peer may still send on stream C{sid} (it has not ended or
    reset it).
    """
    stream = connection.streams.get(sid)
    return stream is not None and stream.state_machine.state in (
        StreamState.OPEN,
        StreamState.HALF_CLOSED_LOCAL,
    )
