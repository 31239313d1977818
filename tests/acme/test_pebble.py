"""
End-to-end: the ACME client against a real ACME server (Debian's pebble),
validating DNS-01 through an in-test authoritative DNS server.
"""

from __future__ import annotations

import os

from cryptography import x509
from cryptography.x509 import verification
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from suite.acme.client import ACMEClient, PollPolicy, loadOrCreateAccountKey
from suite.acme.errors import ChallengeFailed
from suite.acme.keys import generatePrivateKeyPEM
from suite.acme.publisher import MemoryChallengePublisher
from suite.acme.renewal import RenewalService
from suite.acme.store import FileCertificateStore, MemoryCertificateStore, StoredCertificate
from suite.acme.transport import threadRunner
from tests.support.pebble import startChallengeDNS, startPebble

NAMES = ["a.example.test", "*.example.test"]


class PebbleTests(TestCase):
    """
    Issuance against pebble.
    """

    timeout = 120

    def makeClient(
        self, pebble: object, publisher: MemoryChallengePublisher, accountKey: bytes | None = None
    ) -> ACMEClient:
        return ACMEClient(
            pebble.directoryURL,  # type: ignore[attr-defined]
            accountKey or generatePrivateKeyPEM("ec"),
            publisher,
            clock=reactor,
            http=pebble.http,  # type: ignore[attr-defined]
            runInThread=threadRunner(reactor),
            contact=["mailto:ops@example.test"],
            poll=PollPolicy(initial=0.1, maximum=1.0, timeout=60),
        )

    async def test_issueWildcardAndName(self) -> None:
        """
        A certificate for a.example.test and *.example.test is issued via
        DNS-01; its chain verifies against pebble's root, it names exactly
        those SANs, it is for the key the client made, and no TXT value is
        left published.
        """
        publisher = MemoryChallengePublisher()
        zone = await startChallengeDNS(self, publisher)
        pebble = await startPebble(self, zone.port)
        client = self.makeClient(pebble, publisher)

        stored = await client.issue(NAMES)

        self.assertEqual(sorted(stored.names), sorted(NAMES))
        root = x509.load_pem_x509_certificate(await pebble.get("/roots/0"))
        chain = stored.chain
        self.assertGreaterEqual(len(chain), 2)
        for child, parent in zip(chain, chain[1:], strict=False):
            child.verify_directly_issued_by(parent)
        chain[-1].verify_directly_issued_by(root)
        # and as a TLS client would: path building to the root, validity,
        # serverAuth, and the names
        policy = verification.PolicyBuilder().store(verification.Store([root]))
        for name in ("a.example.test", "b.example.test"):
            verifier = policy.build_server_verifier(x509.DNSName(name))
            verifier.verify(chain[0], chain[1:])
        with self.assertRaises(verification.VerificationError):
            policy.build_server_verifier(x509.DNSName("a.b.example.test")).verify(chain[0], chain[1:])
        store = MemoryCertificateStore()
        await store.saveCertificate("a.example.test", stored)
        again = await store.loadCertificate("a.example.test")
        assert again is not None
        self.assertGreater(again.notAfter, reactor.seconds())
        # the wildcard and the plain name share _acme-challenge.example.test
        # and _acme-challenge.a.example.test; both were answered, then removed
        published = {name for kind, name, _ in publisher.history if kind == "publish"}
        self.assertEqual(published, {"_acme-challenge.a.example.test", "_acme-challenge.example.test"})
        self.assertEqual(publisher.records, {})
        self.assertIn(("_acme-challenge.example.test", 16), zone.resolver.queries)

    async def test_wrongTXTAnswer(self) -> None:
        """
        When DNS answers with the wrong TXT value, issuance fails with one
        clear error naming the problem type and the domain, and every
        published value is removed.
        """
        publisher = MemoryChallengePublisher()
        zone = await startChallengeDNS(self, publisher, override=lambda name: ["not-the-right-digest"])
        pebble = await startPebble(self, zone.port)
        client = self.makeClient(pebble, publisher)

        with self.assertRaises(ChallengeFailed) as caught:
            await client.issue(["b.example.test"])

        message = str(caught.exception)
        self.assertIn("urn:ietf:params:acme:error:unauthorized", message)
        self.assertIn("b.example.test", message)
        self.assertEqual(caught.exception.identifier, "b.example.test")
        self.assertEqual(publisher.records, {})
        self.assertEqual([kind for kind, _, _ in publisher.history], ["publish", "unpublish"])

    async def test_renewalServiceWithFileStore(self) -> None:
        """
        The renewal service with a file store and an account key kept in it
        issues a missing certificate from pebble, saves it, and announces it.
        """
        publisher = MemoryChallengePublisher()
        zone = await startChallengeDNS(self, publisher)
        pebble = await startPebble(self, zone.port)
        directory = os.path.abspath(self.mktemp())
        store = FileCertificateStore(directory, reactor)
        accountKey = await loadOrCreateAccountKey(store, threadRunner(reactor))
        client = self.makeClient(pebble, publisher, accountKey)
        announced: defer.Deferred[tuple[str, StoredCertificate]] = defer.Deferred()
        service = RenewalService(
            client,
            store,
            [["c.example.test", "*.c.example.test"]],
            reactor,
            onIssued=lambda name, cert: announced.callback((name, cert)),
        )
        service.startService()
        self.addCleanup(service.stopService)
        name, certificate = await announced
        self.assertEqual(name, "c.example.test")
        self.assertEqual(sorted(certificate.names), ["*.c.example.test", "c.example.test"])
        self.assertEqual(await FileCertificateStore(directory, reactor).loadCertificate(name), certificate)
        self.assertEqual(sorted(os.listdir(directory)), ["account.key", "c.example.test.pem"])
        self.assertEqual(publisher.records, {})
