"""
The machine of one HTTP/2 visitor stream in the gateway's HTTP/2 front end
(L{suite.specter.gateway.h2}): a request on its way to the tunnel target,
its response on the way back.

Inputs (L{StreamInputs}): C{forwarded}, C{lookingUp}, C{resolved},
C{resolveFailed}, C{rejected}, C{answered}, C{bodyReceived},
C{bodyTooLarge}, C{bodyEnded}, C{responseFailed}, C{headersSent},
C{responseSent}, C{responseSentEarly}, C{abandoned}.

Outputs (on the connection, L{StreamSide}, and the exchange): start the
exchange and send it the request body, acknowledge body bytes to the
visitor once the tunnel took them, queue an error page for the
connection's next flush, reset the stream, cancel the exchange.

States::

    Opened --forwarded--> Forwarding --headersSent--> Responding
      |                       ^  |                            |
    lookingUp         forwarded  +--responseSent--------------+--> Closed
      v                       |  +--responseSentEarly---------+--> Draining --bodyEnded--> Closed
    Routing ------------------+

A stream whose route the connection finds as it opens (a local link
serves its host) starts in C{Forwarding} with its exchange started
(L{forwardedStream}: automat's construction in a given state, one input
fewer per request); the others start in C{Opened}.

C{Forwarding}: the exchange runs and nothing was sent to the visitor yet
(a failure is still answered with an error page); the target's answer is
queued on the stream's L{Response} as it comes, and a short one leaves
whole in one flush (C{responseSent} straight from C{Forwarding}: two inputs
per request).  C{Responding}: the response head went out (a failure now
resets the stream), or an error page is queued (C{answered}, from
C{Opened}, C{Routing} and C{Forwarding}).  C{Draining}: answered before the
request body ended: the rest of the body is read and dropped, up to
L{DRAIN_LIMIT}, then the stream is reset.  C{abandoned} (the visitor reset
the stream, its connection was lost, C{h2} gave the stream up) leads from
any state to C{Closed}.  Decisions with two outcomes are loops whose
behaviour feeds a private input (C{resolved} -> C{forwarded}/C{rejected},
C{rejected} -> C{answered}, C{bodyReceived} -> C{bodyTooLarge}).

State data: C{Routing} holds the request body received before a link was
found (L{RouteData}); C{Forwarding} and C{Responding} the L{Response} (the
exchange's sink and the answer not sent yet); C{Draining} the bytes
dropped so far.  Whether the request body ended is C{h2}'s to know (the
stream's half-closed state).  The stream's core keeps what holds for its
whole life (its id, request head, body counters) and C{response}, by which
the connection reaches the current L{Response} (set and cleared by the
machine).  Response bytes do not go through the machine: the exchange
hands them to the L{Response}, which queues them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import h2.errors
from automat import TypeMachine, TypeMachineBuilder
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.fsm import indexed
from suite.specter.gateway.exchange import Exchange, SiteExchange
from suite.specter.gateway.http1 import RequestHead, ResponseHead
from suite.specter.gateway.interfaces import IResponseSink
from suite.specter.gateway.visitor import errorHeaders, errorPage

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = [
    "StreamInputs",
    "StreamSide",
    "StreamCore",
    "StreamMachine",
    "Response",
    "RouteData",
    "DrainData",
    "END",
    "MAX_BODY",
    "DRAIN_LIMIT",
    "QUEUE_LIMIT",
    "newStream",
    "forwardedStream",
]

log = Logger()
#: Largest HTTP/2 request body accepted (413 beyond).
MAX_BODY = 8 * 1024 * 1024
#: Request body bytes read and dropped after an early answer before the
#: stream is reset.
DRAIN_LIMIT = 16 * 1024 * 1024
#: Response bytes queued for a visitor stream before its exchange pauses.
QUEUE_LIMIT = 64 * 1024
#: The end of a request body or of a response, in their queues.
END: Any = object()
#: The :status fields of common answers (one object each: their hashes are
#: computed once for the HPACK cache's lookups).
_STATUS = {
    code: (b":status", b"%d" % code) for code in (200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 500)
}

Headers = list[tuple[bytes, bytes]]


class StreamInputs(Protocol):
    def forwarded(self, exchange: Exchange | SiteExchange) -> None:
        """
        The request goes to the target through C{exchange} (not started).
        """

    def lookingUp(self) -> None:
        """
        No local link serves the request's host: look its route up.
        """

    def resolved(self, found: Any) -> None:
        """
        The route lookup ended: a link, a reason it cannot be reached, or
        None (nobody serves the host).
        """

    def resolveFailed(self, failure: Failure) -> None:
        """
        The route lookup failed.
        """

    def rejected(self, code: int, detail: str) -> None:
        """
        The gateway answers the request with an error page.
        """

    def answered(self, response: Response) -> None:
        """
        An error page is queued (private: fed by C{rejected}).
        """

    def bodyReceived(self, body: bytes, size: int) -> None:
        """
        A DATA frame of the request body (C{size}: its flow-controlled
        length).
        """

    def bodyTooLarge(self) -> None:
        """
        The request body passed L{MAX_BODY} (private: fed by
        C{bodyReceived}).
        """

    def bodyEnded(self) -> None:
        """
        The visitor ended the request body.
        """

    def responseFailed(self, reason: str) -> None:
        """
        The exchange broke: no response, or one cut short.
        """

    def headersSent(self, response: Response) -> None:
        """
        The response head went to the visitor, the rest is to follow.
        """

    def responseSent(self) -> None:
        """
        The response's last frame was sent; the request was complete.
        """

    def responseSentEarly(self) -> None:
        """
        The response's last frame was sent before the request body ended.
        """

    def abandoned(self) -> None:
        """
        The stream is gone: reset by the visitor, its connection lost, or
        given up by C{h2}.
        """


class StreamSide(Protocol):
    """
    What a stream needs of its connection (L{suite.specter.gateway.h2.H2Visitor}).
    """

    gateway: Gateway
    writePaused: bool

    def exchangeFor(self, link: Any, host: str) -> Exchange:
        """
        An exchange on C{link} for a request to C{host}.
        """

    def acknowledge(self, stream: StreamCore) -> None:
        """
        Give the visitor the window of C{stream}'s unacknowledged body bytes.
        """

    def giveBack(self, sid: int, size: int) -> None:
        """
        Give the visitor back the window of C{size} body bytes of stream
        C{sid} that are dropped.
        """

    def ready(self, response: Response) -> None:
        """
        C{response} has something to send.
        """

    def resetStream(self, sid: int, code: int) -> None:
        """
        Send RST_STREAM for C{sid}.
        """

    def streamAnswered(self) -> None:
        """
        A response was sent whole.
        """

    def streamClosed(self, stream: StreamCore) -> None:
        """
        C{stream} is over: forget it.
        """


class StreamCore:
    """
    What holds for a stream's whole life, and the objects the connection
    reaches its current phase's data by (set and cleared by the machine).

    @ivar unacked: request body bytes received but not yet taken by the
        tunnel (acknowledged to the visitor when they are).
    @ivar response: the answer (C{Forwarding}, C{Responding}).
    """

    __slots__ = ("side", "sid", "head", "bodyFollows", "unacked", "bodyBytes", "response", "inputs")

    def __init__(self, side: StreamSide, sid: int, head: RequestHead | None, bodyFollows: bool) -> None:
        self.side = side
        self.sid = sid
        self.head = head
        self.bodyFollows = bodyFollows
        self.unacked = 0
        self.bodyBytes = 0
        self.response: Response | None = None
        self.inputs: StreamInputs = None  # type: ignore[assignment]


@implementer(IResponseSink)
class Response:
    """
    A stream's answer: the exchange's sink (C{Forwarding}, C{Responding})
    and what is not sent to the visitor yet; or an error page (no
    exchange).

    @ivar headers: the response head, until it is sent (then None).
    @ivar out: body pieces not sent yet (L{END} once complete).
    @ivar queued: bytes in C{out}.
    @ivar bodyPaused: the tunnel takes no more of the request body for now
        (bytes received meanwhile are acknowledged when it does).
    @ivar paused: the exchange was asked to stop reading the response
        (the visitor's window, its TCP connection or the queue is full).
    """

    __slots__ = ("stream", "exchange", "headers", "out", "queued", "bodyPaused", "paused")

    def __init__(
        self,
        stream: StreamCore,
        exchange: Exchange | SiteExchange | None,
        headers: Headers | None = None,
        out: deque[Any] | None = None,
        queued: int = 0,
    ) -> None:
        self.stream = stream
        self.exchange = exchange
        self.headers = headers
        self.out: deque[Any] = deque() if out is None else out
        self.queued = queued
        self.bodyPaused = False
        self.paused = False

    # -- IResponseSink ---------------------------------------------------------------------
    def responseStarted(self, head: ResponseHead) -> None:
        stream = self.stream
        status = _STATUS.get(head.code)
        if status is None:
            status = (b":status", b"%d" % head.code)
        headers = [status, *head.headers]
        side = stream.side
        if stream.head is not None:
            altSvc = side.gateway.altSvcFor(stream.head.host)
            if altSvc is not None:
                headers.append((b"alt-svc", altSvc))
        self.headers = headers
        if side.writePaused:
            self.pause()
        side.ready(self)

    def responseData(self, data: bytes) -> None:
        self.out.append(data)
        self.queued += len(data)
        if self.queued > QUEUE_LIMIT:
            self.pause()
        self.stream.side.ready(self)

    def responseEnded(self) -> None:
        self.exchange = None
        self.out.append(END)
        self.stream.side.ready(self)

    def responseFailed(self, reason: str) -> None:
        self.exchange = None
        self.stream.inputs.responseFailed(reason)

    def requestBodyPaused(self) -> None:
        self.bodyPaused = True

    def requestBodyResumed(self) -> None:
        self.bodyPaused = False
        if self.stream.unacked:
            self.stream.side.acknowledge(self.stream)

    # -- the connection's calls ------------------------------------------------------------
    def pause(self) -> None:
        """
        Stop reading the response from the target.
        """
        if not self.paused and self.exchange is not None:
            self.paused = True
            self.exchange.pauseResponse()

    def resume(self) -> None:
        """
        Carry on reading the response.
        """
        if self.paused:
            self.paused = False
            if self.exchange is not None:
                self.exchange.resumeResponse()

    def sendBody(self, data: bytes) -> None:
        """
        Send request body bytes down the exchange; acknowledge them unless
        the tunnel is full.
        """
        if self.exchange is not None:
            self.exchange.sendBody(data)
            if not self.bodyPaused:
                self.stream.side.acknowledge(self.stream)

    def endBody(self) -> None:
        if self.exchange is not None:
            self.exchange.endBody()

    def cancel(self) -> None:
        """
        Stop the exchange; nothing more comes from it.
        """
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.cancel()


@dataclass
class RouteData:
    """
    C{Routing}: the request body received while the route is looked up
    (L{END} last once it ended).
    """

    early: list[Any] = field(default_factory=list)


@dataclass
class DrainData:
    """
    C{Draining}: request body bytes read and dropped since the answer.
    """

    dropped: int = 0


def _errorResponse(core: StreamCore, code: int, detail: str) -> Response:
    errors = core.side.gateway.metrics.errors
    errors[code] = errors.get(code, 0) + 1
    page = errorPage(code, detail)
    body = page[page.index(b"\r\n\r\n") + 4 :]
    headers = [
        (b":status", b"%d" % code),
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
        *errorHeaders(code),
    ]
    return Response(core, None, headers, deque([body, END]), len(body))


def _giveBack(core: StreamCore) -> None:
    """
    Body bytes never acknowledged go back to the visitor's window.
    """
    if core.unacked:
        size, core.unacked = core.unacked, 0
        core.side.giveBack(core.sid, size)


def _dropResponse(core: StreamCore) -> None:
    response, core.response = core.response, None
    if response is not None:
        response.cancel()
    _giveBack(core)


_TOO_LARGE = f"request body larger than {MAX_BODY} bytes"


def _forget(core: StreamCore) -> None:
    """
    The stream is over: cancel its exchange, give back the body window it
    holds, drop its answer and its machine (the core no longer reaches
    the machine, so reference counts alone free them), tell the connection.
    """
    _dropResponse(core)
    del core.inputs
    core.side.streamClosed(core)


def _reset(core: StreamCore, code: int) -> None:
    core.side.resetStream(core.sid, code)
    _forget(core)


def _build() -> tuple[TypeMachine[StreamInputs, StreamCore], Any]:
    S = StreamInputs
    b = TypeMachineBuilder(StreamInputs, StreamCore)
    opened = b.state("Opened")

    def routeData(inputs: StreamInputs, core: StreamCore) -> RouteData:
        return RouteData()

    routing = b.state("Routing", routeData)

    def forwardData(inputs: StreamInputs, core: StreamCore, exchange: Exchange | SiteExchange) -> Response:
        response = core.response = Response(core, exchange)
        return response

    forwarding = b.state("Forwarding", forwardData)

    def respond(inputs: StreamInputs, core: StreamCore, response: Response) -> Response:
        core.response = response
        return response

    responding = b.state("Responding", respond)

    def drainData(inputs: StreamInputs, core: StreamCore) -> DrainData:
        return DrainData()

    draining = b.state("Draining", drainData)
    closed = b.state("Closed")

    # -- Opened: the request head was read; the connection routes it at once ---------------
    @opened.upon(S.forwarded).to(forwarding)
    def _forward(inputs: StreamInputs, core: StreamCore, exchange: Exchange | SiteExchange) -> None:
        assert core.head is not None and core.response is not None
        exchange.start(core.head, core.response, core.bodyFollows)

    @opened.upon(S.lookingUp).to(routing)
    def _lookUp(inputs: StreamInputs, core: StreamCore) -> None:
        assert core.head is not None
        core.side.gateway.resolve(core.head.host).addCallbacks(inputs.resolved, inputs.resolveFailed)

    @opened.upon(S.rejected).loop()
    def _reject(inputs: StreamInputs, core: StreamCore, code: int, detail: str) -> None:
        inputs.answered(_errorResponse(core, code, detail))

    @opened.upon(S.answered).to(responding)
    def _answer(inputs: StreamInputs, core: StreamCore, response: Response) -> None:
        core.side.ready(response)

    @opened.upon(S.abandoned).to(closed)
    def _abandonOpened(inputs: StreamInputs, core: StreamCore) -> None:
        _forget(core)

    # -- Routing ----------------------------------------------------------------------------
    @routing.upon(S.resolved).loop()
    def _resolved(inputs: StreamInputs, core: StreamCore, data: RouteData, found: Any) -> None:
        assert core.head is not None
        if found is None:
            inputs.rejected(404, f"no tunnel is serving {core.head.host}")
        elif isinstance(found, str):
            inputs.rejected(502, found)
        else:
            inputs.forwarded(core.side.exchangeFor(found, core.head.host))

    @routing.upon(S.resolveFailed).loop()
    def _resolveFailed(inputs: StreamInputs, core: StreamCore, data: RouteData, failure: Failure) -> None:
        assert core.head is not None
        host = core.head.host
        log.warn("route lookup for {host} failed: {error}", host=host, error=failure.getErrorMessage())
        inputs.rejected(502, f"route lookup for {host} failed, try again")

    @routing.upon(S.forwarded).to(forwarding)
    def _forwardEarly(
        inputs: StreamInputs, core: StreamCore, data: RouteData, exchange: Exchange | SiteExchange
    ) -> None:
        sink = core.response
        assert core.head is not None and sink is not None
        exchange.start(core.head, sink, core.bodyFollows)
        ended = False
        for piece in data.early:
            if piece is END:
                ended = True
            else:
                exchange.sendBody(piece)
        data.early = []
        if core.unacked and not sink.bodyPaused:
            core.side.acknowledge(core)
        if ended:
            exchange.endBody()

    @routing.upon(S.rejected).loop()
    def _rejectRouting(
        inputs: StreamInputs, core: StreamCore, data: RouteData, code: int, detail: str
    ) -> None:
        inputs.answered(_errorResponse(core, code, detail))

    @routing.upon(S.answered).to(responding)
    def _answerRouting(inputs: StreamInputs, core: StreamCore, data: RouteData, response: Response) -> None:
        core.side.ready(response)

    @routing.upon(S.bodyReceived).loop()
    def _keep(inputs: StreamInputs, core: StreamCore, data: RouteData, body: bytes, size: int) -> None:
        core.bodyBytes += len(body)
        if core.bodyBytes > MAX_BODY:
            inputs.bodyTooLarge()
            core.side.giveBack(core.sid, size)
            return
        core.unacked += size
        data.early.append(body)

    @routing.upon(S.bodyTooLarge).loop()
    def _tooLargeEarly(inputs: StreamInputs, core: StreamCore, data: RouteData) -> None:
        inputs.rejected(413, _TOO_LARGE)

    @routing.upon(S.bodyEnded).loop()
    def _endEarly(inputs: StreamInputs, core: StreamCore, data: RouteData) -> None:
        data.early.append(END)

    @routing.upon(S.abandoned).to(closed)
    def _abandonRouting(inputs: StreamInputs, core: StreamCore, data: RouteData) -> None:
        _forget(core)

    # -- Forwarding: the exchange runs, nothing sent to the visitor yet ---------------------
    def _body(inputs: StreamInputs, core: StreamCore, response: Response, body: bytes, size: int) -> None:
        core.bodyBytes += len(body)
        if core.bodyBytes > MAX_BODY:
            core.side.giveBack(core.sid, size)
            inputs.bodyTooLarge()
        elif response.exchange is None:
            # an error page, or the target answered whole: nobody takes it
            core.side.giveBack(core.sid, size)
        else:
            core.unacked += size
            response.sendBody(body)

    forwarding.upon(S.bodyReceived).loop()(_body)

    @forwarding.upon(S.bodyTooLarge).loop()
    def _tooLarge(inputs: StreamInputs, core: StreamCore, response: Response) -> None:
        inputs.rejected(413, _TOO_LARGE)

    @forwarding.upon(S.bodyEnded).loop()
    def _endBody(inputs: StreamInputs, core: StreamCore, response: Response) -> None:
        response.endBody()

    @forwarding.upon(S.rejected).loop()
    def _rejectForwarding(
        inputs: StreamInputs, core: StreamCore, response: Response, code: int, detail: str
    ) -> None:
        inputs.answered(_errorResponse(core, code, detail))

    @forwarding.upon(S.answered).to(responding)
    def _answerForwarding(inputs: StreamInputs, core: StreamCore, old: Response, response: Response) -> None:
        old.cancel()
        core.side.ready(response)

    @forwarding.upon(S.responseFailed).loop()
    def _noAnswer(inputs: StreamInputs, core: StreamCore, response: Response, reason: str) -> None:
        inputs.rejected(502, f"the tunnel target did not answer: {reason}")

    @forwarding.upon(S.headersSent).to(responding)
    def _headersSent(inputs: StreamInputs, core: StreamCore, old: Response, response: Response) -> None:
        pass

    def _sent(inputs: StreamInputs, core: StreamCore, response: Response) -> None:
        core.side.streamAnswered()
        _forget(core)

    def _sentEarly(inputs: StreamInputs, core: StreamCore, response: Response) -> None:
        core.side.streamAnswered()
        _dropResponse(core)

    def _abandon(inputs: StreamInputs, core: StreamCore, response: Response) -> None:
        _forget(core)

    forwarding.upon(S.responseSent).to(closed)(_sent)
    forwarding.upon(S.responseSentEarly).to(draining)(_sentEarly)
    forwarding.upon(S.abandoned).to(closed)(_abandon)

    # -- Responding: the head went out, or an error page is queued -------------------------
    responding.upon(S.bodyReceived).loop()(_body)

    @responding.upon(S.bodyTooLarge).to(closed)
    def _tooLateTooLarge(inputs: StreamInputs, core: StreamCore, response: Response) -> None:
        _reset(core, h2.errors.ErrorCodes.REFUSED_STREAM)

    responding.upon(S.bodyEnded).loop()(_endBody)

    @responding.upon(S.responseFailed).to(closed)
    def _cutShort(inputs: StreamInputs, core: StreamCore, response: Response, reason: str) -> None:
        # an answer cut short is reset, never ended as if complete
        _reset(core, h2.errors.ErrorCodes.INTERNAL_ERROR)

    @responding.upon(S.headersSent).loop()
    def _pageHeadSent(inputs: StreamInputs, core: StreamCore, old: Response, response: Response) -> None:
        pass

    responding.upon(S.responseSent).to(closed)(_sent)
    responding.upon(S.responseSentEarly).to(draining)(_sentEarly)
    responding.upon(S.abandoned).to(closed)(_abandon)

    # -- Draining: answered; the rest of the request body is dropped -------------------------
    @draining.upon(S.bodyReceived).loop()
    def _drop(inputs: StreamInputs, core: StreamCore, data: DrainData, body: bytes, size: int) -> None:
        core.side.giveBack(core.sid, size)
        data.dropped += size
        if data.dropped > DRAIN_LIMIT:
            core.side.resetStream(core.sid, h2.errors.ErrorCodes.NO_ERROR)
            inputs.abandoned()

    @draining.upon(S.bodyEnded).to(closed)
    def _drained(inputs: StreamInputs, core: StreamCore, data: DrainData) -> None:
        _forget(core)

    draining.upon(S.abandoned).to(closed)(_drained)

    # a lookup still running when the request was answered (its body was
    # too large) or reset ends here unheeded
    for late in (responding, draining):
        late.upon(S.resolved).loop().returns(None)
        late.upon(S.resolveFailed).loop().returns(None)

    # -- Closed: late results and bytes ------------------------------------------------------
    @closed.upon(S.bodyReceived).loop()
    def _late(inputs: StreamInputs, core: StreamCore, body: bytes, size: int) -> None:
        core.side.giveBack(core.sid, size)

    for name in ("resolved", "resolveFailed", "bodyEnded", "abandoned"):
        closed.upon(getattr(S, name)).loop().returns(None)

    # Deliberately impossible (a NoTransition would be a bug): Opened is
    # left within the read that opened the stream (no body, lookup or
    # exchange can reach it); lookups answer only in Routing (Opened has
    # none yet, Forwarding is reached only by its answer or without one;
    # every later state ignores them); an exchange reports a failure only
    # while it runs (Forwarding, Responding) and is cancelled as those are
    # left; forwarded, answered and bodyTooLarge are private inputs fed by
    # the states that take them; the connection sends a response (head,
    # last frame) only in Forwarding and Responding.
    return b.build(), forwarding


_machine, _FORWARDING = _build()
StreamMachine = indexed(_machine)


def newStream(side: StreamSide, sid: int, head: RequestHead | None, bodyFollows: bool) -> StreamCore:
    """
    A stream's core and machine (C{Opened}); feed its route to C{core.inputs}.
    """
    core = StreamCore(side, sid, head, bodyFollows)
    core.inputs = StreamMachine(core)
    return core


def _response(inputs: StreamInputs, core: StreamCore) -> Response | None:
    return core.response


def forwardedStream(
    side: StreamSide, sid: int, head: RequestHead, bodyFollows: bool, exchange: Exchange | SiteExchange
) -> StreamCore:
    """
    A stream whose route is known as it opens: its machine starts in
    C{Forwarding} with its L{Response} (where C{Opened} goes by
    C{forwarded}, one input fewer per request) and C{exchange} is started,
    as C{forwarded} would.
    """
    core = StreamCore(side, sid, head, bodyFollows)
    response = core.response = Response(core, exchange)
    core.inputs = StreamMachine(core, _FORWARDING, _response)
    exchange.start(head, response, bodyFollows)
    return core
