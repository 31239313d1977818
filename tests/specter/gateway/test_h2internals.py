"""
The caching HPACK codecs give exactly what the plain ones give, and what
they rely on in C{hpack} and C{h2} is still there.
"""

from __future__ import annotations

import inspect
import re

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.stream
import hpack
from hpack import Decoder, Encoder
from hpack.table import HeaderTable
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.h2internals import (
    CachingDecoder,
    CachingEncoder,
    UndecodedHeaderBlock,
    installCachingCodecs,
    receive,
    remoteOpen,
    sendGoAway,
    sendResponse,
)

_NAMES = [b":method", b":path", b"accept", b"cookie", b"x-a", b"x-b", b"user-agent"]
_header = st.tuples(st.sampled_from(_NAMES), st.sampled_from([b"", b"GET", b"/", b"/x", b"v" * 40, b"a=b"]))
_blocks = st.lists(st.lists(_header, min_size=1, max_size=6), min_size=1, max_size=12)


class CodecEquivalenceTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(_blocks)
    def test_decoderMatchesPlain(self, blocks: list[list[tuple[bytes, bytes]]]) -> None:
        """
        A stream of blocks (repeating lists, table changes, a size update)
        decodes to the same headers with and without the cache.
        """
        encoder = Encoder()
        plain, caching = Decoder(), CachingDecoder(65536)
        for i, headers in enumerate(blocks * 2):
            if i == len(blocks):
                encoder.header_table_size = 256  # a size update mid-stream
            block = encoder.encode(headers)
            self.assertEqual(caching.decode(block, raw=True), plain.decode(block, raw=True))

    @settings(max_examples=150, deadline=None)
    @given(_blocks)
    def test_encoderMatchesPlain(self, blocks: list[list[tuple[bytes, bytes]]]) -> None:
        """
        What the caching encoder writes decodes to its input, block after
        block (so its table stays in step with the peer's decoder).
        """
        caching, decoder = CachingEncoder(), Decoder()
        for i, headers in enumerate(blocks * 3):
            if i == len(blocks):
                caching.header_table_size = 512
                decoder.max_allowed_table_size = 4096
            self.assertEqual([tuple(h) for h in decoder.decode(caching.encode(headers), raw=True)], headers)

    def test_repeatedBlocksAreCached(self) -> None:
        """
        Once a list's fields are indexed, encoding it again (and decoding
        its block again) is a lookup: the underlying codec is not run.
        """
        headers = [(b":status", b"200"), (b"content-type", b"text/html"), (b"x-a", b"1")]
        encoder, decoder = CachingEncoder(), CachingDecoder(65536)
        first = encoder.encode(headers)
        second = encoder.encode(headers)
        self.assertNotEqual(first, second)  # literals first, then all indexed
        decoder.decode(first, raw=True)
        decoded = decoder.decode(second, raw=True)
        calls: list[object] = []

        def encode(*a: object, **k: object) -> bytes:
            calls.append(a)
            return b""

        def decode(*a: object, **k: object) -> list[tuple[bytes, bytes]]:
            calls.append(a)
            return []

        self.patch(Encoder, "encode", encode)
        self.patch(Decoder, "decode", decode)
        self.assertEqual(encoder.encode(headers), second)
        self.assertIs(decoder.decode(second, raw=True), decoded)
        self.assertEqual(calls, [])

    def test_undecodedBlock(self) -> None:
        """
        A block decoding past the decoder's header list limit, or a
        malformed one, raises L{UndecodedHeaderBlock}: an h2 protocol error
        of type C{COMPRESSION_ERROR} (RFC 9113 section 4.3), which h2's own
        handler of hpack's errors lets through as it is.
        """
        decoder = CachingDecoder(1000)
        for block in (Encoder().encode([(b"x-big", b"a" * 2000)]), b"\xff\xff\xff\x7f"):
            with self.assertRaises(UndecodedHeaderBlock) as caught:
                h2.connection._decode_headers(decoder, block)
            self.assertIsInstance(caught.exception, h2.exceptions.ProtocolError)
            self.assertEqual(caught.exception.error_code, h2.errors.ErrorCodes.COMPRESSION_ERROR)

    def test_installed(self) -> None:
        """
        An h2 connection given the codecs uses them on both sides.
        """
        from h2.config import H2Configuration

        server = h2.connection.H2Connection(H2Configuration(client_side=False))
        installCachingCodecs(server)
        self.assertIsInstance(server.encoder, CachingEncoder)
        self.assertIsInstance(server.decoder, CachingDecoder)
        server.initiate_connection()
        client = h2.connection.H2Connection(H2Configuration(client_side=True))
        client.initiate_connection()
        server.receive_data(client.data_to_send())
        for _ in range(3):
            sid = client.get_next_available_stream_id()
            client.send_headers(
                sid,
                [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "a")],
                end_stream=True,
            )
            events = server.receive_data(client.data_to_send())
            self.assertIn((b":path", b"/"), [tuple(h) for h in events[0].headers])  # type: ignore[attr-defined]


