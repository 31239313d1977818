"""
The machine of one visitor connection (HTTP/1.1, raw TCP, or CONNECT on
the plain HTTP listener): from its first bytes to a spliced tunnel stream,
an error answer, or the apex site.

Inputs (L{VisitorInputs}): C{opened}, C{bytesReceived}, C{headTimedOut},
C{routeRequested}, C{apexRequested}, C{answered}, C{rejected},
C{framingBroken}, C{hostChanged}, C{resolved}, C{resolveFailed}, C{spliced},
C{streamReset}, C{retryChosen}, C{streamFailed}, C{connectionLost}.

Outputs (on the L{VisitorSide} and the gateway): parse the head, route
(registry, then the route cache and the overlay), splice (open the stream,
add C{Alt-Svc}, send what was kept), answer an error page or close, abort,
hand the connection to the apex site, retry on another link.

States::

    Connecting --opened--> AwaitingHead --routeRequested--> Routing --spliced--> Streaming
         |                      |                                                 |
         +--routeRequested (raw TCP, by SNI)--> Routing            retryChosen: Replaying --spliced--> Streaming

and C{Done} from anywhere.  C{AwaitingHead} holds the head so far and its
timer; C{Routing} and C{Replaying} the request and the bytes to send once
a link is found; C{Streaming} the stream and the replay buffer: what was
sent before anything came back (at most L{REPLAY_LIMIT} bytes, None once
too late), so a stream that fails at once can be tried once more
(C{Replaying}, whose stream keeps no replay buffer).  While it is
C{Streaming} the machine lends the visitor its data path (L{_Forward}:
reads are forwarded without an input each) and takes it back on leaving.
Decisions with two
outcomes are loops whose behaviour feeds a private input
(C{resolved} -> C{spliced}/C{rejected}, C{streamReset} ->
C{retryChosen}/C{streamFailed}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.fsm import indexed
from suite.specter.gateway.certnames import MISDIRECTED
from suite.specter.gateway.forwarded import HostChanged, RequestError
from suite.specter.tunnel.mux import Stream, abortTransport, closeTransport

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = [
    "VisitorInputs",
    "VisitorSide",
    "VisitorCore",
    "VisitorMachine",
    "Request",
    "Replay",
    "REPLAY_LIMIT",
    "newVisitorMachine",
    "logHostChanged",
]

log = Logger()
#: Bytes kept for a retry of a stream that fails before answering.
REPLAY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Request:
    """
    Where a visitor goes: the tunnel hostname, and whether its first
    request may safely be repeated (GET, HEAD, OPTIONS).
    """

    hostname: str
    idempotent: bool = False


class VisitorInputs(Protocol):
    def opened(self) -> None:
        """
        The connection is up; its first request head is awaited.
        """

    def bytesReceived(self, chunk: bytes) -> None:
        """
        The visitor sent bytes.
        """

    def headTimedOut(self) -> None:
        """
        No complete request head came in time.
        """

    def routeRequested(self, request: Request, early: list[bytes]) -> None:
        """
        The visitor is for a tunnel; C{early} is what to send it first.
        """

    def apexRequested(self, early: list[bytes]) -> None:
        """
        The request is for an apex itself (the apex site answers it).
        """

    def answered(self, response: bytes) -> None:
        """
        The gateway answers the visitor itself (a redirect, an error page).
        """

    def rejected(self, code: int, detail: str) -> None:
        """
        The visitor gets an error (a page over HTTP, a close over TCP).
        """

    def framingBroken(self, error: str) -> None:
        """
        The visitor broke HTTP/1.1 framing.
        """

    def hostChanged(self, error: str) -> None:
        """
        A later request names another host than the connection is bound
        to (its first request's): it is not forwarded.
        """

    def resolved(self, result: Any) -> None:
        """
        The route lookup ended: a link, a reason it cannot be reached, or
        None (nobody serves the hostname).
        """

    def resolveFailed(self, reason: Failure) -> None:
        """
        The route lookup failed.
        """

    def spliced(self, request: Request, stream: Stream, replay: Replay | None) -> None:
        """
        The visitor is spliced with C{stream}.
        """

    def streamReset(self, reason: str) -> None:
        """
        The peer reset the stream, or its link was lost.
        """

    def retryChosen(self, request: Request, early: list[bytes]) -> None:
        """
        The failed stream is tried once more, on another link.
        """

    def streamFailed(self, reason: str) -> None:
        """
        The failed stream is not retried.
        """

    def connectionLost(self) -> None:
        """
        The visitor's connection is gone.
        """


class VisitorSide(Protocol):
    """
    What the machine needs of the visitor's protocol.
    """

    kind: str
    retries: bool
    transport: Any
    #: Streaming's data path, set by the machine while it is Streaming
    #: (see L{_Forward}); None: reads go to the machine as C{bytesReceived}.
    forward: Callable[[bytes], None] | None

    def peer(self) -> str:
        """
        The visitor's address, C{HOST:PORT}.
        """

    def headReceived(self, head: bytes, inputs: VisitorInputs) -> None:
        """
        Parse the head so far; feed C{inputs} what it means (nothing while
        it is incomplete).
        """

    def rewrite(self, data: bytes) -> bytes:
        """
        C{data} as the target should see it (raises L{RequestError}).
        """

    def beforeSplice(self) -> None:
        """
        Just before the stream is opened.
        """

    def fail(self, code: int, detail: str) -> None:
        """
        Answer with an error and close.
        """


@dataclass
class VisitorCore:
    """
    The visitor's protocol and the gateway it came to.
    """

    visitor: VisitorSide
    gateway: Gateway


@dataclass
class HeadData:
    """
    C{AwaitingHead}: the head so far, and the timer that gives up on it.
    """

    timer: IDelayedCall
    head: bytes = b""

    def cancel(self) -> None:
        if self.timer.active():
            self.timer.cancel()


@dataclass
class RouteData:
    """
    C{Routing} and C{Replaying}: the request, and the bytes to send once a
    link is found.
    """

    request: Request
    early: list[bytes]


@dataclass
class Replay:
    """
    What a stream was sent before anything came back.
    """

    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    def keep(self, data: bytes, stream: Stream) -> bool:
        """
        Keep C{data}; False when it is too late (an answer began) or too
        much (over L{REPLAY_LIMIT}).
        """
        self.size += len(data)
        if stream.bytesIn or self.size > REPLAY_LIMIT:
            return False
        self.chunks.append(data)
        return True


@dataclass
class StreamData:
    """
    C{Streaming}: the request, its stream, and the replay buffer (None:
    the stream is not retried).
    """

    request: Request
    stream: Stream
    replay: Replay | None


class _Forward:
    """
    Streaming's data path: what C{bytesReceived} does in C{Streaming}
    (L{_forwardChunk}), without an automat input per read (the lookup,
    output calls and reentrancy bookkeeping cost about as much as the
    forwarding itself).  The machine gives one to the visitor
    (C{VisitorSide.forward}) as it enters C{Streaming} and takes it back in
    every transition out of it, so the machine still decides where bytes
    go; whatever else happens to a streaming visitor is an input.
    """

    __slots__ = ("inputs", "core", "data")

    def __init__(self, inputs: VisitorInputs, core: VisitorCore, data: StreamData) -> None:
        self.inputs = inputs
        self.core = core
        self.data = data

    def __call__(self, chunk: bytes) -> None:
        _forwardChunk(self.inputs, self.core, self.data, chunk)


def _forwardChunk(inputs: VisitorInputs, core: VisitorCore, data: StreamData, chunk: bytes) -> None:
    """
    Rewrite C{chunk}, keep it for a retry while that is possible, and send
    it on the stream.
    """
    rewritten = _rewritten(inputs, core, chunk)
    if rewritten is None:
        return
    if data.replay is not None and not data.replay.keep(rewritten, data.stream):
        data.replay = None
    data.stream.send(rewritten)


def _leaveStreaming(core: VisitorCore) -> None:
    """
    Take Streaming's data path back from the visitor.
    """
    core.visitor.forward = None


class _FirstHeadInjector:
    """
    Stands in for a visitor's transport until the first response head has
    passed, adding one header line to it (C{Alt-Svc}), then steps aside so
    later bytes go straight to the transport.
    """

    def __init__(self, stream: Stream, transport: Any, line: bytes, limit: int = 64 * 1024) -> None:
        self.stream = stream
        self.transport = transport
        self.line = line
        self.limit = limit
        self.buffer = b""

    def write(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 and len(self.buffer) <= self.limit:
            return
        out = self.buffer
        if end >= 0 and out.startswith(b"HTTP/1."):
            out = out[: end + 2] + self.line + out[end + 2 :]
        self.buffer = b""
        self.stream.localTransport = self.transport
        self.transport.write(out)

    def loseConnection(self) -> None:
        if self.buffer:
            self.transport.write(self.buffer)
            self.buffer = b""
        self.stream.localTransport = self.transport
        self.transport.loseConnection()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


# -- outputs --------------------------------------------------------------------------------


def _route(
    inputs: VisitorInputs, core: VisitorCore, request: Request, early: list[bytes], first: bool
) -> None:
    """
    Splice with a local link for the request, or look its route up (the
    visitor paused meanwhile).
    """
    link = core.gateway.registry.pick(request.hostname)
    if link is not None:
        _splice(inputs, core, link, request, early, first)
        return
    core.visitor.transport.pauseProducing()
    core.gateway.resolve(request.hostname).addCallbacks(inputs.resolved, inputs.resolveFailed)


def _splice(
    inputs: VisitorInputs, core: VisitorCore, link: Any, request: Request, early: list[bytes], first: bool
) -> None:
    """
    Open a stream on C{link}, send C{early}, and feed C{spliced}.  A first
    stream keeps a replay buffer (when the visitor kind retries) and gets
    the C{Alt-Svc} header added to its first HTTP answer.
    """
    visitor, gateway = core.visitor, core.gateway
    visitor.beforeSplice()
    stream: Stream = link.openStream({"kind": visitor.kind, "peer": visitor.peer(), "host": request.hostname})
    stream.onReset = inputs.streamReset
    stream.attach(visitor)  # type: ignore[arg-type]
    altSvc = gateway.altSvcFor(request.hostname)
    if altSvc is not None and visitor.kind == "http" and first:
        stream.localTransport = _FirstHeadInjector(stream, visitor.transport, b"Alt-Svc: " + altSvc + b"\r\n")
    replay: Replay | None = Replay() if first and visitor.retries else None
    for chunk in early:
        if replay is not None and not replay.keep(chunk, stream):
            replay = None
        stream.send(chunk)
    gateway.metrics.streamsOpened += 1
    inputs.spliced(request, stream, replay)


def _rewritten(inputs: VisitorInputs, core: VisitorCore, data: bytes) -> bytes | None:
    """
    C{data} rewritten for the target, or None when the visitor broke
    HTTP/1.1 framing (then C{framingBroken} is fed) or named another host
    (C{hostChanged}).
    """
    try:
        return core.visitor.rewrite(data)
    except HostChanged as e:
        inputs.hostChanged(str(e))
        return None
    except RequestError as e:
        inputs.framingBroken(str(e))
        return None


def _logFraming(core: VisitorCore, error: str) -> None:
    log.info("HTTP/1.1 visitor {peer}: {error}", peer=core.visitor.peer(), error=error)


def logHostChanged(peer: str, error: str) -> None:
    """
    Log a later request refused for naming another host (L{HostChanged}).
    """
    log.info("HTTP/1.1 visitor {peer} closed: {error}", peer=peer, error=error)


def _serveApex(core: VisitorCore, early: list[bytes]) -> None:
    """
    Hand the connection to the apex site (C{/_internal} when credentials
    are configured), or answer 404 without one.
    """
    site = core.gateway.apexSite
    transport = core.visitor.transport
    if site is None:
        core.visitor.fail(404, "nothing is served on the apex here")
        return
    proto = site.buildProtocol(transport.getPeer())
    transport.wrappedProtocol = proto
    proto.makeConnection(transport)
    for chunk in early:
        proto.dataReceived(chunk)


def _retryable(data: StreamData, reason: str) -> bool:
    """
    Whether a failed stream may be tried again: nothing came back, and
    the target surely saw nothing or the request may be repeated.
    """
    if data.replay is None or data.stream.bytesIn:
        return False
    return reason.startswith(("no tunnel link", "cannot connect")) or data.request.idempotent


def _build() -> TypeMachine[VisitorInputs, VisitorCore]:
    V = VisitorInputs
    b = TypeMachineBuilder(VisitorInputs, VisitorCore)
    connecting = b.state("Connecting")

    def awaitHead(inputs: VisitorInputs, core: VisitorCore) -> HeadData:
        return HeadData(core.gateway.clock.callLater(core.gateway.config.headTimeout, inputs.headTimedOut))

    awaitingHead = b.state("AwaitingHead", awaitHead)

    def routeData(
        inputs: VisitorInputs, core: VisitorCore, request: Request, early: list[bytes]
    ) -> RouteData:
        return RouteData(request, list(early))

    routing = b.state("Routing", routeData)
    replaying = b.state("Replaying", routeData)

    def streamData(
        inputs: VisitorInputs, core: VisitorCore, request: Request, stream: Stream, replay: Replay | None
    ) -> StreamData:
        data = StreamData(request, stream, replay)
        core.visitor.forward = _Forward(inputs, core, data)
        return data

    streaming = b.state("Streaming", streamData)
    done = b.state("Done")

    # -- Connecting -------------------------------------------------------------------------
    connecting.upon(V.opened).to(awaitingHead).returns(None)

    @connecting.upon(V.routeRequested).to(routing)
    def _routeBySNI(inputs: VisitorInputs, core: VisitorCore, request: Request, early: list[bytes]) -> None:
        _route(inputs, core, request, early, True)

    @connecting.upon(V.rejected).to(done)
    def _refuse(inputs: VisitorInputs, core: VisitorCore, code: int, detail: str) -> None:
        core.visitor.fail(code, detail)

    connecting.upon(V.connectionLost).to(done).returns(None)

    # -- AwaitingHead -----------------------------------------------------------------------
    @awaitingHead.upon(V.bytesReceived).loop()
    def _head(inputs: VisitorInputs, core: VisitorCore, data: HeadData, chunk: bytes) -> None:
        data.head += chunk
        core.visitor.headReceived(data.head, inputs)

    @awaitingHead.upon(V.headTimedOut).to(done)
    def _slowHead(inputs: VisitorInputs, core: VisitorCore, data: HeadData) -> None:
        data.cancel()
        core.visitor.transport.abortConnection()

    @awaitingHead.upon(V.routeRequested).to(routing)
    def _routeByHost(
        inputs: VisitorInputs, core: VisitorCore, data: HeadData, request: Request, early: list[bytes]
    ) -> None:
        data.cancel()
        _route(inputs, core, request, early, True)

    @awaitingHead.upon(V.apexRequested).to(done)
    def _apex(inputs: VisitorInputs, core: VisitorCore, data: HeadData, early: list[bytes]) -> None:
        data.cancel()
        _serveApex(core, early)

    @awaitingHead.upon(V.answered).to(done)
    def _answer(inputs: VisitorInputs, core: VisitorCore, data: HeadData, response: bytes) -> None:
        data.cancel()
        core.visitor.transport.write(response)
        closeTransport(core.visitor.transport)

    @awaitingHead.upon(V.rejected).to(done)
    def _badHead(inputs: VisitorInputs, core: VisitorCore, data: HeadData, code: int, detail: str) -> None:
        data.cancel()
        core.visitor.fail(code, detail)

    @awaitingHead.upon(V.framingBroken).to(done)
    def _badFirstHead(inputs: VisitorInputs, core: VisitorCore, data: HeadData, error: str) -> None:
        data.cancel()
        _logFraming(core, error)
        core.visitor.fail(400, error)

    @awaitingHead.upon(V.connectionLost).to(done)
    def _goneEarly(inputs: VisitorInputs, core: VisitorCore, data: HeadData) -> None:
        data.cancel()

    # -- Routing, Replaying -----------------------------------------------------------------
    @routing.upon(V.bytesReceived).loop()
    def _keep(inputs: VisitorInputs, core: VisitorCore, data: RouteData, chunk: bytes) -> None:
        rewritten = _rewritten(inputs, core, chunk)
        if rewritten is not None:
            data.early.append(rewritten)

    def _resolvedHow(
        inputs: VisitorInputs, core: VisitorCore, data: RouteData, result: Any, first: bool
    ) -> None:
        core.visitor.transport.resumeProducing()
        if result is None:
            inputs.rejected(404, f"no tunnel is serving {data.request.hostname}")
        elif isinstance(result, str):
            inputs.rejected(502, result)
        else:
            _splice(inputs, core, result, data.request, data.early, first)

    @routing.upon(V.resolved).loop()
    def _resolvedFirst(inputs: VisitorInputs, core: VisitorCore, data: RouteData, result: Any) -> None:
        _resolvedHow(inputs, core, data, result, True)

    @replaying.upon(V.resolved).loop()
    def _resolvedAgain(inputs: VisitorInputs, core: VisitorCore, data: RouteData, result: Any) -> None:
        _resolvedHow(inputs, core, data, result, False)

    @routing.upon(V.resolveFailed).to(done)
    def _lookupFailed(inputs: VisitorInputs, core: VisitorCore, data: RouteData, reason: Failure) -> None:
        log.warn(
            "route lookup for {host} failed: {error}",
            host=data.request.hostname,
            error=reason.getErrorMessage(),
        )
        core.visitor.transport.resumeProducing()
        core.visitor.fail(502, f"route lookup for {data.request.hostname} failed, try again")

    @routing.upon(V.rejected).to(done)
    def _unroutable(
        inputs: VisitorInputs, core: VisitorCore, data: RouteData, code: int, detail: str
    ) -> None:
        core.visitor.fail(code, detail)

    @routing.upon(V.framingBroken).to(done)
    def _badLaterHead(inputs: VisitorInputs, core: VisitorCore, data: RouteData, error: str) -> None:
        _logFraming(core, error)
        core.visitor.fail(400, error)

    @routing.upon(V.hostChanged).to(done)
    def _otherHostEarly(inputs: VisitorInputs, core: VisitorCore, data: RouteData, error: str) -> None:
        # nothing was forwarded yet: the 421 answers the first request
        logHostChanged(core.visitor.peer(), error)
        core.visitor.fail(MISDIRECTED, error)

    @routing.upon(V.spliced).to(streaming)
    def _spliced(
        inputs: VisitorInputs,
        core: VisitorCore,
        data: RouteData,
        request: Request,
        stream: Stream,
        replay: Any,
    ) -> None:
        pass

    @routing.upon(V.connectionLost).to(done)
    def _goneRouting(inputs: VisitorInputs, core: VisitorCore, data: RouteData) -> None:
        pass

    replaying.upon(V.bytesReceived).loop()(_keep)
    replaying.upon(V.resolveFailed).to(done)(_lookupFailed)
    replaying.upon(V.rejected).to(done)(_unroutable)
    replaying.upon(V.framingBroken).to(done)(_badLaterHead)
    replaying.upon(V.hostChanged).to(done)(_otherHostEarly)
    replaying.upon(V.spliced).to(streaming)(_spliced)
    replaying.upon(V.connectionLost).to(done)(_goneRouting)

    # -- Streaming --------------------------------------------------------------------------
    @streaming.upon(V.bytesReceived).loop()
    def _forward(inputs: VisitorInputs, core: VisitorCore, data: StreamData, chunk: bytes) -> None:
        _forwardChunk(inputs, core, data, chunk)

    @streaming.upon(V.streamReset).loop()
    def _reset(inputs: VisitorInputs, core: VisitorCore, data: StreamData, reason: str) -> None:
        if not _retryable(data, reason):
            inputs.streamFailed(reason)
            return
        assert data.replay is not None
        transport = core.visitor.transport
        try:
            transport.unregisterProducer()
        except RuntimeError:
            pass
        if data.stream.sourcePaused:
            transport.resumeProducing()
        core.gateway.cache.invalidate(data.request.hostname)
        log.info("retrying {host} on another link: {reason}", host=data.request.hostname, reason=reason)
        inputs.retryChosen(data.request, data.replay.chunks)

    @streaming.upon(V.retryChosen).to(replaying)
    def _retry(
        inputs: VisitorInputs, core: VisitorCore, data: StreamData, request: Request, early: list[bytes]
    ) -> None:
        _leaveStreaming(core)
        _route(inputs, core, request, early, False)

    @streaming.upon(V.streamFailed).to(done)
    def _failed(inputs: VisitorInputs, core: VisitorCore, data: StreamData, reason: str) -> None:
        _leaveStreaming(core)
        if data.stream.bytesIn == 0 and core.visitor.kind == "http":
            core.visitor.fail(502, f"the tunnel could not reach its target: {reason}")
        else:
            # an answer cut short must not look complete: abort (no TLS
            # close_notify, TCP reset) rather than close cleanly
            abortTransport(core.visitor.transport)

    @streaming.upon(V.framingBroken).to(done)
    def _badStreamedHead(inputs: VisitorInputs, core: VisitorCore, data: StreamData, error: str) -> None:
        _leaveStreaming(core)
        _logFraming(core, error)
        data.stream.reset(f"the visitor broke HTTP/1.1 framing: {error}")
        core.visitor.transport.abortConnection()

    @streaming.upon(V.hostChanged).to(done)
    def _otherHost(inputs: VisitorInputs, core: VisitorCore, data: StreamData, error: str) -> None:
        # the target's answers are spliced unparsed: no 421 can be slipped
        # among them, nor can the connection wait for the earlier answers
        # to end (a half-closed stream drops what the target still sends)
        _leaveStreaming(core)
        logHostChanged(core.visitor.peer(), error)
        errors = core.gateway.metrics.errors
        errors[MISDIRECTED] = errors.get(MISDIRECTED, 0) + 1
        data.stream.reset(f"the visitor asked for another host: {error}")
        core.visitor.transport.abortConnection()

    @streaming.upon(V.connectionLost).to(done)
    def _gone(inputs: VisitorInputs, core: VisitorCore, data: StreamData) -> None:
        _leaveStreaming(core)
        data.stream.localLost()

    # -- Done: late results and bytes are dropped -------------------------------------------
    for name in ("bytesReceived", "resolved", "resolveFailed", "streamReset", "connectionLost"):
        done.upon(getattr(V, name)).loop().returns(None)

    # Deliberately impossible (a NoTransition would be a bug): each private
    # input (spliced, rejected, answered, apexRequested, routeRequested,
    # framingBroken, hostChanged, retryChosen, streamFailed) is fed by a behaviour of the
    # states that take it; headTimedOut is AwaitingHead's own timer,
    # cancelled as it is left; a connection is opened once, before any byte
    # (Connecting takes no bytes); lookups run only in Routing and
    # Replaying, and a stream reports its reset only while it is spliced.
    return b.build()


#: Looked up by (state, input) in a table (L{suite.fsm.indexed}): automat's
#: own lookup scans every transition, several microseconds per visitor read.
VisitorMachine = indexed(_build())


def newVisitorMachine(visitor: VisitorSide, gateway: Gateway) -> VisitorInputs:
    """
    A visitor machine, C{Connecting}.
    """
    return VisitorMachine(VisitorCore(visitor, gateway))
