"""
CPU per request of the Specter gateway's HTTP/2 front end, in process.

One gateway (HTTP/2 visitors, tunnel link, HTTP/1.1 exchanges) is driven
without sockets or TLS: an C{h2} client sends batches of requests (like
h2load: 10 streams in flight per connection, 16 connections), a fake tunnel
client answers each on the link with a 100-byte response, all in memory.
What it measures is the gateway's own Python per request (the part a
profile of the real process splits between the front end, the exchanges
and the multiplexer), free of the load on the machine: the real process
adds TLS and system calls (see C{bench/specter_tunnel.py}).

Each visitor connection's transport presents the apex's wildcard
certificate, as a TLS transport would (C{getHandle}), so every request
head is checked against it (421 for an authority it does not cover).
With C{--distinct-paths} every request has a header list of its own (its
C{:path}), so each request head is built and checked (no head is served
from the connection's cache): the cost of a new request head.

Usage::

    .venv/bin/python bench/specter_h2_inprocess.py [--requests 40000] [--distinct-paths] [--profile]

The last line holds the figures as key=value pairs.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import _benchcli  # noqa: E402
from h2.config import H2Configuration  # noqa: E402
from h2.connection import H2Connection  # noqa: E402
from h2.events import DataReceived, ResponseReceived, StreamEnded  # noqa: E402
from OpenSSL import SSL  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.ssl import CertificateOptions  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from suite.pki.mint import mintSelfSigned  # noqa: E402
from suite.pki.tlsoptions import presentedCredentials  # noqa: E402
from suite.specter.gateway.core import Gateway, GatewayConfig, GatewayLink  # noqa: E402
from suite.specter.gateway.h2 import H2Front  # noqa: E402
from suite.specter.gateway.routes import MemoryRouteStore  # noqa: E402
from suite.specter.tunnel.frames import DATA, OPEN, FrameDecoder, encodeFrame  # noqa: E402

HEADLINE = ["h2_inprocess_cpu_us_per_request", "h2_inprocess_cpu_us_median", "distinct_paths", "loadavg"]

HOST = "bench.example.test"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 07:00:00 GMT\r\n"
    b"Content-Type: text/html\r\nContent-Length: 100\r\nLast-Modified: Sun, 06 Dec 2026 06:00:00 GMT\r\n"
    b'Connection: keep-alive\r\nETag: "6932d4a0-64"\r\nAccept-Ranges: bytes\r\n\r\n' + b"x" * 99 + b"\n"
)


def _presenting() -> SSL.Connection:
    """
    A server-side TLS connection presenting the apex's wildcard
    certificate (what the gateway's TLS transport hands out as its handle).
    """
    cert, key = mintSelfSigned(["example.test", "*.example.test"], days=1)
    return SSL.Connection(CertificateOptions(**presentedCredentials(key, cert, ())).getContext(), None)


class _Wire:
    """
    A transport collecting writes.
    """

    disconnecting = False

    def __init__(self, handle: SSL.Connection | None = None) -> None:
        self.data: list[bytes] = []
        self.handle = handle

    def getHandle(self) -> SSL.Connection | None:
        return self.handle

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def take(self) -> bytes:
        out = b"".join(self.data)
        self.data.clear()
        return out

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "10.0.0.1", 5000)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.disconnecting = True


class _Target:
    """
    The tunnel client and its target: answers every request head that
    arrives on a stream with L{RESPONSE}.
    """

    def __init__(self, link: GatewayLink, wire: _Wire) -> None:
        self.link = link
        self.wire = wire
        self.decoder = FrameDecoder(self._frame)
        self.answers: list[bytes] = []

    def _frame(self, kind: int, sid: int, payload: bytes) -> None:
        if kind == DATA and payload.endswith(b"\r\n\r\n"):
            self.answers.append(encodeFrame(DATA, sid, RESPONSE))
        elif kind not in (DATA, OPEN):
            pass

    def pump(self) -> None:
        self.decoder.feed(self.wire.take())
        if self.answers:
            data = b"".join(self.answers)
            self.answers.clear()
            self.link.dataReceived(data)
            self.link.readHandled()


def run(requests: int, connections: int, streams: int, profile: Any = None, distinct: bool = False) -> float:
    clock = Clock()
    gateway = Gateway(
        GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443"), MemoryRouteStore(clock), clock
    )
    linkWire = _Wire()
    link = GatewayLink(gateway, "bench")
    link.makeConnection(linkWire)
    gateway.registry.add(HOST, link)
    target = _Target(link, linkWire)
    front = H2Front(gateway, clock)
    visitors, clients, wires = [], [], []
    headers = [
        (":method", "GET"),
        (":path", "/"),
        (":scheme", "https"),
        (":authority", HOST),
        ("user-agent", "h2load nghttp2/1.52.0"),
    ]
    handle = _presenting()
    for _ in range(connections):
        wire = _Wire(handle)
        visitor = front.buildProtocol(None)
        visitor.makeConnection(wire)
        client = H2Connection(H2Configuration(client_side=True))
        client.initiate_connection()
        client.receive_data(wire.take())
        visitor.dataReceived(client.data_to_send())
        client.receive_data(wire.take())
        visitors.append(visitor)
        clients.append(client)
        wires.append(wire)
    done = 0
    cpu = 0.0
    sent = 0
    while done < requests:
        batch = []
        for client in clients:
            for _ in range(streams):
                if distinct:
                    sent += 1
                    headers[1] = (":path", f"/{sent}")
                client.send_headers(client.get_next_available_stream_id(), headers, end_stream=True)
            batch.append(client.data_to_send())
        if profile is not None:
            profile.enable()
        start = time.process_time()
        for visitor, data in zip(visitors, batch, strict=True):
            visitor.dataReceived(data)
        clock.advance(0)
        target.pump()
        clock.advance(0)
        cpu += time.process_time() - start
        if profile is not None:
            profile.disable()
        for client, wire in zip(clients, wires, strict=True):
            for event in client.receive_data(wire.take()):
                if isinstance(event, StreamEnded):
                    done += 1
                elif isinstance(event, DataReceived):
                    client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, ResponseReceived) and (b":status", b"200") not in event.headers:
                    raise SystemExit(f"answered {event.headers}: the bench measures nothing")
        ack = []
        for client in clients:
            ack.append(client.data_to_send())
        if profile is not None:
            profile.enable()
        start = time.process_time()
        for visitor, data in zip(visitors, ack, strict=True):
            if data:
                visitor.dataReceived(data)
        cpu += time.process_time() - start
        if profile is not None:
            profile.disable()
    front.flusher.stop()
    return cpu / done * 1e6


def main() -> None:
    parser = _benchcli.parser(__doc__, HEADLINE)
    parser.add_argument("--requests", type=int, default=40000, help="requests per run (best of 3 runs)")
    parser.add_argument("--connections", type=int, default=16, help="visitor connections")
    parser.add_argument("--streams", type=int, default=10, help="streams in flight per connection")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    parser.add_argument(
        "--distinct-paths", action="store_true", help="a header list of its own for every request"
    )
    args = parser.parse_args()
    distinct = args.distinct_paths
    _benchcli.setPhase("warm-up")
    run(2000, args.connections, args.streams, distinct=distinct)  # warm up
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        run(args.requests, args.connections, args.streams, profile, distinct)
        pstats.Stats(profile).sort_stats("tottime").print_stats(40)
    _benchcli.setPhase("timed runs")
    figures = sorted(run(args.requests, args.connections, args.streams, distinct=distinct) for _ in range(3))
    print(
        f"h2_inprocess_cpu_us_per_request={figures[0]:.1f} h2_inprocess_cpu_us_median={figures[1]:.1f} "
        f"distinct_paths={int(distinct)} loadavg={','.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    _benchcli.run(main)