def _source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


class LibraryContractTests(SynchronousTestCase):
    """
    What L{suite.specter.gateway.h2internals} relies on in C{hpack} and
    C{h2} beyond their documented API.  When one fails after an upgrade,
    review h2internals.py against the new version, then update the check
    (and the version caps in setup.cfg).
    """

    def test_tableChangesOnlyThroughAddAndMaxsize(self) -> None:
        """
        The dynamic table of hpack's HeaderTable changes only in C{add},
        the C{maxsize} setter and C{_shrink} (which only those two call):
        the caches count exactly those.
        """
        mutates = re.compile(
            r"dynamic_entries\.(append|appendleft|pop|popleft|clear|extend|remove|insert)\b"
            r"|dynamic_entries(:[^=\n]*)?\s*="
        )
        shrinks = set()
        mutators = set()
        for name, member in vars(HeaderTable).items():
            if isinstance(member, property):
                member = member.fset
            if not callable(member):
                continue
            code = _source(member)
            if mutates.search(code):
                mutators.add(name)
            if "self._shrink()" in code:
                shrinks.add(name)
        self.assertEqual(mutators, {"__init__", "add", "_shrink", "maxsize"})
        self.assertEqual(shrinks, {"add", "maxsize"})

    def test_codecsUseTheirTable(self) -> None:
        """
        hpack's codecs keep their table in C{header_table}, and only its
        C{add}, C{maxsize} and lookups touch it.
        """
        for codec in (hpack.Encoder, hpack.Decoder):
            code = _source(codec)
            used = set(re.findall(r"header_table\.(\w+)", code))
            self.assertLessEqual(used, {"add", "maxsize", "resized", "search", "get_by_index"}, codec)
            self.assertIn("self.header_table = HeaderTable()", code)

    def test_h2UsesEncodeAndDecode(self) -> None:
        """
        h2 calls its connection's codecs only through C{encode},
        C{decode} and their size attributes.
        """
        used = set()
        for module in (h2.connection, h2.stream):
            used |= set(re.findall(r"\b(?:encoder|decoder)\.(\w+)", _source(module)))
        self.assertLessEqual(
            used,
            {"encode", "decode", "header_table_size", "max_header_list_size", "max_allowed_table_size"},
        )
        self.assertIn("self.encoder = Encoder()", _source(h2.connection.H2Connection.__init__))


def _server() -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    """
    A server connection with a client's requests on streams 1 and 3.
    """
    from h2.config import H2Configuration

    server = h2.connection.H2Connection(H2Configuration(client_side=False))
    installCachingCodecs(server)
    server.initiate_connection()
    client = h2.connection.H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1, [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "a")], True
    )
    client.send_headers(3, [(":method", "POST"), (":path", "/"), (":scheme", "https"), (":authority", "a")])
    server.receive_data(client.data_to_send())
    server.data_to_send()
    return server, client


_value = st.binary(min_size=0, max_size=30).map(lambda b: bytes(c for c in b if 32 < c < 127))
_responseHeaders = st.lists(
    st.tuples(st.sampled_from([b"content-type", b"x-a", b"etag", b"set-cookie"]), _value), max_size=5
)


