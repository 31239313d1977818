"""
L{LeanTLSTransport} delivers, sends and reports exactly what Twisted's TLS
transport does, over a memory BIO client: records whole, split and
batched, a clean close, a broken record.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.pki.mint import mintSelfSigned
from suite.specter.tunnel.twistedio import LeanTLSTransport

_CERT, _KEY = mintSelfSigned(["a.test"])
_OPTIONS = CertificateOptions(
    privateKey=crypto.PKey.from_cryptography_key(_KEY), certificate=crypto.X509.from_cryptography(_CERT)
)


class _Echo(Protocol):
    """
    Records what it receives and answers each read.
    """

    def connectionMade(self) -> None:
        self.factory.received = []
        self.factory.lost = None

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        self.transport.write(b"echo:" + data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.factory.lost = reason


class _Pair:
    """
    A server TLS transport of class C{cls} and a memory BIO client.
    """

    def __init__(self, cls: type) -> None:
        self.clock = Clock()
        self.app: Any = Factory.forProtocol(_Echo)
        factory = TLSMemoryBIOFactory(_OPTIONS, False, self.app, self.clock)
        factory.protocol = cls
        self.server = factory.buildProtocol(None)
        self.wire = StringTransport()
        self.server.makeConnection(self.wire)
        self.client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        self.client.set_connect_state()
        for _ in range(6):
            try:
                self.client.do_handshake()
            except SSL.WantReadError:
                pass
            self.deliver(self.drainClient())
            self.backToClient()

    def drainClient(self) -> bytes:
        out = b""
        try:
            while True:
                out += self.client.bio_read(65536)
        except SSL.WantReadError:
            return out

    def deliver(self, data: bytes) -> None:
        if data:
            self.server.dataReceived(data)
        self.clock.advance(0)

    def backToClient(self) -> list[bytes]:
        data = self.wire.value()
        self.wire.clear()
        if data:
            self.client.bio_write(data)
        got = []
        try:
            while True:
                got.append(self.client.recv(65536))
        except (SSL.WantReadError, SSL.ZeroReturnError):
            return got

    def records(self, *messages: bytes) -> bytes:
        out = b""
        for message in messages:
            self.client.send(message)
            out += self.drainClient()
        return out


class LeanTLSTests(SynchronousTestCase):
    def both(self, run: Any) -> None:
        """
        Run C{run(pair)} over both transports; they must observe the same.
        """
        self.assertEqual(run(_Pair(LeanTLSTransport)), run(_Pair(BufferingTLSTransport)))

    def test_recordsWholeSplitAndBatched(self) -> None:
        """
        Several records in one read, a record split across reads, and a
        large record reach the application alike, and the answers back.
        """

        def run(pair: _Pair) -> Any:
            batched = pair.records(b"one", b"two", b"three")
            pair.deliver(batched)
            split = pair.records(b"x" * 5000)
            pair.deliver(split[:7])
            pair.deliver(split[7:3000])
            pair.deliver(split[3000:])
            pair.deliver(pair.records(b"y" * 40000))
            return pair.app.received, pair.backToClient()

        self.both(run)

    def test_cleanClose(self) -> None:
        """
        A close_notify after data is seen after the data, as a clean end.
        """

        def run(pair: _Pair) -> Any:
            data = pair.records(b"last")
            pair.client.shutdown()
            pair.deliver(data + pair.drainClient())
            return (
                pair.app.received,
                type(pair.app.lost.value) if pair.app.lost else None,
                pair.wire.disconnecting,
            )

        self.both(run)

    def test_brokenRecord(self) -> None:
        """
        A corrupted record ends the connection with a TLS error.
        """

        def run(pair: _Pair) -> Any:
            data = bytearray(pair.records(b"tampered"))
            data[-3] ^= 0xFF
            pair.deliver(bytes(data))
            pair.server.connectionLost(Failure(ConnectionError()))
            return pair.app.received, pair.app.lost is not None, pair.wire.disconnecting

        self.both(run)

    def test_noExceptionsPerRead(self) -> None:
        """
        A read that decrypts everything it got raises nothing inside
        pyOpenSSL (Twisted's transport raises twice per read: at the end of
        the decrypted bytes and on the empty outgoing BIO).
        """
        import OpenSSL.SSL

        raised: list[str] = []
        names = ("_raise_ssl_error", "_handle_bio_errors")
        originals = {name: getattr(OpenSSL.SSL.Connection, name) for name in names}

        def counting(name: str) -> Any:
            def check(self: Any, *args: Any) -> None:
                try:
                    originals[name](self, *args)
                except OpenSSL.SSL.Error:
                    raised.append(current)
                    raise

            return check

        for cls in (LeanTLSTransport, BufferingTLSTransport):
            current = cls.__name__
            pair = _Pair(cls)
            data = pair.records(b"ping")
            for name in names:
                self.patch(OpenSSL.SSL.Connection, name, counting(name))
            pair.deliver(data)
            for name in names:
                self.patch(OpenSSL.SSL.Connection, name, originals[name])
            self.assertEqual(pair.app.received, [b"ping"])
        self.assertEqual(raised.count("LeanTLSTransport"), 0)
        self.assertEqual(raised.count("BufferingTLSTransport"), 2)


class ReadHandledTests(SynchronousTestCase):
    def test_oncePerRead(self) -> None:
        """
        A protocol with C{readHandled} is told once per read from the
        network, after every record that read carried was delivered.
        """
        events: list[str] = []

        class _Handled(_Echo):
            def dataReceived(self, data: bytes) -> None:
                events.append("data")

            def readHandled(self) -> None:
                events.append("handled")

        pair = _Pair(LeanTLSTransport)
        pair.server.wrappedProtocol = _Handled()
        pair.deliver(pair.records(b"a", b"b", b"c"))
        self.assertEqual(events, ["data", "data", "data", "handled"])
