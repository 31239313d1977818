"""
The caching HPACK codecs give exactly what the plain ones give, and what
they rely on in C{hpack} and C{h2} is still there.
"""

from __future__ import annotations

import inspect
import re

import h2.connection
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
    installCachingCodecs,
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
