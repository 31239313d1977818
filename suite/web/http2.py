"""
The HTTP/2 side of L{suite.web.limits.LimitedSite}.

Twisted's L{H2Connection} with the site's limits applied before hyper-h2
sees the bytes, and without the tracebacks its stock version logs:

  - a header block (C{HEADERS} plus its C{CONTINUATION} frames, as sent,
    compressed) larger than C{maxHeaderBlockBytes}, or one whose HPACK
    decoding passes the same size, ends the connection with C{GOAWAY}
    C{ENHANCE_YOUR_CALM} and one log line; smaller header lists over the
    site's C{maxHeaderBytes}/C{maxHeaderCount} are answered C{431} per
    request (L{suite.web.limits.LimitedRequest});
  - any other protocol error from the peer also gets its C{GOAWAY} (as
    hyper-h2 chose it) and one log line;
  - a request answered in the same read as the client's C{GOAWAY} (hyper-h2
    has closed the connection by the time the resource answers) is dropped
    with the connection instead of raising out of the TLS layer as an
    "Unhandled Error"; so is a response to a stream reset (by the client or
    by hyper-h2) before its answer was sent, instead of an unhandled error
    in the sending loop.
"""

from __future__ import annotations

from typing import Any

import h2.connection
import h2.errors
import h2.exceptions
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web._http2 import _END_STREAM_SENTINEL, H2Connection

__all__ = ["LimitedH2Connection", "LimitedHTTPChannelProtocol", "HeaderBlockScanner"]

log = Logger(namespace="suite.web.limits")

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS = 0x1
_PUSH_PROMISE = 0x5
_CONTINUATION = 0x9
_END_HEADERS = 0x4


