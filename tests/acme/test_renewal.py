"""
Tests for the renewal service and its per-certificate lifecycle machine, on
a fake clock.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from suite.acme.errors import ACMEServerError
from suite.acme.interfaces import ICertificateIssuer
from suite.acme.renewal import DAY, Backoff, RenewalCore, RenewalService, newLifecycle
from suite.acme.store import MemoryCertificateStore, StoredCertificate
from suite.pki.keys import certificateToPEM, keyToPEM
from suite.pki.mint import mintCA, mintCertificate
from tests.acme.test_client import Harness

T0 = 1_800_000_000.0
NAMES = ("a.example.test", "*.example.test")
CA = mintCA("renewal test CA", days=3650)


def certificateExpiringAt(notAfter: float, names: tuple[str, ...] = NAMES) -> StoredCertificate:
    """
    A certificate for C{names} whose notAfter is C{notAfter} (whole seconds).
    """
    cert, key = mintCertificate(
        CA[0],
        CA[1],
        names[0],
        dnsNames=names,
        notBefore=datetime.datetime.fromtimestamp(notAfter - 90 * DAY, datetime.UTC),
        notAfter=datetime.datetime.fromtimestamp(notAfter, datetime.UTC),
    )
    return StoredCertificate(certificateToPEM(cert, CA[0]), keyToPEM(key))


@implementer(ICertificateIssuer)
class FakeIssuer:
    """
    An issuer whose answers the test gives by hand.
    """

    description = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[Sequence[str], defer.Deferred[StoredCertificate]]] = []
        self.cancelled = 0

    def issue(self, names: Sequence[str]) -> defer.Deferred[StoredCertificate]:
        def cancel(d: Any) -> None:
            self.cancelled += 1

        d: defer.Deferred[StoredCertificate] = defer.Deferred(cancel)
        self.calls.append((names, d))
        return d


class LifecycleTests(SynchronousTestCase):
    """
    One certificate's machine.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.issuer = FakeIssuer()
        self.store = MemoryCertificateStore()
        self.issuedNames: list[str] = []
        self.core = RenewalCore(
            NAMES,
            self.issuer,
            self.store,
            self.clock,
            renewBefore=30 * DAY,
            checkInterval=DAY,
            backoff=Backoff(60.0, 3600.0, random.Random(7)),
            onIssued=lambda name, cert: self.issuedNames.append(name),
        )
        self.machine = newLifecycle(self.core)

    def delays(self) -> list[float]:
        return [call.getTime() - self.clock.seconds() for call in self.clock.getDelayedCalls()]

    def test_missingIsOrdered(self) -> None:
        """
        With nothing stored, start orders a certificate for all names; once
        issued it is saved, announced, and an expiry check is scheduled.
        """
        self.machine.start()
        self.assertEqual([names for names, _ in self.issuer.calls], [list(NAMES)])
        stored = certificateExpiringAt(T0 + 90 * DAY)
        self.issuer.calls[0][1].callback(stored)
        self.assertEqual(self.successResultOf(self.store.loadCertificate("a.example.test")), stored)
        self.assertEqual(self.issuedNames, ["a.example.test"])
        self.assertEqual(self.core.history, ["Loading", "Ordering", "Valid"])
        self.assertEqual(self.delays(), [DAY])

    def test_validUntilWindow(self) -> None:
        """
        A stored certificate is used until it is within 30 days of expiry;
        then it is renewed, and the renewal replaces it.
        """
        self.store.certificates["a.example.test"] = certificateExpiringAt(T0 + 60 * DAY)
        self.machine.start()
        self.assertEqual(self.issuer.calls, [])
        for _ in range(29):
            self.clock.advance(DAY)
        self.assertEqual(self.issuer.calls, [])
        self.clock.advance(DAY)
        self.assertEqual(len(self.issuer.calls), 1)
        self.assertEqual(self.core.history, ["Loading", "Valid", "Renewing"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        renewed = certificateExpiringAt(T0 + 120 * DAY)
        self.issuer.calls[0][1].callback(renewed)
        self.assertEqual(self.store.certificates["a.example.test"], renewed)
        self.assertEqual(self.core.history[-1], "Valid")

    def test_dueAtStart(self) -> None:
        """
        A certificate already inside the window (or expired) is renewed at once.
        """
        self.store.certificates["a.example.test"] = certificateExpiringAt(T0 + 10 * DAY)
        self.machine.start()
        self.clock.advance(0)
        self.assertEqual(len(self.issuer.calls), 1)
        self.assertEqual(self.core.history, ["Loading", "Valid", "Renewing"])

    def test_storedLacksAName(self) -> None:
        """
        A stored certificate that misses one of the wanted names is replaced.
        """
        self.store.certificates["a.example.test"] = certificateExpiringAt(T0 + 80 * DAY, ("a.example.test",))
        self.machine.start()
        self.assertEqual(len(self.issuer.calls), 1)
        self.assertEqual(self.core.history, ["Loading", "Ordering"])

    def test_failureBacksOffWithJitter(self) -> None:
        """
        A failed order is retried after a jittered, growing delay (the store
        is read again first); a success resets the backoff.
        """
        self.machine.start()
        self.issuer.calls[0][1].errback(
            ACMEServerError("urn:ietf:params:acme:error:rateLimited", "slow down")
        )
        [first] = self.delays()
        self.assertTrue(30 <= first <= 60, first)
        self.assertEqual(self.core.history, ["Loading", "Ordering", "Failed"])
        self.clock.advance(first)
        self.assertEqual(len(self.issuer.calls), 2)
        self.issuer.calls[1][1].errback(RuntimeError("network down"))
        [second] = self.delays()
        self.assertTrue(60 <= second <= 120, second)
        self.clock.advance(second)
        self.issuer.calls[2][1].callback(certificateExpiringAt(T0 + 90 * DAY))
        self.assertEqual(self.core.backoff.failures, 0)
        self.assertEqual(
            self.core.history,
            [
                "Loading",
                "Ordering",
                "Failed",
                "Loading",
                "Ordering",
                "Failed",
                "Loading",
                "Ordering",
                "Valid",
            ],
        )

    def test_renewalFailureKeepsCertificate(self) -> None:
        """
        A failed renewal leaves the stored certificate in place and tries
        again after the backoff, renewing straight from the reload.
        """
        current = certificateExpiringAt(T0 + 5 * DAY)
        self.store.certificates["a.example.test"] = current
        self.machine.start()
        self.clock.advance(0)
        self.issuer.calls[0][1].errback(RuntimeError("boom"))
        self.assertEqual(self.store.certificates["a.example.test"], current)
        [delay] = self.delays()
        self.clock.advance(delay)
        self.clock.advance(0)
        self.assertEqual(len(self.issuer.calls), 2)
        self.assertEqual(self.core.history[-3:], ["Loading", "Valid", "Renewing"])

    def test_onIssuedFailureIsLogged(self) -> None:
        """
        A failing onIssued listener is logged; the saved certificate stays
        valid and no retry is scheduled.
        """

        def broken(name: str, cert: StoredCertificate) -> None:
            raise RuntimeError("reload failed")

        self.core.onIssued = broken
        self.machine.start()
        self.issuer.calls[0][1].callback(certificateExpiringAt(T0 + 90 * DAY))
        self.assertEqual(self.core.history[-1], "Valid")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_onLoaded(self) -> None:
        """
        A usable certificate read from the store is announced through
        onLoaded, also when a failed attempt's reload finds one another
        process saved meanwhile; an unusable one is not announced.
        """
        loaded: list[tuple[str, StoredCertificate]] = []
        self.core.onLoaded = lambda name, cert: loaded.append((name, cert))
        self.store.certificates["a.example.test"] = certificateExpiringAt(T0 + 80 * DAY, ("a.example.test",))
        self.machine.start()
        self.assertEqual(loaded, [])
        self.issuer.calls[0][1].errback(ACMEServerError("urn:x", "busy"))
        self.assertEqual(self.core.history[-1], "Failed")
        shared = certificateExpiringAt(T0 + 90 * DAY)
        self.store.certificates["a.example.test"] = shared
        [delay] = self.delays()
        self.clock.advance(delay)
        self.assertEqual(loaded, [("a.example.test", shared)])
        self.assertEqual(self.core.history[-2:], ["Loading", "Valid"])
        self.assertEqual(self.issuedNames, [])

    def test_onLoadedFailureIsLogged(self) -> None:
        """
        A failing onLoaded listener is logged; the certificate is still used.
        """

        def broken(name: str, cert: StoredCertificate) -> None:
            raise RuntimeError("install failed")

        self.core.onLoaded = broken
        self.store.certificates["a.example.test"] = certificateExpiringAt(T0 + 80 * DAY)
        self.machine.start()
        self.assertEqual(self.core.history, ["Loading", "Valid"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_loadFailed(self) -> None:
        """
        A store that cannot be read leads to Failed and a retry.
        """

        class Broken(MemoryCertificateStore):
            def loadCertificate(self, name: str) -> defer.Deferred[StoredCertificate | None]:
                return defer.fail(OSError("disk on fire"))

        self.core.store = Broken()
        self.machine.start()
        self.assertEqual(self.core.history, ["Loading", "Failed"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_stopWhileOrdering(self) -> None:
        """
        Stopping cancels an order in flight and leaves no timer; late
        inputs are ignored.
        """
        self.machine.start()
        self.machine.stop()
        self.assertEqual(self.issuer.cancelled, 1)
        self.assertEqual(self.core.history[-1], "Stopped")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.machine.issued(T0)
        self.machine.start()
        self.assertEqual(self.core.history[-1], "Stopped")

    def test_stopWhileValid(self) -> None:
        """
        Stopping a valid certificate's machine cancels its check timer.
        """
        self.store.certificates["a.example.test"] = certificateExpiringAt(T0 + 60 * DAY)
        self.machine.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.machine.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ServiceTests(SynchronousTestCase):
    """
    The service around the machines.
    """

    def test_startStop(self) -> None:
        """
        Starting runs every certificate's machine, stopping stops them all.
        """
        clock = Clock()
        issuer = FakeIssuer()
        service = RenewalService(
            issuer, MemoryCertificateStore(), [["a.example.test"], ["b.example.test"]], clock
        )
        service.startService()
        self.assertEqual(sorted(names[0] for names, _ in issuer.calls), ["a.example.test", "b.example.test"])
        service.stopService()
        self.assertEqual(issuer.cancelled, 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_add(self) -> None:
        """
        A certificate added to a running service starts at once; one added
        before the start starts with the others; a name already managed is
        not added twice.
        """
        clock = Clock()
        issuer = FakeIssuer()
        service = RenewalService(issuer, MemoryCertificateStore(), [["a.example.test"]], clock)
        self.assertTrue(service.add(["b.example.test"]))
        service.startService()
        self.assertTrue(service.add(["c.example.test"]))
        self.assertFalse(service.add(["a.example.test"]))
        self.assertEqual(
            sorted(names[0] for names, _ in issuer.calls),
            ["a.example.test", "b.example.test", "c.example.test"],
        )
        self.assertTrue(service.remove("b.example.test"))
        self.assertFalse(service.remove("b.example.test"))
        self.assertEqual(issuer.cancelled, 1)
        self.assertEqual(sorted(service.cores), ["a.example.test", "c.example.test"])
        service.stopService()
        self.assertEqual(issuer.cancelled, 3)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_duplicateName(self) -> None:
        """
        Two certificates stored under the same first name are refused.
        """
        self.assertRaises(
            ValueError,
            RenewalService,
            FakeIssuer(),
            MemoryCertificateStore(),
            [["a.example.test"], ["a.example.test", "b.example.test"]],
            Clock(),
        )

    def test_withClient(self) -> None:
        """
        With the real client against the in-memory ACME server, a missing
        certificate is issued and saved, and renewed 30 days before expiry.
        """
        h = Harness()
        store = MemoryCertificateStore()
        h.clock.advance(T0)
        service = RenewalService(h.client, store, [list(NAMES)], h.clock, rng=random.Random(1))
        service.startService()
        stored = store.certificates["a.example.test"]
        self.assertEqual(sorted(stored.names), sorted(NAMES))
        self.assertEqual(h.publisher.records, {})
        self.assertEqual(stored.notAfter, T0 + 90 * DAY)
        h.clock.pump([DAY] * 59)
        self.assertIs(store.certificates["a.example.test"], stored)
        h.clock.pump([DAY] * 2)
        renewed = store.certificates["a.example.test"]
        self.assertNotEqual(renewed, stored)
        self.assertEqual(renewed.notAfter, T0 + 150 * DAY)
        self.assertEqual(len(h.server.orders), 2)
        service.stopService()
        self.assertEqual(h.clock.getDelayedCalls(), [])
