"""
The network transport: UDP datagrams for probes and gossip, TCP streams for
push-pull, on one port number.

A push-pull stream carries one request frame and one reply frame, each a
4-byte big-endian length and that many bytes; frames over C{maxStateBytes}
and streams idle for C{timeout} are closed.  With C{serverTLS} and
C{clientTLS} (pyOpenSSL connection creators, e.g. from L{suite.pki.tls})
the streams run over mutually authenticated TLS; datagrams are protected
only by the node's HMAC key.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.gossip.interfaces import IGossipTransport, IPacketReceiver
from suite.gossip.messages import Address

__all__ = ["NetworkTransport"]

log = Logger()
LENGTH = struct.Struct(">I")


class _Datagrams(DatagramProtocol):
    noisy = False

    def __init__(self, owner: NetworkTransport) -> None:
        self.owner = owner

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        receiver = self.owner.receiver
        if receiver is not None:
            receiver.packetReceived(datagram, (addr[0], addr[1]))


class _OneFrame(Protocol):
    """
    Read one length-prefixed frame, with a size limit and an idle timeout.
    """

    def __init__(self, owner: NetworkTransport) -> None:
        self.owner = owner
        self._buffer = b""
        self._done = False
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._timer = self.owner.reactor.callLater(self.owner.timeout, self._timedOut)

    def _timedOut(self) -> None:
        self._timer = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        if len(self._buffer) < 4:
            return
        (length,) = LENGTH.unpack_from(self._buffer)
        if length > self.owner.maxStateBytes:
            self._done = True
            log.warn(
                "closing push-pull stream from {peer}: frame of {length} bytes exceeds {limit}",
                peer=str(self.transport.getPeer()),  # type: ignore[union-attr]
                length=length,
                limit=self.owner.maxStateBytes,
            )
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if len(self._buffer) - 4 >= length:
            self._done = True
            frame = self._buffer[4 : 4 + length]
            self._buffer = b""
            self.frameReceived(frame)

    def frameReceived(self, frame: bytes) -> None:
        raise NotImplementedError

    def sendFrame(self, frame: bytes) -> None:
        self.transport.write(LENGTH.pack(len(frame)) + frame)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _ServerStream(_OneFrame):
    def frameReceived(self, frame: bytes) -> None:
        receiver = self.owner.receiver
        peer: Any = self.transport.getPeer()  # type: ignore[union-attr]
        reply = None if receiver is None else receiver.stateReceived(frame, (peer.host, peer.port))
        if reply is not None:
            self.sendFrame(reply)
        self.transport.loseConnection()  # type: ignore[union-attr]


class _ClientStream(_OneFrame):
    def __init__(self, owner: NetworkTransport, request: bytes, result: Deferred[bytes]) -> None:
        super().__init__(owner)
        self.request = request
        self.result = result

    def connectionMade(self) -> None:
        super().connectionMade()
        self.sendFrame(self.request)

    def frameReceived(self, frame: bytes) -> None:
        if not self.result.called:
            self.result.callback(frame)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if not self.result.called:
            self.result.errback(
                reason if not reason.check(ConnectionDone) else Failure(ConnectionDone("no reply"))
            )


class _ClientFactory(ClientFactory):
    noisy = False

    def __init__(self, owner: NetworkTransport, request: bytes, result: Deferred[bytes]) -> None:
        self.owner, self.request, self.result = owner, request, result
        self.protocolInstance: _ClientStream | None = None

    def buildProtocol(self, addr: Any) -> _ClientStream:
        self.protocolInstance = _ClientStream(self.owner, self.request, self.result)
        return self.protocolInstance

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.result.called:
            self.result.errback(reason)


@implementer(IGossipTransport)
class NetworkTransport:
    """
    UDP and TCP on C{host}:C{port} through an injected reactor.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        maxPacketBytes: int = 1400,
        maxStateBytes: int = 4 * 1024 * 1024,
        timeout: float = 10.0,
        serverTLS: Any = None,
        clientTLS: Callable[[str], Any] | None = None,
    ) -> None:
        self.reactor = reactor
        self.host, self.port = host, port
        self.maxPacketBytes = maxPacketBytes
        self.maxStateBytes = maxStateBytes
        self.timeout = timeout
        self.serverTLS, self.clientTLS = serverTLS, clientTLS
        self.receiver: IPacketReceiver | None = None
        self._udp: IListeningPort | None = None
        self._tcp: IListeningPort | None = None

    def startListening(self, receiver: IPacketReceiver) -> None:
        """
        Bind UDP and TCP (raises L{twisted.internet.error.CannotListenError}).
        """
        self.receiver = receiver
        # One byte more than the limit, so oversized datagrams are seen (and
        # dropped by the node) rather than silently truncated.
        self._udp = self.reactor.listenUDP(
            self.port, _Datagrams(self), interface=self.host, maxPacketSize=self.maxPacketBytes + 1
        )
        if self.port == 0:
            self.port = self._udp.getHost().port  # type: ignore[attr-defined,union-attr]
        factory: Any = Factory.forProtocol(lambda: _ServerStream(self))
        factory.noisy = False
        if self.serverTLS is not None:
            factory = TLSMemoryBIOFactory(self.serverTLS, False, factory)
        try:
            self._tcp = self.reactor.listenTCP(self.port, factory, interface=self.host)
        except Exception:
            self._udp.stopListening()
            self._udp = None
            raise

    def stopListening(self) -> Deferred[Any]:
        self.receiver = None
        ports = [p for p in (self._udp, self._tcp) if p is not None]
        self._udp = self._tcp = None
        return DeferredList([maybeDeferred(p.stopListening) for p in ports])

    def sendPacket(self, address: Address, data: bytes) -> None:
        if self._udp is None:
            return
        if len(data) > self.maxPacketBytes:
            raise ValueError(f"packet of {len(data)} bytes exceeds {self.maxPacketBytes}")
        try:
            self._udp.write(data, address)  # type: ignore[attr-defined]
        except (OSError, ValueError) as e:
            # ValueError: Twisted's InvalidAddressError for a host name; UDP
            # addresses must be IP literals (the runner resolves its own).
            log.debug("sending to {address} failed: {error}", address=str(address), error=str(e))

    def exchangeState(self, address: Address, data: bytes) -> Deferred[bytes]:
        holder: list[_ClientFactory] = []

        def cancel(d: Deferred[bytes]) -> None:
            proto = holder[0].protocolInstance if holder else None
            if proto is not None and proto.transport is not None:
                proto.transport.abortConnection()  # type: ignore[attr-defined]
            connector.disconnect()

        result: Deferred[bytes] = Deferred(cancel)
        factory: Any = _ClientFactory(self, data, result)
        holder.append(factory)
        if self.clientTLS is not None:
            factory = TLSMemoryBIOFactory(self.clientTLS(address[0]), True, factory)
        connector = self.reactor.connectTCP(address[0], address[1], factory, timeout=self.timeout)
        return result
