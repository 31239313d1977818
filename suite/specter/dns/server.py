"""
The DNS listeners of C{specter dns}: a L{DNSServerFactory} that answers
only from an L{ACMEZone}, with its UDP and TCP protocols.

Compared with the stock server: responses (QR set) are never answered, so
the server cannot be used to reflect traffic; REFUSED, FORMERR and NOTIMP
replies are proper responses; undecodable packets are counted, not logged
one by one; UDP answers larger than 512 bytes are truncated with TC set
(the client retries over TCP); TCP messages are bounded by their 16-bit
length prefix, idle TCP connections are closed after C{idleTimeout}
seconds and at most C{maxConnections} are open at once.  Optionally each
source address gets C{rateLimit} UDP queries per second (excess dropped).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.server import DNSServerFactory
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from suite.specter.dns.zone import ACMEZone, Answer

__all__ = ["ACMEDNSFactory", "DatagramProtocol", "StreamProtocol", "UDP_MAX"]

log = Logger()

#: Largest UDP answer sent (no EDNS): longer ones are truncated with TC set.
UDP_MAX = 512


def _parse(data: bytes) -> dns.Message | None:
    message = dns.Message()
    try:
        message.fromStr(data)
    except Exception:
        return None
    return message


class DatagramProtocol(dns.DNSDatagramProtocol):
    """
    UDP: decode each datagram and hand queries to the factory.
    """

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        factory: ACMEDNSFactory = self.controller
        if not factory.admit(addr[0]):
            factory.stats["rate-limited"] += 1
            return
        message = _parse(data)
        if message is None:
            factory.stats["malformed"] += 1
            return
        factory.messageReceived(message, self, addr)


class StreamProtocol(dns.DNSProtocol, TimeoutMixin):
    """
    TCP: length-prefixed messages, closed when idle.
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        self.setTimeout(self.controller.idleTimeout)

    def stringReceived(self, data: bytes) -> None:
        self.resetTimeout()
        message = _parse(data)
        if message is None:
            self.controller.stats["malformed"] += 1
            if self.transport is not None:
                self.transport.loseConnection()
            return
        self.controller.messageReceived(message, self)

    def timeoutConnection(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.setTimeout(None)
        super().connectionLost(reason)


class ACMEDNSFactory(DNSServerFactory):
    """
    Answers every query from C{zone}; never recurses.
    """

    protocol = StreamProtocol

    def __init__(
        self,
        zone: ACMEZone,
        reactor: Any,
        idleTimeout: float = 30.0,
        maxConnections: int = 256,
        rateLimit: float = 0.0,
    ) -> None:
        super().__init__()
        self.zone = zone
        self.reactor = reactor
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.rateLimit = rateLimit
        self.buckets: dict[str, tuple[float, float]] = {}
        self.stats: Counter[str] = Counter()

    def buildProtocol(self, addr: IAddress) -> StreamProtocol | None:  # type: ignore[override]
        if len(self.connections) >= self.maxConnections:
            self.stats["tcp-refused"] += 1
            return None
        p = StreamProtocol(self, self.reactor)
        p.factory = self
        return p

    def admit(self, host: str) -> bool:
        """
        Per-source token bucket (C{rateLimit} per second, burst twice that).
        """
        if self.rateLimit <= 0:
            return True
        now = self.reactor.seconds()
        burst = 2 * self.rateLimit
        tokens, then = self.buckets.get(host, (burst, now))
        tokens = min(burst, tokens + (now - then) * self.rateLimit)
        if len(self.buckets) > 65536:
            self.buckets.clear()
        if tokens < 1:
            self.buckets[host] = (tokens, now)
            return False
        self.buckets[host] = (tokens - 1, now)
        return True

    def messageReceived(self, message: dns.Message, proto: Any, address: Any = None) -> None:
        if message.answer:
            self.stats["dropped-response"] += 1
            return
        self.stats["queries"] += 1
        if message.opCode != dns.OP_QUERY:
            self._send(proto, message, address, Answer(dns.ENOTIMP, authoritative=False))
        elif len(message.queries) != 1:
            self._send(proto, message, address, Answer(dns.EFORMAT, authoritative=False))
        else:
            self.handleQuery(message, proto, address)

    def handleQuery(self, message: dns.Message, proto: Any, address: Any = None) -> Any:
        query = message.queries[0]

        def failed(f: Failure) -> Answer:
            log.failure("answering {name} failed", f, name=query.name)
            return Answer(dns.ESERVER, authoritative=False)

        d = self.zone.lookup(query.name.name, query.type, query.cls)
        d.addErrback(failed)
        d.addCallback(lambda answer: self._send(proto, message, address, answer))
        return d

    def _send(self, proto: Any, message: dns.Message, address: Any, answer: Answer) -> None:
        response = dns.Message(
            id=message.id,
            answer=1,
            opCode=message.opCode,
            auth=answer.authoritative,
            recDes=message.recDes,
            recAv=0,
            rCode=answer.rCode,
            maxSize=UDP_MAX if address is not None else 0,
        )
        response.queries = message.queries
        response.answers = answer.answers
        response.authority = answer.authority
        response.additional = answer.additional
        self.stats[f"rcode-{answer.rCode}"] += 1
        if address is None and (proto.transport is None or getattr(proto.transport, "disconnected", False)):
            return
        try:
            if address is None:
                proto.writeMessage(response)
            else:
                proto.writeMessage(response, address)
        except OSError as e:
            self.stats["send-failed"] += 1
            log.debug("could not send the answer to {addr}: {e}", addr=address, e=e)
