"""
The private Twisted APIs the suite builds on are still there and still the
same.  Each check names the suite module relying on it: when one fails after
a Twisted upgrade, review that module against the new Twisted, then update
the check (and the C{twisted} upper bound in setup.cfg).
"""

from __future__ import annotations

import configparser
import errno
import hashlib
import inspect
import os
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

import twisted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: tcp.Connection.write and FileDescriptor.write (its buffering path), which
#: eagerWrites falls back to (suite/specter/tunnel/twistedio.py):
#: fingerprints of the reviewed version's source.
TCP_WRITE = ("ea311df0946d3f99", "3e46c97fc173bc7e")

#: tcp.Connection.writeSomeData, which eagerWrites does itself (one socket
#: send of up to SEND_LIMIT bytes; a failure left to the buffered path).
TCP_SEND = "2dd0d4209260b94e"


#: TLSMemoryBIOProtocol._flushReceiveBIO and _flushSendBIO, which
#: LeanTLSTransport re-implements (suite/specter/tunnel/twistedio.py).
TLS_READ_LOOP = ("b45e129f60c44862", "c034168e4f0faf2c")

#: TLSMemoryBIOProtocol.dataReceived, write and _write, which LeanTLSTransport
#: bypasses once the handshake is done (suite/specter/tunnel/twistedio.py).
TLS_WRITE = ("0c9326eac628dc89", "e029bcaebbb754c2", "b795cc8e83620d7d")

#: pyOpenSSL's Connection.recv, send, bio_write and _raise_ssl_error, whose
#: calls into OpenSSL LeanTLSTransport makes itself (leaving failures to
#: _raise_ssl_error and _handle_bio_errors).
PYOPENSSL_IO = ("84b0e9671ae37797", "3a17d0bf025164cf", "2198d63b78ada6dc", "04b0d7964c73ea9e")

#: EPollReactor.doPoll, which leanDispatch replaces, and ReactorBase.mainLoop,
#: which calls it as doIteration (suite/specter/tunnel/twistedio.py).
EPOLL_LOOP = ("09b62ae68ef01b4b", "769125a86d0cd7e9")

#: PosixReactorBase._doReadOrWrite and EPollReactor._disconnectSelectable,
#: tcp.Connection.doRead and _dataReceived: leanDispatch handles a readable
#: TCP connection (EPOLLIN alone) as they do, calling _disconnectSelectable
#: itself (suite/specter/tunnel/twistedio.py).
EPOLL_READ = ("5ffee55b79492b00", "9d6de0e555ea44fe", "20ac74ffecd6b7f2", "7ed147aeca0c7f8a")

#: _GenericHTTPChannelProtocol.dataReceived, whose switch to HTTP/2
#: LimitedHTTPChannelProtocol repeats with its own connection class, and
#: H2Connection.dataReceived, _sendPrioritisedData, _terminate,
#: remainingOutboundWindow and _handleWindowUpdate, which
#: LimitedH2Connection wraps (suite/web/http2.py).
H2_SWITCH = "78cfa9e577361848"
H2_CONNECTION = (
    "750829ca7cb270cd",
    "962d5b59c8d38671",
    "bd1de5e20b977e09",
    "1dc7640eb46fbc97",
    "167aa98e3c8ef72d",
)


def _fingerprint(f: Any) -> str:
    return hashlib.sha256(inspect.getsource(f).encode()).hexdigest()[:16]


