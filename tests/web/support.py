"""
Helpers for driving a Site in memory (StringTransport) or over loopback.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.server import Site


class Connection:
    """
    One in-memory client connection to C{site}.
    """

    def __init__(self, site: Site) -> None:
        self.protocol: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        )
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def get(self, path: bytes, headers: dict[bytes, bytes] | None = None) -> None:
        lines = [b"GET " + path + b" HTTP/1.1", b"Host: test"]
        for k, v in (headers or {}).items():
            lines.append(k + b": " + v)
        self.send(b"\r\n".join(lines) + b"\r\n\r\n")

    def received(self) -> bytes:
        return self.transport.value()

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def pauseSocket(self) -> None:
        """
        The kernel buffer is full: the transport pauses its producer.
        """
        producer: Any = self.transport.producer
        producer.pauseProducing()

    def resumeSocket(self) -> None:
        producer: Any = self.transport.producer
        producer.resumeProducing()

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone("client went away")))


def parseResponse(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """
    Parse one HTTP/1.1 response (identity or chunked body) into
    C{(code, headers, body)}; header names are lower-cased.
    """
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    code = int(lines[0].split(b" ")[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            body += rest[:n]
            rest = rest[n + 2 :]
        return code, headers, body
    if b"content-length" in headers:
        return code, headers, rest[: int(headers[b"content-length"])]
    return code, headers, rest


class RawClient(Protocol):
    """
    Sends raw bytes over a real connection and collects everything the
    server answers until it closes.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.done.callback(self.data)
