"""
The DNS listeners of C{specter dns}: a L{DNSServerFactory} that answers
only from an L{ACMEZone}, with its UDP and TCP protocols.

Compared with the stock server: responses (QR set) are never answered, so
the server cannot be used to reflect traffic; REFUSED, FORMERR and NOTIMP
replies are proper responses; undecodable packets are counted, not logged
one by one; UDP answers larger than 512 bytes are truncated with TC set
(the client retries over TCP); TCP messages are bounded by their 16-bit
length prefix, idle TCP connections are closed after C{idleTimeout}
seconds and at most C{maxConnections} are open at once; a TCP client that
stops reading its answers is no longer read from until it does (its
queries cannot pile answers up in memory), and closed when that lasts the
idle timeout.  Optionally each
source address gets C{rateLimit} UDP queries per second (excess dropped).

The hot path: every response to a plain query (one question, no answer or
authority records, at most one EDNS OPT record) is kept in wire format,
keyed by the question's bytes, one table per transport (UDP answers are
truncated, TCP ones are not).  A repeated question is answered by copying
the cached bytes behind the query's id, with its RD and CD bits; nothing is
decoded or encoded.  Entries of challenge names live as long as the ring
values they were built from (L{Answer.expires}) and are dropped as soon as
those values change; SERVFAIL is never cached.  Everything else (and every
first question) takes the decoding path, which fills the cache.
"""

from __future__ import annotations

import math
import socket
from collections import Counter
from typing import Any

from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.server import DNSServerFactory
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.specter.dns.zone import ACMEZone, Answer

__all__ = ["ACMEDNSFactory", "DatagramProtocol", "StreamProtocol", "UDP_MAX", "questionKey", "AnswerCache"]

log = Logger()

#: Largest UDP answer sent (no EDNS): longer ones are truncated with TC set.
UDP_MAX = 512
#: SO_RCVBUF asked for the UDP socket (the default holds ~160 queries).
UDP_RECEIVE_BUFFER = 1 << 20


#: Header bits a cached answer may be reused for: QR, opcode, AA, TC, RA,
#: Z and rcode must be clear; RD (byte 2) and AD, CD (byte 3) may be set.
_PLAIN_FLAGS2 = 0xFE
_PLAIN_FLAGS3 = 0xCF
_INF = math.inf
#: Header counts of a plain query without EDNS: one question, no records.
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00\x00\x00"


def questionKey(data: bytes) -> bytes | None:
    """
    The question of a plain query as it came on the wire (name, type,
    class), or L{None} if C{data} is anything else: a response, another
    opcode, several questions, answer or authority records, a compressed
    or oversized name, additional records other than one well-formed EDNS
    OPT record, or trailing bytes.  Queries with equal keys get the same
    answer bytes apart from the id and the RD and CD bits.
    """
    size = len(data)
    if (
        size < 17
        or data[2] & _PLAIN_FLAGS2
        or data[3] & _PLAIN_FLAGS3
        or data[4:10] != _ONE_QUESTION[:6]
        or data[10]
    ):
        return None
    pos = 12
    length = data[pos]
    while length:
        if length > 63:
            return None
        pos += length + 1
        if pos >= size:
            return None
        length = data[pos]
    end = pos + 5
    if end - 12 > 259:  # the name is longer than 255 bytes
        return None
    additional = data[11]
    if additional == 0:
        if end != size:
            return None
    elif additional == 1:
        # one OPT record: root name, type 41, class, TTL, RDATA to the end
        if (
            end + 11 > size
            or data[end] != 0
            or data[end + 1 : end + 3] != b"\x00\x29"
            or int.from_bytes(data[end + 9 : end + 11], "big") != size - end - 11
        ):
            return None
    else:
        return None
    return data[12:end]


def _cost(key: bytes, variants: tuple[bytes, ...]) -> int:
    return len(key) + 4 * len(variants[0])