class SendResponseTests(SynchronousTestCase):
    """
    L{sendResponse} leaves a connection exactly as C{send_headers} and
    C{send_data} would.
    """

    def _both(self, sid: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool) -> None:
        plain, _ = _server()
        fast, _ = _server()
        fullHeaders = [(b":status", b"200"), *headers]
        for _ in range(2):  # the second time, the HPACK cache answers
            done = sendResponse(fast, sid, fullHeaders, body, end)
            fits = len(body) <= min(16384, plain.local_flow_control_window(sid))
            self.assertEqual(done, fits)
            if not done:
                return
            plain.send_headers(sid, fullHeaders, end_stream=end and not body)
            if body:
                plain.send_data(sid, body, end_stream=end)
            self.assertEqual(fast.data_to_send(), plain.data_to_send())
            for connection in (fast, plain):
                stream = connection.streams[sid]
                connection.__state = (  # type: ignore[attr-defined]
                    stream.state_machine.state,
                    stream.outbound_flow_control_window,
                    connection.outbound_flow_control_window,
                    connection.state_machine.state,
                    stream.request_method,
                )
            self.assertEqual(fast.__state, plain.__state)  # type: ignore[attr-defined]
            if end:
                return
            sid = 3 if sid == 1 else 1

    @settings(max_examples=80, deadline=None)
    @given(_responseHeaders, st.sampled_from([0, 1, 100, 16384, 16385, 70000]), st.booleans())
    def test_sameAsH2(self, headers: list[tuple[bytes, bytes]], size: int, end: bool) -> None:
        """
        Same bytes on the wire and same stream and connection state, for
        any headers, bodies within and beyond one frame, ended or not.
        """
        self._both(1, headers, b"b" * size, end)

    def test_continuation(self) -> None:
        """
        A header block larger than a frame goes out as HEADERS and
        CONTINUATION frames, as h2 would send it.
        """
        self._both(1, [(b"x-big", b"v" * 20000), (b"x-more", b"w" * 20000)], b"body", True)

    def test_unknownStream(self) -> None:
        """
        A stream the connection does not know is left to h2 (which raises).
        """
        server, _ = _server()
        self.assertFalse(sendResponse(server, 99, [(b":status", b"200")], b"", True))
        self.assertEqual(server.data_to_send(), b"")

    def test_mirroredMethods(self) -> None:
        """
        The h2 methods whose work sendResponse does are the reviewed ones.
        """
        import hashlib

        from h2.connection import H2Connection
        from h2.stream import H2Stream

        prints = {
            name: hashlib.sha256(_source(method).encode()).hexdigest()[:16]
            for name, method in (
                ("H2Connection.send_headers", H2Connection.send_headers),
                ("H2Connection.send_data", H2Connection.send_data),
                ("H2Connection._prepare_for_sending", H2Connection._prepare_for_sending),
                ("H2Stream.send_headers", H2Stream.send_headers),
                ("H2Stream.send_data", H2Stream.send_data),
                ("H2Stream._build_headers_frames", H2Stream._build_headers_frames),
            )
        }
        self.assertEqual(prints, MIRRORED, "review sendResponse in suite/specter/gateway/h2internals.py")


#: Fingerprints of the h2 source sendResponse mirrors (h2 4.4.1).
MIRRORED: dict[str, str] = {
    "H2Connection.send_headers": "0b3368f81906b27a",
    "H2Connection.send_data": "9f67cb77f02c01d0",
    "H2Connection._prepare_for_sending": "6be16b5970454a30",
    "H2Stream.send_headers": "174255442235241e",
    "H2Stream.send_data": "9742a001ccca6af7",
    "H2Stream._build_headers_frames": "493a6b6df9e19c1e",
}


class GoAwayTests(SynchronousTestCase):
    """
    L{sendGoAway} queues the frame C{close_connection} would, without
    closing C{h2}'s connection: the streams in flight can still answer.
    L{remoteOpen} follows the client's side of a stream.
    """

    def test_sameFrameAsH2(self) -> None:
        """
        The bytes are those of C{close_connection}'s GOAWAY.
        """
        ours, _ = _server()
        theirs, _ = _server()
        ours.data_to_send()
        theirs.data_to_send()
        sendGoAway(ours, 3, 0)
        theirs.close_connection(0, last_stream_id=3)
        self.assertEqual(ours.data_to_send(), theirs.data_to_send())

    def test_streamsStillAnswer(self) -> None:
        """
        After it, the server still sends a response on a stream in flight
        and receives the rest of a request body.
        """
        server, client = _server()
        sendGoAway(server, 3, 0)
        self.assertEqual(server.state_machine.state, h2.connection.ConnectionState.SERVER_OPEN)
        server.send_headers(1, [(b":status", b"204")], end_stream=True)
        client.send_data(3, b"body", end_stream=True)
        events = server.receive_data(client.data_to_send())
        self.assertEqual([type(e).__name__ for e in events], ["DataReceived", "StreamEnded"])

    def test_remoteOpen(self) -> None:
        """
        Stream 1's request ended with its head, stream 3's body is still
        coming until it ends; an unknown stream is not open.
        """
        server, client = _server()
        self.assertEqual(
            (remoteOpen(server, 1), remoteOpen(server, 3), remoteOpen(server, 5)), (False, True, False)
        )
        server.send_headers(3, [(b":status", b"200")], end_stream=True)
        self.assertTrue(remoteOpen(server, 3))
        client.end_stream(3)
        server.receive_data(client.data_to_send())
        self.assertFalse(remoteOpen(server, 3))


