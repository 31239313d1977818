"""
A minimal HTTP/3 client for tests: GET https://HOST:PORT/PATH over QUIC
(aioquic), connecting to 127.0.0.1; prints the status line and the body.

    python h3client.py HOST PORT PATH CAFILE [AUTHORITY]

(AUTHORITY: the :authority sent, HOST by default.)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

#: The HTTP/3 GOAWAY frame type (RFC 9114 section 7.2.6).
GOAWAY = 0x7


def controlFrames(data: bytes) -> list[tuple[int, bytes]]:
    """
    The whole frames (type, payload) in the bytes C{data} of a peer's
    HTTP/3 control stream so far (aioquic's client ignores GOAWAY, so tests
    read it here).
    """
    buf = Buffer(data=data)
    frames: list[tuple[int, bytes]] = []
    try:
        buf.pull_uint_var()  # the stream type
        while not buf.eof():
            kind = buf.pull_uint_var()
            size = buf.pull_uint_var()
            frames.append((kind, buf.pull_bytes(size)))
    except BufferReadError:
        pass
    return frames


class Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.done: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self.status = b""
        self.body = b""

    def quic_event_received(self, event: QuicEvent) -> None:
        for e in self.http.handle_event(event):
            if isinstance(e, HeadersReceived):
                self.status = dict(e.headers).get(b":status", b"")
                if e.stream_ended and not self.done.done():
                    self.done.set_result(None)
            elif isinstance(e, DataReceived):
                self.body += e.data
                if e.stream_ended and not self.done.done():
                    self.done.set_result(None)


async def main(host: str, port: int, path: str, cafile: str, authority: str = "") -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=host)
    config.load_verify_locations(cafile)
    async with connect("127.0.0.1", port, configuration=config, create_protocol=Client) as client:
        assert isinstance(client, Client)
        sid = client._quic.get_next_available_stream_id()
        client.http.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", (authority or host).encode()),
                (b":path", path.encode()),
            ],
            end_stream=True,
        )
        client.transmit()
        await asyncio.wait_for(client.done, 10)
        sys.stdout.write(f"status={client.status.decode()}\n{client.body.decode()}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], *sys.argv[5:6]))
