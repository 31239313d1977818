"""
The node-to-node wire: length-prefixed msgpack frames over mTLS.

Each frame is a 4-byte big-endian length and a msgpack array; frames are
limited to L{MAX_FRAME} bytes (bulk transfers are chunked well below it).

    request   [0, id, vnodeId-or-nil, method, args]
    response  [1, id, true, result]  or  [1, id, false, [code, message, hint]]

A connection carries many calls at once (pipelined, matched by id); one
connection per peer process is kept and re-opened on demand.  Every peer
presents a certificate from the ring's CA (see L{suite.pki.tls}).  The
listener's ALPN name is L{ALPN}, so a gateway may later share the port.

Backpressure: the end that answers calls stops reading the connection
(C{transport.pauseProducing}) while a peer does not read its answers or
has too many calls in flight, so its memory stays bounded.  The protocol
is its transport's streaming producer: the transport reports when its
write buffer fills (Twisted's 64 KiB mark) and when it has drained.
Reading stops when

  - the answers queued here or written since the buffer filled reach
    L{MAX_UNSENT} (reading resumes once the buffer has drained), or
  - the calls dispatched but not yet answered reach L{IN_FLIGHT_BUDGET},
    each counting its request frame's size plus L{CALL_WEIGHT}: at most
    L{MAX_IN_FLIGHT} calls, fewer large ones (reading resumes at half).

Frames already read when reading stops stay unparsed until it resumes, so
what a connection holds is bounded: one read (64 KiB) and one partial
frame, the transport's 64 KiB mark plus L{MAX_UNSENT} plus one answer, and
the calls in flight and their answers.

Only answers and served calls count: an end awaiting responses to its own
calls never stops reading, so two ends that each wait for the other
cannot both stop (a ring connection carries calls one way only: the
dialling process calls, the accepting one answers).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.pki.peer import peerCertificate
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.pacing import ReadingCore, ReadingMachine
from suite.specter.interfaces import IChordTransport

__all__ = [
    "ALPN",
    "MAX_FRAME",
    "CALL_WEIGHT",
    "IN_FLIGHT_BUDGET",
    "MAX_IN_FLIGHT",
    "MAX_UNSENT",
    "FrameProtocol",
    "ChordServerFactory",
    "WireTransport",
    "pack",
    "unpack",
]

log = Logger()
ALPN = b"specter-chord/1"
MAX_FRAME = 64 * 1024 * 1024
#: answer bytes queued, or written after the transport's buffer filled,
#: before reading stops
MAX_UNSENT = 4 * 1024 * 1024
#: the budget of calls served at once on one connection: each counts its
#: request frame's bytes plus L{CALL_WEIGHT}, and reading stops when they
#: reach it (at most MAX_IN_FLIGHT calls, fewer when they are large)
IN_FLIGHT_BUDGET = 64 * 1024 * 1024
CALL_WEIGHT = 64 * 1024
MAX_IN_FLIGHT = IN_FLIGHT_BUDGET // CALL_WEIGHT
REQUEST, RESPONSE = 0, 1


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@implementer(IPushProducer)
class FrameProtocol(Int32StringReceiver):
    """
    Both ends of a connection: answers requests with C{dispatch} and
    matches responses to pending calls.  Registered as its transport's
    producer, it stops reading while the peer does not take its answers or
    too many calls are in flight (see the module's docstring).
    """

    MAX_LENGTH = MAX_FRAME

    def __init__(
        self, dispatch: Callable[[Any, str, list[Any]], Deferred[Any]] | None = None, clock: Any = None
    ) -> None:
        self.dispatch = dispatch
        self.clock = clock
        self._out: list[bytes] = []
        self._flushCall: Any = None
        self.pending: dict[int, Deferred[Any]] = {}
        self.nextId = 1
        self.closed = False
        self.onLost: list[Callable[[], None]] = []
        #: the weight of the calls dispatched and not yet answered (see
        #: L{IN_FLIGHT_BUDGET})
        self.inFlight = 0
        #: answer bytes queued here or written since the transport reported
        #: its buffer full (0 while the transport keeps up)
        self.unsent = 0
        #: the transport's last report: its write buffer is past its mark
        self._full = False
        self._frameLength = 0
        self._receiving = False
        self.reading = ReadingMachine(ReadingCore(pause=self._stopReading, resume=self._readOn))

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(self, True)

    # IPushProducer: the transport's write buffer filled / drained

    def pauseProducing(self) -> None:
        self._full = True

    def resumeProducing(self) -> None:
        self._full = False
        if not self._out:
            self._drained()

    def stopProducing(self) -> None:
        """
        The transport is gone; L{connectionLost} follows.
        """

    # reading (L{suite.specter.chord.pacing}), fed where a counter crosses a limit

    def _checkLoad(self) -> None:
        if not self.pending and (self.unsent >= MAX_UNSENT or self.inFlight >= IN_FLIGHT_BUDGET):
            self.reading.congested()

    def _checkRelief(self) -> None:
        if self.pending or (self.unsent < MAX_UNSENT and self.inFlight <= IN_FLIGHT_BUDGET // 2):
            self.reading.relieved()
            if not self.paused and self._unprocessed and not self._receiving and not self.closed:
                # frames received before reading stopped
                self.dataReceived(b"")

    def _stopReading(self) -> None:
        # the receiver's own flag stops it at the next buffered frame
        self.paused = True
        transport: Any = self.transport
        transport.pauseProducing()

    def _readOn(self) -> None:
        self.paused = False
        transport: Any = self.transport
        transport.resumeProducing()

    def _drained(self) -> None:
        """
        The transport took every answer written (below its mark).
        """
        unsent, self.unsent = self.unsent, 0
        if unsent >= MAX_UNSENT:
            self._checkRelief()

    def dataReceived(self, data: bytes) -> None:
        # reading resumed from within a frame goes on in the running loop
        self._receiving = True
        try:
            super().dataReceived(data)
        finally:
            self._receiving = False

    def sendString(self, string: bytes) -> None:
        """
        Queue a frame; frames queued in one reactor turn are written
        together (one TLS record instead of many) when a clock was given.
        """
        if self.clock is None:
            super().sendString(string)
            if not self._full and self.unsent:
                self._drained()
            return
        self._out.append(struct.pack(">I", len(string)))
        self._out.append(string)
        if self._flushCall is None:
            self._flushCall = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flushCall = None
        out, self._out = self._out, []
        if out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))
            if not self._full and self.unsent:
                self._drained()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def lengthLimitExceeded(self, length: int) -> None:
        log.warn("peer sent an oversized frame ({length} bytes); closing", length=length)
        self._close()

    def stringReceived(self, data: bytes) -> None:
        try:
            msg = unpack(data)
            kind = msg[0]
        except Exception:  # untrusted input: logged, closed
            log.warn("peer sent an undecodable frame; closing")
            self._close()
            return
        if kind == REQUEST and self.dispatch is not None and len(msg) == 5:
            _, rid, vid, method, args = msg
            self._frameLength = len(data) + CALL_WEIGHT
            self._serve(rid, vid, method, args)
        elif kind == RESPONSE and len(msg) == 4:
            _, rid, ok, result = msg
            d = self.pending.pop(rid, None)
            if not self.pending and (self.inFlight or self.unsent):
                self._checkLoad()
            if d is not None:
                if ok:
                    d.callback(result)
                else:
                    d.errback(RemoteError.fromWire(result))
        else:
            log.warn("peer sent a malformed frame; closing")
            self._close()

    def _serve(self, rid: Any, vid: Any, method: Any, args: Any) -> None:
        assert self.dispatch is not None
        if not isinstance(method, str) or not isinstance(args, list):
            self._answer(rid, False, RemoteError(E.BAD_REQUEST, "malformed call").toWire())
            return
        size = self._frameLength
        self.inFlight += size
        if self.inFlight >= IN_FLIGHT_BUDGET:
            self._checkLoad()
        d = self.dispatch(vid, method, args)

        def ok(result: Any) -> None:
            held = self.inFlight = self.inFlight - size
            self._answer(rid, True, result)
            if held <= IN_FLIGHT_BUDGET // 2 < held + size:
                self._checkRelief()

        def bad(f: Failure) -> None:
            held = self.inFlight = self.inFlight - size
            err = f.value if isinstance(f.value, RemoteError) else RemoteError(E.INTERNAL, "call failed")
            self._answer(rid, False, err.toWire())
            if held <= IN_FLIGHT_BUDGET // 2 < held + size:
                self._checkRelief()

        d.addCallbacks(ok, bad)

    def _answer(self, rid: Any, ok: bool, result: Any) -> None:
        if self.closed:
            return
        try:
            frame = pack([RESPONSE, rid, ok, result])
        except (TypeError, ValueError):
            frame = pack([RESPONSE, rid, False, RemoteError(E.INTERNAL, "unencodable result").toWire()])
        self.unsent += len(frame) + 4
        self.sendString(frame)
        if self.unsent >= MAX_UNSENT:
            self._checkLoad()

    def request(self, vid: Any, method: str, args: list[Any]) -> Deferred[Any]:
        rid = self.nextId
        self.nextId += 1

        def cancel(_: Deferred[Any]) -> None:
            self.pending.pop(rid, None)

        d: Deferred[Any] = Deferred(cancel)
        self.pending[rid] = d
        if len(self.pending) == 1 and (self.inFlight or self.unsent):
            # its response must be read
            self._checkRelief()
        self.sendString(pack([REQUEST, rid, vid, method, args]))
        return d

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.closed = True
        self.reading.lost()
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        pending, self.pending = self.pending, {}
        for d in pending.values():
            d.errback(RemoteError(E.GONE, "connection lost"))
        for f in self.onLost:
            f()


#: calls whose first argument is the calling vnode's reference
NAMES_CALLER = frozenset({"join", "notify", "handoff", "leaving", "newSuccessor"})


def _host(addr: str) -> str:
    return addr.rpartition(":")[0].strip("[]")


def callerMismatch(certificate: Any, vid: Any, method: Any, args: Any) -> str | None:
    """
    Why a call that names its caller (see L{NAMES_CALLER}) must be refused:
    the caller's certificate (a C{cryptography} certificate, or None when
    not checked) does not name the host of the address it claims.
    """
    if certificate is None or vid is None or method not in NAMES_CALLER:
        return None
    if not isinstance(args, list) or not args or not isinstance(args[0], list) or len(args[0]) != 3:
        return None
    claimed = args[0][1]
    if not isinstance(claimed, str):
        return "malformed vnode reference"
    from suite.pki.verify import VerificationError, verifyCertificate

    try:
        verifyCertificate(certificate, hostname=_host(claimed))
    except (VerificationError, ValueError) as e:
        return f"{method} from {claimed} refused: {e}"
    return None


class ChordServerFactory(Factory):
    """
    Accepts connections from other ring processes and dispatches their
    calls.  A call that names its caller's vnode (join, notify, handoff,
    leaving, newSuccessor) is refused unless the caller's certificate names
    the host of the address in that reference.
    """

    def __init__(self, dispatch: Callable[[Any, str, list[Any]], Deferred[Any]], clock: Any = None) -> None:
        self.dispatch = dispatch
        self.clock = clock
        self.refused = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        p = FrameProtocol(None, self.clock)

        def checked(vid: Any, method: str, args: list[Any]) -> Deferred[Any]:
            problem = callerMismatch(_peerCertificate(p), vid, method, args)
            if problem is not None:
                self.refused += 1
                log.warn("ring call refused: {problem}", problem=problem)
                d: Deferred[Any] = Deferred()
                d.errback(RemoteError(E.FORBIDDEN, problem))
                return d
            return self.dispatch(vid, method, args)

        p.dispatch = checked
        p.factory = self
        return p


def _peerCertificate(proto: FrameProtocol) -> Any:
    try:
        return peerCertificate(proto.transport)
    except Exception:  # no certificate readable: treated as none
        return None


@implementer(IChordTransport)
class WireTransport:
    """
    Calls other processes over one pooled mTLS connection each.

    @param contextFactory: the L{suite.pki.tls.clientContextFactory} result,
        or a callable taking the host dialled and returning one (so that the
        peer's certificate must name the address it is dialled at).
    """

    def __init__(
        self,
        reactor: Any,
        contextFactory: Any,
        dispatch: Callable[[Any, str, list[Any]], Deferred[Any]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.contextFactory = contextFactory
        self._creators: dict[str, Any] = {}
        self.dispatch = dispatch
        self.connections: dict[str, Deferred[FrameProtocol]] = {}
        self.calls = 0

    def _connect(self, addr: str) -> Deferred[FrameProtocol]:
        existing = self.connections.get(addr)
        if existing is not None:
            return _share(existing)
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        creator = self.contextFactory
        if callable(creator):
            if host not in self._creators:
                self._creators[host] = creator(host)
            creator = self._creators[host]
        endpoint = wrapClientTLS(creator, HostnameEndpoint(self.reactor, host, int(port), timeout=5))
        factory = Factory.forProtocol(lambda: FrameProtocol(self.dispatch, self.reactor))
        d: Deferred[FrameProtocol] = endpoint.connect(factory)  # type: ignore[assignment]
        self.connections[addr] = d

        def up(proto: FrameProtocol) -> FrameProtocol:
            def lost() -> None:
                if self.connections.get(addr) is d:
                    del self.connections[addr]

            proto.onLost.append(lost)
            return proto

        def down(f: Failure) -> Failure:
            if self.connections.get(addr) is d:
                del self.connections[addr]
            return f

        d.addCallbacks(up, down)
        return _share(d)

    def call(
        self, addr: str, vnodeId: int | None, method: str, args: list[Any], timeout: float
    ) -> Deferred[Any]:
        self.calls += 1
        result: Deferred[Any] = Deferred()

        def expire() -> None:
            if not result.called:
                result.errback(RemoteError(E.TIMEOUT, f"{method} to {addr}"))

        timer: IDelayedCall = self.reactor.callLater(timeout, expire)

        def connected(proto: FrameProtocol) -> Deferred[Any]:
            return proto.request(vnodeId, method, args)

        def unreachable(f: Failure) -> Failure:
            if f.check(RemoteError):
                return f
            raise RemoteError(E.GONE, f"{addr} unreachable: {f.getErrorMessage()}")

        def finish(outcome: Any) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)

        self._connect(addr).addCallback(connected).addErrback(unreachable).addBoth(finish)
        return result

    def close(self) -> None:
        def drop(p: FrameProtocol) -> None:
            p._close()

        for d in list(self.connections.values()):
            d.addCallback(drop).addErrback(lambda _: None)
        self.connections.clear()


def _share(d: Deferred[FrameProtocol]) -> Deferred[FrameProtocol]:
    out: Deferred[FrameProtocol] = Deferred()

    def fire(value: Any) -> Any:
        if isinstance(value, Failure):
            out.errback(value)
            return None
        out.callback(value)
        return value

    if d.called:
        result: Any = getattr(d, "result", None)
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(result)
        return out
    d.addBoth(fire)
    return out