def _fresh(validate: bool = False) -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    """
    A server connection past its preamble and settings (configured as the
    gateway's unless C{validate}), and its client.
    """
    from h2.config import H2Configuration

    server = h2.connection.H2Connection(
        H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=validate,
            normalize_inbound_headers=False,
        )
    )
    installCachingCodecs(server)
    server.initiate_connection()
    client = h2.connection.H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.data_to_send()
    return server, client


def _plainItems(server: h2.connection.H2Connection, data: bytes) -> list[object]:
    """
    What L{receive} should yield, read through h2 alone: requests as
    (stream id, headers, ended), other events by kind and stream.
    """
    items: list[object] = []
    for event in server.receive_data(data):
        if isinstance(event, h2.events.RequestReceived):
            items.append((event.stream_id, list(event.headers), event.stream_ended is not None))
        elif not isinstance(event, (h2.events.StreamEnded, h2.events.PriorityUpdated)) or not any(
            isinstance(i, tuple) and i[0] == event.stream_id for i in items
        ):
            items.append((type(event).__name__, getattr(event, "stream_id", 0)))
    return items


def _fastItems(server: h2.connection.H2Connection, data: bytes, cuts: list[int]) -> list[object]:
    items: list[object] = []
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    for piece in pieces:
        for item in receive(server, piece):
            if isinstance(item, tuple):
                items.append((item[0], list(item[1]), item[2]))
            else:
                items.extend(
                    (item_.stream_id, list(item_.headers), item_.stream_ended is not None)
                    if isinstance(item_, h2.events.RequestReceived)
                    else (type(item_).__name__, getattr(item_, "stream_id", 0))
                    for item_ in item
                    if not isinstance(item_, (h2.events.StreamEnded, h2.events.PriorityUpdated))
                    or not any(isinstance(i, tuple) and i[0] == item_.stream_id for i in items)
                )
    return items


def _state(connection: h2.connection.H2Connection) -> object:
    return (
        connection.state_machine.state,
        connection.highest_inbound_stream_id,
        connection.open_inbound_streams,
        connection.inbound_flow_control_window,
        {
            sid: (
                s.state_machine.state,
                s.state_machine.client,
                s.state_machine.headers_received,
                s._expected_content_length,
                s.inbound_flow_control_window,
            )
            for sid, s in connection.streams.items()
        },
        connection.data_to_send(),
    )


def _frame(sid: int, block: bytes, flags: int = 0x5) -> bytes:
    """
    A HEADERS frame (by default END_STREAM and END_HEADERS).
    """
    import struct

    return struct.pack("!HBBBL", len(block) >> 8, len(block) & 0xFF, 1, flags, sid) + block


_requests = st.lists(
    st.tuples(
        st.sampled_from(["get", "post", "bodyless-post", "priority", "big", "reset"]),
        st.sampled_from([b"", b"x", b"y" * 300]),
    ),
    min_size=1,
    max_size=8,
)


