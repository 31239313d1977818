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

A block the decoder gives up on (malformed, or decoding past the
decoder's C{max_header_list_size}: C{hpack} stops part way, its dynamic
table possibly out of step with the peer's encoder) raises
L{UndecodedHeaderBlock}, which ends the connection with GOAWAY
C{COMPRESSION_ERROR}: RFC 9113 section 4.3 requires it of a receiver that
does not decompress a field block (C{h2} itself would answer
C{ENHANCE_YOUR_CALM} or C{PROTOCOL_ERROR}).

L{sendGoAway} queues a GOAWAY frame without moving C{h2}'s connection
state machine to CLOSED: C{close_connection} does, and C{h2} then refuses
to send (or receive) anything more on the streams in flight, which a
graceful shutdown lets finish (RFC 9113, section 6.8).  L{remoteOpen}
tells whether the visitor still sends on a stream (its state machine).

L{receive} reads what a visitor sent: a HEADERS frame that opens a request
whole (END_HEADERS, no padding) is taken here, doing what
C{H2Connection._receive_headers_frame} and C{H2Stream.receive_headers} do
for it (the same state machine inputs, stream creation, concurrency limit
and content-length bookkeeping) without building frame and event objects;
every other frame, and any frame while C{h2} holds part of one, goes to
C{receive_data} in order.

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
from collections.abc import Iterable, Iterator
from typing import Any

from h2.connection import ConnectionInputs, ConnectionState, H2Connection, _decode_headers
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, TooManyStreamsError
from h2.stream import H2Stream, StreamInputs, StreamState
from hpack import Decoder, Encoder, HPACKError
from hpack.table import HeaderTable

__all__ = [
    "CachingDecoder",
    "CachingEncoder",
    "UndecodedHeaderBlock",
    "installCachingCodecs",
    "sendResponse",
    "sendGoAway",
    "remoteOpen",
    "receive",
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


class UndecodedHeaderBlock(ProtocolError):
    """
    A header block was not decoded whole: the connection's HPACK state is
    lost, the connection ends with C{COMPRESSION_ERROR}.
    """

    error_code = ErrorCodes.COMPRESSION_ERROR


class CachingDecoder(Decoder):
    """
    An HPACK decoder answering repeated blocks from a cache; a block it
    cannot decode whole raises L{UndecodedHeaderBlock}.
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
        try:
            headers = super().decode(data, raw)
        except HPACKError as e:
            # (h2's own handler of hpack's errors is bypassed: a
            # ProtocolError goes through it as it is)
            raise UndecodedHeaderBlock(f"header block not decoded: {e}") from e
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


_SERVER_OPEN = ConnectionState.SERVER_OPEN
#: Inputs that leave a server connection's state machine in SERVER_OPEN,
#: doing nothing else: skipped there (the rest of its states go to h2).
QUIET_INPUTS = (
    ConnectionInputs.RECV_HEADERS,
    ConnectionInputs.RECV_PRIORITY,
    ConnectionInputs.SEND_HEADERS,
    ConnectionInputs.SEND_DATA,
)


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
    connectionMachine = connection.state_machine
    if connectionMachine.state is not _SERVER_OPEN:
        connectionMachine.process_input(ConnectionInputs.SEND_HEADERS)
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
        if connectionMachine.state is not _SERVER_OPEN:
            connectionMachine.process_input(ConnectionInputs.SEND_DATA)
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


_PRIORITY, _PADDED = 0x20, 0x8
_FAST_FLAGS = _END_STREAM | _END_HEADERS | _PRIORITY
_PRIORITY_FIELDS = struct.Struct("!LB")


def receive(connection: H2Connection, data: bytes) -> Iterator[Any]:
    """
    Read C{data} from the peer of server C{connection}, in order: yields
    C{(stream id, headers, ended)} for each request opened by a whole
    HEADERS frame (as C{RequestReceived} would carry them), and the list of
    C{h2}'s events for the other frames.  The consumer handles each item
    before the next frame is read (and may stop reading).  Requests are
    read here only on a connection configured, as the gateway's, neither
    to validate nor to normalise nor to decode received headers (the
    front end checks them as it builds the HTTP/1.1 head); any other
    connection reads through C{receive_data} alone.

    @raise ProtocolError: as C{receive_data} would (the connection is then
        terminated).
    """
    buffer: Any = connection.incoming_buffer
    end = len(data)
    pos = 0
    config = connection.config
    if (
        buffer._preamble_len
        or buffer._headers_buffer
        or config.client_side
        or config.validate_inbound_headers
        or config.normalize_inbound_headers
        or config.header_encoding
    ):
        # h2's own reading (this path neither validates nor decodes headers)
        yield connection.receive_data(data)
        return
    held = buffer._data
    while held and pos < end:
        # complete the frame h2 holds the start of, through h2
        if len(held) < 9:
            need = 9 - len(held)
        else:
            need = 9 + ((held[0] << 16) | (held[1] << 8) | held[2]) - len(held)
        yield connection.receive_data(data[pos : pos + need])
        pos += need
        held = buffer._data
    slow = pos
    unpack = _FRAME.unpack_from
    while pos + 9 <= end:
        high, low, kind, flags, sid = unpack(data, pos)
        stop = pos + 9 + ((high << 8) | low)
        if stop > end:
            break
        if kind == _HEADERS and flags & _END_HEADERS and not flags & ~_FAST_FLAGS:
            if slow < pos:
                yield connection.receive_data(data[slow:pos])
            slow = pos
            start = pos + 9
            sid &= 0x7FFFFFFF
            if flags & _PRIORITY:
                start += 5
                dependsOn = (
                    _PRIORITY_FIELDS.unpack_from(data, pos + 9)[0] & 0x7FFFFFFF if start <= stop else sid
                )
            else:
                dependsOn = -1
            if (
                sid & 1
                and sid > connection.highest_inbound_stream_id
                and dependsOn != sid
                and stop - pos - 9 <= connection.max_inbound_frame_size
                and not buffer._data
                and not buffer._headers_buffer
            ):
                ended = bool(flags & _END_STREAM)
                headers = _openRequest(connection, sid, data[start:stop], ended, dependsOn >= 0)
                slow = stop
                yield (sid, headers, ended)
        pos = stop
    if slow < end:
        yield connection.receive_data(data[slow:])


def _openRequest(connection: H2Connection, sid: int, block: bytes, ended: bool, priority: bool) -> Any:
    """
    What C{_receive_headers_frame} does for a HEADERS frame opening stream
    C{sid} of a server connection; the request's headers.
    """
    try:
        limit = connection.local_settings.max_concurrent_streams
        # open streams are at most the streams known; counting them also
        # forgets the closed ones
        if len(connection.streams) >= limit:
            count = connection.open_inbound_streams
            if count + 1 > limit:
                raise TooManyStreamsError(f"Max inbound streams is {limit}, {count} open")
        headers = _decode_headers(connection.decoder, block)
        connectionMachine = connection.state_machine
        if connectionMachine.state is not _SERVER_OPEN:
            connectionMachine.process_input(ConnectionInputs.RECV_HEADERS)
        # what _begin_new_stream does for a new stream id of the client's
        # (receive checked it is odd and above the highest one seen)
        stream = H2Stream(
            sid,
            config=connection.config,
            inbound_window_size=connection.local_settings.initial_window_size,
            outbound_window_size=connection.remote_settings.initial_window_size,
        )
        stream.max_outbound_frame_size = connection.max_outbound_frame_size
        connection.streams[sid] = stream
        connection.highest_inbound_stream_id = sid
        machine = stream.state_machine
        machine.process_input(StreamInputs.RECV_HEADERS)
        if ended:
            machine.process_input(StreamInputs.RECV_END_STREAM)
        stream._initialize_content_length(headers)
        if priority and connectionMachine.state is not _SERVER_OPEN:
            connectionMachine.process_input(ConnectionInputs.RECV_PRIORITY)
    except ProtocolError as e:
        connection._terminate_connection(e.error_code)
        raise
    return headers
