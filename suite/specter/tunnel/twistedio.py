"""
What the tunnel data path relies on in Twisted beyond its public API, kept
in this one module.

  - L{eagerWrites} reads and drives the write buffer of
    C{twisted.internet.tcp.Connection} (C{dataBuffer}, C{_tempDataBuffer},
    C{_writeDisconnecting}, C{_writeDisconnected}, C{TLS},
    C{writeSomeData}) to send at once when nothing is buffered;
  - L{closeTransport} reads C{TLSMemoryBIOProtocol._lostTLSConnection};
  - L{leanDispatch} replaces C{EPollReactor.doPoll} (as the reactor's
    C{doIteration}, which C{ReactorBase.mainLoop} calls) for one reactor,
    and handles a readable TCP connection as C{_doReadOrWrite} and
    C{tcp.Connection.doRead}/C{_dataReceived} do (C{socket}, C{bufferSize},
    C{protocol}, C{fileno}; C{_disconnectSelectable}, C{_NO_FILEDESC});
  - L{LeanTLSTransport} re-implements C{TLSMemoryBIOProtocol}'s
    C{dataReceived}, C{_flushReceiveBIO}, C{_flushSendBIO} and (for
    gathered writes) C{write}/C{_write} once the handshake is done, and
    replaces C{BufferingTLSTransport}'s per-connection write aggregation
    (its C{write} instance attribute, C{_aggregator}) with L{TurnWrites},
    which sends from a hook of the lean poll; for an eager connection
    under it, it sends as L{eagerWrites} does, from OpenSSL's buffer.
    It keeps the attributes of C{TLSMemoryBIOProtocol} and
    C{ProtocolWrapper} its read and write paths read (C{_tlsConnection},
    C{_handshakeDone}, C{_appSendBuffer}, C{_lostTLSConnection},
    C{_aborted}, C{disconnecting}, C{_producer}, C{wrappedProtocol},
    C{transport}) as properties stored in a slotted L{_TLSState}, which
    Twisted's code sets and reads through them.
    It calls OpenSSL through pyOpenSSL's bindings (C{SSL_read},
    C{SSL_write}, C{BIO_write}, C{BIO_get_mem_data} on pyOpenSSL
    C{Connection}'s C{_ssl}, C{_into_ssl} and C{_from_ssl}) and leaves
    every failure to pyOpenSSL's C{_raise_ssl_error} and
    C{_handle_bio_errors}.

C{tests/test_twisted_private.py} checks each of these against the installed
Twisted and pyOpenSSL (and setup.cfg caps Twisted below the next major
release): when a check fails after an upgrade, review this module against
the new version.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "eagerWrites",
    "abortTransport",
    "closeTransport",
    "LeanTLSTransport",
    "TurnWrites",
    "LeanClientTLSEndpoint",
    "leanDispatch",
]


_log = Logger()

#: The event of a readable connection (Twisted's C{EPollReactor._POLL_IN}).
_EPOLLIN = EPollReactor._POLL_IN
#: What tcp.Connection.doRead takes for "nothing to read yet".
_EWOULDBLOCK = tcp.EWOULDBLOCK


def leanDispatch(reactor: Any) -> bool:
    """
    Make an epoll C{reactor} hand each network event straight to its
    handler; return whether it was done (other reactors are left alone).

    Twisted's C{doPoll} runs every event through
    C{twisted.python.log.callWithLogger}, which asks the selectable for its
    log prefix and pushes a fresh log context for the call (about 1.4 µs
    per event, 5-10 % of the tunnel's CPU per HTTP/1.1 request).  The
    context only names the connection in C{twisted.python.log} (legacy)
    messages; the suite logs through C{twisted.logger}, which does not read
    it.  Errors escaping an event handler are logged and the reactor goes
    on, as with C{callWithLogger}.

    The common event, a TCP connection readable (C{EPOLLIN} alone), is
    handled here as C{_doReadOrWrite} and C{tcp.Connection.doRead} would
    handle it, without their three Python calls; every other event goes to
    C{_doReadOrWrite}.  After the events of a poll are handled, the hooks
    added to C{after} during them run (L{TurnWrites} sends there what the
    events made connections write).
    """
    if not isinstance(reactor, EPollReactor) or "doIteration" in vars(reactor):
        return False
    reactor.doIteration = _LeanPoll(reactor)  # type: ignore[method-assign]
    return True


def _leanPoll(clock: Any) -> _LeanPoll | None:
    """
    The L{_LeanPoll} of C{clock} if L{leanDispatch} made it lean.
    """
    poll = getattr(clock, "doIteration", None)
    return poll if type(poll) is _LeanPoll else None


#: tcp.Connection.doRead, which _LeanPoll does itself for connections whose
#: doRead and _dataReceived are Twisted's.
_TCP_DO_READ = tcp.Connection.doRead
_TCP_DATA_RECEIVED = tcp.Connection._dataReceived


class _LeanPoll:
    """
    C{EPollReactor.doPoll} without the per-event log context (see
    L{leanDispatch}).

    @ivar after: hooks to run once the events being handled are (added
        while C{dispatching}).
    @ivar dispatching: whether the events of a poll are being handled.
    """

    __slots__ = ("reactor", "after", "dispatching", "plain")

    def __init__(self, reactor: EPollReactor) -> None:
        self.reactor = reactor
        self.after: list[Callable[[], None]] = []
        self.dispatching = False
        #: selectable types known to read as tcp.Connection does
        self.plain: dict[type, bool] = {}

    def __call__(self, timeout: float | None) -> None:
        reactor = self.reactor
        selectables = reactor._selectables
        try:
            events = reactor._poller.poll(-1 if timeout is None else timeout, len(selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        dispatch = reactor._doReadOrWrite
        plain = self.plain
        self.dispatching = True
        try:
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                try:
                    if event != _EPOLLIN:
                        dispatch(selectable, fd, event)
                        continue
                    kind = type(selectable)
                    isPlain = plain.get(kind)
                    if isPlain is None:
                        isPlain = plain[kind] = (
                            isinstance(selectable, tcp.Connection)
                            and kind._dataReceived is _TCP_DATA_RECEIVED
                        )
                    # a connecting or closed tcp.Client reads with another doRead
                    if not isPlain or getattr(selectable.doRead, "__func__", None) is not _TCP_DO_READ:
                        dispatch(selectable, fd, event)
                        continue
                    # _doReadOrWrite and tcp.Connection.doRead for EPOLLIN alone
                    why: Any = None
                    inRead = False
                    try:
                        if selectable.fileno() == -1:
                            why = _NO_FILEDESC
                        else:
                            try:
                                data = selectable.socket.recv(selectable.bufferSize)
                            except OSError as se:
                                if se.args[0] != _EWOULDBLOCK:
                                    why = CONNECTION_LOST
                            else:
                                if data:
                                    selectable.protocol.dataReceived(data)
                                else:
                                    why = CONNECTION_DONE
                            inRead = True
                    except BaseException:  # as _doReadOrWrite: logged, the connection dropped
                        why = sys.exc_info()[1]
                        inRead = False
                        legacyLog.err()
                    if why:
                        reactor._disconnectSelectable(selectable, why, inRead)
                except KeyboardInterrupt:
                    raise
                except BaseException:  # the reactor loop must go on: logged
                    _log.failure("unhandled error handling a network event")
            after = self.after
            while after:
                hooks, self.after = after, []
                for hook in hooks:
                    try:
                        hook()
                    except KeyboardInterrupt:
                        raise
                    except BaseException:  # the reactor loop must go on: logged
                        _log.failure("unhandled error after handling network events")
                after = self.after
        finally:
            self.dispatching = False


def _socketTransport(transport: Any) -> Any:
    """
    The L{tcp.Connection} under C{transport} (through TLS and PROXY header
    wrappers), or L{None}.
    """
    for _ in range(4):
        if isinstance(transport, tcp.Connection):
            return transport
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def eagerWrites(transport: Any) -> None:
    """
    Make the TCP connection under C{transport} send at once when its write
    buffer is empty, instead of registering for writability and sending on
    the next reactor turn.

    A plain Twisted TCP transport buffers every write, asks epoll to report
    the socket writable (one C{epoll_ctl}), sends in C{doWrite} and then
    unregisters (another C{epoll_ctl}): two extra system calls and one
    extra reactor turn per small response.  Here a write to an idle
    connection tries C{send()} directly; whatever the kernel did not take
    (or an error) goes through the normal buffered path, so back-pressure
    (C{bufferSize}, producers) and error handling are Twisted's own.
    Writes are still batched one level up: TLS transports aggregate the
    writes of a reactor turn into one record before they get here.
    """
    conn = _socketTransport(transport)
    if conn is None or "write" in vars(conn):
        return
    conn.write = _EagerWrite(conn)


#: What one eager send offers the kernel (tcp.Connection.SEND_LIMIT).
_SEND_LIMIT = tcp.Connection.SEND_LIMIT


class _EagerWrite:
    """
    The C{write} of one TCP connection made eager by L{eagerWrites}.
    """

    __slots__ = ("conn", "buffered")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.buffered = type(conn).write

    def __call__(self, data: bytes) -> None:
        conn = self.conn
        if data:
            sent = _sendNow(conn, data, len(data))
            if sent > 0:
                if sent >= len(data):
                    return
                data = data[sent:]
        self.buffered(conn, data)


def _sendNow(conn: Any, data: Any, size: int) -> int:
    """
    Send what the kernel takes of C{data} (C{size} bytes) on C{conn} at once
    when nothing is buffered and the connection is open (L{eagerWrites});
    return how many bytes left (0 otherwise, or when the send would block
    or failed: the buffered path finds out).  This is
    C{tcp.Connection.writeSomeData} without its memoryview and
    C{untilConcludes} (Python retries a send interrupted by a signal).
    """
    if (
        conn.dataBuffer
        or conn._tempDataBuffer
        or not conn.connected
        or conn.disconnecting
        or conn._writeDisconnecting
        or conn._writeDisconnected
        or conn.TLS
    ):
        return 0
    try:
        sent: int = conn.socket.send(data if size <= _SEND_LIMIT else data[:_SEND_LIMIT])
    except OSError:
        return 0
    return sent


def abortTransport(transport: Any) -> None:
    """
    Abort the TCP connection under C{transport} (through TLS and PROXY
    wrappers): a reset without a TLS C{close_notify}, so the peer cannot
    take what it received for a complete answer.  (A TLS transport's own
    C{abortConnection} sends C{close_notify} first.)
    """
    conn = _socketTransport(transport)
    (conn if conn is not None else transport).abortConnection()


def closeTransport(transport: Any) -> None:
    """
    Close C{transport} after dropping its registered producer: a TLS
    transport does not send its close alert while a producer is registered.
    """
    if getattr(transport, "disconnected", False) or getattr(transport, "_lostTLSConnection", False):
        return
    unregister = getattr(transport, "unregisterProducer", None)
    if unregister is not None:
        try:
            unregister()
        except RuntimeError:  # no producer registered (test transports say so)
            pass
    transport.loseConnection()


#: Decrypted bytes read at once (Twisted's size); one buffer for every
#: connection, copied out before the bytes are delivered.
_READ_SIZE = 2**15
_READ_BUFFER = _ffi.new("char[]", _READ_SIZE)
#: Encrypted bytes taken from a connection's outgoing BIO at once through
#: one shared buffer (more is read through pyOpenSSL).
_OUT_SIZE = 2**17
_OUT_BUFFER = _ffi.new("char[]", _OUT_SIZE)
#: Application bytes per TLS record written (Twisted's size).
_RECORD = 2**14


class TurnWrites:
    """
    The writes of many TLS connections, gathered and sent once per reactor
    turn for all of them (Twisted's TLS transport schedules a delayed call
    per connection), or earlier by L{flush} (the gateway calls it when a
    tunnel link read has been handled, so the answers it carried leave at
    once).

    On a reactor made lean by L{leanDispatch}, writes made while network
    events are handled are sent right after the events of that poll, by a
    hook of the poll; other writes (timed calls, other reactors, tests'
    C{task.Clock}) are sent by one C{callLater(0)}.
    """

    #: Bytes a connection gathers before they are sent regardless.
    limit = 64_000

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.dirty: dict[LeanTLSTransport, None] = {}
        self.call: Any = None
        self.hooked = False

    def add(self, transport: LeanTLSTransport) -> None:
        """
        C{transport} has writes to send.
        """
        self.dirty[transport] = None
        if self.call is None and not self.hooked:
            poll = _leanPoll(self.clock)
            if poll is not None and poll.dispatching:
                self.hooked = True
                poll.after.append(self._hook)
            else:
                self.call = self.clock.callLater(0, self._turn)

    def _hook(self) -> None:
        self.hooked = False
        self.flush()

    def _turn(self) -> None:
        self.call = None
        self.flush()

    def flush(self) -> None:
        """
        Send what every connection gathered.
        """
        while self.dirty:
            dirty, self.dirty = self.dirty, {}
            for transport in dirty:
                transport.sendGathered()

    def stop(self) -> None:
        """
        Cancel the pending turn (tests, shutdown).
        """
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


class _TLSState:
    """
    What L{LeanTLSTransport}'s read and write paths look at, on an object
    of a plain class (slots): attribute reads on the transport itself are
    slow, because C{ProtocolWrapper} defines C{__getattr__}, which keeps
    CPython from specialising any attribute read on its instances (about
    40 ns more per read, and the two paths read some 30 per request).

    The attributes of Twisted's TLS transport the paths read are
    properties of L{LeanTLSTransport} stored here (L{_stateAttribute}), so
    Twisted's code, setting and reading them as before, keeps this in
    step; C{ssl}, C{into} and C{out} are the C{SSL *} and memory BIOs of
    the pyOpenSSL connection (also slow to read from it: pyOpenSSL's
    C{Connection} has a C{__getattr__} too), taken when Twisted sets it.
    """

    __slots__ = (
        "tlsConnection",
        "ssl",
        "into",
        "out",
        "handshakeDone",
        "appSendBuffer",
        "lostTLSConnection",
        "aborted",
        "disconnecting",
        "producer",
        "wrappedProtocol",
        "transport",
        "gathered",
        "gatheredSize",
        "turnWrites",
        "handledFor",
        "handled",
    )

    def __init__(self) -> None:
        # the class-level defaults of TLSMemoryBIOProtocol and ProtocolWrapper
        self.tlsConnection: Any = None
        self.ssl: Any = None
        self.into: Any = None
        self.out: Any = None
        self.handshakeDone = False
        self.appSendBuffer: list[bytes] = []
        self.lostTLSConnection = False
        self.aborted = False
        self.disconnecting: Any = 0
        self.producer: Any = None
        self.wrappedProtocol: Any = None
        self.transport: Any = None
        self.gathered: list[bytes] = []
        self.gatheredSize = 0
        self.turnWrites: TurnWrites | None = None
        self.handledFor: Any = None
        self.handled: Any = None


def _stateAttribute(name: str, field: str) -> Any:
    """
    A property of L{LeanTLSTransport} standing for Twisted's attribute
    C{name}, stored as C{field} of its L{_TLSState}.
    """
    slot = getattr(_TLSState, field)

    def set(self: Any, value: Any) -> None:
        slot.__set__(self._state, value)

    return property(
        attrgetter(f"_state.{field}"), set, doc=f"Twisted's C{{{name}}}, kept in C{{_state.{field}}}."
    )


def _setTLSConnection(self: Any, connection: Any) -> None:
    state = self._state
    state.tlsConnection = connection
    if connection is None:
        state.ssl = state.into = state.out = None
    else:
        state.ssl = connection._ssl
        state.into = connection._into_ssl
        state.out = connection._from_ssl


#: OpenSSL calls of the read and write paths, looked up once.
_SSL_read = _lib.SSL_read
_SSL_write = _lib.SSL_write
_SSL_pending = _lib.SSL_pending
_SSL_get_error = _lib.SSL_get_error
_SSL_ERROR_WANT_READ = _lib.SSL_ERROR_WANT_READ
_BIO_write = _lib.BIO_write
_BIO_read = _lib.BIO_read
_BIO_get_mem_data = _lib.BIO_get_mem_data
_NULL = _ffi.NULL
_ffiBuffer = _ffi.buffer
_fromBuffer = _ffi.from_buffer


class LeanTLSTransport(BufferingTLSTransport):
    """
    Twisted's TLS transport, reading without an exception per read, and
    (when its factory has C{turnWrites}) gathering writes per reactor turn
    for all connections at once (L{TurnWrites}).

    Twisted reads decrypted bytes until pyOpenSSL raises C{WantReadError}
    and then drains the outgoing BIO, which raises it again when there is
    nothing to send: two exceptions (each built from OpenSSL's error queue)
    for every read from the network.  Here the loop stops when neither the
    incoming BIO nor OpenSSL holds more, and the outgoing BIO is read only
    when it holds something; what is received, sent and reported is the
    same; then, when the protocol has a C{readHandled} method, it is told
    that everything the read carried was delivered (one read often carries
    several records).  Twisted's transport also gathers the writes of a turn with a
    delayed call per connection (a visitor gets one answer per turn, so
    one delayed call per answer, about a seventh of the gateway's CPU per
    HTTP/1.1 request); L{TurnWrites} does it once for all.  Once the
    handshake is done, a read (L{dataReceived}) and a send of what was
    gathered (L{sendGathered}) each run in one Python function in the
    common case (about 0.4 µs less per read and per answer than through
    Twisted's separate steps), reading their state from a L{_TLSState}.
    """

    _tlsConnection = property(
        attrgetter("_state.tlsConnection"), _setTLSConnection, doc="Twisted's C{_tlsConnection}."
    )
    _handshakeDone = _stateAttribute("_handshakeDone", "handshakeDone")
    _appSendBuffer = _stateAttribute("_appSendBuffer", "appSendBuffer")
    _lostTLSConnection = _stateAttribute("_lostTLSConnection", "lostTLSConnection")
    _aborted = _stateAttribute("_aborted", "aborted")
    disconnecting = _stateAttribute("disconnecting", "disconnecting")
    _producer = _stateAttribute("_producer", "producer")
    wrappedProtocol = _stateAttribute("wrappedProtocol", "wrappedProtocol")
    transport = _stateAttribute("transport", "transport")

    def __init__(self, factory: Any, wrappedProtocol: Any, _connectWrapped: bool = True) -> None:
        # before Twisted's __init__, which sets properties stored in it
        self._state = state = _TLSState()
        super().__init__(factory, wrappedProtocol, _connectWrapped)
        state.turnWrites = getattr(factory, "turnWrites", None)
        if state.turnWrites is not None:
            self.write = self._gather  # type: ignore[method-assign]

    def _gather(self, data: bytes) -> None:
        state = self._state
        gathered = state.gathered
        if not gathered:
            state.turnWrites.add(self)  # type: ignore[union-attr]
        gathered.append(data + b"")
        state.gatheredSize += len(data)
        if state.gatheredSize > TurnWrites.limit:
            self.sendGathered()

    def sendGathered(self) -> None:
        """
        Encrypt and send what was gathered: as records of up to 16 KiB
        (Twisted's size), all of them in one write to the connection.

        When the connection under is eager (L{eagerWrites}) and idle, the
        records are sent from OpenSSL's buffer straight to its socket, as
        L{_EagerWrite} would send them; anything unusual goes the general
        way.
        """
        state = self._state
        gathered = state.gathered
        if not gathered:
            return
        data = gathered[0] if len(gathered) == 1 else b"".join(gathered)
        gathered.clear()
        state.gatheredSize = 0
        if (
            state.tlsConnection is None
            or not state.handshakeDone
            or state.appSendBuffer
            or state.lostTLSConnection
            or (state.disconnecting and state.producer is None)
        ):
            TLSMemoryBIOProtocol.write(self, data)
            return
        ssl = state.ssl
        size = len(data)
        sent = 0
        with _fromBuffer(data) as buffer:
            while sent < size:
                result = _SSL_write(ssl, buffer + sent, min(size - sent, _RECORD))
                if result <= 0:
                    break
                sent += result
        if sent < size:
            self._flushSendBIO()
            # what OpenSSL did not take, and its error, go Twisted's way
            TLSMemoryBIOProtocol._write(self, data[sent:])
            return
        # self._flushSendBIO() and _EagerWrite, for records that fit the
        # shared buffer
        bio = state.out
        pending = _BIO_get_mem_data(bio, _NULL)
        if not pending:
            return
        if pending > _OUT_SIZE:
            state.transport.write(state.tlsConnection.bio_read(pending))
            return
        read = _BIO_read(bio, _OUT_BUFFER, pending)
        if read <= 0:
            TLSMemoryBIOProtocol._flushSendBIO(self)  # pyOpenSSL reports what went wrong
            return
        out = _ffiBuffer(_OUT_BUFFER, read)
        write = state.transport.write
        if type(write) is not _EagerWrite:
            write(out[:])
            return
        conn = write.conn
        sent = _sendNow(conn, out, read)
        if sent < read:
            write.buffered(conn, out[sent:])

    def dataReceived(self, data: bytes) -> None:
        """
        Decrypt and deliver what C{data} completes.  Once the handshake is
        done this is C{_flushReceiveBIO} (L{_receiveRecords}, then
        L{_flushSendBIO} when OpenSSL has something to send) in one
        function: keep the two in step.
        """
        state = self._state
        connection = state.tlsConnection
        if connection is None or not state.handshakeDone or state.appSendBuffer:
            super().dataReceived(data)
            return
        into = state.into
        result = _BIO_write(into, data, len(data))
        if result <= 0:
            connection._handle_bio_errors(into, result)
        while not state.lostTLSConnection:
            ssl = state.ssl
            if ssl is None:
                break
            result = _SSL_read(ssl, _READ_BUFFER, _READ_SIZE)
            if result > 0:
                if not state.aborted:
                    state.wrappedProtocol.dataReceived(_ffiBuffer(_READ_BUFFER, result)[:])
                if state.tlsConnection is None or (
                    not _SSL_pending(state.ssl) and not _BIO_get_mem_data(state.into, _NULL)
                ):
                    break
                continue
            if _SSL_get_error(ssl, result) == _SSL_ERROR_WANT_READ or not self._readFailed(
                state.tlsConnection, result
            ):
                break
        if state.tlsConnection is not None and _BIO_get_mem_data(state.out, _NULL):
            self._flushSendBIO()
        if not state.lostTLSConnection:
            protocol = state.wrappedProtocol
            if protocol is not state.handledFor:
                state.handledFor = protocol
                state.handled = getattr(protocol, "readHandled", None)
            if state.handled is not None:
                state.handled()

    def writeSequence(self, sequence: Any) -> None:
        self.write(b"".join(sequence))

    def loseConnection(self) -> None:
        self.sendGathered()
        super().loseConnection()

    def unregisterProducer(self) -> None:
        self.sendGathered()  # a disconnecting transport shuts TLS down here
        super().unregisterProducer()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        state = self._state
        state.gathered.clear()
        state.gatheredSize = 0
        super().connectionLost(reason)

    def _flushSendBIO(self) -> None:
        state = self._state
        connection = state.tlsConnection
        if connection is None:
            return
        bio = state.out
        pending = _BIO_get_mem_data(bio, _NULL)
        if not pending:
            return
        if pending > _OUT_SIZE:
            state.transport.write(connection.bio_read(pending))
            return
        read = _BIO_read(bio, _OUT_BUFFER, pending)
        if read <= 0:
            super()._flushSendBIO()  # pyOpenSSL reports what went wrong
            return
        state.transport.write(_ffiBuffer(_OUT_BUFFER, read)[:])

    def _flushReceiveBIO(self) -> None:
        self._receiveRecords()
        state = self._state
        if not state.lostTLSConnection:
            protocol = state.wrappedProtocol
            if protocol is not state.handledFor:
                # looked up once per protocol (a failed getattr raises inside)
                state.handledFor = protocol
                state.handled = getattr(protocol, "readHandled", None)
            if state.handled is not None:
                state.handled()

    def _receiveRecords(self) -> None:
        state = self._state
        while not state.lostTLSConnection:
            ssl = state.ssl
            if ssl is None:
                break
            result = _SSL_read(ssl, _READ_BUFFER, _READ_SIZE)
            if result > 0:
                data = _ffiBuffer(_READ_BUFFER, result)[:]
                if not state.aborted:
                    state.wrappedProtocol.dataReceived(data)  # ProtocolWrapper.dataReceived
                if state.tlsConnection is None or (
                    not _SSL_pending(state.ssl) and not _BIO_get_mem_data(state.into, _NULL)
                ):
                    break
                continue
            if _SSL_get_error(ssl, result) == _SSL_ERROR_WANT_READ or not self._readFailed(
                state.tlsConnection, result
            ):
                break
        if state.tlsConnection is not None:
            self._flushSendBIO()

    def _readFailed(self, connection: Any, result: int) -> bool:
        """
        C{SSL_read} returned C{result} (not data, not "a record is not
        complete yet"): act on it as Twisted does (pyOpenSSL's reading of
        the failure), and return whether to read on.
        """
        try:
            connection._raise_ssl_error(connection._ssl, result)
        except WantReadError:
            return False
        except ZeroReturnError:
            self._shutdownTLS()
            self._tlsShutdownFinished(None)
        except Error:
            self._tlsShutdownFinished(Failure())
        else:
            return False
        return True


@implementer(IStreamClientEndpoint)
class LeanClientTLSEndpoint:
    """
    C{wrapClientTLS} with L{LeanTLSTransport}: connects C{endpoint}, starts
    TLS as a client with C{creator}, and gathers the writes of all the
    connections it made with one L{TurnWrites} on C{clock}.  The protocol
    the connection attempt fires with is the application's (as with
    C{wrapClientTLS}).
    """

    def __init__(self, creator: Any, endpoint: Any, clock: Any) -> None:
        self.creator = creator
        self.endpoint = endpoint
        self.clock = clock
        self.turnWrites = TurnWrites(clock)

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        factory: Any = TLSMemoryBIOFactory(self.creator, True, protocolFactory, self.clock)
        factory.protocol = LeanTLSTransport
        factory.turnWrites = self.turnWrites
        connecting: Deferred[Any] = self.endpoint.connect(factory)
        return connecting.addCallback(lambda tls: tls.wrappedProtocol)