class AnswerCache:
    """
    Wire-format answers by question, for one transport: each entry holds the
    four variants of the response after its id (RD and CD clear or set),
    when it expires, the challenge label it depends on and its rcode.
    """

    def __init__(self, maxEntries: int = 4096, maxBytes: int = 8 << 20) -> None:
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
        self.size = 0
        self.entries: dict[bytes, tuple[tuple[bytes, ...], float, str | None, str]] = {}

    def store(self, key: bytes, response: bytes, expires: float, label: str | None, rcode: str) -> None:
        """
        Keep C{response} (sent with RD and CD clear) for C{key}.  The table
        is emptied when it would hold more than C{maxEntries} answers or
        C{maxBytes} bytes of them.
        """
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= _cost(key, old[0])
        cost = len(key) + 4 * (len(response) - 2)
        if len(self.entries) >= self.maxEntries or self.size + cost > self.maxBytes:
            self.clear()
        self.size += cost
        flags2, flags3, rest = response[2], response[3], response[4:]
        variants = tuple(bytes((flags2 | (bits & 1), flags3 | ((bits & 2) << 3))) + rest for bits in range(4))
        self.entries[key] = (variants, expires, label, rcode)

    def forget(self, label: str) -> None:
        """
        Drop the answers built from the ring values of C{label}.
        """
        stale = [k for k, entry in self.entries.items() if entry[2] == label]
        for k in stale:
            self.size -= _cost(k, self.entries.pop(k)[0])

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0


def _parse(data: bytes) -> dns.Message | None:
    message = dns.Message()
    try:
        message.fromStr(data)
    except Exception:  # untrusted input: a malformed query is dropped
        return None
    return message


class DatagramProtocol(dns.DNSDatagramProtocol):
    """
    UDP: answer repeated questions from the cache, decode the others and
    hand them to the factory.

    Cached answers go to the socket's C{sendto} directly when the transport
    has one (a L{twisted.internet.udp.Port}): the address came from
    C{recvfrom}, so the checks of C{Port.write} are not needed again.
    """

    def startProtocol(self) -> None:
        super().startProtocol()
        sock = getattr(self.transport, "socket", None)
        self.sendto: Any = sock.sendto if sock is not None else self.transport.write
        if sock is not None:
            # room for a burst of queries while the process is not scheduled
            # (the kernel caps it at net.core.rmem_max)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            except OSError as e:
                log.debug("could not set the UDP receive buffer: {e}", e=e)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        factory: ACMEDNSFactory = self.controller
        if factory.rateLimit > 0 and not factory.admit(addr[0]):
            factory.stats["rate-limited"] += 1
            return
        # a query without EDNS whose question is cached: the tail is the key
        if data[4:12] == _ONE_QUESTION and not (data[2] & _PLAIN_FLAGS2 or data[3] & _PLAIN_FLAGS3):
            key: bytes | None = data[12:]
        else:
            key = questionKey(data)
        if key is not None:
            hit = factory.udpCache.entries.get(key)
            if hit is not None and (hit[1] == _INF or hit[1] > factory.reactor.seconds()):
                stats = factory.stats
                stats["queries"] += 1
                stats[hit[3]] += 1
                try:
                    self.sendto(data[:2] + hit[0][(data[2] & 1) | ((data[3] >> 3) & 2)], addr)
                except OSError as e:
                    factory.sendFailed(addr, e)
                return
            if data[11] == 0:
                key = questionKey(data)
        message = _parse(data)
        if message is None:
            factory.stats["malformed"] += 1
            return
        factory.messageReceived(message, self, addr, key)


