"""
CPU per request of the Specter gateway's HTTP/1.1 visitor path, in process,
TLS included.

The gateway's TLS port (the transport class it uses in production),
HTTP/1.1 visitors and a tunnel link (also over TLS) are driven without
sockets: 64 keep-alive visitors each send a request per round (like wrk
with 64 connections), a fake tunnel client decrypts the link, answers
every request with a 100-byte response and encrypts it back, all through
memory BIOs; delayed calls are the real reactor's (run by hand), so the
per-turn costs are the production ones.  What it measures is the gateway's
own CPU per request, free of the machine's load and of system calls (the
real process adds them: see C{bench/specter_tunnel.py}).

Usage::

    .venv/bin/python bench/specter_http1_inprocess.py [--requests 40000] [--twisted-tls] [--profile]

C{--twisted-tls} uses Twisted's own TLS transport instead of the gateway's
(for comparison).  The last line holds the figures as key=value pairs.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import _benchcli  # noqa: E402
from OpenSSL import SSL  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402
from twisted.internet.ssl import CertificateOptions  # noqa: E402
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory  # noqa: E402

from suite.pki.mint import mintSelfSigned  # noqa: E402
from suite.pki.tlsoptions import presentedCredentials  # noqa: E402
from suite.specter.gateway.core import Gateway, GatewayConfig, GatewayLink  # noqa: E402
from suite.specter.gateway.routes import MemoryRouteStore  # noqa: E402
from suite.specter.gateway.visitor import HTTPVisitor  # noqa: E402
from suite.specter.tunnel.frames import DATA, FrameDecoder, encodeFrame  # noqa: E402
from suite.specter.tunnel.twistedio import LeanTLSTransport, TurnWrites  # noqa: E402

HEADLINE = ["http1_inprocess_cpu_us_per_request", "http1_inprocess_cpu_us_median", "tls", "loadavg"]

HOST = "bench.example.test"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench.example.test\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 07:00:00 GMT\r\n"
    b"Content-Type: text/html\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + b"x" * 99 + b"\n"
)


class _Wire:
    """
    The TCP transport under a TLS transport: collects what it sends.
    """

    disconnecting = False

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def writeSequence(self, data: Any) -> None:
        self.data.append(b"".join(data))

    def take(self) -> bytes:
        out = b"".join(self.data)
        self.data.clear()
        return out

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "10.0.0.1", 5000)

    getHost = getPeer

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.disconnecting = True


class _Client:
    """
    One memory BIO TLS client.
    """

    def __init__(self, server: Any, wire: _Wire) -> None:
        self.server = server
        self.wire = wire
        self.tls = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        self.tls.set_connect_state()

    def out(self) -> bytes:
        data = b""
        try:
            while True:
                data += self.tls.bio_read(65536)
        except SSL.WantReadError:
            return data

    def handshake(self) -> None:
        for _ in range(6):
            try:
                self.tls.do_handshake()
            except SSL.WantReadError:
                pass
            data = self.out()
            if data:
                self.server.dataReceived(data)
            self.read()
            reactor.runUntilCurrent()  # type: ignore[attr-defined]

    def read(self) -> bytes:
        data = self.wire.take()
        if data:
            self.tls.bio_write(data)
        got = b""
        try:
            while True:
                got += self.tls.recv(65536)
        except SSL.WantReadError:
            return got

    def send(self, data: bytes) -> bytes:
        if data:
            self.tls.sendall(data)
        return self.out()


def run(requests: int, connections: int, lean: bool, profile: Any = None) -> float:
    # the apex's wildcard certificate: it covers HOST (else every visitor gets 421)
    cert, key = mintSelfSigned(["example.test", "*.example.test"])
    options = CertificateOptions(**presentedCredentials(key, cert, ()))
    gateway = Gateway(
        GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443"), MemoryRouteStore(reactor), reactor
    )

    def tlsFactory(wrapped: Any) -> Any:
        factory: Any = TLSMemoryBIOFactory(options, False, wrapped, reactor)
        factory.protocol = LeanTLSTransport if lean else BufferingTLSTransport
        if lean:
            factory.turnWrites = turns
        return factory

    turns = TurnWrites(reactor)
    if lean:
        gateway.afterLinkRead.append(turns.flush)
    linkWire = _Wire()
    linkServer = tlsFactory(Factory.forProtocol(lambda: GatewayLink(gateway, "bench"))).buildProtocol(None)
    linkServer.makeConnection(linkWire)
    tunnel = _Client(linkServer, linkWire)
    tunnel.handshake()
    link = linkServer.wrappedProtocol
    gateway.registry.add(HOST, link)
    answers: list[bytes] = []

    def frame(kind: int, sid: int, payload: bytes) -> None:
        if kind == DATA:
            answers.append(encodeFrame(DATA, sid, RESPONSE))

    decoder = FrameDecoder(frame)
    visitors = []
    factory = tlsFactory(Factory.forProtocol(lambda: HTTPVisitor(gateway)))
    for _ in range(connections):
        wire = _Wire()
        server = factory.buildProtocol(None)
        server.makeConnection(wire)
        client = _Client(server, wire)
        client.handshake()
        visitors.append(client)
    done = 0
    cpu = 0.0
    while done < requests:
        records = [client.send(REQUEST) for client in visitors]
        if profile is not None:
            profile.enable()
        start = time.process_time()
        for client, record in zip(visitors, records, strict=True):
            client.server.dataReceived(record)
        reactor.runUntilCurrent()  # type: ignore[attr-defined]
        cpu += time.process_time() - start
        if profile is not None:
            profile.disable()
        decoder.feed(tunnel.read())
        reply = tunnel.send(b"".join(answers))
        answers.clear()
        if profile is not None:
            profile.enable()
        start = time.process_time()
        linkServer.dataReceived(reply)
        reactor.runUntilCurrent()  # type: ignore[attr-defined]
        cpu += time.process_time() - start
        if profile is not None:
            profile.disable()
        for client in visitors:
            if client.read().endswith(b"x\n"):
                done += 1
        decoder.feed(tunnel.read())  # window updates
    turns.stop()
    return cpu / done * 1e6


def main() -> None:
    parser = _benchcli.parser(__doc__, HEADLINE)
    parser.add_argument("--requests", type=int, default=40000, help="requests per run (best of 3 runs)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive visitors")
    parser.add_argument("--twisted-tls", action="store_true", help="Twisted's TLS transport, for comparison")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    args = parser.parse_args()
    lean = not args.twisted_tls
    _benchcli.setPhase("warm-up")
    run(2000, args.connections, lean)  # warm up
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        run(args.requests, args.connections, lean, profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(40)
    _benchcli.setPhase("timed runs")
    figures = sorted(run(args.requests, args.connections, lean) for _ in range(3))
    print(
        f"http1_inprocess_cpu_us_per_request={figures[0]:.1f} http1_inprocess_cpu_us_median={figures[1]:.1f} "
        f"tls={'twisted' if args.twisted_tls else 'gateway'} loadavg={','.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    _benchcli.run(main)
