"""
Unit tests of the ACME wiring of C{specter server}: the ring-KV challenge
publisher, certificate store and ordering lease (against an in-memory KV
with the ring's C{kv(op, key, args)} semantics), and the gateway's
per-apex certificates chosen by SNI, swapped with real pyOpenSSL contexts.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.acme.renewal import DAY, RenewalService
from suite.acme.store import StoredCertificate
from suite.kv.memory import MemoryStore
from suite.kv.records import LeaseHeld, LeaseLost
from suite.specter import acmekeys
from suite.specter.acme import (
    ACMECollector,
    ACMEInventory,
    ACMEService,
    LeasedIssuer,
    NotAnApex,
    OrderInProgress,
    RingCertificateStore,
    RingChallengePublisher,
    certificateNames,
)
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.gateway.listener import PublicCertificates, makeTLSFactory, selfSignedCertificate
from tests.acme.test_renewal import T0, FakeIssuer, certificateExpiringAt

APEX = "example.test"
NAMES = (APEX, f"*.{APEX}")


class FakeRing:
    """
    One in-memory KV behind the ring's C{kv(op, key, args)}: the same
    operations, arguments and lease errors as a ring node's.
    """

    def __init__(self, clock: Clock) -> None:
        self.store = MemoryStore(clock)
        self.calls: list[tuple[str, bytes]] = []

    async def _kv(self, op: str, key: bytes, args: list[Any]) -> Any:
        self.calls.append((op, key))
        s = self.store
        try:
            if op == "get":
                return await s.get(key)
            if op == "put":
                return await s.put(key, args[0])
            if op == "list":
                return await s.prefixList(key)
            if op == "append":
                return await s.prefixAppend(key, args[0])
            if op == "remove":
                return await s.prefixRemove(key, args[0])
            if op == "acquire":
                lease = await s.acquireLease(key, args[0], args[1])
                return [lease.name, lease.holder, lease.token, lease.expiresAt]
            if op == "release":
                return await s.releaseLease(key, args[0])
        except LeaseHeld as e:
            raise RemoteError(E.LEASE_HELD, str(e)) from None
        except LeaseLost as e:
            raise RemoteError(E.LEASE_LOST, str(e)) from None
        raise AssertionError(f"unexpected op {op}")

    def kv(self, op: str, key: bytes, args: list[Any]) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(self._kv(op, key, args))


class PublisherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ring = FakeRing(Clock())
        self.publisher = RingChallengePublisher(self.ring, ["example.test", "other.test"])

    def managed(self) -> list[bytes]:
        return self.successResultOf(self.ring.kv("list", acmekeys.challengeKey("managed"), []))

    def test_apexAndWildcard(self) -> None:
        """
        The apex's and its wildcard's values (both published at
        C{_acme-challenge.<apex>}) and another apex's all go to the managed
        set, and leave it one by one.
        """
        self.successResultOf(self.publisher.publish("_acme-challenge.example.test", "v-apex"))
        self.successResultOf(self.publisher.publish("_acme-challenge.*.example.test", "v-wild"))
        self.successResultOf(self.publisher.publish("_acme-challenge.Other.Test.", "v-other"))
        self.assertEqual(sorted(self.managed()), [b"v-apex", b"v-other", b"v-wild"])
        self.successResultOf(self.publisher.unpublish("_acme-challenge.example.test", "v-apex"))
        self.successResultOf(self.publisher.unpublish("_acme-challenge.example.test", "v-apex"))
        self.assertEqual(sorted(self.managed()), [b"v-other", b"v-wild"])
        self.assertEqual({key for _, key in self.ring.calls}, {b"acme/challenge/managed"})

    def test_customDomain(self) -> None:
        """
        A validated custom domain's values go to its token's set; before
        validation (or unknown) the name is refused.
        """
        record = {"domain": "shop.customer.test", "token": "tok1", "owner": "a", "hostname": "h.example.test"}
        key = acmekeys.customKey("shop.customer.test")
        self.successResultOf(self.ring.kv("put", key, [json.dumps({**record, "validated": False}).encode()]))
        self.failureResultOf(self.publisher.publish("_acme-challenge.shop.customer.test", "v"), NotAnApex)
        self.successResultOf(self.ring.kv("put", key, [json.dumps({**record, "validated": True}).encode()]))
        self.successResultOf(self.publisher.publish("_acme-challenge.shop.customer.test", "v1"))
        tokenSet = acmekeys.challengeKey("tok1")
        self.assertEqual(self.successResultOf(self.ring.kv("list", tokenSet, [])), [b"v1"])
        self.successResultOf(self.publisher.unpublish("_acme-challenge.Shop.Customer.Test.", "v1"))
        self.assertEqual(self.successResultOf(self.ring.kv("list", tokenSet, [])), [])
        self.assertEqual(self.managed(), [])
        self.failureResultOf(self.publisher.publish("_acme-challenge.unknown.test", "v"), NotAnApex)

    def test_refusesOtherNames(self) -> None:
        """
        Names that are not an apex (a name under one, another domain, no
        C{_acme-challenge} label) fail clearly and write nothing.
        """
        for name in (
            "_acme-challenge.www.example.test",
            "_acme-challenge.example.org",
            "example.test",
        ):
            failure = self.failureResultOf(self.publisher.publish(name, "v"), NotAnApex)
            self.assertIn("is not an", failure.getErrorMessage())
        # only the custom-domain record of example.org is looked up
        self.assertEqual(self.ring.calls, [("get", b"acme/custom/example.org")])


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ring = FakeRing(Clock())

    def test_sharedByNodes(self) -> None:
        """
        Two nodes' stores over one ring share the account key and the
        certificates, under C{acme/account/<email>} and C{acme/cert/<name>}.
        """
        a = RingCertificateStore(self.ring, "ops@example.test")
        b = RingCertificateStore(self.ring, "ops@example.test")
        self.assertIsNone(self.successResultOf(a.loadAccountKey()))
        self.assertIsNone(self.successResultOf(a.loadCertificate(APEX)))
        self.successResultOf(a.saveAccountKey(b"account key PEM"))
        stored = certificateExpiringAt(T0 + 90 * DAY, NAMES)
        self.successResultOf(a.saveCertificate(APEX, stored))
        self.assertEqual(self.successResultOf(b.loadAccountKey()), b"account key PEM")
        self.assertEqual(self.successResultOf(b.loadCertificate(APEX)), stored)
        raw = self.successResultOf(self.ring.kv("get", b"acme/cert/example.test", []))
        self.assertEqual(raw, stored.toPEM())
        self.assertEqual(
            self.successResultOf(self.ring.kv("get", b"acme/account/ops@example.test", [])),
            b"account key PEM",
        )

    def test_badName(self) -> None:
        """
        A certificate name that is not a DNS name is refused.
        """
        store = RingCertificateStore(self.ring, "ops@example.test")
        self.failureResultOf(store.loadCertificate("../etc"), ValueError)


class LeaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.ring = FakeRing(self.clock)
        self.issuerA, self.issuerB = FakeIssuer(), FakeIssuer()
        self.a = LeasedIssuer(self.issuerA, self.ring, "10.0.0.1:443", ttl=600)
        self.b = LeasedIssuer(self.issuerB, self.ring, "10.0.0.2:443", ttl=600)

    def test_oneOrdersAtATime(self) -> None:
        """
        While one node orders, another's attempt fails at once with
        "another node is ordering"; after the order the lease is free.
        """
        first = self.a.issue(list(NAMES))
        self.assertEqual(len(self.issuerA.calls), 1)
        failure = self.failureResultOf(self.b.issue(list(NAMES)), OrderInProgress)
        self.assertIn("another node is ordering example.test", failure.getErrorMessage())
        self.assertEqual(self.issuerB.calls, [])
        stored = certificateExpiringAt(T0 + 90 * DAY, NAMES)
        self.issuerA.calls[0][1].callback(stored)
        self.assertEqual(self.successResultOf(first), stored)
        second = self.b.issue(list(NAMES))
        self.assertEqual(len(self.issuerB.calls), 1)
        self.issuerB.calls[0][1].callback(stored)
        self.successResultOf(second)

    def test_releasedAfterFailure(self) -> None:
        """
        A failed order releases the lease too.
        """
        d = self.a.issue(list(NAMES))
        self.issuerA.calls[0][1].errback(RuntimeError("rate limited"))
        self.failureResultOf(d, RuntimeError)
        self.b.issue(list(NAMES))
        self.assertEqual(len(self.issuerB.calls), 1)

    def test_expiredLease(self) -> None:
        """
        A lease left by a node that died expires after its TTL.
        """
        self.a.issue(list(NAMES))
        self.failureResultOf(self.b.issue(list(NAMES)), OrderInProgress)
        self.clock.advance(601)
        self.b.issue(list(NAMES))
        self.assertEqual(len(self.issuerB.calls), 1)

    def test_savedMeanwhile(self) -> None:
        """
        With a store, a node that gets the lease after another saved a
        fresh certificate returns that one instead of ordering; a stale one
        (inside the renewal window) is ordered again.
        """
        store = RingCertificateStore(self.ring, "ops@example.test")
        issuer = LeasedIssuer(
            self.issuerB, self.ring, "10.0.0.2:443", store=store, fresherThan=30 * DAY, clock=self.clock
        )
        fresh = certificateExpiringAt(T0 + 90 * DAY, NAMES)
        self.successResultOf(store.saveCertificate(APEX, fresh))
        self.assertEqual(self.successResultOf(issuer.issue(list(NAMES))), fresh)
        self.assertEqual(self.issuerB.calls, [])
        stale = certificateExpiringAt(T0 + 20 * DAY, NAMES)
        self.successResultOf(store.saveCertificate(APEX, stale))
        d = issuer.issue(list(NAMES))
        self.assertEqual(len(self.issuerB.calls), 1)
        self.issuerB.calls[0][1].callback(fresh)
        self.assertEqual(self.successResultOf(d), fresh)

    def test_otherErrorsPass(self) -> None:
        """
        A KV failure other than a held lease is not mistaken for one.
        """

        class Down:
            def kv(self, op: str, key: bytes, args: list[Any]) -> defer.Deferred[Any]:
                return defer.fail(RemoteError(E.TIMEOUT, "ring down"))

        issuer = LeasedIssuer(FakeIssuer(), Down(), "10.0.0.1:443")
        failure = self.failureResultOf(issuer.issue(list(NAMES)), RemoteError)
        self.assertEqual(failure.value.code, E.TIMEOUT)


def _recordName(names: list[str]) -> Callable[[str, StoredCertificate], None]:
    """
    A renewal callback appending the name it is called with to C{names}.
    """

    def record(name: str, certificate: StoredCertificate) -> None:
        names.append(name)

    return record


class TwoNodesTests(SynchronousTestCase):
    """
    Two nodes' renewal services over one ring: one orders, the other backs
    off and then loads the shared certificate.
    """

    def test_sharedCertificate(self) -> None:
        clock = Clock()
        clock.advance(T0)
        ring = FakeRing(clock)
        loaded: dict[str, list[str]] = {"a": [], "b": []}
        issued: dict[str, list[str]] = {"a": [], "b": []}
        issuers = {"a": FakeIssuer(), "b": FakeIssuer()}
        services = {}
        for name, addr in (("a", "10.0.0.1:443"), ("b", "10.0.0.2:443")):
            services[name] = RenewalService(
                LeasedIssuer(issuers[name], ring, addr),
                RingCertificateStore(ring, "ops@example.test"),
                certificateNames([APEX]),
                clock,
                retryInitial=10.0,
                rng=random.Random(1),
                onIssued=_recordName(issued[name]),
                onLoaded=_recordName(loaded[name]),
            )
        services["a"].startService()
        services["b"].startService()
        self.assertEqual(len(issuers["a"].calls), 1)
        self.assertEqual(issuers["b"].calls, [])
        self.assertEqual(services["b"].cores[APEX].history, ["Loading", "Ordering", "Failed"])
        issuers["a"].calls[0][1].callback(certificateExpiringAt(T0 + 90 * DAY, NAMES))
        self.assertEqual(issued["a"], [APEX])
        clock.advance(10.0)
        self.assertEqual(loaded["b"], [APEX])
        self.assertEqual(services["b"].cores[APEX].history[-1], "Valid")
        self.assertEqual(issuers["b"].calls, [])
        for service in services.values():
            service.stopService()


class ServiceTests(SynchronousTestCase):
    def test_waitsForTheRing(self) -> None:
        """
        The renewal service starts once every vnode serves; the collector
        shows each certificate's state.
        """

        serving: defer.Deferred[None] = defer.Deferred()

        class Node:
            def whenServing(self) -> defer.Deferred[None]:
                return serving

        clock = Clock()
        clock.advance(T0)
        ring = FakeRing(clock)
        issuer = FakeIssuer()
        renewal = RenewalService(
            issuer, RingCertificateStore(ring, "ops@x.test"), certificateNames([APEX]), clock
        )
        service = ACMEService(renewal, Node(), clock)
        service.startService()
        clock.advance(2)
        self.assertFalse(renewal.running)
        collected = {m.name: m for m in ACMECollector(service).collect()}
        idle = [s for s in collected["specter_acme_certificate_state"].samples if s.value == 1.0]
        self.assertEqual([s.labels["state"] for s in idle], ["Idle"])
        serving.callback(None)
        self.assertFalse(renewal.running)  # not inside the vnode machine that announced it
        clock.advance(0)
        self.assertTrue(renewal.running)
        self.assertEqual(len(issuer.calls), 1)
        collected = {m.name: m for m in ACMECollector(service).collect()}
        current = [s for s in collected["specter_acme_certificate_state"].samples if s.value == 1.0]
        self.assertEqual([(s.labels["name"], s.labels["state"]) for s in current], [(APEX, "Ordering")])
        from twisted.web.test.requesthelper import DummyRequest

        inventory = ACMEInventory(service, "https://acme.test/dir", lambda name: False)
        body = json.loads(inventory.render_GET(DummyRequest([])))
        self.assertEqual(
            body,
            {
                "directory": "https://acme.test/dir",
                "certificates": [
                    {
                        "name": APEX,
                        "names": list(NAMES),
                        "state": "Ordering",
                        "notAfter": None,
                        "served": False,
                    }
                ],
            },
        )
        service.stopService()
        self.assertFalse(renewal.running)
        self.assertEqual(issuer.cancelled, 1)


def _pump(client: SSL.Connection, server: SSL.Connection) -> None:
    for _ in range(20):
        moved = False
        for src, dst in ((client, server), (server, client)):
            try:
                data = src.bio_read(65536)
            except SSL.WantReadError:
                continue
            if data:
                dst.bio_write(data)
                moved = True
        for conn in (client, server):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
        if not moved:
            return


def _connect(factory: Any, sni: str) -> tuple[SSL.Connection, SSL.Connection]:
    server: SSL.Connection = factory._creatorCallable(factory.buildProtocol(None))
    server.set_accept_state()
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_tlsext_host_name(sni.encode("ascii"))
    client.set_connect_state()
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    _pump(client, server)
    return client, server


def _served(client: SSL.Connection) -> x509.Certificate:
    cert = client.get_peer_certificate()
    assert cert is not None
    return cert.to_cryptography()


def _exchange(client: SSL.Connection, server: SSL.Connection, data: bytes) -> bytes:
    client.send(data)
    server.bio_write(client.bio_read(65536))
    return server.recv(65536)


class _Gateway:
    class config:
        apexes = [APEX, "other.test"]

    def __init__(self) -> None:
        self.afterLinkRead: list[Any] = []

    def isPublicName(self, name: str) -> bool:
        name = name.rstrip(".").lower()
        return any(name == a or name.endswith("." + a) for a in self.config.apexes)


class SNITests(SynchronousTestCase):
    def setUp(self) -> None:
        base = self.mktemp()
        self.cert, self.key, _ = selfSignedCertificate(os.path.join(base, "gw"), [APEX, "other.test"])
        self.certificates = PublicCertificates([APEX, "other.test"], self.cert, self.key)
        self.acme = certificateExpiringAt(T0 + 90 * DAY, NAMES)

    def test_choice(self) -> None:
        """
        The apex and names one label under it get the apex's certificate
        once installed; deeper names, and other apexes, keep the
        self-signed one; other names are not public.
        """
        c = self.certificates
        default = c.default
        for name in (APEX, "a.example.test", "a.b.example.test", "other.test"):
            self.assertIs(c.contextFor(name), default)
        self.assertIsNone(c.contextFor("example.org"))
        self.assertIsNone(c.contextFor("notexample.test"))
        c.install(APEX, self.acme.chainPEM, self.acme.keyPEM)
        installed = c.contextFor(APEX)
        self.assertIsNot(installed, default)
        self.assertIs(c.contextFor("A.Example.Test."), installed)
        self.assertIs(c.contextFor("a.b.example.test"), default)
        self.assertIs(c.contextFor("x.other.test"), default)
        self.assertEqual(c.notAfter, {APEX: T0 + 90 * DAY})

    def test_customDomain(self) -> None:
        """
        A custom domain's certificate is chosen for that exact name only;
        apex names cannot be installed as custom domains.
        """
        c = self.certificates
        custom = certificateExpiringAt(T0 + 70 * DAY, ("shop.customer.test",))
        self.assertIsNone(c.contextFor("shop.customer.test"))
        c.installCustom("Shop.Customer.Test.", custom.chainPEM, custom.keyPEM)
        installed = c.contextFor("shop.customer.test")
        self.assertIsNotNone(installed)
        self.assertIsNot(installed, c.default)
        self.assertIsNone(c.contextFor("www.shop.customer.test"))
        self.assertTrue(c.serves("shop.customer.test"))
        c.uninstallCustom("shop.customer.test")
        self.assertIsNone(c.contextFor("shop.customer.test"))
        c.installCustom("shop.customer.test", custom.chainPEM, custom.keyPEM)
        self.assertFalse(c.serves(APEX))
        self.assertEqual(c.notAfter, {"shop.customer.test": T0 + 70 * DAY})
        self.assertRaises(ValueError, c.installCustom, f"www.{APEX}", custom.chainPEM, custom.keyPEM)
        other = certificateExpiringAt(T0 + 80 * DAY, NAMES)
        self.assertRaises(ValueError, c.installCustom, "x.customer.test", custom.chainPEM, other.keyPEM)

    def test_installRefuses(self) -> None:
        """
        A name that is no apex, or a key that is not the certificate's, is
        refused and nothing changes.
        """
        c = self.certificates
        self.assertRaises(ValueError, c.install, "example.org", self.acme.chainPEM, self.acme.keyPEM)
        other = certificateExpiringAt(T0 + 80 * DAY, NAMES)
        self.assertRaises(ValueError, c.install, APEX, self.acme.chainPEM, other.keyPEM)
        self.assertEqual(c.byApex, {})

    def test_swapKeepsConnections(self) -> None:
        """
        Through the gateway's TLS factory: a handshake before the swap gets
        the self-signed certificate and keeps working after it; handshakes
        after it get the installed one (for the apex and one label under
        it); names that are not public get the node certificate.
        """
        from twisted.internet.protocol import Factory, Protocol

        from suite.pki.ca import initBundle
        from suite.pki.load import loadBundle

        certs = os.path.join(self.mktemp(), "certs")
        initBundle(certs, ["127.0.0.1"])
        bundle = loadBundle(certs)
        factory = makeTLSFactory(
            _Gateway(),  # type: ignore[arg-type]
            bundle,
            self.cert,
            self.key,
            Factory.forProtocol(Protocol),
            [],
            certificates=self.certificates,
        )

        oldClient, oldServer = _connect(factory, APEX)
        self.assertEqual(_served(oldClient), self.cert)
        self.certificates.install(APEX, self.acme.chainPEM, self.acme.keyPEM)
        for name in (APEX, "www.example.test"):
            client, server = _connect(factory, name)
            self.assertEqual(_served(client), self.acme.leaf)
            self.assertEqual(_exchange(client, server, b"new"), b"new")
        client, _ = _connect(factory, "deep.www.example.test")
        self.assertEqual(_served(client), self.cert)
        client, _ = _connect(factory, "node.internal")
        self.assertEqual(_served(client), bundle.nodeCert)
        self.assertEqual(_exchange(oldClient, oldServer, b"still here"), b"still here")