class PrivateAPITests(SynchronousTestCase):
    """
    One test per private API, failing with what to review.
    """

    def test_tcpWriteBuffer(self) -> None:
        """
        suite/specter/tunnel/twistedio.py (eagerWrites) reads the write
        buffer state of twisted.internet.tcp.Connection and falls back to
        its own C{write}: the attributes are there, C{write} is the
        buffering one of L{FileDescriptor}, and C{writeSomeData} returns
        the count sent (or an exception instance).
        """
        from twisted.internet import tcp
        from twisted.internet.abstract import FileDescriptor
        from twisted.internet.protocol import Protocol

        class _Socket:
            def setblocking(self, flag: bool) -> None:
                pass

            def fileno(self) -> int:
                return 99

            def send(self, data: Any) -> int:
                return 2

        conn = tcp.Connection(_Socket(), Protocol(), MemoryReactorClock())  # type: ignore[arg-type]
        for name in (
            "dataBuffer",
            "_tempDataBuffer",
            "disconnecting",
            "_writeDisconnecting",
            "_writeDisconnected",
            "TLS",
        ):
            self.assertTrue(hasattr(conn, name), f"tcp.Connection.{name} is gone")
        self.assertEqual(
            (_fingerprint(tcp.Connection.write), _fingerprint(FileDescriptor.write)),
            TCP_WRITE,
            "tcp.Connection.write changed: review eagerWrites in suite/specter/tunnel/twistedio.py, "
            "then update TCP_WRITE",
        )
        self.assertEqual(conn.writeSomeData(b"abcd"), 2)
        self.assertEqual(
            _fingerprint(tcp.Connection.writeSomeData),
            TCP_SEND,
            "tcp.Connection.writeSomeData changed: review eagerWrites in suite/specter/tunnel/twistedio.py, "
            "then update TCP_SEND",
        )
        self.assertIsInstance(tcp.Connection.SEND_LIMIT, int)

    def test_tlsLost(self) -> None:
        """
        suite/specter/tunnel/twistedio.py (closeTransport) reads
        TLSMemoryBIOProtocol._lostTLSConnection.
        """
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        self.assertIn(
            "self._lostTLSConnection = True", inspect.getsource(TLSMemoryBIOProtocol.connectionLost)
        )
        self.assertIs(TLSMemoryBIOProtocol._lostTLSConnection, False)

    def test_tlsStateAttributes(self) -> None:
        """
        suite/specter/tunnel/twistedio.py (LeanTLSTransport) keeps these
        attributes of Twisted's TLS transport in a slotted object, as
        properties: Twisted must still set them on the transport with
        these names (and the class defaults it relies on must hold), and
        pyOpenSSL's Connection must keep its C{SSL *} and memory BIOs for
        its lifetime.
        """
        from OpenSSL import SSL
        from twisted.internet.protocol import Protocol
        from twisted.protocols.policies import ProtocolWrapper
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        tls = inspect.getsource(TLSMemoryBIOProtocol)
        wrapper = inspect.getsource(ProtocolWrapper)
        for name in ("_tlsConnection", "_handshakeDone", "_appSendBuffer", "_lostTLSConnection", "_aborted"):
            self.assertIn(f"self.{name} = ", tls, name)
        self.assertIn("self._producer = ", tls)
        self.assertIn("self.disconnecting = ", tls)
        self.assertIn("self.wrappedProtocol = ", wrapper)
        self.assertIn("self.transport = transport", inspect.getsource(Protocol.makeConnection))
        self.assertEqual(
            (
                TLSMemoryBIOProtocol._handshakeDone,
                TLSMemoryBIOProtocol._lostTLSConnection,
                TLSMemoryBIOProtocol._aborted,
                TLSMemoryBIOProtocol._producer,
                ProtocolWrapper.disconnecting,
            ),
            (False, False, False, None, 0),
        )
        self.assertIn("_ssl", SSL.Connection.__init__.__code__.co_names)
        self.assertIn("_into_ssl", SSL.Connection.__init__.__code__.co_names)
        self.assertIn("_from_ssl", SSL.Connection.__init__.__code__.co_names)

    def test_tlsReadLoop(self) -> None:
        """
        suite/specter/tunnel/twistedio.py (LeanTLSTransport) re-implements
        TLSMemoryBIOProtocol._flushReceiveBIO and _flushSendBIO, and reads
        the memory BIOs of pyOpenSSL's Connection through OpenSSL's
        BIO_get_mem_data.
        """
        from OpenSSL import SSL
        from OpenSSL._util import ffi, lib
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        self.assertEqual(
            (
                _fingerprint(TLSMemoryBIOProtocol._flushReceiveBIO),
                _fingerprint(TLSMemoryBIOProtocol._flushSendBIO),
            ),
            TLS_READ_LOOP,
            "TLSMemoryBIOProtocol's BIO loops changed: review LeanTLSTransport in "
            "suite/specter/tunnel/twistedio.py, then update TLS_READ_LOOP",
        )
        connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        connection.set_connect_state()
        with self.assertRaises(SSL.WantReadError):
            connection.do_handshake()
        pending = lib.BIO_get_mem_data(connection._from_ssl, ffi.NULL)
        self.assertGreater(pending, 0)
        self.assertEqual(len(connection.bio_read(65536)), pending)
        self.assertEqual(lib.BIO_get_mem_data(connection._from_ssl, ffi.NULL), 0)
        self.assertEqual(lib.BIO_get_mem_data(connection._into_ssl, ffi.NULL), 0)
        connection.bio_write(b"12345")
        self.assertEqual(lib.BIO_get_mem_data(connection._into_ssl, ffi.NULL), 5)

    def test_tlsWritePath(self) -> None:
        """
        suite/specter/tunnel/twistedio.py (LeanTLSTransport) replaces
        TLSMemoryBIOProtocol's dataReceived and write/_write after the
        handshake with calls into OpenSSL through pyOpenSSL's bindings,
        as pyOpenSSL's Connection.recv, send and bio_write make them.
        """
        from OpenSSL import SSL
        from OpenSSL._util import lib
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        self.assertEqual(
            tuple(
                _fingerprint(getattr(TLSMemoryBIOProtocol, n)) for n in ("dataReceived", "write", "_write")
            ),
            TLS_WRITE,
            "TLSMemoryBIOProtocol's dataReceived/write/_write changed: review LeanTLSTransport in "
            "suite/specter/tunnel/twistedio.py, then update TLS_WRITE",
        )
        self.assertEqual(
            tuple(
                _fingerprint(getattr(SSL.Connection, n))
                for n in ("recv", "send", "bio_write", "_raise_ssl_error")
            ),
            PYOPENSSL_IO,
            "pyOpenSSL's Connection I/O changed: review LeanTLSTransport in "
            "suite/specter/tunnel/twistedio.py, then update PYOPENSSL_IO",
        )
        for name in ("SSL_read", "SSL_write", "SSL_pending", "BIO_write", "BIO_get_mem_data"):
            self.assertTrue(hasattr(lib, name), f"OpenSSL binding {name} is gone")
        connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        for name in ("_ssl", "_into_ssl", "_from_ssl", "_handle_bio_errors"):
            self.assertTrue(hasattr(connection, name), f"pyOpenSSL Connection.{name} is gone")

    def test_epollLoop(self) -> None:
        """
        suite/specter/tunnel/twistedio.py (leanDispatch) replaces
        EPollReactor.doPoll (the reactor's doIteration, called by
        ReactorBase.mainLoop) and reads its _poller, _selectables and
        _doReadOrWrite.
        """
        from twisted.internet.base import ReactorBase
        from twisted.internet.epollreactor import EPollReactor

        self.assertIs(EPollReactor.doIteration, EPollReactor.doPoll)
        self.assertEqual(
            (_fingerprint(EPollReactor.doPoll), _fingerprint(ReactorBase.mainLoop)),
            EPOLL_LOOP,
            "EPollReactor.doPoll or ReactorBase.mainLoop changed: review leanDispatch in "
            "suite/specter/tunnel/twistedio.py, then update EPOLL_LOOP",
        )
        reactor = EPollReactor()
        try:
            for name in ("_poller", "_selectables", "_doReadOrWrite", "_disconnectSelectable"):
                self.assertTrue(hasattr(reactor, name), f"EPollReactor.{name} is gone")
        finally:
            reactor._poller.close()

    def test_epollRead(self) -> None:
        """
        suite/specter/tunnel/twistedio.py (leanDispatch) does what
        _doReadOrWrite and tcp.Connection.doRead do for a readable TCP
        connection: the event constants, the error values and the
        connection attributes it reads are there, and the code it mirrors
        is the reviewed version.
        """
        import select

        from twisted.internet import main, posixbase, tcp
        from twisted.internet.epollreactor import EPollReactor

        self.assertEqual(
            (
                _fingerprint(EPollReactor._doReadOrWrite),
                _fingerprint(EPollReactor._disconnectSelectable),
                _fingerprint(tcp.Connection.doRead),
                _fingerprint(tcp.Connection._dataReceived),
            ),
            EPOLL_READ,
            "Twisted's read dispatch or tcp.Connection.doRead changed: review leanDispatch in "
            "suite/specter/tunnel/twistedio.py, then update EPOLL_READ",
        )
        self.assertEqual(EPollReactor._POLL_IN, select.EPOLLIN)
        self.assertIs(posixbase.CONNECTION_LOST, main.CONNECTION_LOST)
        self.assertIsInstance(posixbase._NO_FILEDESC, Exception)
        self.assertEqual(tcp.EWOULDBLOCK, errno.EWOULDBLOCK)
        self.assertIn(
            "self.fileno: Callable[[], int] = skt.fileno", inspect.getsource(tcp.Connection.__init__)
        )
        self.assertIsInstance(tcp.Connection.bufferSize, int)

    def test_clientFactory(self) -> None:
        """
        suite/ceptra/service.py swaps HTTPConnectionPool._factory for a
        quiet subclass of twisted.web.client._HTTP11ClientFactory.
        """
        from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

        pool = HTTPConnectionPool(MemoryReactorClock())
        self.assertIs(pool._factory, _HTTP11ClientFactory)
        self.assertTrue(hasattr(_HTTP11ClientFactory, "noisy"))

    def test_alpn(self) -> None:
        """
        suite/pki/tls.py reuses twisted.internet._sslverify.protosFromProtocol
        in its ALPN select callback.
        """
        from twisted.internet._sslverify import protosFromProtocol

        self.assertEqual(
            list(inspect.signature(protosFromProtocol).parameters), ["tlsProto", "acceptableProtocols"]
        )

    def test_haproxy(self) -> None:
        """
        suite/specter/gateway/proxyproto.py subclasses the PROXY protocol
        wrapper and reads its parser state.
        """
        from twisted.internet.protocol import Factory, Protocol
        from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory

        factory = HAProxyWrappingFactory(Factory.forProtocol(Protocol))
        wrapper = factory.buildProtocol(None)
        self.assertIsInstance(wrapper, HAProxyProtocolWrapper)
        for name in ("_proxyInfo", "_parser", "wrappedProtocol"):
            self.assertTrue(hasattr(wrapper, name), f"HAProxyProtocolWrapper.{name} is gone")

    def test_h2Connection(self) -> None:
        """
        suite/web/http2.py repeats Twisted's switch to HTTP/2 and wraps
        H2Connection's receive and send loops.
        """
        from twisted.web import http
        from twisted.web._http2 import H2Connection

        self.assertEqual(
            _fingerprint(http._GenericHTTPChannelProtocol.dataReceived),
            H2_SWITCH,
            "_GenericHTTPChannelProtocol.dataReceived changed: review LimitedHTTPChannelProtocol in "
            "suite/web/http2.py, then update H2_SWITCH",
        )
        self.assertEqual(
            tuple(
                _fingerprint(getattr(H2Connection, n))
                for n in (
                    "dataReceived",
                    "_sendPrioritisedData",
                    "_terminate",
                    "remainingOutboundWindow",
                    "_handleWindowUpdate",
                )
            ),
            H2_CONNECTION,
            "H2Connection changed: review LimitedH2Connection in suite/web/http2.py, then update H2_CONNECTION",
        )

    def test_upperBound(self) -> None:
        """
        setup.cfg caps twisted, and the installed version is inside the cap.
        """
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, "setup.cfg"))
        requirement = next(
            line.strip()
            for line in parser["options"]["install_requires"].splitlines()
            if line.strip().startswith("twisted[")
        )
        self.assertIn(",<", requirement)
        cap = int(requirement.split(",<", 1)[1].split(".")[0])
        self.assertLess(int(twisted.__version__.split(".")[0]), cap)