class HeaderBlockScanner:
    """
    Follows the frame headers of a client's HTTP/2 byte stream (without
    buffering payloads) and counts the bytes of each header block: a
    C{HEADERS} frame and the C{CONTINUATION} frames up to C{END_HEADERS}.

    @ivar limit: the largest header block accepted.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._preface = len(_PREFACE)
        self._head = b""
        self._skip = 0
        self._blockBytes: int | None = None

    def feed(self, data: bytes) -> str | None:
        """
        Account for C{data}; return why the connection must end (a header
        block passed the limit), or C{None}.
        """
        view = memoryview(data)
        if self._preface:
            taken = min(self._preface, len(view))
            self._preface -= taken
            view = view[taken:]
        while len(view):
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                continue
            need = 9 - len(self._head)
            self._head += bytes(view[:need])
            view = view[need:]
            if len(self._head) < 9:
                break
            head, self._head = self._head, b""
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            self._skip = length
            if kind in (_HEADERS, _PUSH_PROMISE) or (kind == _CONTINUATION and self._blockBytes is not None):
                self._blockBytes = (self._blockBytes or 0) + length
                if self._blockBytes > self.limit:
                    return f"request header block larger than {self.limit} bytes"
                if flags & _END_HEADERS:
                    self._blockBytes = None
        return None


class _PeerConnection(h2.connection.H2Connection):
    """
    hyper-h2's connection, remembering the protocol error that made it end
    the connection.
    """

    protocolError: str | None = None

    def receive_data(self, data: Any) -> list[Any]:
        try:
            return super().receive_data(data)
        except h2.exceptions.ProtocolError as e:
            if self.protocolError is None:
                self.protocolError = str(e) or type(e).__name__
            raise


def _isClosed(conn: h2.connection.H2Connection) -> bool:
    return bool(conn.state_machine.state == h2.connection.ConnectionState.CLOSED)


class LimitedH2Connection(H2Connection):
    """
    An L{H2Connection} enforcing a header block limit (see the module
    docstring).

    @ivar maxHeaderBlockBytes: largest header block, compressed as sent and
        decoded by HPACK; set before the connection is made.
    """

    maxHeaderBlockBytes = 64 * 1024
    _refused = False

    conn: _PeerConnection

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self.conn = _PeerConnection(config=self.conn.config)

    def connectionMade(self) -> None:
        self._scanner = HeaderBlockScanner(self.maxHeaderBlockBytes)
        self.conn.decoder.max_header_list_size = self.maxHeaderBlockBytes
        self.conn.local_settings.max_header_list_size = self.maxHeaderBlockBytes
        super().connectionMade()

    def _peerText(self) -> str:
        try:
            peer = self.transport.getPeer()  # type: ignore[union-attr]
        except Exception:  # only names the peer in the log line
            return "-"
        return str(getattr(peer, "host", None) or peer)

    def _refuse(self, reason: str, errorCode: int | None = None) -> None:
        """
        One log line, then C{GOAWAY} (C{errorCode}, or the one hyper-h2 has
        queued already) and the end of the connection.
        """
        if self._refused:
            return
        self._refused = True
        log.info("refused HTTP/2 connection from {peer}: {reason}", peer=self._peerText(), reason=reason)
        if errorCode is not None and not _isClosed(self.conn):
            self.conn.close_connection(error_code=errorCode, additional_data=reason.encode("utf-8"))
        self._terminate(Failure(h2.exceptions.ProtocolError(reason)))

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        tooLarge = self._scanner.feed(data)
        if tooLarge is not None:
            self._refuse(tooLarge, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            return
        super().dataReceived(data)
        error = self.conn.protocolError
        if error is not None and not self._refused:
            # The stock dataReceived has sent hyper-h2's GOAWAY and ended
            # the connection: the log line.
            self._refused = True
            log.info("refused HTTP/2 connection from {peer}: {reason}", peer=self._peerText(), reason=error)

    # After the client's GOAWAY hyper-h2 refuses to send anything: a request
    # answered in the same read loses its answer with the connection.

    def _sendPrioritisedData(self, *args: object) -> None:
        if _isClosed(self.conn):
            # The connection is going away (a GOAWAY either way): the
            # sending loop ends here, the streams with the transport.
            return
        try:
            super()._sendPrioritisedData(*args)
        except h2.exceptions.StreamClosedError as e:
            # hyper-h2 reset the stream itself (the client broke its rules
            # for it) or the client reset it: the response goes nowhere.
            # (Called back from a write, maybe: the stream's state goes on
            # the next turn, after that write has returned.)
            if e.stream_id in self.streams:
                self.priority.block(e.stream_id)
            self._reactor.callLater(0, self._streamGone, e.stream_id)
            self._reactor.callLater(0, self._sendPrioritisedData)

    def _streamGone(self, streamID: int) -> None:
        stream = self.streams.get(streamID)
        if stream is not None:
            stream.connectionLost(Failure(ConnectionLost(f"stream {streamID} was reset")))
            self._requestDone(streamID)

    def remainingOutboundWindow(self, streamID: int) -> int:
        # The sending loop asks after every turn: a stream with data queued
        # and no window left waits for the client's WINDOW_UPDATE (which
        # unblocks it) instead of being picked again and again, a busy loop
        # for as long as the client keeps its window shut.
        remaining = int(super().remainingOutboundWindow(streamID))
        queue = self._outboundStreamQueues.get(streamID)
        if (
            queue
            and queue[0] is not _END_STREAM_SENTINEL
            and self.conn.local_flow_control_window(streamID) <= 0
        ):
            self.priority.block(streamID)
        return remaining

    def _handleWindowUpdate(self, event: Any) -> None:
        # The stream unblocked above may be the only one: wake the sending
        # loop waiting for one.
        super()._handleWindowUpdate(event)
        if self._sendingDeferred is not None:
            waiting, self._sendingDeferred = self._sendingDeferred, None
            waiting.callback(event.stream_id)

    def writeDataToStream(self, streamID: int, data: bytes) -> None:
        if _isClosed(self.conn):
            return
        super().writeDataToStream(streamID, data)

    def endRequest(self, streamID: int) -> None:
        if _isClosed(self.conn):
            return
        super().endRequest(streamID)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any, streamID: int) -> None:
        if _isClosed(self.conn):
            return
        super().writeHeaders(version, code, reason, headers, streamID)

    def _send100Continue(self, streamID: int) -> None:
        if _isClosed(self.conn):
            return
        super()._send100Continue(streamID)

    def _respondToBadRequestAndDisconnect(self, streamID: int) -> None:
        if _isClosed(self.conn):
            return
        super()._respondToBadRequestAndDisconnect(streamID)

    def abortRequest(self, streamID: int) -> None:
        if _isClosed(self.conn):
            return
        super().abortRequest(streamID)

    def openStreamWindow(self, streamID: int, increment: int) -> None:
        if _isClosed(self.conn):
            return
        super().openStreamWindow(streamID, increment)


class LimitedHTTPChannelProtocol(http._GenericHTTPChannelProtocol):
    """
    Twisted's HTTP/1.1-or-HTTP/2 switch, switching to L{LimitedH2Connection}
    when TLS negotiated C{h2}.
    """

    maxHeaderBlockBytes = LimitedH2Connection.maxHeaderBlockBytes

    def dataReceived(self, data: bytes) -> None:
        if self._negotiatedProtocol is None:
            channel: Any = self._channel
            if getattr(channel.transport, "negotiatedProtocol", None) == b"h2":
                # As the stock switch does, with our connection class.
                networkProducer = channel._networkProducer
                networkProducer.unregisterProducer()
                channel.setTimeout(None)
                transport = channel.transport
                h2channel: Any = LimitedH2Connection(getattr(self._factory, "reactor", None))
                h2channel.maxHeaderBlockBytes = self.maxHeaderBlockBytes
                h2channel.requestFactory = self._requestFactory
                h2channel.site = self._site
                h2channel.factory = self._factory
                h2channel.timeOut = self._timeOut
                h2channel.callLater = self._callLater
                self._channel = h2channel
                h2channel.makeConnection(transport)
                networkProducer.registerProducer(h2channel, True)
                self._negotiatedProtocol = b"h2"  # type: ignore[assignment]
        super().dataReceived(data)
