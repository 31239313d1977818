"""
An HTTP/3 client for the drain test: GET https://HOST:PORT/PATH over QUIC
(aioquic), connecting to 127.0.0.1, then waits for the gateway to close
the connection; prints the status, the body, the stream ids of the GOAWAY
frames on the gateway's control stream, and the error code the connection
was closed with.

    python h3drainclient.py HOST PORT PATH CAFILE
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aioquic.asyncio import connect  # noqa: E402
from aioquic.buffer import Buffer  # noqa: E402
from aioquic.h3.connection import H3_ALPN  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived  # noqa: E402
from h3client import GOAWAY, Client, controlFrames  # noqa: E402


class DrainClient(Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The gateway's control stream (its first unidirectional stream).
        self.control = b""
        self.closedWith: int | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id == 3:
            self.control += event.data
        elif isinstance(event, ConnectionTerminated):
            self.closedWith = event.error_code
        super().quic_event_received(event)


async def main(host: str, port: int, path: str, cafile: str) -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=host)
    config.load_verify_locations(cafile)
    async with connect("127.0.0.1", port, configuration=config, create_protocol=DrainClient) as client:
        assert isinstance(client, DrainClient)
        sid = client._quic.get_next_available_stream_id()
        client.http.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", host.encode()),
                (b":path", path.encode()),
            ],
            end_stream=True,
        )
        client.transmit()
        await asyncio.wait_for(client.done, 20)
        await asyncio.wait_for(client.wait_closed(), 10)
        goAways = [Buffer(data=p).pull_uint_var() for t, p in controlFrames(client.control) if t == GOAWAY]
        sys.stdout.write(
            f"stream={sid}\nstatus={client.status.decode()}\nbody={client.body!r}\n"
            f"goaways={goAways}\nclosed={client.closedWith}\n"
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
