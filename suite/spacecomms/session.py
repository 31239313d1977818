"""
A peer session: one framed connection (4-byte length + JSON envelope)
driven by a typed state machine.

Inputs: connected, helloReceived, helloAccepted, helloRejected,
messageReceived, heartbeatDue, timedOut, closeRequested, connectionLost.
Outputs: sendHello, sendHeartbeat, deliver, sendError, disconnect.
States: Connecting -> Hello -> Established -> Closing -> Closed.

The dialing side sends HELLO as soon as the connection is up; the accepting
side answers with its own HELLO once it has accepted the dialer's.  An
established session sends HEARTBEAT every heartbeat_interval_seconds and is
closed when nothing arrives for session_timeout_seconds.  Reconnection with
backoff is the job of the peer manager's ClientService.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.netutil import noDelay
from suite.spacecomms.envelope import Envelope, EnvelopeError, decodeEnvelope
from suite.spacecomms.interfaces import IMessageSink, IPeerLink
from suite.spacecomms.logsetup import debugEnabled
from suite.spacecomms.store import StoreWriteError

__all__ = ["PeerProtocol", "SessionInputs", "SessionCore", "SessionMachine"]

log = Logger(namespace="spacecomms.session")

#: The first four bytes of an HTTP request.  Read as a frame length each is
#: over a gigabyte, far above any frame limit, so none can start a frame.
_HTTP_PREFIXES = (b"GET ", b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC", b"TRAC", b"CONN")


class SessionInputs(Protocol):
    def connected(self) -> None:
        "The transport is up (TLS handshake pending or done)."

    def helloReceived(self, hello: Envelope) -> None:
        "A HELLO arrived."

    def helloAccepted(self, peerId: str, peerTimeout: float | None = None) -> None:
        "The peer's HELLO checked out (with the session timeout it stated, if any)."

    def helloRejected(self, code: str, reason: str) -> None:
        "The peer's HELLO was refused."

    def messageReceived(self, envelope: Envelope) -> None:
        "Any other well-formed message arrived."

    def heartbeatDue(self) -> None:
        "Time to send a HEARTBEAT."

    def timedOut(self) -> None:
        "Nothing arrived for too long (or no HELLO in time)."

    def closeRequested(self, reason: str) -> None:
        "The node wants the session ended."

    def connectionLost(self, reason: str) -> None:
        "The transport is gone."


@dataclass
class SessionCore:
    """
    Collaborators of one session.
    """

    protocol: PeerProtocol
    sink: IMessageSink
    clock: IReactorTime
    expectedPeer: str | None
    heartbeatSeconds: float
    timeoutSeconds: float


#: Most bytes queued to a peer and not yet sent before the session is
#: closed: a peer that reads slower than it is sent to (while its
#: heartbeats keep the session up) would otherwise grow this node's memory
#: without bound.  The dialer reconnects and the re-sync (which waits for
#: the queue, see suite.spacecomms.resync.SYNC_QUEUE_BYTES) repairs.
MAX_QUEUE_BYTES = 64 * 1024 * 1024
#: Bytes written between two looks at the queue.
QUEUE_CHECK_BYTES = 1024 * 1024

#: The shortest heartbeat period a peer's stated timeout can ask for.
MIN_HEARTBEAT_SECONDS = 0.05


def heartbeatPeriod(ownSeconds: float, peerTimeout: float | None) -> float:
    """
    How often to send HEARTBEAT: every C{heartbeat_interval_seconds}, or a
    third of the C{session_timeout_seconds} the peer stated in its HELLO
    when that is shorter, so that two operators' differing timings never
    make the peer time the session out (and both re-sync) over and over.
    """
    if peerTimeout is None:
        return ownSeconds
    return min(ownSeconds, max(peerTimeout / 3, MIN_HEARTBEAT_SECONDS))


@dataclass
class HelloData:
    timer: IDelayedCall


@dataclass
class EstablishedData:
    peerId: str
    heartbeat: LoopingCall
    timer: IDelayedCall


def _build() -> TypeMachine[SessionInputs, SessionCore]:
    b = TypeMachineBuilder(SessionInputs, SessionCore)
    connecting = b.state("Connecting")

    def helloFactory(inputs: SessionInputs, core: SessionCore) -> HelloData:
        return HelloData(core.clock.callLater(core.timeoutSeconds, inputs.timedOut))

    hello = b.state("Hello", helloFactory)

    def establishedFactory(
        inputs: SessionInputs, core: SessionCore, peerId: str, peerTimeout: float | None = None
    ) -> EstablishedData:
        hb = LoopingCall(inputs.heartbeatDue)
        hb.clock = core.clock
        hb.start(heartbeatPeriod(core.heartbeatSeconds, peerTimeout), now=False)
        return EstablishedData(peerId, hb, core.clock.callLater(core.timeoutSeconds, inputs.timedOut))

    established = b.state("Established", establishedFactory)
    closing = b.state("Closing")
    closed = b.state("Closed")

    @connecting.upon(SessionInputs.connected).to(hello)
    def sendHello(inputs: SessionInputs, core: SessionCore) -> None:
        if core.expectedPeer is not None:
            core.protocol.sendHello(core.expectedPeer)

    @hello.upon(SessionInputs.helloReceived).loop()
    def checkHello(inputs: SessionInputs, core: SessionCore, data: HelloData, hello: Envelope) -> None:
        verdict = core.sink.checkHello(hello, core.expectedPeer)
        if verdict is None:
            verdict = core.protocol.checkCertificate(hello.payload["node_id"])
        if verdict is None:
            inputs.helloAccepted(hello.payload["node_id"], hello.payload.get("session_timeout_seconds"))
        else:
            code, reason = verdict
            inputs.helloRejected(code, reason)

    @hello.upon(SessionInputs.helloAccepted).to(established)
    def establish(
        inputs: SessionInputs,
        core: SessionCore,
        data: HelloData,
        peerId: str,
        peerTimeout: float | None = None,
    ) -> None:
        data.timer.cancel()
        core.protocol.peerId = peerId
        if core.expectedPeer is None:
            core.protocol.sendHello(peerId)
        log.info(
            "peer session established with {peer}", peer=peerId, peer_address=core.protocol.peerAddress()
        )
        core.sink.sessionEstablished(core.protocol)

    @hello.upon(SessionInputs.helloRejected).to(closing)
    def refuse(inputs: SessionInputs, core: SessionCore, data: HelloData, code: str, reason: str) -> None:
        data.timer.cancel()
        log.warn(
            "peer session refused ({code}): {reason}",
            code=code,
            reason=reason,
            peer_address=core.protocol.peerAddress(),
        )
        core.protocol.sendError(code, reason)
        core.protocol.disconnect()

    @hello.upon(SessionInputs.messageReceived).to(closing)
    def earlyMessage(inputs: SessionInputs, core: SessionCore, data: HelloData, envelope: Envelope) -> None:
        data.timer.cancel()
        core.protocol.sendError("UNAUTHORIZED", "HELLO must come first", envelope.message_id)
        core.protocol.disconnect()

    @hello.upon(SessionInputs.timedOut).to(closing)
    def helloTimeout(inputs: SessionInputs, core: SessionCore, data: HelloData) -> None:
        log.warn(
            "peer session: no HELLO within {seconds}s",
            seconds=core.timeoutSeconds,
            peer_address=core.protocol.peerAddress(),
        )
        core.protocol.disconnect()

    hello.upon(SessionInputs.heartbeatDue).loop().returns(None)

    @hello.upon(SessionInputs.closeRequested).to(closing)
    def closeEarly(inputs: SessionInputs, core: SessionCore, data: HelloData, reason: str) -> None:
        data.timer.cancel()
        core.protocol.disconnect()

    @hello.upon(SessionInputs.connectionLost).to(closed)
    def lostEarly(inputs: SessionInputs, core: SessionCore, data: HelloData, reason: str) -> None:
        if data.timer.active():
            data.timer.cancel()

    @established.upon(SessionInputs.messageReceived).loop()
    def deliver(inputs: SessionInputs, core: SessionCore, data: EstablishedData, envelope: Envelope) -> None:
        data.timer.reset(core.timeoutSeconds)
        core.sink.envelopeReceived(core.protocol, envelope)

    @established.upon(SessionInputs.helloReceived).loop()
    def duplicateHello(
        inputs: SessionInputs, core: SessionCore, data: EstablishedData, hello: Envelope
    ) -> None:
        data.timer.reset(core.timeoutSeconds)
        core.protocol.sendError("INVALID_MESSAGE", "HELLO on an established session", hello.message_id)

    @established.upon(SessionInputs.heartbeatDue).loop()
    def sendHeartbeat(inputs: SessionInputs, core: SessionCore, data: EstablishedData) -> None:
        core.protocol.sendHeartbeat()

    def _stop(data: EstablishedData) -> None:
        if data.heartbeat.running:
            data.heartbeat.stop()
        if data.timer.active():
            data.timer.cancel()

    @established.upon(SessionInputs.timedOut).to(closing)
    def expire(inputs: SessionInputs, core: SessionCore, data: EstablishedData) -> None:
        _stop(data)
        log.warn(
            "peer session lost with {peer}: no message for {seconds}s",
            peer=data.peerId,
            seconds=core.timeoutSeconds,
        )
        core.sink.sessionLost(core.protocol, "timeout")
        core.protocol.disconnect()

    @established.upon(SessionInputs.closeRequested).to(closing)
    def closeSession(inputs: SessionInputs, core: SessionCore, data: EstablishedData, reason: str) -> None:
        _stop(data)
        log.info("peer session lost with {peer}: {reason}", peer=data.peerId, reason=reason)
        core.sink.sessionLost(core.protocol, reason)
        core.protocol.disconnect()

    @established.upon(SessionInputs.connectionLost).to(closed)
    def lost(inputs: SessionInputs, core: SessionCore, data: EstablishedData, reason: str) -> None:
        _stop(data)
        log.warn("peer session lost with {peer}: {reason}", peer=data.peerId, reason=reason)
        core.sink.sessionLost(core.protocol, reason)

    @connecting.upon(SessionInputs.connectionLost).to(closed)
    def neverUp(inputs: SessionInputs, core: SessionCore, reason: str) -> None:
        pass

    connecting.upon(SessionInputs.closeRequested).to(closed).returns(None)
    closing.upon(SessionInputs.connectionLost).to(closed).returns(None)
    for final in (closing, closed):
        final.upon(SessionInputs.messageReceived).loop().returns(None)
        final.upon(SessionInputs.helloReceived).loop().returns(None)
        final.upon(SessionInputs.heartbeatDue).loop().returns(None)
        final.upon(SessionInputs.timedOut).loop().returns(None)
        final.upon(SessionInputs.closeRequested).loop().returns(None)
        final.upon(SessionInputs.helloAccepted).loop().returns(None)
        final.upon(SessionInputs.helloRejected).loop().returns(None)
    closed.upon(SessionInputs.connectionLost).loop().returns(None)
    return b.build()


SessionMachine = _build()


@implementer(IPeerLink)
class PeerProtocol(Int32StringReceiver):
    """
    The framed peer connection; the machine decides what each event means.
    """

    peerId: str = ""

    def __init__(
        self,
        sink: IMessageSink,
        nodeId: str,
        clock: IReactorTime,
        expectedPeer: str | None,
        heartbeatSeconds: float,
        timeoutSeconds: float,
        maxFrameBytes: int,
        hello: Callable[[str | None], dict[str, Any]],
    ) -> None:
        self.sink = sink
        self._sniffed = False
        self.nodeId = nodeId
        self.clock = clock
        self.MAX_LENGTH = maxFrameBytes
        self._hello = hello
        self._hbSequence = 0
        #: When each of the last heartbeats this side sent went out.
        self._hbSentAt: dict[int, float] = {}
        #: The peer's last heartbeat: its sequence and when it arrived.
        self._hbLast: tuple[int, float] | None = None
        self._sentBytes = 0
        self._frameEnds: deque[int] = deque()
        self._nextQueueCheck = QUEUE_CHECK_BYTES
        self._overflowing = False
        self.peerId = expectedPeer or ""
        self.machine = SessionMachine(
            SessionCore(self, sink, clock, expectedPeer, heartbeatSeconds, timeoutSeconds)
        )

    def peerAddress(self) -> str:
        """
        C{host:port} of the peer, for log lines (C{?} when not on TCP).
        """
        a = self.transport.getPeer() if self.transport is not None else None
        if isinstance(a, (IPv4Address, IPv6Address)):
            return f"{a.host}:{a.port}"
        return "?"

    def disconnect(self) -> None:
        """
        Close the connection once what was written is sent.
        """
        if self.transport is not None:
            self.transport.loseConnection()

    def certificateNames(self) -> set[str] | None:
        """
        The names (subject CN and DNS SANs) of the peer's TLS certificate,
        or None on a connection without TLS.
        """
        getCert = getattr(self.transport, "getPeerCertificate", None)
        if getCert is None:
            return None
        cert = getCert()
        if cert is None:
            return set()
        from cryptography import x509

        c = cert.to_cryptography()
        names = {str(a.value) for a in c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)}
        try:
            san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names.update(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            pass
        return names

    def checkCertificate(self, peerId: str) -> tuple[str, str] | None:
        """
        Bind the HELLO's node id to the mTLS identity: on a TLS session the
        peer's certificate must name C{peerId} (CN or DNS SAN).
        """
        names = self.certificateNames()
        if names is None or peerId in names:
            return None
        return ("UNAUTHORIZED", f"the peer's TLS certificate does not name node {peerId} (CN or DNS SAN)")

    def connectionMade(self) -> None:
        noDelay(self.transport)
        self.machine.connected()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.machine.connectionLost(reason.getErrorMessage() if reason is not None else "closed")

    def dataReceived(self, data: bytes) -> None:
        if not self._sniffed:
            self._sniffed = True
            if data[:4] in _HTTP_PREFIXES:
                self._answerHTTP(data)
                return
        super().dataReceived(data)

    def _answerHTTP(self, data: bytes) -> None:
        """
        A plain HTTP request on the peer port (an operator checking it with
        curl): answer C{/health} with a small JSON document and close.
        """
        path = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b""
        if data[:4] not in (b"GET ", b"HEAD"):
            code = b"405 Method Not Allowed"
            body = json.dumps({"error": "this is the SpaceComms peer port; only GET /health is served here"})
        elif path.split(b"?")[0] == b"/health":
            code = b"200 OK"
            body = json.dumps(
                {"status": "healthy", "node_id": self.nodeId, "protocol": "spacecomms", "versions": ["1.0"]}
            )
        else:
            code = b"404 Not Found"
            body = json.dumps({"error": "this is the SpaceComms peer port; only GET /health is served here"})
        raw = body.encode() + b"\n"
        head = (
            b"HTTP/1.0 "
            + code
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % len(raw)
        )
        assert self.transport is not None  # the request arrived on it
        self.transport.write(head + (b"" if data.startswith(b"HEAD") else raw))
        self.disconnect()

    def stringReceived(self, data: bytes) -> None:
        try:
            env = decodeEnvelope(data)
        except EnvelopeError as e:
            log.warn(
                "invalid message from peer {peer}: {error}",
                peer=self.peerId or self.peerAddress(),
                error=str(e),
            )
            self.sendError("INVALID_MESSAGE", str(e), e.messageId)
            return
        if debugEnabled():
            self._debugFrame("from", env, len(data))
        try:
            if env.message_type == "HELLO":
                self.machine.helloReceived(env)
            else:
                self.machine.messageReceived(env)
        except StoreWriteError as e:
            # Not stored, so not acknowledged: a later re-sync or
            # anti-entropy round brings it again.
            log.error(
                "{message_type} {message_id} from {peer} not stored: {reason}",
                message_type=env.message_type,
                message_id=env.message_id,
                peer=self.peerId,
                reason=str(e),
            )
            self.sendError("INTERNAL_ERROR", "the receiver cannot store it now", env.message_id)
        except Exception:  # the session keeps serving: logged, peer told
            log.failure(
                "internal error handling {message_type} from {peer}",
                message_type=env.message_type,
                peer=self.peerId,
            )
            self.sendError("INTERNAL_ERROR", "internal error", env.message_id)

    def _debugFrame(self, direction: str, env: Envelope, size: int) -> None:
        """
        One debug line per frame: its type, id, hops, path and size (never
        the payload, which may hold an C{auth_token}).
        """
        log.debug(
            "frame {direction} {peer}: {message_type} {message_id} hop {hop_count} path {path} ({size} bytes)",
            direction=direction,
            peer=self.peerId or self.peerAddress(),
            message_type=env.message_type,
            message_id=env.message_id,
            hop_count=env.hop_count,
            path="/".join(env.path),
            size=size,
        )

    def lengthLimitExceeded(self, length: int) -> None:
        log.warn(
            "peer {peer} sent a {length}-byte frame over the {limit}-byte limit; closing",
            peer=self.peerId or self.peerAddress(),
            length=length,
            limit=self.MAX_LENGTH,
        )
        self.sendError("INVALID_MESSAGE", f"frame of {length} bytes exceeds the {self.MAX_LENGTH}-byte limit")
        self.disconnect()

    # -- outputs used by the machine and the node --------------------------

    def sendEnvelope(self, envelope: Envelope) -> None:
        data = envelope.encode()
        if len(data) > self.MAX_LENGTH:
            # The peer would refuse it and close the session; never send it.
            log.error(
                "not sending {message_type} {message_id} to {peer}: {size} bytes exceeds the {limit}-byte frame limit",
                message_type=envelope.message_type,
                message_id=envelope.message_id,
                peer=self.peerId,
                size=len(data),
                limit=self.MAX_LENGTH,
            )
            return
        if debugEnabled():
            self._debugFrame("to", envelope, len(data))
        self.sendString(data)
        self._sentBytes += 4 + len(data)
        self._frameEnds.append(self._sentBytes)
        if len(self._frameEnds) > 100_000:
            self._frameEnds.popleft()
        if self._sentBytes >= self._nextQueueCheck:
            self._nextQueueCheck = self._sentBytes + QUEUE_CHECK_BYTES
            queued = self.queueDepth()
            if queued > MAX_QUEUE_BYTES and not self._overflowing:
                self._overflowing = True
                log.warn(
                    "peer session with {peer}: {queued} bytes queued and not read (over the {limit}-byte limit); "
                    "closing it (the next re-sync repairs what it missed)",
                    peer=self.peerId,
                    queued=queued,
                    limit=MAX_QUEUE_BYTES,
                )
                # Not from inside the caller's loop over the sessions.
                self.clock.callLater(0, self.close, "send queue over its limit")

    def sendHello(self, peerId: str) -> None:
        self.sendEnvelope(
            Envelope(
                "HELLO", self.nodeId, self._hello(peerId), timestamp=self.clock.seconds(), path=(self.nodeId,)
            )
        )

    def sendHeartbeat(self) -> None:
        self._hbSequence += 1
        now = self.clock.seconds()
        payload: dict[str, Any] = {"sequence": self._hbSequence, **self.sink.heartbeatCounts()}
        if self._hbLast is not None:
            # The peer's last heartbeat and how long it was held here: the
            # peer so measures a round trip on its own clock alone.
            seq, arrived = self._hbLast
            payload["echo"] = [seq, round(max(0.0, now - arrived) * 1000.0, 3)]
        self._hbSentAt[self._hbSequence] = now
        self._hbSentAt.pop(self._hbSequence - 8, None)
        self.sendEnvelope(Envelope("HEARTBEAT", self.nodeId, payload, timestamp=now, path=(self.nodeId,)))

    def heartbeatLatency(self, envelope: Envelope) -> float | None:
        """
        A HEARTBEAT arrived: remember it (the next one this side sends
        echoes it), and return half the round trip, in milliseconds, of
        the heartbeat of this side's it echoes, if any: a latency measured
        on this node's clock alone, whatever the skew between the two.
        """
        now = self.clock.seconds()
        self._hbLast = (int(envelope.payload["sequence"]), now)
        echo = envelope.payload.get("echo")
        if echo is None or echo[0] not in self._hbSentAt:
            return None
        return max(0.0, (now - self._hbSentAt[echo[0]]) * 1000.0 - float(echo[1])) / 2

    def sendError(self, code: str, reason: str, ref: str | None = None) -> None:
        self.sendEnvelope(
            Envelope(
                "ERROR",
                self.nodeId,
                {"code": code, "message": reason[:500], "ref_message_id": ref},
                timestamp=self.clock.seconds(),
                path=(self.nodeId,),
            )
        )

    def close(self, reason: str) -> None:
        self.machine.closeRequested(reason)

    def queuedMessages(self) -> int:
        """
        Messages written to this session and not yet wholly sent: frames
        whose last byte lies within the last L{queueDepth} bytes written
        (with TLS the buffered bytes are ciphertext, a few percent more than
        the frames, so this errs towards counting one more frame).
        """
        sent = self._sentBytes - self.queueDepth()
        while self._frameEnds and self._frameEnds[0] <= sent:
            self._frameEnds.popleft()
        return len(self._frameEnds)

    def queueDepth(self) -> int:
        """
        Bytes written to this session and not yet sent (TCP buffer of the
        transport, below TLS when there is TLS).
        """
        t: Any = self.transport
        for _ in range(3):
            if t is None:
                break
            buffered = getattr(t, "dataBuffer", None)
            if isinstance(buffered, bytes):
                return len(buffered) - int(getattr(t, "offset", 0)) + int(getattr(t, "_tempDataLen", 0))
            t = getattr(t, "transport", None)
        return 0
