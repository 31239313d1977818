"""
L{LeanTLSTransport} delivers, sends and reports exactly what Twisted's TLS
transport does, over a memory BIO client: records whole, split and
batched, a clean close, a broken record.
"""

from __future__ import annotations

import select
import socket
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.pki.mint import mintSelfSigned
from suite.pki.tlsoptions import presentedCredentials
from suite.specter.tunnel.twistedio import (
    LeanClientTLSEndpoint,
    LeanTLSTransport,
    TurnWrites,
    _TLSState,
    leanDispatch,
)

_CERT, _KEY = mintSelfSigned(["a.test"])
_TRUST = Certificate(crypto.X509.from_cryptography(_CERT))
_OPTIONS = CertificateOptions(**presentedCredentials(_KEY, _CERT, ()))


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
    A server TLS transport of class C{cls} and a memory BIO client;
    C{gathered}: the transport's writes are gathered per turn (L{TurnWrites}).
    """

    def __init__(self, cls: type, gathered: bool = False) -> None:
        self.clock = Clock()
        self.app: Any = Factory.forProtocol(_Echo)
        factory: Any = TLSMemoryBIOFactory(_OPTIONS, False, self.app, self.clock)
        factory.protocol = cls
        if gathered:
            factory.turnWrites = TurnWrites(self.clock)
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
        Run C{run(pair)} over both transports (the lean one with and
        without gathered writes); they must observe the same.
        """
        expected = run(_Pair(BufferingTLSTransport))
        self.assertEqual(run(_Pair(LeanTLSTransport)), expected)
        self.assertEqual(run(_Pair(LeanTLSTransport, gathered=True)), expected)

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
            answers = pair.backToClient()
            pair.deliver(pair.records(b"z" * 300000))  # answers larger than one buffer
            return pair.app.received, answers, b"".join(pair.backToClient())

        self.both(run)

    def test_largeWrite(self) -> None:
        """
        One write larger than the outgoing buffer arrives whole.
        """

        def run(pair: _Pair) -> Any:
            pair.server.write(b"q" * 300000)
            pair.clock.advance(0)
            return b"".join(pair.backToClient())

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


class StateTests(SynchronousTestCase):
    """
    The attributes of Twisted's TLS transport that the lean paths read are
    kept in a slotted L{_TLSState}; Twisted's code still sets and reads
    them on the transport.
    """

    def test_twistedAttributesKeptInState(self) -> None:
        """
        What Twisted sets (at connection, handshake, abort, close) is
        what the state holds, and reads on the transport see the same;
        the OpenSSL pointers follow the pyOpenSSL connection.
        """
        pair = _Pair(LeanTLSTransport, gathered=True)
        server: Any = pair.server
        state = server._state
        self.assertIsInstance(state, _TLSState)
        self.assertTrue(server._handshakeDone)
        self.assertTrue(state.handshakeDone)
        connection = server._tlsConnection
        self.assertIs(state.tlsConnection, connection)
        self.assertIs(state.ssl, connection._ssl)
        self.assertIs(state.into, connection._into_ssl)
        self.assertIs(state.out, connection._from_ssl)
        self.assertIs(state.transport, pair.wire)
        self.assertIs(server.transport, pair.wire)
        self.assertIs(state.wrappedProtocol, server.wrappedProtocol)
        self.assertEqual((state.aborted, state.lostTLSConnection, state.disconnecting), (False, False, 0))
        server.abortConnection()
        self.assertEqual((state.aborted, state.disconnecting), (True, True))
        self.assertTrue(server._aborted)
        server.connectionLost(Failure(ConnectionError()))
        self.assertIsNone(server._tlsConnection)
        self.assertEqual((state.ssl, state.into, state.out), (None, None, None))
        self.assertIsNone(server.wrappedProtocol)

    def test_defaultsBeforeConnection(self) -> None:
        """
        Before it is connected the transport reads as Twisted's class
        defaults say.
        """
        factory: Any = TLSMemoryBIOFactory(_OPTIONS, False, Factory.forProtocol(_Echo), Clock())
        factory.protocol = LeanTLSTransport
        server: Any = factory.buildProtocol(None)
        reference: Any = BufferingTLSTransport(factory, _Echo())
        for name in (
            "_handshakeDone",
            "_lostTLSConnection",
            "_aborted",
            "disconnecting",
            "_producer",
            "transport",
        ):
            self.assertEqual(getattr(server, name), getattr(reference, name), name)

    def test_unknownAttributesFromTheTransportUnder(self) -> None:
        """
        An attribute the TLS transport lacks is still looked up on the
        transport under it (C{ProtocolWrapper.__getattr__}).
        """
        pair = _Pair(LeanTLSTransport)
        pair.wire.marker = "here"  # type: ignore[attr-defined]
        self.assertEqual(pair.server.marker, "here")
        with self.assertRaises(AttributeError):
            _ = pair.server.nothingByThisName


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


