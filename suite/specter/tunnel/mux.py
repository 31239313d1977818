"""
The stream multiplexer shared by both ends of a tunnel link.

A L{Link} owns one TLS connection and many L{Stream}s.  Each stream
splices one local connection (a visitor on the gateway, the target on the
client) with the peer, without parsing what it carries.

Flow control: each direction of a stream has a window (C{window} bytes).
The sender may have at most that many bytes unacknowledged; the receiver
grants more with C{WINDOW} frames only while its local connection accepts
writes (it registers as that connection's producer).  A sender whose window
is empty, or whose link is write-blocked, pauses reading from its local
connection.  So a visitor or target that stops reading stops its peer
rather than growing a buffer anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.netutil import noDelay
from suite.specter.tunnel.frames import (
    CLOSE,
    CONTROL,
    DATA,
    HEADER,
    MAX_PAYLOAD,
    OPEN,
    RESET,
    WINDOW,
    FrameDecoder,
    FrameError,
    decodeControl,
    decodeWindow,
    encodeControl,
    encodeFrame,
    encodeWindow,
)

__all__ = [
    "Link",
    "Stream",
    "LocalSide",
    "eagerWrites",
    "closeTransport",
    "abortTransport",
    "DEFAULT_WINDOW",
    "DEFAULT_CHUNK",
]

log = Logger()
DEFAULT_WINDOW = 256 * 1024
DEFAULT_CHUNK = 16 * 1024
_pack = HEADER.pack


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
        if (
            data
            and not conn.dataBuffer
            and not conn._tempDataBuffer
            and conn.connected
            and not conn.disconnecting
            and not conn._writeDisconnecting
            and not conn._writeDisconnected
            and not conn.TLS
        ):
            sent = conn.writeSomeData(data)
            if not isinstance(sent, Exception) and sent > 0:
                if sent >= len(data):
                    return
                data = data[sent:]
        self.buffered(conn, data)


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


class LocalSide(Protocol):
    """
    What a stream needs of its local connection: the protocol whose
    C{transport} it writes to and pauses.  Subclasses feed received bytes
    to C{self.stream.send}.
    """

    stream: Stream | None = None
    transport: Any = None


@implementer(IPushProducer)
class Stream:
    """
    One spliced byte stream inside a link.

    @ivar sendWindow: bytes the peer still accepts from us.
    @ivar pending: bytes read locally that did not fit the window (at most
        one read's worth: the local side is paused while this is non-empty).
    """

    def __init__(self, link: Link, sid: int, window: int) -> None:
        self.link = link
        self.sid = sid
        self.sendWindow = window
        self.window = window
        self.unacked = 0
        self.pending = b""
        self.local: LocalSide | None = None
        self.localTransport: Any = None
        self.localWritePaused = False
        self.sourcePaused = False
        self.closeSent = False
        self.closeReceived = False
        self.buffered: list[bytes] = []
        self.bytesIn = 0
        self.bytesOut = 0
        self.onReset: Callable[[str], None] | None = None

    # -- wiring ------------------------------------------------------------------------
    def attach(self, local: LocalSide) -> None:
        """
        Splice this stream with C{local}, whose transport is connected.
        Data that arrived before is written out now.
        """
        self.local = local
        local.stream = self
        self.localTransport = local.transport
        self.localTransport.registerProducer(self, True)
        buffered, self.buffered = self.buffered, []
        for chunk in buffered:
            self._deliver(chunk)
        if self.closeReceived:
            closeTransport(self.localTransport)
        self._updateSource()

    # -- local -> peer -----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """
        Send bytes read from the local connection to the peer.
        """
        if self.closeSent:
            return
        if self.pending:
            self.pending += data
            self._updateSource()
            return
        self._push(data)

    def _push(self, data: bytes) -> None:
        window = self.sendWindow
        if len(data) > window:
            data, self.pending = data[:window], data[window:]
        if data:
            link = self.link
            chunk = link.chunk
            size = len(data)
            self.sendWindow = window - size
            self.bytesOut += size
            if size <= chunk:
                link.write(_pack(DATA, self.sid, size) + data)
            else:
                sid = self.sid
                view = memoryview(data)
                parts = []
                for start in range(0, size, chunk):
                    piece = view[start : start + chunk]
                    parts.append(_pack(DATA, sid, len(piece)))
                    parts.append(piece.tobytes())
                link.write(b"".join(parts))
        self._updateSource()

    def sendClose(self) -> None:
        """
        The local connection ended: tell the peer, and forget the stream.
        """
        if not self.closeSent:
            self.closeSent = True
            if self.pending:
                pending, self.pending = self.pending, b""
                self.link.write(encodeFrame(DATA, self.sid, pending))
            self.link.write(encodeFrame(CLOSE, self.sid))
        self.link.forget(self.sid)

    def localLost(self) -> None:
        """
        The local connection was lost.
        """
        self.local = None
        self.localTransport = None
        self.sendClose()

    def _updateSource(self) -> None:
        transport = self.localTransport
        if transport is None:
            return
        blocked = bool(self.pending) or self.sendWindow <= 0 or self.link.writePaused
        if blocked and not self.sourcePaused:
            self.sourcePaused = True
            transport.pauseProducing()
        elif not blocked and self.sourcePaused:
            self.sourcePaused = False
            transport.resumeProducing()

    # -- peer -> local -----------------------------------------------------------------
    def received(self, kind: int, payload: bytes) -> None:
        """
        A frame for this stream arrived from the peer.
        """
        if kind == DATA:
            self.bytesIn += len(payload)
            if self.localTransport is None:
                if self.local is None and not self.closeSent:
                    self.buffered.append(payload)
                    if sum(map(len, self.buffered)) > self.window:
                        raise FrameError(f"stream {self.sid}: peer overran its window")
                return
            self._deliver(payload)
        elif kind == WINDOW:
            self.sendWindow += decodeWindow(payload)
            if self.pending:
                pending, self.pending = self.pending, b""
                self._push(pending)
            else:
                self._updateSource()
        elif kind == CLOSE:
            self.closeReceived = True
            if self.localTransport is not None:
                closeTransport(self.localTransport)
            elif self.local is None and self.closeSent:
                self.link.forget(self.sid)
        elif kind == RESET:
            reason = payload.decode("utf-8", "replace")
            self.closeReceived = True
            if self.onReset is not None:
                self.onReset(reason)
            elif self.localTransport is not None:
                closeTransport(self.localTransport)
            self.closeSent = True
            self.link.forget(self.sid)

    def _deliver(self, payload: bytes) -> None:
        self.localTransport.write(payload)
        self.unacked += len(payload)
        if not self.localWritePaused and self.unacked >= self.window // 2:
            self._credit()

    def _credit(self) -> None:
        if self.unacked and not self.closeSent:
            self.link.write(_pack(WINDOW, self.sid, 4) + encodeWindow(self.unacked))
        self.unacked = 0

    # -- IPushProducer for the local transport (it asks us to stop writing) ----------
    def pauseProducing(self) -> None:
        """
        The local connection's write buffer is full: stop granting window.
        """
        self.localWritePaused = True

    def resumeProducing(self) -> None:
        """
        The local connection drained: grant what it consumed.
        """
        self.localWritePaused = False
        self._credit()

    def stopProducing(self) -> None:
        """
        The local connection is going away.
        """
        self.localWritePaused = True

    def reset(self, reason: str) -> None:
        """
        Abort the stream and tell the peer why.
        """
        if not self.closeSent:
            self.closeSent = True
            self.link.write(encodeFrame(RESET, self.sid, reason.encode("utf-8")[:512]))
        self.link.forget(self.sid)
        if self.localTransport is not None:
            closeTransport(self.localTransport)

    def linkLost(self) -> None:
        """
        The link died under the stream.
        """
        self.closeSent = True
        if self.onReset is not None:
            self.onReset("tunnel link lost")
        elif self.localTransport is not None:
            closeTransport(self.localTransport)


@implementer(IPushProducer)
class Link(Protocol):
    """
    One end of a tunnel link.  Subclasses implement L{controlReceived} and
    L{streamOpened}.

    @ivar writePaused: the TLS connection's write buffer is full; every
        stream pauses its local reader until it drains.
    """

    streamParity = 1
    transport: Any = None

    def __init__(self, window: int = DEFAULT_WINDOW, chunk: int = DEFAULT_CHUNK) -> None:
        self.window = window
        self.chunk = chunk
        self.streams: dict[int, Stream] = {}
        self.writePaused = False
        self._nextId = self.streamParity
        self._decoder = FrameDecoder(self._frame, MAX_PAYLOAD)
        self.closed = False

    def connectionMade(self) -> None:
        noDelay(self.transport)
        eagerWrites(self.transport)
        self.transport.registerProducer(self, True)

    def write(self, data: bytes) -> None:
        """
        Write framed bytes to the link.
        """
        self.transport.write(data)

    def sendControl(self, message: dict[str, Any]) -> None:
        """
        Send a control message on stream 0.
        """
        if not self.closed:
            self.transport.write(encodeControl(message))

    def close(self) -> None:
        """
        Close the link (its streams end with it).
        """
        if self.transport is not None and not self.closed:
            closeTransport(self.transport)

    def openStream(self, meta: dict[str, Any]) -> Stream:
        """
        Open a new stream to the peer, described by C{meta}.
        """
        sid = self._nextId
        self._nextId += 2
        stream = Stream(self, sid, self.window)
        self.streams[sid] = stream

        self.write(encodeFrame(OPEN, sid, msgpack.packb(meta, use_bin_type=True)))
        return stream

    def forget(self, sid: int) -> None:
        """
        Drop a finished stream.
        """
        self.streams.pop(sid, None)

    def dataReceived(self, data: bytes) -> None:
        try:
            self._decoder.feed(data)
        except FrameError as e:
            log.warn(
                "tunnel link from {peer} broke the frame format: {error}", peer=self._peer(), error=str(e)
            )
            closeTransport(self.transport)

    def _peer(self) -> str:
        try:
            peer: Any = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:
            return "?"

    def _frame(self, kind: int, sid: int, payload: bytes) -> None:
        if kind == CONTROL:
            self.controlReceived(decodeControl(payload))
            return
        if kind == OPEN:
            if sid in self.streams or sid % 2 == self.streamParity % 2 or sid == 0:
                raise FrameError(f"bad OPEN for stream {sid}")
            stream = Stream(self, sid, self.window)
            self.streams[sid] = stream
            self.streamOpened(stream, decodeControl(payload))
            return
        known = self.streams.get(sid)
        if known is None:
            return  # late frames for a stream we already finished
        known.received(kind, payload)

    def controlReceived(self, message: dict[str, Any]) -> None:
        """
        A control message arrived.
        """

    def streamOpened(self, stream: Stream, meta: dict[str, Any]) -> None:
        """
        The peer opened C{stream}; attach it or L{Stream.reset} it.
        """
        stream.reset("streams are not accepted here")

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.closed = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.linkLost()

    # -- IPushProducer: the TLS connection asks us to stop writing ---------------------
    def pauseProducing(self) -> None:
        """
        The link's write buffer is full: pause every stream's local reader.
        """
        self.writePaused = True
        for stream in list(self.streams.values()):
            stream._updateSource()

    def resumeProducing(self) -> None:
        """
        The link drained: let streams read again.
        """
        self.writePaused = False
        for stream in list(self.streams.values()):
            stream._updateSource()

    def stopProducing(self) -> None:
        """
        The link is closing.
        """
        self.writePaused = True
