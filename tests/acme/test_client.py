"""
Unit tests of the ACME client against an in-memory ACME server through
treq's StubTreq, on a fake clock.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
from typing import Any

import josepy as jose
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.acme.client import ACMEClient, PollPolicy, dns01Value, loadOrCreateAccountKey
from suite.acme.errors import (
    ACMEProtocolError,
    ACMEServerError,
    ACMETimeout,
    ChallengeFailed,
    ResponseTooLarge,
)
from suite.acme.interfaces import ICertificateIssuer, IChallengePublisher
from suite.acme.keys import accountJWK, generatePrivateKeyPEM, signatureAlgorithm
from suite.acme.publisher import MemoryChallengePublisher
from suite.acme.store import MemoryCertificateStore
from suite.acme.transport import inlineRunner, parseRetryAfter
from tests.acme.fakeacme import BASE, FakeACME, FakeACMEResource

NAMES = ["a.example.test", "*.example.test"]
EC_KEY = generatePrivateKeyPEM("ec")


class Harness:
    """
    A client wired to a fake server, a publisher and a clock.
    """

    def __init__(self, key: bytes = EC_KEY, **knobs: Any) -> None:
        self.clock = Clock()
        self.publisher = MemoryChallengePublisher()
        self.server = FakeACME(self.publisher, clock=self.clock, **knobs)
        self.http = StubTreq(FakeACMEResource(self.server))
        self.client = ACMEClient(
            BASE + "/directory",
            key,
            self.publisher,
            clock=self.clock,
            http=self.http,
            contact=["mailto:ops@example.test"],
            poll=PollPolicy(initial=1.0, factor=2.0, maximum=8.0, timeout=60.0),
        )

    def issue(self, names: list[str] = NAMES) -> defer.Deferred[Any]:
        return self.client.issue(names)


class ClientTests(SynchronousTestCase):
    """
    The issuance flow, request shapes and error handling.
    """

    def assertNoTimers(self, h: Harness) -> None:
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_interfaces(self) -> None:
        """
        The client is an ICertificateIssuer and the memory publisher an
        IChallengePublisher.
        """
        h = Harness()
        verifyObject(ICertificateIssuer, h.client)
        verifyObject(IChallengePublisher, h.publisher)

    def test_issue(self) -> None:
        """
        A certificate for a name and a wildcard comes back with both SANs,
        a fresh key matching the leaf, and the published TXT values are all
        removed again.
        """
        h = Harness()
        stored = self.successResultOf(h.issue())
        self.assertEqual(sorted(stored.names), sorted(NAMES))
        self.assertEqual(len(stored.chain), 2)
        self.assertIn(b"PRIVATE KEY", stored.keyPEM)
        self.assertEqual(h.publisher.records, {})
        published = [(name, value) for kind, name, value in h.publisher.history if kind == "publish"]
        unpublished = [(name, value) for kind, name, value in h.publisher.history if kind == "unpublish"]
        self.assertEqual(sorted(published), sorted(unpublished))
        self.assertEqual(
            sorted(name for name, _ in published),
            ["_acme-challenge.a.example.test", "_acme-challenge.example.test"],
        )
        self.assertNoTimers(h)

    def test_jwsShapes(self) -> None:
        """
        Every POST is application/jose+json with alg, nonce and url in the
        protected header; newAccount carries the public key (jwk) and no
        kid, every later request the account URL (kid) and no jwk;
        POST-as-GET has an empty payload; the challenge answer is {}.
        """
        h = Harness()
        self.successResultOf(h.issue())
        requests = h.server.requests
        self.assertEqual(requests[0].path, "/new-account")
        self.assertIn("jwk", requests[0].protected)
        self.assertNotIn("kid", requests[0].protected)
        self.assertEqual(json.loads(requests[0].payload)["termsOfServiceAgreed"], True)
        self.assertEqual(json.loads(requests[0].payload)["contact"], ["mailto:ops@example.test"])
        account = h.client.accountURL
        seenNonces: set[str] = set()
        for r in requests:
            self.assertEqual(r.contentType, "application/jose+json")
            self.assertEqual(r.protected["alg"], "ES256")
            self.assertEqual(r.protected["url"], BASE + r.path)
            self.assertNotIn(r.protected["nonce"], seenNonces)
            seenNonces.add(r.protected["nonce"])
            if r.path != "/new-account":
                self.assertEqual(r.protected["kid"], account)
                self.assertNotIn("jwk", r.protected)
        byPath = {r.path.split("/")[1]: r for r in requests}
        self.assertEqual(byPath["authz"].payload, b"")
        self.assertEqual(json.loads(byPath["chall"].payload), {})
        order = json.loads(byPath["new-order"].payload)
        self.assertEqual(order["identifiers"], [{"type": "dns", "value": n} for n in NAMES])
        self.assertIn("csr", json.loads(byPath["finalize"].payload))

    def test_rsaAccountKey(self) -> None:
        """
        An RSA account key signs with RS256.
        """
        h = Harness(key=generatePrivateKeyPEM("rsa"))
        self.successResultOf(h.issue(["a.example.test"]))
        self.assertEqual({r.protected["alg"] for r in h.server.requests}, {"RS256"})

    def test_existingAccount(self) -> None:
        """
        A second client with the same key finds the same account (the
        server answers 200), and onlyReturnExisting looks it up.
        """
        h = Harness()
        first = self.successResultOf(defer.Deferred.fromCoroutine(h.client.account()))
        again = ACMEClient(BASE + "/directory", EC_KEY, h.publisher, clock=h.clock, http=h.http)
        self.assertEqual(
            self.successResultOf(defer.Deferred.fromCoroutine(again.account(onlyReturnExisting=True))), first
        )
        stranger = ACMEClient(
            BASE + "/directory", generatePrivateKeyPEM("ec"), h.publisher, clock=h.clock, http=h.http
        )
        failure = self.failureResultOf(
            defer.Deferred.fromCoroutine(stranger.account(onlyReturnExisting=True)), ACMEServerError
        )
        self.assertEqual(failure.value.code, "accountDoesNotExist")

    def test_badNonceRetriedOnce(self) -> None:
        """
        One badNonce answer is retried with a fresh nonce and succeeds.
        """
        h = Harness(badNonces=1)
        self.successResultOf(h.issue(["a.example.test"]))
        paths = [r.path for r in h.server.requests]
        self.assertEqual(paths[:2], ["/new-account", "/new-account"])
        self.assertNotEqual(h.server.requests[0].protected["nonce"], h.server.requests[1].protected["nonce"])

    def test_badNonceTwice(self) -> None:
        """
        Two badNonce answers in a row fail with that problem (no retry loop).
        """
        h = Harness(badNonces=2)
        failure = self.failureResultOf(h.issue(["a.example.test"]), ACMEServerError)
        self.assertEqual(failure.value.code, "badNonce")
        self.assertEqual(len(h.server.requests), 2)

    def test_problemDocument(self) -> None:
        """
        A problem document becomes one ACMEServerError line with the type,
        the detail, the status, and each subproblem.
        """
        h = Harness()
        h.server.problems["/new-order"] = (
            429,
            {
                "type": "urn:ietf:params:acme:error:rateLimited",
                "detail": "too many\n certificates",
                "subproblems": [
                    {
                        "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                        "detail": "forbidden",
                        "identifier": {"type": "dns", "value": "a.example.test"},
                    }
                ],
            },
        )
        failure = self.failureResultOf(h.issue(), ACMEServerError)
        message = str(failure.value)
        self.assertEqual(
            message,
            "ACME server error urn:ietf:params:acme:error:rateLimited: too many certificates "
            f"(HTTP 429 from {BASE}/new-order); a.example.test: "
            "urn:ietf:params:acme:error:rejectedIdentifier: forbidden",
        )
        self.assertEqual(failure.value.code, "rateLimited")
        self.assertEqual(failure.value.status, 429)
        self.assertNotIn("\n", message)

    def test_nonProblemError(self) -> None:
        """
        An error status without a problem document is an ACMEProtocolError
        naming the status and the start of the body.
        """
        h = Harness()
        h.server.problems["/new-order"] = (502, b"<html>bad gateway</html>")
        failure = self.failureResultOf(h.issue(), ACMEProtocolError)
        self.assertEqual(str(failure.value), f"HTTP 502 from {BASE}/new-order: <html>bad gateway</html>")

    def test_responseSizeLimit(self) -> None:
        """
        A body over the limit fails with ResponseTooLarge instead of being
        buffered.
        """
        h = Harness(directoryPadding=4096)
        h.client.maxResponseBytes = 1024
        failure = self.failureResultOf(h.issue(), ResponseTooLarge)
        self.assertIn("1024", str(failure.value))

    def test_streamedBodyLimit(self) -> None:
        """
        A body of unknown length is cut off as soon as it passes the limit.
        """
        h = Harness(streamDirectory=True)
        h.client.maxResponseBytes = 2048
        failure = self.failureResultOf(h.issue(), ResponseTooLarge)
        self.assertIn("larger than 2048 bytes", str(failure.value))
        self.assertNoTimers(h)

    def test_requestTimeout(self) -> None:
        """
        A server that never answers fails the request after the timeout
        with an ACMETimeout naming the URL, and the values are unpublished.
        """
        h = Harness(hang={"/new-order"})
        d = h.issue()
        self.assertNoResult(d)
        h.clock.advance(30)
        failure = self.failureResultOf(d, ACMETimeout)
        self.assertEqual(str(failure.value), f"no complete answer from {BASE}/new-order within 30 s")
        self.assertNoTimers(h)

    def test_pollHonoursRetryAfter(self) -> None:
        """
        While an authorization is pending the client polls again only after
        the server's Retry-After.
        """
        h = Harness(pendingPolls=2, retryAfter="7")
        d = h.issue(["a.example.test"])
        self.assertNoResult(d)
        self.assertEqual([t for _, t in h.server.pollTimes], [0.0, 0.0])
        h.clock.advance(6.9)
        self.assertEqual(len(h.server.pollTimes), 2)
        h.clock.advance(0.1)
        self.assertEqual(len(h.server.pollTimes), 3)
        h.clock.advance(7)
        self.successResultOf(d)
        self.assertEqual([t for _, t in h.server.pollTimes], [0.0, 0.0, 7.0, 14.0])
        self.assertNoTimers(h)

    def test_pollBackoff(self) -> None:
        """
        Without Retry-After, polls back off exponentially up to the maximum.
        """
        h = Harness(pendingPolls=5)
        d = h.issue(["a.example.test"])
        for _ in range(40):
            h.clock.advance(1)
        self.successResultOf(d)
        times = [t for _, t in h.server.pollTimes]
        gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
        self.assertEqual(gaps[:4], [1.0, 2.0, 4.0, 8.0])

    def test_retryAfterDate(self) -> None:
        """
        Retry-After may be an HTTP date; it is relative to the clock.
        """
        self.assertEqual(parseRetryAfter("120", 0), 120.0)
        self.assertEqual(parseRetryAfter(email.utils.formatdate(1000, usegmt=True), 990.0), 10.0)
        self.assertIsNone(parseRetryAfter("soon", 0))
        self.assertIsNone(parseRetryAfter(None, 0))

    def test_pollTimeout(self) -> None:
        """
        An authorization that never leaves pending times out, and its value
        is unpublished.
        """
        h = Harness(pendingPolls=10_000)
        d = h.issue(["a.example.test"])
        for _ in range(20):
            h.clock.advance(8)
        failure = self.failureResultOf(d, ACMETimeout)
        self.assertIn("authorization for a.example.test", str(failure.value))
        self.assertEqual(h.publisher.records, {})
        self.assertNoTimers(h)

    def test_validationFails(self) -> None:
        """
        A failed validation is a ChallengeFailed naming the domain and the
        server's problem, and every published value is removed.
        """
        h = Harness()

        class WrongPublisher(MemoryChallengePublisher):
            def publish(self, name: str, value: str) -> defer.Deferred[None]:
                return super().publish(name, "wrong-" + value)

            def unpublish(self, name: str, value: str) -> defer.Deferred[None]:
                return super().unpublish(name, "wrong-" + value)

        wrong = WrongPublisher()
        h.server.publisher = wrong
        h.client.publisher = wrong
        failure = self.failureResultOf(h.issue(), ChallengeFailed)
        self.assertIn("urn:ietf:params:acme:error:unauthorized", str(failure.value))
        self.assertIn("validation of", str(failure.value))
        self.assertEqual(wrong.records, {})
        self.assertEqual([k for k, _, _ in wrong.history], ["publish", "publish", "unpublish", "unpublish"])

    def test_unpublishWhenPublishingFails(self) -> None:
        """
        If publishing the second value fails, the first is unpublished and
        the publisher's error is what the caller sees.
        """
        h = Harness()

        class Flaky(MemoryChallengePublisher):
            def publish(self, name: str, value: str) -> defer.Deferred[None]:
                if self.records:
                    return defer.fail(RuntimeError("KV unavailable"))
                return super().publish(name, value)

        flaky = Flaky()
        h.client.publisher = flaky
        failure = self.failureResultOf(h.issue(), RuntimeError)
        self.assertEqual(str(failure.value), "KV unavailable")
        self.assertEqual(flaky.records, {})
        self.assertEqual([k for k, _, _ in flaky.history], ["publish", "unpublish"])

    def test_unpublishOnCancel(self) -> None:
        """
        Cancelling an issuance while it polls unpublishes the values and
        leaves no timer behind.
        """
        h = Harness(pendingPolls=10)
        d = h.issue()
        self.assertNotEqual(h.publisher.records, {})
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(h.publisher.records, {})
        self.assertNoTimers(h)

    def test_orderProcessing(self) -> None:
        """
        After finalize, a processing order is polled until it is valid.
        """
        h = Harness(processingPolls=2)
        d = h.issue(["a.example.test"])
        self.assertNoResult(d)
        h.clock.advance(1)
        self.assertNoResult(d)
        h.clock.advance(2)
        self.successResultOf(d)

    def test_dns01Value(self) -> None:
        """
        The TXT value is base64url(SHA-256(token "." thumbprint)) without
        padding (RFC 8555 section 8.4).
        """
        jwk = accountJWK(EC_KEY)
        token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
        keyAuthorization = token + "." + jose.b64encode(jwk.thumbprint()).decode()
        expected = jose.b64encode(hashlib.sha256(keyAuthorization.encode()).digest()).decode()
        self.assertEqual(dns01Value(token, jwk), expected)
        self.assertNotIn("=", expected)

    def test_accountKeyKept(self) -> None:
        """
        The first call makes and saves an account key, later calls reuse it.
        """
        store = MemoryCertificateStore()
        first = self.successResultOf(
            defer.Deferred.fromCoroutine(loadOrCreateAccountKey(store, inlineRunner))
        )
        self.assertEqual(store.accountKey, first)
        again = self.successResultOf(
            defer.Deferred.fromCoroutine(loadOrCreateAccountKey(store, inlineRunner))
        )
        self.assertEqual(again, first)
        self.assertEqual(signatureAlgorithm(accountJWK(first)).name, "ES256")