class _Endpoint:
    """
    A stream client endpoint that connects what it is given to a
    L{StringTransport} at once.
    """

    def __init__(self) -> None:
        self.wire = StringTransport()
        self.protocol: Any = None

    def connect(self, factory: Any) -> Deferred[Any]:
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.wire)
        return succeed(self.protocol)


class _Recorder(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


class LeanClientTLSEndpointTests(SynchronousTestCase):
    def test_clientOverLeanTransport(self) -> None:
        """
        The endpoint connects as a TLS client over L{LeanTLSTransport},
        fires with the application's protocol, and what the application
        writes in one turn reaches the server as one read after the turn.
        """
        clock = Clock()
        inner = _Endpoint()
        endpoint = LeanClientTLSEndpoint(optionsForClientTLS("a.test", trustRoot=_TRUST), inner, clock)
        app = _Recorder()
        connected = self.successResultOf(endpoint.connect(Factory.forProtocol(lambda: app)))
        self.assertIs(connected, app)
        self.assertIsInstance(inner.protocol, LeanTLSTransport)

        serverApp: Any = Factory.forProtocol(_Echo)
        serverFactory = TLSMemoryBIOFactory(_OPTIONS, False, serverApp, clock)
        server = serverFactory.buildProtocol(None)
        serverWire = StringTransport()
        server.makeConnection(serverWire)

        def carry() -> None:
            for _ in range(6):
                if inner.wire.value():
                    data = inner.wire.value()
                    inner.wire.clear()
                    server.dataReceived(data)
                if serverWire.value():
                    data = serverWire.value()
                    serverWire.clear()
                    inner.protocol.dataReceived(data)
                clock.advance(0)

        carry()  # the handshake
        app.transport.write(b"ping ")  # type: ignore[union-attr]
        app.transport.write(b"pong")  # type: ignore[union-attr]
        self.assertEqual(inner.wire.value(), b"")
        carry()
        self.assertEqual(serverApp.received, [b"ping pong"])
        self.assertEqual(app.received, [b"echo:ping pong"])


class LeanDispatchTests(SynchronousTestCase):
    def test_onlyEpollReactorsOnce(self) -> None:
        """
        Only an epoll reactor is changed, and only once.
        """
        from twisted.internet.epollreactor import EPollReactor

        self.assertFalse(leanDispatch(MemoryReactorClock()))
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.assertTrue(leanDispatch(reactor))
        self.assertFalse(leanDispatch(reactor))

    def test_dispatchAndErrors(self) -> None:
        """
        Every ready selectable is handed to C{_doReadOrWrite}; an error
        escaping it is logged and the next event is still dispatched.
        """
        from twisted.internet.epollreactor import EPollReactor

        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        leanDispatch(reactor)
        pairs = [socket.socketpair() for _ in range(2)]
        for a, b in pairs:
            self.addCleanup(a.close)
            self.addCleanup(b.close)
            b.send(b"x")

        class _Reader:
            def __init__(self, sock: socket.socket) -> None:
                self.sock = sock

            def fileno(self) -> int:
                return self.sock.fileno()

            def logPrefix(self) -> str:
                return "reader"

        readers = [_Reader(a) for a, _ in pairs]
        for r in readers:
            reactor.addReader(r)
        seen: list[Any] = []

        def dispatch(selectable: Any, fd: int, event: int) -> None:
            seen.append(selectable)
            if len(seen) == 1:
                raise RuntimeError("boom")

        reactor._doReadOrWrite = dispatch  # type: ignore[method-assign]
        reactor.doIteration(0)
        self.assertEqual(sorted(map(id, seen)), sorted(map(id, readers)))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class _Connection(tcp.Connection):
    """
    A TCP connection over one end of a socket pair, registered on C{reactor}
    as a reader.
    """

    def __init__(self, sock: socket.socket, protocol: Any, reactor: Any) -> None:
        super().__init__(sock, protocol, reactor)
        self.connected = 1
        protocol.makeConnection(self)


class _Events(Protocol):
    """
    Records what a TCP connection reports.
    """

    def __init__(self, fail: bool = False) -> None:
        self.events: list[Any] = []
        self.fail = fail

    def dataReceived(self, data: bytes) -> None:
        self.events.append(data)
        if self.fail:
            raise ZeroDivisionError("handler failed")

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.events.append(type(reason.value))


class LeanReadTests(SynchronousTestCase):
    """
    A lean epoll reactor reads TCP connections itself with what Twisted's
    C{_doReadOrWrite} and C{tcp.Connection.doRead} do.
    """

    def scenario(self, lean: bool, peerEnd: Any, fail: bool = False) -> tuple[list[Any], int]:
        """
        Data then C{peerEnd(peer)} on a connection of a (lean or plain)
        epoll reactor: what the protocol saw, and how many events went to
        C{_doReadOrWrite}.
        """
        from twisted.internet.epollreactor import EPollReactor

        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        if lean:
            self.assertTrue(leanDispatch(reactor))
        viaTwisted = []
        original = reactor._doReadOrWrite

        def counted(selectable: Any, fd: int, event: int) -> None:
            viaTwisted.append(event)
            original(selectable, fd, event)

        reactor._doReadOrWrite = counted  # type: ignore[method-assign]
        mine, peer = socket.socketpair()
        self.addCleanup(peer.close)
        protocol = _Events(fail)
        connection = _Connection(mine, protocol, reactor)
        connection.startReading()
        mine.send(b"left unread")
        peer.send(b"hello")
        reactor.doIteration(1)
        peerEnd(peer)
        for _ in range(3):
            if reactor._selectables:
                reactor.doIteration(0.2)
        if not reactor._selectables:
            self.assertEqual(connection.disconnected, 1)
        return protocol.events, len(viaTwisted)

    def test_dataAndCleanClose(self) -> None:
        """
        Data, then the peer's FIN: the data, then a clean close.
        """
        plain = self.scenario(False, lambda peer: peer.shutdown(socket.SHUT_WR))
        lean = self.scenario(True, lambda peer: peer.shutdown(socket.SHUT_WR))
        self.assertEqual(lean[0], plain[0])
        self.assertEqual(plain[0][-1], ConnectionDone)
        self.assertEqual(lean[1], 0)

    def test_reset(self) -> None:
        """
        A reset by the peer (it closes with data unread) is a lost
        connection, as with Twisted.
        """

        def reset(peer: socket.socket) -> None:
            peer.close()

        plain = self.scenario(False, reset)
        lean = self.scenario(True, reset)
        self.assertEqual(lean[0], plain[0])
        self.assertEqual(plain[0][-1], ConnectionLost)

    def test_handlerError(self) -> None:
        """
        An error escaping the protocol is logged and ends the connection
        with that error, as with Twisted.
        """
        plain = self.scenario(False, lambda peer: None, fail=True)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        lean = self.scenario(True, lambda peer: None, fail=True)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(lean[0], plain[0])
        self.assertEqual(plain[0], [b"hello", ZeroDivisionError])
        self.assertEqual(lean[1], 0)

    def test_otherSelectablesViaTwisted(self) -> None:
        """
        A connection with its own C{doRead} goes through C{_doReadOrWrite}.
        """
        from twisted.internet.epollreactor import EPollReactor

        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        leanDispatch(reactor)
        seen: list[int] = []
        reactor._doReadOrWrite = lambda s, fd, event: seen.append(event)  # type: ignore[method-assign]

        class _Own(_Connection):
            def doRead(self) -> None:
                pass

        mine, peer = socket.socketpair()
        self.addCleanup(peer.close)
        self.addCleanup(mine.close)
        _Own(mine, _Events(), reactor).startReading()
        peer.send(b"x")
        reactor.doIteration(1)
        self.assertEqual(seen, [select.EPOLLIN])


class _FdOnly:
    """
    A selectable that is only a file descriptor.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "fd"


class AfterEventsTests(SynchronousTestCase):
    def test_hooksAfterEvents(self) -> None:
        """
        Hooks added while events are handled run once all the events of
        the poll are, including hooks added by hooks; a failing hook is
        logged and the others still run.
        """
        from twisted.internet.epollreactor import EPollReactor

        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        leanDispatch(reactor)
        poll: Any = reactor.doIteration
        order: list[str] = []

        def later() -> None:
            order.append("later")

        def first() -> None:
            order.append("first")
            poll.after.append(later)
            raise RuntimeError("hook failed")

        def dispatch(selectable: Any, fd: int, event: int) -> None:
            self.assertTrue(poll.dispatching)
            order.append("event")
            if len(order) == 1:
                poll.after.append(first)

        reactor._doReadOrWrite = dispatch  # type: ignore[method-assign]
        pairs = [socket.socketpair() for _ in range(2)]
        for a, b in pairs:
            self.addCleanup(a.close)
            self.addCleanup(b.close)
            b.send(b"x")
            reactor.addReader(_FdOnly(a))
        reactor.doIteration(1)
        self.assertEqual(order, ["event", "event", "first", "later"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(poll.dispatching)
        self.assertEqual(poll.after, [])

    def test_turnWritesFromThePoll(self) -> None:
        """
        On a lean reactor, writes made while events are handled are sent by
        a hook of the poll (no delayed call); other writes by a delayed
        call, as on any other clock.
        """
        from twisted.internet.epollreactor import EPollReactor

        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        leanDispatch(reactor)
        poll: Any = reactor.doIteration
        turn = TurnWrites(reactor)
        sent: list[str] = []

        class _Gathering:
            def __init__(self, name: str) -> None:
                self.name = name

            def sendGathered(self) -> None:
                sent.append(self.name)

        a, b = _Gathering("a"), _Gathering("b")
        poll.dispatching = True
        turn.add(a)  # type: ignore[arg-type]
        turn.add(b)  # type: ignore[arg-type]
        self.assertEqual(len(poll.after), 1)
        self.assertIsNone(turn.call)
        poll.dispatching = False
        poll.after.pop()()
        self.assertEqual(sent, ["a", "b"])
        turn.add(a)  # type: ignore[arg-type]
        self.assertIsNotNone(turn.call)
        self.assertEqual(poll.after, [])
        self.addCleanup(turn.stop)
        reactor.runUntilCurrent()
        self.assertEqual(sent, ["a", "b", "a"])


class EagerSendTests(SynchronousTestCase):
    """
    Gathered writes of a TLS transport over an eager TCP connection are
    sent straight from OpenSSL's buffer to the socket; what the socket does
    not take is buffered by the connection.
    """

    def pair(self, sendBuffer: int | None = None) -> Any:
        from suite.specter.tunnel.twistedio import eagerWrites

        reactor = MemoryReactorClock()
        app: Any = Factory.forProtocol(_Echo)
        factory: Any = TLSMemoryBIOFactory(_OPTIONS, False, app, reactor)
        factory.protocol = LeanTLSTransport
        factory.turnWrites = TurnWrites(reactor)
        mine, peer = socket.socketpair()
        self.addCleanup(mine.close)
        self.addCleanup(peer.close)
        mine.setblocking(False)
        peer.setblocking(False)
        tls = factory.buildProtocol(None)
        connection = _Connection(mine, tls, reactor)
        eagerWrites(tls)
        client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        client.set_connect_state()

        def carry() -> list[bytes]:
            got = []
            for _ in range(6):
                try:
                    client.do_handshake()
                except SSL.WantReadError:
                    pass
                try:
                    while True:
                        tls.dataReceived(client.bio_read(65536))
                except SSL.WantReadError:
                    pass
                reactor.advance(0)
                try:
                    while True:
                        client.bio_write(peer.recv(65536))
                except BlockingIOError:
                    pass
                try:
                    while True:
                        got.append(client.recv(65536))
                except SSL.WantReadError:
                    pass
            return got

        carry()
        if sendBuffer is not None:
            mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sendBuffer)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sendBuffer)
        return tls, connection, client, carry, reactor

    def test_straightToTheSocket(self) -> None:
        """
        A gathered answer leaves by the socket at once, nothing buffered.
        """
        tls, connection, client, carry, reactor = self.pair()
        tls.write(b"one ")
        tls.write(b"two")
        reactor.advance(0)
        self.assertEqual(connection.dataBuffer, b"")
        self.assertEqual(connection._tempDataBuffer, [])
        self.assertEqual(b"".join(carry()), b"one two")

    def test_partialSendBuffered(self) -> None:
        """
        What the kernel does not take is left to the connection's buffer
        (which asks the reactor for writability) and arrives in order.
        """
        tls, connection, client, carry, reactor = self.pair(sendBuffer=4096)
        payload = bytes(range(256)) * 400
        tls.write(payload)
        reactor.advance(0)
        self.assertTrue(connection._tempDataBuffer or connection.dataBuffer)
        self.assertIn(connection, reactor.getWriters())
        got = []
        for _ in range(200):
            connection.doWrite()
            got.extend(carry())
            if b"".join(got) == payload:
                break
        self.assertEqual(b"".join(got), payload)
