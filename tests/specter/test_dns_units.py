"""
C{specter dns} without sockets: the zone's answers, the KV cache and the
outage handling on a L{Clock} with an in-memory RPC stub, and the DNS
factory's message handling through fake protocols.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from suite.daemon import ConfigError
from suite.specter import acmekeys
from suite.specter.dns import challenges as challengesModule
from suite.specter.dns import makeDNSService
from suite.specter.dns.challenges import RingChallenges
from suite.specter.dns.server import ACMEDNSFactory, DatagramProtocol
from suite.specter.dns.zone import ACMEZone, Answer, Unavailable, checkZone
from suite.specter.options import Options

ZONE = "acme.test"
NS = [("ns1.acme.test", ["192.0.2.1", "2001:db8::1"]), ("ns2.other.example", ["192.0.2.2"])]


class _Proto:
    def __init__(self) -> None:
        self.closed = False


class StubClient:
    """
    The part of L{suite.specter.rpc.RPCClient} the solver uses, over a dict
    of prefix sets; C{hold} makes calls pend until released.
    """

    def __init__(self, sets: dict[bytes, set[bytes]]) -> None:
        self.sets = sets
        self.proto = _Proto()
        self.calls: list[tuple[str, bytes]] = []
        self.hold = False
        self.pending: list[Deferred[Any]] = []

    def kv(self, op: str, key: bytes, *args: Any) -> Deferred[Any]:
        self.calls.append((op, key))
        if op == "append":
            self.sets.setdefault(key, set()).add(args[0])
            return succeed(True)
        if op == "remove":
            self.sets.get(key, set()).discard(args[0])
            return succeed(True)
        assert op == "list"
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.pending.append(d)
            return d
        return succeed(list(self.sets.get(key, set())))

    def close(self) -> None:
        self.proto.closed = True


class StubRing:
    """
    connect() for L{RingChallenges}: succeeds with a fresh L{StubClient}
    while C{up}, otherwise fails as a refused connection would.
    """

    def __init__(self) -> None:
        self.sets: dict[bytes, set[bytes]] = {}
        self.up = True
        self.attempts = 0
        self.clients: list[StubClient] = []

    def connect(self, reactor: Any, description: str) -> Deferred[Any]:
        self.attempts += 1
        if not self.up:
            return fail(ConnectionRefusedError("refused"))
        client = StubClient(self.sets)
        self.clients.append(client)
        return succeed(client)

    def put(self, label: str, *values: bytes) -> None:
        for v in values:
            self.sets.setdefault(acmekeys.challengeKey(label), set()).add(v)


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "not fired"
    return out[0]


if TYPE_CHECKING:
    _Base = SynchronousTestCase
else:
    _Base = object


class ZoneTestsMixin(_Base):
    def setUpZone(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.ring = StubRing()
        self.events: list[dict[str, Any]] = []
        self.patch(challengesModule, "log", Logger(observer=cast(ILogObserver, self.events.append)))
        self.source = RingChallenges(self.clock, "unix:/nowhere", connect=self.ring.connect)
        self.source.startService()
        self.zone = ACMEZone(ZONE, "ops@example.net", NS, self.source, serial=7)

    def ask(self, name: str, qtype: int = dns.TXT, cls: int = dns.IN) -> Answer:
        answer = result(self.zone.lookup(name.encode(), qtype, cls))
        assert isinstance(answer, Answer), answer
        return answer


def payloads(records: list[dns.RRHeader]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for rr in records:
        p = rr.payload
        if rr.type == dns.TXT:
            assert isinstance(p, dns.Record_TXT), p
            text = b"".join(p.data).decode()
        elif rr.type == dns.A:
            assert isinstance(p, dns.Record_A), p
            text = p.dottedQuad()
        elif rr.type == dns.AAAA:
            assert isinstance(p, dns.Record_AAAA), p
            text = str(p._address)
        elif rr.type == dns.NS:
            assert isinstance(p, dns.Record_NS), p
            text = str(p.name)
        else:
            assert isinstance(p, dns.Record_SOA), p
            text = str(p.mname)
        out.append((rr.type, text))
    return out


class ZoneTests(ZoneTestsMixin, SynchronousTestCase):
    """
    What each name of the zone answers.
    """

    def setUp(self) -> None:
        self.setUpZone()

    def test_apex(self) -> None:
        """
        The apex has the SOA and the NS records, with A/AAAA glue for the
        name servers inside the zone only; all authoritative.
        """
        soa = self.ask(ZONE, dns.SOA)
        self.assertEqual((soa.rCode, soa.authoritative), (dns.OK, True))
        self.assertEqual(payloads(soa.answers), [(dns.SOA, "ns1.acme.test")])
        record = soa.answers[0].payload
        assert isinstance(record, dns.Record_SOA), record
        self.assertEqual(str(record.rname), "ops.example.net")
        self.assertEqual(record.serial, 7)
        same = ACMEZone(ZONE, "ops@example.net", NS, self.source).soa.serial
        self.assertEqual(same, ACMEZone(ZONE.upper(), "ops@example.net", NS, self.source).soa.serial)
        self.assertNotEqual(same, ACMEZone(ZONE, "ops@example.net", NS[:1], self.source).soa.serial)
        ns = self.ask(ZONE + ".", dns.NS)
        self.assertEqual(payloads(ns.answers), [(dns.NS, "ns1.acme.test"), (dns.NS, "ns2.other.example")])
        self.assertEqual(payloads(ns.additional), [(dns.A, "192.0.2.1"), (dns.AAAA, "2001:db8::1")])
        self.assertTrue(all(rr.auth for rr in ns.answers))
        mx = self.ask(ZONE, dns.MX)
        self.assertEqual((mx.rCode, mx.answers), (dns.OK, []))
        self.assertEqual(payloads(mx.authority), [(dns.SOA, "ns1.acme.test")])

    def test_nameServers(self) -> None:
        """
        A and AAAA of an in-zone name server, in any letter case; other
        types are NODATA.
        """
        self.assertEqual(payloads(self.ask("NS1.Acme.Test", dns.A).answers), [(dns.A, "192.0.2.1")])
        self.assertEqual(payloads(self.ask("ns1.acme.test", dns.AAAA).answers), [(dns.AAAA, "2001:db8::1")])
        txt = self.ask("ns1.acme.test", dns.TXT)
        self.assertEqual((txt.rCode, txt.answers, len(txt.authority)), (dns.OK, [], 1))

    def test_emptyNonTerminal(self) -> None:
        """
        A name that exists only because a name server sits below it is NODATA.
        """
        zone = ACMEZone(ZONE, "ops@example.net", [("a.ns.acme.test", ["192.0.2.9"])], self.source)
        answer = result(zone.lookup(b"ns.acme.test", dns.A))
        self.assertEqual((answer.rCode, answer.answers), (dns.OK, []))

    def test_refused(self) -> None:
        """
        Names outside the zone, other classes and zone transfers are
        REFUSED without the AA bit: this is not a resolver.
        """
        for name, qtype, cls in (
            ("example.com", dns.A, dns.IN),
            ("xacme.test", dns.TXT, dns.IN),
            ("test", dns.NS, dns.IN),
            ("managed.acme.test", dns.TXT, dns.CH),
            (ZONE, dns.AXFR, dns.IN),
        ):
            answer = self.ask(name, qtype, cls)
            self.assertEqual((answer.rCode, answer.authoritative), (dns.EREFUSED, False), name)
        self.assertEqual(self.ring.attempts, 0)

    def test_managed(self) -> None:
        """
        Every value in the managed set is one TXT record with a short TTL;
        the name exists even without values (NODATA), and answers NODATA
        for other types.
        """
        empty = self.ask("managed.acme.test")
        self.assertEqual((empty.rCode, empty.answers, empty.authoritative), (dns.OK, [], True))
        self.assertEqual(len(empty.authority), 1)
        self.assertEqual(empty.authority[0].ttl, 10)
        self.clock.advance(2)
        self.ring.put("managed", b"apex-value", b"wildcard-value")
        answer = self.ask("Managed.ACME.test")
        self.assertEqual(
            sorted(payloads(answer.answers)), [(dns.TXT, "apex-value"), (dns.TXT, "wildcard-value")]
        )
        self.assertTrue(all(1 <= rr.ttl <= 60 for rr in answer.answers))
        self.assertEqual(str(answer.answers[0].name), "Managed.ACME.test")
        self.assertEqual(self.ask("managed.acme.test", dns.A).answers, [])

    def test_token(self) -> None:
        """
        A token name exists while its set has values; otherwise NXDOMAIN
        with the SOA in authority.  Deeper and malformed names are NXDOMAIN
        without asking the ring.
        """
        self.ring.put("tok1", b"v1")
        self.assertEqual(payloads(self.ask("tok1.acme.test").answers), [(dns.TXT, "v1")])
        a = self.ask("tok1.acme.test", dns.A)
        self.assertEqual((a.rCode, a.answers), (dns.OK, []))
        missing = self.ask("tok2.acme.test")
        self.assertEqual((missing.rCode, missing.authoritative), (dns.ENAME, True))
        self.assertEqual(payloads(missing.authority), [(dns.SOA, "ns1.acme.test")])
        calls = len(self.ring.clients[0].calls)
        for name in ("a.tok1.acme.test", "bad!label.acme.test", "-x.acme.test"):
            self.assertEqual(self.ask(name).rCode, dns.ENAME, name)
        self.assertEqual(len(self.ring.clients[0].calls), calls)

    def test_keys(self) -> None:
        """
        The zone asks the ring for the key layout of L{acmekeys}: one
        C{list} of C{acme/challenge/<label>}.
        """
        self.ask("managed.acme.test")
        self.ask("Tok9.acme.test")
        self.assertEqual(
            self.ring.clients[0].calls,
            [("list", b"acme/challenge/managed"), ("list", b"acme/challenge/tok9")],
        )


class CacheAndOutageTests(ZoneTestsMixin, SynchronousTestCase):
    """
    The one-second cache, shared calls, timeouts and SERVFAIL during an
    outage of the RPC, logged once.
    """

    def setUp(self) -> None:
        self.setUpZone()

    def test_cache(self) -> None:
        """
        Answers are reused for one second, then asked again.
        """
        self.ring.put("managed", b"one")
        for _ in range(50):
            self.ask("managed.acme.test")
        self.assertEqual(len(self.ring.clients[0].calls), 1)
        self.ring.put("managed", b"two")
        self.clock.advance(0.9)
        self.assertEqual(len(self.ask("managed.acme.test").answers), 1)
        self.clock.advance(0.2)
        self.assertEqual(len(self.ask("managed.acme.test").answers), 2)
        self.assertEqual(len(self.ring.clients[0].calls), 2)
        self.assertEqual(self.ring.attempts, 1)

    def test_sharedCall(self) -> None:
        """
        Concurrent questions for one name wait on a single RPC call.
        """
        self.source.txt("managed")
        client = self.ring.clients[0]
        self.clock.advance(5)
        client.hold = True
        waiting = [self.zone.lookup(b"managed.acme.test", dns.TXT) for _ in range(10)]
        self.assertEqual(len(client.pending), 1)
        client.pending[0].callback([b"v"])
        for d in waiting:
            self.assertEqual(len(result(d).answers), 1)

    def test_outageLoggedOnce(self) -> None:
        """
        While the RPC is down challenge names are SERVFAIL (static records
        still answer), one connection attempt per second at most, and the
        outage is logged once when it starts and once when it ends.
        """
        self.ring.up = False
        for _ in range(20):
            answer = self.ask("managed.acme.test")
            self.assertEqual((answer.rCode, answer.authoritative), (dns.ESERVER, False))
        self.assertEqual(self.ring.attempts, 1)
        self.assertEqual(self.ask(ZONE, dns.SOA).rCode, dns.OK)
        self.clock.advance(1.1)
        self.assertEqual(self.ask("tok.acme.test").rCode, dns.ESERVER)
        self.assertEqual(self.ring.attempts, 2)
        warnings = [e for e in self.events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("refused", warnings[0]["reason"])
        self.ring.up = True
        self.ring.put("managed", b"back")
        self.clock.advance(1.1)
        self.assertEqual(payloads(self.ask("managed.acme.test").answers), [(dns.TXT, "back")])
        infos = [e for e in self.events if e["log_level"].name == "info"]
        self.assertEqual(len(infos), 1)
        self.assertIn("reachable again", infos[0]["log_format"])

    def test_lostConnection(self) -> None:
        """
        A closed connection is replaced on the next lookup.
        """
        self.ask("managed.acme.test")
        self.ring.clients[0].close()
        self.clock.advance(2)
        self.ask("managed.acme.test")
        self.assertEqual(len(self.ring.clients), 2)

    def test_timeout(self) -> None:
        """
        A call that is not answered in time is SERVFAIL and its connection
        is dropped.
        """
        self.source.txt("managed")
        client = self.ring.clients[0]
        client.hold = True
        self.clock.advance(2)
        d = self.zone.lookup(b"managed.acme.test", dns.TXT)
        self.clock.advance(self.source.timeout + 0.1)
        self.assertEqual(result(d).rCode, dns.ESERVER)
        self.assertTrue(client.proto.closed)
        self.assertTrue(self.source.down)

    def test_unavailableIsAnError(self) -> None:
        """
        L{RingChallenges.txt} fails with L{Unavailable} while down.
        """
        self.ring.up = False
        f = result(self.source.txt("managed"))
        self.assertTrue(f.check(Unavailable))


def query(name: str, qtype: int = dns.TXT, **kw: Any) -> dns.Message:
    m = dns.Message(id=99, **kw)
    m.queries = [dns.Query(name, qtype, dns.IN)]
    return m


class FakeUDP:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def write(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


class FactoryTests(ZoneTestsMixin, SynchronousTestCase):
    """
    The DNS factory over a UDP protocol with a fake transport.
    """

    def setUp(self) -> None:
        self.setUpZone()
        self.factory = ACMEDNSFactory(self.zone, self.clock)
        self.udp = DatagramProtocol(self.factory, self.clock)
        self.udp.transport = FakeUDP()  # type: ignore[assignment]
        self.udp.startProtocol()

    def send(
        self, message: dns.Message | bytes, addr: tuple[str, int] = ("127.0.0.1", 5000)
    ) -> dns.Message | None:
        before = len(self.udp.transport.sent)  # type: ignore[attr-defined]
        self.udp.datagramReceived(message if isinstance(message, bytes) else message.toStr(), addr)
        sent = self.udp.transport.sent[before:]  # type: ignore[attr-defined]
        if not sent:
            return None
        reply = dns.Message()
        reply.fromStr(sent[0][0])
        return reply

    def test_answer(self) -> None:
        """
        A query gets an authoritative response with its id, question and
        without recursion available.
        """
        self.ring.put("managed", b"v")
        reply = self.send(query("managed.acme.test"))
        assert reply is not None
        self.assertEqual((reply.id, reply.answer, reply.auth, reply.recAv, reply.rCode), (99, 1, 1, 0, 0))
        self.assertEqual(reply.queries[0].name.name, b"managed.acme.test")
        self.assertEqual(payloads(reply.answers), [(dns.TXT, "v")])

    def test_refusedAndErrors(self) -> None:
        """
        REFUSED outside the zone, FORMERR for several questions, NOTIMP for
        other opcodes; responses and garbage are not answered at all.
        """
        reply = self.send(query("example.com", dns.A, recDes=1))
        assert reply is not None
        self.assertEqual((reply.rCode, reply.auth, reply.answer, reply.recAv), (dns.EREFUSED, 0, 1, 0))
        two = query("managed.acme.test")
        two.queries.append(dns.Query("acme.test", dns.SOA))
        self.assertEqual(self.send(two).rCode, dns.EFORMAT)  # type: ignore[union-attr]
        self.assertEqual(self.send(query("acme.test", opCode=dns.OP_STATUS)).rCode, dns.ENOTIMP)  # type: ignore[union-attr]
        self.assertIsNone(self.send(query("acme.test", answer=1)))
        self.assertIsNone(self.send(b"\x00\x01garbage"))
        self.assertEqual(self.factory.stats["malformed"], 1)
        self.assertEqual(self.factory.stats["dropped-response"], 1)

    def test_truncation(self) -> None:
        """
        An answer over 512 bytes is truncated on UDP with TC set.
        """
        self.ring.put("managed", *[bytes([65 + i]) * 200 for i in range(6)])
        raw = self.udp.transport.sent  # type: ignore[attr-defined]
        self.udp.datagramReceived(query("managed.acme.test").toStr(), ("127.0.0.1", 1))
        self.assertLessEqual(len(raw[-1][0]), 512)
        self.assertEqual((raw[-1][0][2] >> 1) & 1, 1)

    def test_rateLimit(self) -> None:
        """
        With a rate limit each source gets a burst of twice the rate, then
        the rate; other sources are unaffected.
        """
        self.factory.rateLimit = 5
        answered = [self.send(query("acme.test", dns.SOA)) is not None for _ in range(12)]
        self.assertEqual(answered.count(True), 10)
        self.assertIsNotNone(self.send(query("acme.test", dns.SOA), ("127.0.0.2", 1)))
        self.clock.advance(1)
        answered = [self.send(query("acme.test", dns.SOA)) is not None for _ in range(12)]
        self.assertEqual(answered.count(True), 5)


class SlowReaderTests(ZoneTestsMixin, SynchronousTestCase):
    """
    A TCP client that sends queries but never reads the answers cannot make
    the server buffer them without bound.
    """

    def test_unreadAnswersStopReading(self) -> None:
        """
        When the transport's write buffer fills (it pauses its producer),
        the connection stops reading queries until the client reads again;
        a client that stays stuck is closed by the idle timeout.
        """
        from twisted.internet.testing import StringTransport

        from suite.specter.dns.server import StreamProtocol

        self.setUpZone()
        factory = ACMEDNSFactory(self.zone, self.clock)
        proto = StreamProtocol(factory, self.clock)
        proto.factory = factory
        transport = StringTransport()
        proto.makeConnection(transport)
        self.assertIs(transport.producer, proto)
        self.assertTrue(transport.streaming)
        data = rawQuery("acme.test", dns.SOA, dns.IN, id=1, edns=False)
        proto.dataReceived(len(data).to_bytes(2, "big") + data)
        self.assertGreater(len(transport.value()), 0)
        proto.pauseProducing()  # as the transport does when its buffer is full
        self.assertEqual(transport.producerState, "paused")
        proto.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        proto.pauseProducing()  # as the transport does when its buffer is full
        self.clock.advance(factory.idleTimeout)
        self.assertTrue(transport.disconnecting)


class WiringTests(SynchronousTestCase):
    """
    Options, keys and the service tree.
    """

    def parse(self, *argv: str) -> Any:
        o = Options(environ={})
        o.parseOptions(
            [
                "dns",
                "--acme",
                "acme://ops@example.net@acme.test",
                "--acme-ns",
                "ns1.acme.test/192.0.2.1",
                *argv,
            ]
        )
        return o.subOptions

    def test_services(self) -> None:
        """
        One UDP and one TCP listener per bind (53 on all addresses by
        default) beside the KV reader.
        """
        reactor = MemoryReactorClock()
        root = makeDNSService(self.parse(), reactor)
        self.assertEqual(root.binds, ["udp/0.0.0.0:53", "tcp/0.0.0.0:53"])
        self.assertEqual(len(list(root)), 3)
        root = makeDNSService(
            self.parse("--listen-addr", "127.0.0.1:5353", "--listen-tcp", "[::1]:5354"), reactor
        )
        self.assertEqual(root.binds, ["udp/127.0.0.1:5353", "tcp/[::1]:5354"])
        root = makeDNSService(self.parse("--listen-internal", "tcp://127.0.0.1:9953"), reactor)
        self.assertEqual(root.getServiceNamed("admin").parent, root)

    def test_manhole(self) -> None:
        """
        twistd's makeService for dns adds the manhole when asked.
        """
        from twisted.application.internet import StreamServerEndpointService

        from suite.specter.tap import makeService

        o = Options(environ={})
        o.parseOptions(
            [
                "dns",
                "--acme",
                "acme://ops@example.net@acme.test",
                "--acme-ns",
                "ns1.acme.test/192.0.2.1",
                "--listen-addr",
                "127.0.0.1:5353",
                "--manhole",
                f"unix:{os.path.abspath(self.mktemp())}",
            ]
        )
        root = makeService(o)
        manholes = [s for s in root if isinstance(s, StreamServerEndpointService)]
        self.assertEqual(len(manholes), 1)

    def test_badOptions(self) -> None:
        """
        Bad zone names, name servers and rate limits are one error naming the flag.
        """
        for argv, flag in (
            (("--rate-limit", "x"), "--rate-limit"),
            (("--acme-ns", "bad_ns!/192.0.2.1"), "--acme-ns"),
            (("--listen-internal", "tcp://0.0.0.0:9953"), "--listen-internal"),
        ):
            e = self.assertRaises(ConfigError, self.parse, *argv)
            self.assertIn(flag, str(e))
        self.assertRaises(ConfigError, checkZone, "bad zone", [])

    def test_keys(self) -> None:
        """
        The key layout: one prefix set per challenge label, lower-case;
        publish and unpublish append to and remove from it.
        """
        self.assertEqual(acmekeys.challengeKey("Managed"), b"acme/challenge/managed")
        self.assertRaises(ValueError, acmekeys.challengeKey, "a.b")
        self.assertTrue(acmekeys.validLabel(acmekeys.newToken()))
        client = StubClient({})
        acmekeys.publish(client, "tok", "value")
        self.assertEqual(client.sets, {b"acme/challenge/tok": {b"value"}})
        acmekeys.unpublish(client, "tok", b"value")
        self.assertEqual(client.sets, {b"acme/challenge/tok": set()})
        self.assertRaises(ValueError, acmekeys.publish, client, "tok", "x" * 256)


def rawQuery(
    name: str,
    qtype: int = dns.TXT,
    cls: int = dns.IN,
    id: int = 99,
    rd: int = 0,
    cd: int = 0,
    ad: int = 0,
    edns: bool = False,
) -> bytes:
    """
    A query on the wire, with an EDNS OPT record when C{edns}.
    """
    kw = {"id": id, "recDes": rd, "checkingDisabled": cd, "authenticData": ad}
    m: Any = dns._EDNSMessage(dnssecOK=False, maxSize=1232, **kw) if edns else dns.Message(**kw)  # type: ignore[arg-type]
    m.queries = [dns.Query(name, qtype, cls)]
    return bytes(m.toStr())


class StringTCP:
    """
    A TCP transport keeping what is written.
    """

    disconnected = False

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def writeSequence(self, seq: list[bytes]) -> None:
        self.data += b"".join(seq)

    def loseConnection(self) -> None:
        self.disconnected = True

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass


class AnswerCacheTests(ZoneTestsMixin, SynchronousTestCase):
    """
    The wire-format answer cache gives the same bytes as the decoding path
    for every kind of question, and follows the ring's values.
    """

    def setUp(self) -> None:
        self.setUpZone()
        self.ring.put("managed", b"apex-value", b"wildcard-value")
        self.ring.put("tok1", b"v1")
        self.ring.put("big", *[bytes([65 + i]) * 200 for i in range(6)])
        self.cached = ACMEDNSFactory(self.zone, self.clock)
        self.plain = ACMEDNSFactory(self.zone, self.clock, cacheEntries=0)
        from suite.specter.dns import server

        self.decoded = 0
        parse = server._parse

        def counting(data: bytes) -> Any:
            self.decoded += 1
            return parse(data)

        self.patch(server, "_parse", counting)

    def udp(self, factory: ACMEDNSFactory, data: bytes) -> bytes:
        proto = DatagramProtocol(factory, self.clock)
        proto.transport = FakeUDP()  # type: ignore[assignment]
        proto.startProtocol()
        proto.datagramReceived(data, ("127.0.0.1", 5353))
        sent = proto.transport.sent  # type: ignore[attr-defined]
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0][1], ("127.0.0.1", 5353))
        return bytes(sent[0][0])

    def tcp(self, factory: ACMEDNSFactory, data: bytes) -> bytes:
        from suite.specter.dns.server import StreamProtocol

        proto = StreamProtocol(factory, self.clock)
        proto.factory = factory
        transport = StringTCP()
        proto.makeConnection(transport)
        proto.dataReceived(len(data).to_bytes(2, "big") + data)
        proto.setTimeout(None)
        return transport.data

    MATRIX = [
        (ZONE, dns.SOA, dns.IN),
        (ZONE, dns.NS, dns.IN),
        (ZONE + ".", dns.ALL_RECORDS, dns.IN),
        ("Acme.TEST", dns.MX, dns.IN),
        ("ns1.acme.test", dns.A, dns.IN),
        ("NS1.acme.test", dns.AAAA, dns.IN),
        ("ns1.acme.test", dns.TXT, dns.IN),
        ("managed.acme.test", dns.TXT, dns.IN),
        ("MANAGED.Acme.Test", dns.TXT, dns.ANY),
        ("managed.acme.test", dns.A, dns.IN),
        ("tok1.acme.test", dns.TXT, dns.IN),
        ("tok1.acme.test", dns.AAAA, dns.IN),
        ("tok2.acme.test", dns.TXT, dns.IN),
        ("a.tok1.acme.test", dns.TXT, dns.IN),
        ("big.acme.test", dns.TXT, dns.IN),
        ("example.com", dns.A, dns.IN),
        ("managed.acme.test", dns.TXT, dns.CH),
        (ZONE, dns.AXFR, dns.IN),
    ]

    def test_matrix(self) -> None:
        """
        For each question, over UDP and TCP, with and without EDNS, with
        every combination of RD and CD (and AD) and several ids, the cached
        answer is byte-identical to the decoding path's; repeated
        questions are answered without decoding.
        """
        for name, qtype, cls in self.MATRIX:
            for transport in (self.udp, self.tcp):
                for edns in (False, True):
                    first = rawQuery(name, qtype, cls, id=1, edns=edns)
                    self.assertEqual(transport(self.cached, first), transport(self.plain, first))
                    decoded = self.decoded
                    for i, (rd, cd, ad) in enumerate(
                        [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 1), (1, 0, 1)], start=2
                    ):
                        q = rawQuery(name, qtype, cls, id=i * 4099, rd=rd, cd=cd, ad=ad, edns=edns)
                        want = transport(self.plain, q)
                        before = self.decoded
                        got = transport(self.cached, q)
                        self.assertEqual(got, want, (name, qtype, cls, transport, edns, rd, cd))
                        self.assertEqual(self.decoded, before, (name, qtype, transport))
                        reply = dns.Message()
                        reply.fromStr(got[2:] if transport == self.tcp else got)
                        self.assertEqual(
                            (reply.id, reply.recDes, reply.checkingDisabled, reply.answer),
                            (i * 4099, rd, cd, 1),
                        )
                    self.assertEqual(self.decoded - decoded, 5)
        self.assertEqual(self.cached.stats, self.plain.stats)
        self.assertEqual(self.ring.clients[0].calls.count(("list", b"acme/challenge/managed")), 1)

    def test_truncation(self) -> None:
        """
        Over UDP an answer too big for 512 bytes is the header (TC set) and
        the question only, from the cache as well; over TCP it is whole.
        """
        q = rawQuery("big.acme.test")
        for _ in range(2):
            data = self.udp(self.cached, q)
            self.assertEqual((data[2] >> 1) & 1, 1)
            self.assertEqual(data[4:12], b"\x00\x01\x00\x00\x00\x00\x00\x00")
            self.assertEqual(data[12:], q[12:])
            whole = self.tcp(self.cached, q)
            self.assertGreater(len(whole), 1200)
            self.assertEqual((whole[4] >> 1) & 1, 0)

    def test_changedValue(self) -> None:
        """
        A changed TXT value in the ring is answered once the ring cache's
        second is over (the cached answer lives exactly as long), and the
        cached answers of that name are dropped as soon as the change is
        read, whoever reads it; static answers stay.
        """
        q = rawQuery("managed.acme.test")
        soa = rawQuery(ZONE, dns.SOA)
        old = self.udp(self.cached, q)
        self.udp(self.cached, soa)
        self.ring.sets[acmekeys.challengeKey("managed")] = {b"new-value"}
        self.clock.advance(0.5)
        self.assertEqual(self.udp(self.cached, q), old)
        self.clock.advance(0.6)
        new = self.udp(self.cached, q)
        self.assertNotEqual(new, old)
        self.assertIn(b"new-value", new)
        self.assertEqual(new, self.udp(self.plain, q))
        self.assertIn(q[12:], self.cached.udpCache.entries)
        self.ring.sets[acmekeys.challengeKey("managed")] = {b"newer-value"}
        self.clock.advance(1.1)
        result(self.source.txt("managed"))
        self.assertNotIn(q[12:], self.cached.udpCache.entries)
        self.assertIn(soa[12:], self.cached.udpCache.entries)
        self.assertIn(b"newer-value", self.udp(self.cached, q))

    def test_outageNotCached(self) -> None:
        """
        SERVFAIL during a ring outage is not cached: challenge names are
        answered again as soon as the ring is back, while static names are
        still answered from the cache during the outage.
        """
        soa = rawQuery(ZONE, dns.SOA)
        self.udp(self.cached, soa)
        self.clock.advance(2)
        for client in self.ring.clients:
            client.close()
        self.ring.up = False
        q = rawQuery("tok1.acme.test")
        for _ in range(3):
            self.assertEqual(self.udp(self.cached, q)[3] & 0xF, dns.ESERVER)
        self.assertNotIn(q[12:], self.cached.udpCache.entries)
        self.assertEqual(self.udp(self.cached, soa)[3] & 0xF, dns.OK)
        self.ring.up = True
        self.clock.advance(1.1)
        self.assertIn(b"v1", self.udp(self.cached, q))

    def test_socketSend(self) -> None:
        """
        Over a UDP port, cached answers go to the socket's C{sendto}; the
        decoding path writes through the port.  The socket's receive buffer
        is enlarged.
        """

        class Socket:
            def __init__(self) -> None:
                self.sent: list[tuple[bytes, Any]] = []

                self.options: list[tuple[int, int, int]] = []

            def sendto(self, data: bytes, addr: Any) -> int:
                self.sent.append((data, addr))
                return len(data)

            def setsockopt(self, level: int, option: int, value: int) -> None:
                self.options.append((level, option, value))

        transport = FakeUDP()
        transport.socket = Socket()  # type: ignore[attr-defined]
        proto = DatagramProtocol(self.cached, self.clock)
        proto.transport = transport  # type: ignore[assignment]
        proto.startProtocol()
        self.assertEqual(transport.socket.options, [(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)])  # type: ignore[attr-defined]
        q = rawQuery("tok1.acme.test")
        proto.datagramReceived(q, ("127.0.0.1", 1))
        proto.datagramReceived(q, ("127.0.0.1", 2))
        self.assertEqual([a for _, a in transport.sent], [("127.0.0.1", 1)])
        self.assertEqual(transport.socket.sent, [(transport.sent[0][0], ("127.0.0.1", 2))])  # type: ignore[attr-defined]

    def test_bounded(self) -> None:
        """
        The cache holds at most C{cacheEntries} answers per transport.
        """
        factory = ACMEDNSFactory(self.zone, self.clock, cacheEntries=3)
        for i in range(10):
            self.udp(factory, rawQuery(f"n{i}.example.com", dns.A))
            self.assertLessEqual(len(factory.udpCache.entries), 3)
        self.assertEqual(len(factory.udpCache.entries), 1)

    def test_boundedBytes(self) -> None:
        """
        The cache also holds at most C{maxBytes} of answers (counted with
        their four variants and keys), and keeps that count right when
        entries are replaced and forgotten.
        """
        cache = self.cached.tcpCache
        cache.maxBytes = 12000
        names = ["big.acme.test", "Big.acme.test", "bIg.acme.test", "biG.acme.test"]
        for name in names:
            self.tcp(self.cached, rawQuery(name))
            self.assertLessEqual(cache.size, 12000)
        self.assertLess(len(cache.entries), len(names))
        self.assertGreater(len(cache.entries), 0)

        def counted() -> int:
            return sum(len(k) + sum(len(v) for v in e[0]) for k, e in cache.entries.items())

        self.assertEqual(cache.size, counted())
        self.clock.advance(2)
        self.tcp(self.cached, rawQuery(names[-1]))
        self.assertEqual(cache.size, counted())
        self.tcp(self.cached, rawQuery(ZONE, dns.SOA))
        self.assertEqual(cache.size, counted())
        cache.forget("big")
        self.assertEqual(list(cache.entries), [rawQuery(ZONE, dns.SOA)[12:]])
        self.assertEqual(cache.size, counted())

    def test_questionKey(self) -> None:
        """
        Only plain queries have a key: the question's bytes.
        """
        from suite.specter.dns.server import questionKey

        q = rawQuery("managed.acme.test", rd=1, cd=1, ad=1)
        self.assertEqual(questionKey(q), q[12:])
        edns = rawQuery("managed.acme.test", edns=True)
        self.assertEqual(questionKey(edns), q[12:])
        opt = edns[len(q) :]
        self.assertEqual(opt[:3], b"\x00\x00\x29")
        two = query("managed.acme.test")
        two.queries.append(dns.Query("acme.test", dns.SOA))
        pointer = q[:12] + b"\x07managed\xc0\x0c" + q[-4:]
        long = q[:12] + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63
        for data in (
            q[:16],
            q + b"x",
            b"\x00\x01\x80" + q[3:],  # a response
            q[:2] + bytes([q[2] | 0x08]) + q[3:],  # another opcode
            q[:2] + bytes([q[2] | 0x04]) + q[3:],  # AA
            q[:3] + bytes([q[3] | 0x80]) + q[4:],  # RA
            two.toStr(),
            pointer,
            long + b"\x00" + q[-4:],
            q[:11] + b"\x02" + q[12:] + opt + opt,
            edns[:-1],
            edns[:-11] + b"\x00\x00\x01" + edns[-8:],  # additional record not OPT
            edns + b"\x00",
            q[:7] + b"\x01" + q[8:],  # an answer record counted
        ):
            self.assertIsNone(questionKey(data), data)