@implementer(IPushProducer)
class StreamProtocol(dns.DNSProtocol, TimeoutMixin):
    """
    TCP: length-prefixed messages, closed when idle.  The producer of its
    own answers: while the client leaves them unread (the transport's
    buffer is full), its queries are not read either.
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        self.setTimeout(self.controller.idleTimeout)
        assert self.transport is not None
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]

    def pauseProducing(self) -> None:
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        pass

    def stringReceived(self, data: bytes) -> None:
        self.resetTimeout()
        factory: ACMEDNSFactory = self.controller
        key = questionKey(data)
        if key is not None:
            hit = factory.tcpCache.entries.get(key)
            if hit is not None and (hit[1] == _INF or hit[1] > factory.reactor.seconds()):
                factory.stats["queries"] += 1
                factory.stats[hit[3]] += 1
                if self.transport is not None and not getattr(self.transport, "disconnected", False):
                    self.sendString(data[:2] + hit[0][(data[2] & 1) | ((data[3] >> 3) & 2)])
                return
        message = _parse(data)
        if message is None:
            factory.stats["malformed"] += 1
            if self.transport is not None:
                self.transport.loseConnection()
            return
        factory.messageReceived(message, self, None, key)

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
        cacheEntries: int = 4096,
    ) -> None:
        super().__init__()
        self.zone = zone
        self.reactor = reactor
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.rateLimit = rateLimit
        self.buckets: dict[str, tuple[float, float]] = {}
        self.stats: Counter[str] = Counter()
        self.udpCache = AnswerCache(cacheEntries)
        self.tcpCache = AnswerCache(cacheEntries)
        self.caching = cacheEntries > 0
        zone.source.watch(self.forget)

    def forget(self, label: str) -> None:
        """
        The ring values of C{label} changed: drop the answers built from them.
        """
        self.udpCache.forget(label)
        self.tcpCache.forget(label)

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

    def messageReceived(
        self, message: dns.Message, proto: Any, address: Any = None, key: bytes | None = None
    ) -> None:
        if message.answer:
            self.stats["dropped-response"] += 1
            return
        self.stats["queries"] += 1
        if message.opCode != dns.OP_QUERY:
            self._send(proto, message, address, Answer(dns.ENOTIMP, authoritative=False))
        elif len(message.queries) != 1:
            self._send(proto, message, address, Answer(dns.EFORMAT, authoritative=False))
        else:
            self.handleQuery(message, proto, address, key)

    def handleQuery(
        self, message: dns.Message, proto: Any, address: Any = None, key: bytes | None = None
    ) -> Any:
        query = message.queries[0]

        def failed(f: Failure) -> Answer:
            log.failure("answering {name} failed", f, name=query.name)
            return Answer(dns.ESERVER, authoritative=False, expires=0.0)

        d = self.zone.lookup(query.name.name, query.type, query.cls)
        d.addErrback(failed)
        d.addCallback(lambda answer: self._send(proto, message, address, answer, key))
        return d

    def encode(self, message: dns.Message, answer: Answer, udp: bool) -> bytes:
        """
        The response to C{message}: over UDP, one longer than L{UDP_MAX}
        bytes is sent as its header (TC set) and question only, and the
        client asks again over TCP.
        """
        response = dns.Message(
            id=message.id,
            answer=1,
            opCode=message.opCode,
            auth=answer.authoritative,
            recDes=message.recDes,
            recAv=0,
            rCode=answer.rCode,
            checkingDisabled=message.checkingDisabled,
            maxSize=0,
        )
        response.queries = message.queries
        response.answers = answer.answers
        response.authority = answer.authority
        response.additional = answer.additional
        data = response.toStr()
        if udp and len(data) > UDP_MAX:
            response.answers, response.authority, response.additional = [], [], []
            response.trunc = 1
            data = response.toStr()
        return data

    def _send(
        self, proto: Any, message: dns.Message, address: Any, answer: Answer, key: bytes | None = None
    ) -> None:
        rcode = f"rcode-{answer.rCode}"
        self.stats[rcode] += 1
        udp = address is not None
        data = self.encode(message, answer, udp)
        if key is not None and self.caching and answer.expires > self.reactor.seconds():
            # the variant with id 0, RD and CD clear
            plain = b"\x00\x00" + bytes((data[2] & 0xFE, data[3] & 0xEF)) + data[4:]
            cache = self.udpCache if udp else self.tcpCache
            cache.store(key, plain, answer.expires, answer.label, rcode)
        if not udp and (proto.transport is None or getattr(proto.transport, "disconnected", False)):
            return
        try:
            if udp:
                proto.transport.write(data, address)
            else:
                proto.sendString(data)
        except OSError as e:
            self.sendFailed(address, e)

    def sendFailed(self, address: Any, e: OSError) -> None:
        self.stats["send-failed"] += 1
        log.debug("could not send the answer to {addr}: {e}", addr=address, e=e)
