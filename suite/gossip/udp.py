"""
The network transport: UDP datagrams for probes and gossip, TCP streams for
push-pull, on one port number.

A stream carries one request and at most one reply, each a memberlist
stream message (see L{suite.gossip.codec}): the receiver's
C{streamComplete} says when the bytes read so far hold a whole message.
Streams over C{maxStateBytes} and streams idle for C{timeout} are closed;
a reply also ends when the peer closes the connection.  With C{serverTLS}
and C{clientTLS} (pyOpenSSL connection creators, e.g. from
L{suite.pki.tls}) the streams run over mutually authenticated TLS, which
memberlist nodes do not speak; use it only among suite nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IListeningPort, ITCPTransport, ITransport, IUDPTransport
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.gossip.fields import Address
from suite.gossip.interfaces import IGossipTransport, IPacketReceiver

__all__ = ["NetworkTransport"]

log = Logger()


class _Datagrams(DatagramProtocol):
    noisy = False

    def __init__(self, owner: NetworkTransport) -> None:
        self.owner = owner

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        receiver = self.owner.receiver
        if receiver is not None:
            receiver.packetReceived(datagram, (addr[0], addr[1]))


class _OneMessage(Protocol):
    """
    Read one stream message, with a size limit and an idle timeout.
    """

    def __init__(self, owner: NetworkTransport) -> None:
        self.owner = owner
        self._buffer = b""
        self._done = False
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._timer = self.owner.reactor.callLater(self.owner.timeout, self._timedOut)

    def _connection(self) -> ITransport:
        # Set by makeConnection, before any other call.
        assert self.transport is not None
        return self.transport

    def _abort(self) -> None:
        """
        Drop the connection now (TCP, or TLS over TCP; anything else is closed).
        """
        if ITCPTransport.providedBy(self.transport):
            self.transport.abortConnection()
        else:
            self._connection().loseConnection()

    def _peer(self) -> tuple[str, int]:
        peer = self._connection().getPeer()
        if isinstance(peer, (IPv4Address, IPv6Address)):
            return (peer.host, peer.port)
        return ("", 0)

    def _timedOut(self) -> None:
        self._timer = None
        self._abort()

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        if len(self._buffer) > self.owner.maxStateBytes + 1024:
            self._done = True
            log.warn(
                "closing gossip stream from {peer}: over {limit} bytes",
                peer=str(self._connection().getPeer()),
                limit=self.owner.maxStateBytes,
            )
            self._abort()
            return
        receiver = self.owner.receiver
        if receiver is None or receiver.streamComplete(self._buffer):
            self._done = True
            message, self._buffer = self._buffer, b""
            self.messageReceived(message)

    def messageReceived(self, message: bytes) -> None:
        raise NotImplementedError

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _ServerStream(_OneMessage):
    def messageReceived(self, message: bytes) -> None:
        receiver = self.owner.receiver
        reply = None if receiver is None else receiver.stateReceived(message, self._peer())
        if reply is not None:
            self._connection().write(reply)
        self._connection().loseConnection()


class _ClientStream(_OneMessage):
    def __init__(self, owner: NetworkTransport, request: bytes, result: Deferred[bytes]) -> None:
        super().__init__(owner)
        self.request = request
        self.result = result

    def connectionMade(self) -> None:
        super().connectionMade()
        self._connection().write(self.request)

    def messageReceived(self, message: bytes) -> None:
        if not self.result.called:
            self.result.callback(message)
        self._connection().loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if not self.result.called:
            if self._buffer:
                # The peer closed after a reply we could not yet judge
                # complete: let the node decide.
                self.result.callback(self._buffer)
                return
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
        maxIncomingBytes: int = 65536,
    ) -> None:
        self.reactor = reactor
        self.host, self.port = host, port
        self.maxPacketBytes = maxPacketBytes
        self.maxIncomingBytes = maxIncomingBytes
        self.maxStateBytes = maxStateBytes
        self.timeout = timeout
        self.serverTLS, self.clientTLS = serverTLS, clientTLS
        self.receiver: IPacketReceiver | None = None
        self._udp: IUDPTransport | None = None
        self._tcp: IListeningPort | None = None

    def startListening(self, receiver: IPacketReceiver) -> None:
        """
        Bind UDP and TCP (raises L{twisted.internet.error.CannotListenError}).
        """
        self.receiver = receiver
        # One byte more than the limit, so oversized datagrams are seen (and
        # dropped by the node) rather than silently truncated.
        # The reactor's UDP port: an IListeningPort that is an IUDPTransport too.
        udp: IUDPTransport = self.reactor.listenUDP(
            self.port, _Datagrams(self), interface=self.host, maxPacketSize=self.maxIncomingBytes + 1
        )
        self._udp = udp
        if self.port == 0:
            self.port = udp.getHost().port
        factory: Any = Factory.forProtocol(lambda: _ServerStream(self))
        factory.noisy = False
        if self.serverTLS is not None:
            factory = TLSMemoryBIOFactory(self.serverTLS, False, factory)
        try:
            self._tcp = self.reactor.listenTCP(self.port, factory, interface=self.host)
        except Exception:  # clean up and re-raise
            udp.stopListening()
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
            self._udp.write(data, address)
        except (OSError, ValueError) as e:
            # ValueError: Twisted's InvalidAddressError for a host name; UDP
            # addresses must be IP literals (the runner resolves its own).
            log.debug("sending to {address} failed: {error}", address=str(address), error=str(e))

    def exchangeState(self, address: Address, data: bytes) -> Deferred[bytes]:
        holder: list[_ClientFactory] = []

        def cancel(d: Deferred[bytes]) -> None:
            proto = holder[0].protocolInstance if holder else None
            if proto is not None and proto.transport is not None:
                proto._abort()
            connector.disconnect()

        result: Deferred[bytes] = Deferred(cancel)
        factory: Any = _ClientFactory(self, data, result)
        holder.append(factory)
        if self.clientTLS is not None:
            factory = TLSMemoryBIOFactory(self.clientTLS(address[0]), True, factory)
        connector = self.reactor.connectTCP(address[0], address[1], factory, timeout=self.timeout)
        return result
