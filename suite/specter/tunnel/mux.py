"""
The stream multiplexer shared by both ends of a tunnel link.

A L{Link} owns one TLS connection and many L{Stream}s
(L{suite.specter.tunnel.stream}).  Each stream splices one local
connection (a visitor on the gateway, the target on the client) with the
peer, without parsing what it carries, under per-stream flow control; a
link whose TLS connection is write-blocked pauses every stream's local
reader.  So a visitor or target that stops reading stops its peer rather
than growing a buffer anywhere.
"""

from __future__ import annotations

from typing import Any

import msgpack
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.netutil import noDelay
from suite.specter.tunnel.frames import (
    CONTROL,
    MAX_PAYLOAD,
    OPEN,
    FrameDecoder,
    FrameError,
    decodeControl,
    encodeControl,
    encodeFrame,
)
from suite.specter.tunnel.stream import LocalSide, Stream
from suite.specter.tunnel.twistedio import abortTransport, closeTransport, eagerWrites

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
        except Exception:  # only names the peer in log lines
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
