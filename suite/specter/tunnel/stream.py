"""
One spliced byte stream inside a tunnel link, and the machine that owns
its lifecycle.

Inputs (L{StreamInputs}): C{attached}, C{localEnded}, C{peerClosed},
C{peerReset}, C{resetRequested}, C{linkLost}.
Outputs (on L{StreamCore}): attach the local side, close or abort it,
send C{CLOSE} or C{RESET}, tell the local side of a reset, forget the
stream.
States::

    Unattached --attached--> Open --localEnded--> LocalClosed --peerClosed--> Closed
        |                     |                                                 ^
     peerClosed           peerClosed --> PeerClosed --localEnded----------------+
        v
    UnattachedPeerClosed --attached--> PeerClosed

C{Unattached}: opened, the local connection not up yet (the client
connecting to its target): the peer's bytes are kept.  C{LocalClosed}: we
sent C{CLOSE} (our local connection ended) and wait for the peer's
C{CLOSE}; its late bytes are dropped.  C{PeerClosed}: the peer sent
C{CLOSE}; the local connection is being closed, and its end sends ours.
A reset (either way) or a lost link ends any state in C{Closed}.

Bytes do not go through the machine (an input costs about a microsecond,
and a request crosses a stream two to four times each way): the machine
gives the stream a L{_Flow} when it can carry data and takes it back (a
L{_NoFlow}) when it cannot, and the stream's C{send} and C{received} hand
bytes to whatever flow it holds.

Flow control: each direction has a window (C{window} bytes).  The sender
may have at most that many bytes unacknowledged; the receiver grants more
with C{WINDOW} frames only while its local connection accepts writes (the
stream is that connection's producer).  A sender whose window is empty, or
whose link is write-blocked, pauses reading from its local connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol as TwistedProtocol
from zope.interface import implementer

from suite.fsm import indexed
from suite.specter.tunnel.frames import (
    CLOSE,
    DATA,
    HEADER,
    RESET,
    WINDOW,
    FrameError,
    decodeWindow,
    encodeFrame,
    encodeWindow,
)
from suite.specter.tunnel.twistedio import closeTransport

if TYPE_CHECKING:
    from suite.specter.tunnel.mux import Link

__all__ = ["Stream", "LocalSide", "StreamInputs", "StreamCore", "buildStream"]

_pack = HEADER.pack


class LocalSide(TwistedProtocol):
    """
    What a stream needs of its local connection: the protocol whose
    C{transport} it writes to and pauses.  Subclasses feed received bytes
    to C{self.stream.send}.
    """

    stream: Stream | None = None
    transport: Any = None


class _Flow:
    """
    The bytes of a stream that can carry data: windows, what is pending
    either way, and the local transport they go to.

    @ivar sendWindow: bytes the peer still accepts from us.
    @ivar pending: bytes read locally that did not fit the window (at most
        one read's worth: the local side is paused while this is non-empty).
    @ivar buffered: the peer's bytes that arrived before the local side
        was attached.
    """

    __slots__ = (
        "stream",
        "link",
        "sid",
        "sendWindow",
        "window",
        "unacked",
        "pending",
        "localTransport",
        "localWritePaused",
        "sourcePaused",
        "buffered",
    )

    def __init__(self, stream: Stream, window: int) -> None:
        self.stream = stream
        self.link = stream.link
        self.sid = stream.sid
        self.sendWindow = window
        self.window = window
        self.unacked = 0
        self.pending = b""
        self.localTransport: Any = None
        self.localWritePaused = False
        self.sourcePaused = False
        self.buffered: list[bytes] = []

    # -- local -> peer -----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.pending:
            self.pending += data
            self.updateSource()
            return
        self.push(data)

    def push(self, data: bytes) -> None:
        window = self.sendWindow
        if len(data) > window:
            data, self.pending = data[:window], data[window:]
        if data:
            link = self.link
            chunk = link.chunk
            size = len(data)
            self.sendWindow = window - size
            self.stream.bytesOut += size
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
        if self.sourcePaused or self.pending or self.sendWindow <= 0 or self.link.writePaused:
            self.updateSource()  # otherwise it would find nothing to change

    def flushPending(self) -> None:
        """
        Send what is pending regardless of the window (the stream is ending).
        """
        if self.pending:
            pending, self.pending = self.pending, b""
            self.link.write(encodeFrame(DATA, self.sid, pending))

    def updateSource(self) -> None:
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
    def peerData(self, payload: bytes) -> None:
        self.stream.bytesIn += len(payload)
        if self.localTransport is None:
            self.buffered.append(payload)
            if sum(map(len, self.buffered)) > self.window:
                raise FrameError(f"stream {self.sid}: peer overran its window")
            return
        self.deliver(payload)

    def deliver(self, payload: bytes) -> None:
        self.localTransport.write(payload)
        self.unacked += len(payload)
        if not self.localWritePaused and self.unacked >= self.window // 2:
            self.credit()

    def peerWindow(self, increment: int) -> None:
        self.sendWindow += increment
        if self.pending:
            pending, self.pending = self.pending, b""
            self.push(pending)
        else:
            self.updateSource()

    def credit(self) -> None:
        if self.unacked:
            self.link.write(_pack(WINDOW, self.sid, 4) + encodeWindow(self.unacked))
        self.unacked = 0

    # -- the local transport's producer calls ------------------------------------------
    def pause(self) -> None:
        self.localWritePaused = True

    def resume(self) -> None:
        self.localWritePaused = False
        self.credit()

    def attach(self, local: LocalSide, stream: Stream) -> None:
        local.stream = stream
        self.localTransport = local.transport
        self.localTransport.registerProducer(stream, True)
        buffered, self.buffered = self.buffered, []
        for chunk in buffered:
            self.deliver(chunk)


class _NoFlow:
    """
    The flow of a stream that carries no more data: what the local side
    still sends and what the peer still sends are dropped.
    """

    __slots__ = ()
    sendWindow = 0
    pending = b""
    localTransport: Any = None
    localWritePaused = True
    sourcePaused = False

    def send(self, data: bytes) -> None:
        pass

    def peerData(self, payload: bytes) -> None:
        pass

    def peerWindow(self, increment: int) -> None:
        pass

    def updateSource(self) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


_NO_FLOW = _NoFlow()


class StreamInputs(Protocol):
    def attached(self, local: LocalSide) -> None:
        "The local connection is up: splice it."

    def localEnded(self) -> None:
        "The local connection ended (or was lost)."

    def peerClosed(self) -> None:
        "The peer sent CLOSE."

    def peerReset(self, reason: str) -> None:
        "The peer sent RESET."

    def resetRequested(self, reason: str) -> None:
        "We abort the stream (and tell the peer why)."

    def linkLost(self) -> None:
        "The link died under the stream."


@dataclass
class StreamCore:
    """
    What the stream machine acts on: the stream (its link, its flow, its
    reset callback).
    """

    stream: Stream

    def attach(self, local: LocalSide) -> None:
        flow = self.stream.flow
        assert isinstance(flow, _Flow)
        flow.attach(local, self.stream)

    def closeLocal(self) -> None:
        transport = self.stream.flow.localTransport
        if transport is not None:
            closeTransport(transport)

    def stopFlow(self) -> _Flow | _NoFlow:
        stream = self.stream
        flow, stream.flow = stream.flow, _NO_FLOW
        return flow

    def sendClose(self) -> None:
        flow = self.stopFlow()
        if isinstance(flow, _Flow):
            flow.flushPending()
        self.stream.link.write(encodeFrame(CLOSE, self.stream.sid))

    def sendReset(self, reason: str) -> None:
        self.stream.link.write(encodeFrame(RESET, self.stream.sid, reason.encode("utf-8")[:512]))

    def forget(self) -> None:
        self.stream.link.forget(self.stream.sid)

    def tellReset(self, reason: str) -> None:
        """
        Tell the local side the stream was reset (its C{onReset}), or close
        it if it did not ask to be told.
        """
        flow = self.stopFlow()
        if self.stream.onReset is not None:
            self.stream.onReset(reason)
        elif flow.localTransport is not None:
            closeTransport(flow.localTransport)


def _build() -> TypeMachine[StreamInputs, StreamCore]:
    b = TypeMachineBuilder(StreamInputs, StreamCore)
    unattached = b.state("Unattached")
    unattachedPeerClosed = b.state("UnattachedPeerClosed")
    open_ = b.state("Open")
    peerClosed = b.state("PeerClosed")
    localClosed = b.state("LocalClosed")
    closed = b.state("Closed")
    live = (unattached, unattachedPeerClosed, open_, peerClosed)

    @unattached.upon(StreamInputs.attached).to(open_)
    def attach(inputs: StreamInputs, core: StreamCore, local: LocalSide) -> None:
        core.attach(local)
        core.stream.flow.updateSource()

    @unattachedPeerClosed.upon(StreamInputs.attached).to(peerClosed)
    def attachClosed(inputs: StreamInputs, core: StreamCore, local: LocalSide) -> None:
        core.attach(local)
        core.closeLocal()

    unattached.upon(StreamInputs.peerClosed).to(unattachedPeerClosed).returns(None)

    @open_.upon(StreamInputs.peerClosed).to(peerClosed)
    def closeLocal(inputs: StreamInputs, core: StreamCore) -> None:
        core.closeLocal()

    for state in (unattached, open_):

        @state.upon(StreamInputs.localEnded).to(localClosed)
        def halfClose(inputs: StreamInputs, core: StreamCore) -> None:
            core.sendClose()

    for state in (unattachedPeerClosed, peerClosed):

        @state.upon(StreamInputs.localEnded).to(closed)
        def closeBoth(inputs: StreamInputs, core: StreamCore) -> None:
            core.sendClose()
            core.forget()

    @localClosed.upon(StreamInputs.peerClosed).to(closed)
    def closedBoth(inputs: StreamInputs, core: StreamCore) -> None:
        core.forget()

    for state in live:

        @state.upon(StreamInputs.peerReset).to(closed)
        def reset(inputs: StreamInputs, core: StreamCore, reason: str) -> None:
            core.forget()
            core.tellReset(reason)

        @state.upon(StreamInputs.resetRequested).to(closed)
        def abort(inputs: StreamInputs, core: StreamCore, reason: str) -> None:
            core.sendReset(reason)
            core.forget()
            flow = core.stopFlow()
            if flow.localTransport is not None:
                closeTransport(flow.localTransport)

        @state.upon(StreamInputs.linkLost).to(closed)
        def lost(inputs: StreamInputs, core: StreamCore) -> None:
            core.tellReset("tunnel link lost")

    @localClosed.upon(StreamInputs.peerReset).to(closed)
    def resetAfterClose(inputs: StreamInputs, core: StreamCore, reason: str) -> None:
        core.forget()

    @localClosed.upon(StreamInputs.resetRequested).to(closed)
    def abortAfterClose(inputs: StreamInputs, core: StreamCore, reason: str) -> None:
        core.forget()

    localClosed.upon(StreamInputs.linkLost).to(closed).returns(None)

    # repeated or late notices change nothing
    for state, ignored in (
        (unattachedPeerClosed, ("peerClosed",)),
        (open_, ("attached",)),
        (peerClosed, ("attached", "peerClosed")),
        (localClosed, ("attached", "localEnded")),
        (closed, ("attached", "localEnded", "peerClosed", "peerReset", "resetRequested", "linkLost")),
    ):
        for name in ignored:
            state.upon(getattr(StreamInputs, name)).loop().returns(None)
    return b.build()


buildStream = indexed(_build())


@implementer(IPushProducer)
class Stream:
    """
    One spliced byte stream inside a link (see the module docstring).

    @ivar onReset: called with the reason when the peer resets the stream
        or the link is lost (instead of closing the local connection).
    """

    def __init__(self, link: Link, sid: int, window: int) -> None:
        self.link = link
        self.sid = sid
        self.bytesIn = 0
        self.bytesOut = 0
        self.onReset: Callable[[str], None] | None = None
        self.flow: _Flow | _NoFlow = _Flow(self, window)
        self.machine: StreamInputs = buildStream(StreamCore(self))

    # -- wiring ------------------------------------------------------------------------
    def attach(self, local: LocalSide) -> None:
        """
        Splice this stream with C{local}, whose transport is connected.
        Data that arrived before is written out now.
        """
        self.machine.attached(local)

    @property
    def localTransport(self) -> Any:
        """
        Where the peer's bytes go (the attached local side's transport).
        """
        return self.flow.localTransport

    @localTransport.setter
    def localTransport(self, transport: Any) -> None:
        flow = self.flow
        if isinstance(flow, _Flow):
            flow.localTransport = transport

    @property
    def sendWindow(self) -> int:
        return self.flow.sendWindow

    @property
    def pending(self) -> bytes:
        return self.flow.pending

    @property
    def sourcePaused(self) -> bool:
        return self.flow.sourcePaused

    @property
    def localWritePaused(self) -> bool:
        return self.flow.localWritePaused

    # -- local -> peer -----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """
        Send bytes read from the local connection to the peer.
        """
        self.flow.send(data)

    def sendClose(self) -> None:
        """
        The local connection finished: tell the peer.
        """
        self.machine.localEnded()

    localLost = sendClose

    def reset(self, reason: str) -> None:
        """
        Abort the stream and tell the peer why.
        """
        self.machine.resetRequested(reason)

    def linkLost(self) -> None:
        """
        The link died under the stream.
        """
        self.machine.linkLost()

    def _updateSource(self) -> None:
        self.flow.updateSource()

    # -- peer -> local -----------------------------------------------------------------
    def received(self, kind: int, payload: bytes) -> None:
        """
        A frame for this stream arrived from the peer.
        """
        if kind == DATA:
            self.flow.peerData(payload)
        elif kind == WINDOW:
            self.flow.peerWindow(decodeWindow(payload))
        elif kind == CLOSE:
            self.machine.peerClosed()
        elif kind == RESET:
            self.machine.peerReset(payload.decode("utf-8", "replace"))

    # -- IPushProducer for the local transport (it asks us to stop writing) ----------
    def pauseProducing(self) -> None:
        """
        The local connection's write buffer is full: stop granting window.
        """
        self.flow.pause()

    def resumeProducing(self) -> None:
        """
        The local connection drained: grant what it consumed.
        """
        self.flow.resume()

    def stopProducing(self) -> None:
        """
        The local connection is going away.
        """
        self.flow.pause()