class ReceiveTests(SynchronousTestCase):
    """
    L{receive} reads a visitor's bytes as C{h2}'s C{receive_data} would:
    the same requests and events in the same order, the same connection and
    stream state afterwards, however the bytes are cut.
    """

    def _clientBytes(self, client: h2.connection.H2Connection, requests: list[tuple[str, bytes]]) -> bytes:
        for kind, body in requests:
            sid = client.get_next_available_stream_id()
            headers = [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "a")]
            if kind == "big":
                headers.append(("x-big", "v" * 20000))  # HEADERS and CONTINUATION
            if kind in ("post", "bodyless-post"):
                headers[0] = (":method", "POST")
                headers.append(("content-length", str(len(body))))
            end = kind not in ("post", "reset")
            if kind == "priority":
                client.send_headers(sid, headers, end_stream=end, priority_weight=16, priority_depends_on=0)
            else:
                client.send_headers(sid, headers, end_stream=end)
            if kind == "post":
                client.send_data(sid, body, end_stream=True)
            elif kind == "reset":
                client.reset_stream(sid)
        return client.data_to_send()

    @settings(max_examples=120, deadline=None)
    @given(_requests, st.lists(st.integers(min_value=1, max_value=400), max_size=4))
    def test_sameAsH2(self, requests: list[tuple[str, bytes]], cuts: list[int]) -> None:
        """
        Any mix of requests (with and without bodies, priority, header
        blocks beyond one frame, resets), cut anywhere: same items, same
        state.
        """
        plain, client = _fresh()
        fast, _ = _fresh()
        data = self._clientBytes(client, requests)
        for _ in range(2):  # the second time, the HPACK cache answers
            expected = _plainItems(plain, data)
            marks = sorted({c for c in cuts if c < len(data)})
            self.assertEqual(_fastItems(fast, data, marks), expected)
            self.assertEqual(_state(fast), _state(plain))
            data = self._clientBytes(client, requests)

    def test_fastPath(self) -> None:
        """
        A request in one HEADERS frame is yielded by L{receive} itself (no
        h2 event).
        """
        server, client = _fresh()
        data = self._clientBytes(client, [("get", b"")])
        items = list(receive(server, data))
        self.assertEqual(len(items), 1)
        self.assertIsInstance(items[0], tuple)
        self.assertEqual(items[0][0], 1)

    def test_validatingConnection(self) -> None:
        """
        A connection that validates received headers reads through h2
        alone (which refuses a request without :authority).
        """
        server, client = _fresh(validate=True)
        block = client.encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "https")])
        with self.assertRaises(h2.exceptions.ProtocolError):
            list(receive(server, _frame(1, block)))

    def _errors(self, data: bytes, fast: bool) -> tuple[str, bytes]:
        server, _ = _fresh()
        try:
            if fast:
                list(receive(server, data))
            else:
                server.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            return type(e).__name__, server.data_to_send()
        return "", server.data_to_send()

    def test_protocolErrors(self) -> None:
        """
        An even stream id, a stream id going down, a stream depending on
        itself, an undecodable block, too many streams: the same error and
        the same GOAWAY as h2's.
        """
        import struct

        frame = _frame
        _, client = _fresh()
        block = client.encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "https")])
        many = b"".join(frame(1 + 2 * i, block, 0x4) for i in range(101))
        for data in (
            frame(2, block),
            frame(5, block) + frame(3, block),
            frame(7, struct.pack("!LB", 7, 0) + block, 0x25),
            frame(1, b"\xff\xff\xff\xff"),
            many,
        ):
            self.assertEqual(self._errors(data, True), self._errors(data, False))
            self.assertNotEqual(self._errors(data, True)[0], "")

    def test_mirroredMethods(self) -> None:
        """
        The h2 methods whose work receive does are the reviewed ones.
        """
        import hashlib

        from h2.connection import H2Connection
        from h2.frame_buffer import FrameBuffer
        from h2.stream import H2Stream

        prints = {
            name: hashlib.sha256(_source(method).encode()).hexdigest()[:16]
            for name, method in (
                ("H2Connection.receive_data", H2Connection.receive_data),
                ("H2Connection._receive_frame", H2Connection._receive_frame),
                ("H2Connection._receive_headers_frame", H2Connection._receive_headers_frame),
                ("H2Connection._receive_priority_frame", H2Connection._receive_priority_frame),
                ("H2Connection._begin_new_stream", H2Connection._begin_new_stream),
                ("H2Stream.receive_headers", H2Stream.receive_headers),
                ("H2Stream._process_received_headers", H2Stream._process_received_headers),
                ("FrameBuffer.add_data", FrameBuffer.add_data),
                ("FrameBuffer.__next__", FrameBuffer.__next__),
                ("FrameBuffer._update_header_buffer", FrameBuffer._update_header_buffer),
            )
        }
        self.assertEqual(prints, RECEIVE_MIRRORED, "review receive in suite/specter/gateway/h2internals.py")


class QuietInputTests(SynchronousTestCase):
    def test_quietInServerOpen(self) -> None:
        """
        The connection inputs skipped in SERVER_OPEN leave it there and run
        nothing.
        """
        from h2.connection import ConnectionState, H2ConnectionStateMachine

        from suite.specter.gateway.h2internals import QUIET_INPUTS

        table = H2ConnectionStateMachine._transitions
        for quiet in QUIET_INPUTS:
            self.assertEqual(table[(ConnectionState.SERVER_OPEN, quiet)], (None, ConnectionState.SERVER_OPEN))
        self.assertIn("self.state = target_state", _source(H2ConnectionStateMachine.process_input))


#: Fingerprints of the h2 source receive mirrors (h2 4.4.1).
RECEIVE_MIRRORED: dict[str, str] = {
    "H2Connection.receive_data": "4470c8fafce8153a",
    "H2Connection._receive_frame": "39b2e16b4fd74ed0",
    "H2Connection._receive_headers_frame": "4a014e7d795a15a5",
    "H2Connection._receive_priority_frame": "08c3fce59d57d537",
    "H2Connection._begin_new_stream": "de40fc0b03dfa443",
    "H2Stream.receive_headers": "6bb0626547ebe2da",
    "H2Stream._process_received_headers": "991976183ebe21df",
    "FrameBuffer.add_data": "887d4a892f823f4a",
    "FrameBuffer.__next__": "54792a1319f7ef52",
    "FrameBuffer._update_header_buffer": "e32970a56626afcc",
}
