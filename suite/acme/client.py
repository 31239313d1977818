"""
An ACMEv2 (RFC 8555) client on treq, proving control of names with DNS-01.

    client = ACMEClient(directoryURL, accountKeyPEM, publisher, clock=reactor,
                        http=makeHTTPClient(reactor, trustRootsPEM))
    stored = await client.issue(["a.example.test", "*.example.test"])

One C{issue} call: discover the directory, create or find the account
(C{newAccount}, the key is the account's identity), place a C{newOrder} for
all names, fetch each authorization, publish every DNS-01 value under
C{_acme-challenge.<domain>} through the L{IChallengePublisher}, answer the
challenges, poll the authorizations (backoff on the injected clock,
honouring C{Retry-After}), unpublish every value (success or not), finalize
with a CSR for a fresh key, poll the order, download the PEM chain.

Every request is a JWS (C{acme.jws}) signed with the account key and a
fresh nonce; a C{badNonce} answer is retried once with the nonce it
carries.  Problem documents become L{ACMEServerError}s, every response body
is read through a size limit, and key generation and CSR signing run
through C{runInThread} so the reactor never blocks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs
import josepy as jose
from acme import challenges as acmeChallenges
from acme import jws as acmeJWS
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import implementer

from suite.acme import keys
from suite.acme.errors import (
    ACME_ERROR_PREFIX,
    ACMEProtocolError,
    ACMEServerError,
    ACMETimeout,
    ChallengeFailed,
)
from suite.acme.interfaces import ICertificateIssuer, ICertificateStore, IChallengePublisher
from suite.acme.store import StoredCertificate
from suite.acme.transport import (
    MAX_RESPONSE_BYTES,
    ACMEResponse,
    Runner,
    inlineRunner,
    parseRetryAfter,
    readLimited,
    threadRunner,
)
from suite.pki.keys import certificateToPEM, keyMatchesCertificate

__all__ = [
    "PollPolicy",
    "ACMEClient",
    "dns01Value",
    "loadOrCreateAccountKey",
]

log = Logger(namespace="acme.client")

_T = TypeVar("_T", bound=jose.JSONDeSerializable)

USER_AGENT = b"twisted-suite-acme/0.1"
JOSE_JSON = b"application/jose+json"
PEM_CHAIN = b"application/pem-certificate-chain"
_FINAL_AUTHZ = {"invalid", "deactivated", "expired", "revoked"}


async def loadOrCreateAccountKey(store: ICertificateStore, runInThread: Runner, kind: str = "ec") -> bytes:
    """
    The account key kept in C{store}, made (off the reactor) and saved
    first if there is none yet: the key is the account's identity, so it
    must survive restarts.
    """
    pem = await store.loadAccountKey()
    if pem is None:
        pem = await runInThread(keys.generatePrivateKeyPEM, kind)
        await store.saveAccountKey(pem)
        log.info("made a new ACME account key ({kind})", kind=kind)
    assert pem is not None
    result: bytes = pem
    return result


def dns01Value(token: str, jwk: jose.JWK) -> str:
    """
    The TXT value for a DNS-01 challenge: base64url(SHA-256(key authorization)).
    """
    challenge = acmeChallenges.DNS01(token=jose.decode_b64jose(token))
    value: str = challenge.validation(jwk)
    return value


@attrs.define(frozen=True)
class PollPolicy:
    """
    How to poll a pending authorization or order: exponential backoff from
    C{initial} to C{maximum} seconds, unless the server sends
    C{Retry-After} (honoured up to C{maxRetryAfter}); give up after
    C{timeout} seconds.
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 30.0
    maxRetryAfter: float = 600.0
    timeout: float = 900.0

    def delay(self, attempt: int, retryAfter: float | None) -> float:
        """
        The wait before poll number C{attempt + 1}.
        """
        if retryAfter is not None:
            return min(max(retryAfter, 0.0), self.maxRetryAfter)
        return float(min(self.maximum, self.initial * self.factor**attempt))


def _problemType(response: ACMEResponse) -> str | None:
    try:
        document = json.loads(response.body)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("type"), str):
        return str(document["type"])
    return None


def _decoded(cls: type[_T], document: Any, what: str, url: str) -> _T:
    try:
        return cls.from_json(document)
    except (jose.DeserializationError, ValueError, TypeError, KeyError) as e:
        raise ACMEProtocolError(f"malformed {what} from {url}: {e}")


@implementer(ICertificateIssuer)
class ACMEClient:
    """
    One ACME account at one directory.

    @param directoryURL: the server's directory (RFC 8555 section 7.1.1).
    @param accountKeyPEM: the account's private key (EC P-256 or RSA).
    @param publisher: where DNS-01 values go.
    @param clock: times polls and request timeouts.
    @param http: a treq client (L{makeHTTPClient}, or C{treq.testing.StubTreq}).
    @param runInThread: runs key generation and CSR signing off the reactor;
        by default the clock's thread pool when it is a reactor, inline
        when it is a fake clock.
    @param contact: account contact URLs (C{mailto:...}).
    @param keyKind: C{"ec"} or C{"rsa"} for certificate keys.
    """

    def __init__(
        self,
        directoryURL: str,
        accountKeyPEM: bytes,
        publisher: IChallengePublisher,
        clock: IReactorTime,
        http: Any,
        runInThread: Runner | None = None,
        contact: Sequence[str] = (),
        keyKind: str = "ec",
        poll: PollPolicy = PollPolicy(),
        maxResponseBytes: int = MAX_RESPONSE_BYTES,
        requestTimeout: float = 30.0,
    ) -> None:
        self.description = directoryURL
        self.directoryURL = directoryURL
        self.jwk = keys.accountJWK(accountKeyPEM)
        self.alg = keys.signatureAlgorithm(self.jwk)
        self.publisher = IChallengePublisher(publisher)
        self.clock = clock
        self.http = http
        if runInThread is None:
            runInThread = threadRunner(clock) if IReactorThreads.providedBy(clock) else inlineRunner
        self.runInThread: Runner = runInThread
        self.contact = tuple(contact)
        self.keyKind = keyKind
        self.poll = poll
        self.maxResponseBytes = maxResponseBytes
        self.requestTimeout = requestTimeout
        self.accountURL: str | None = None
        self._directory: dict[str, Any] | None = None
        self._nonces: list[str] = []

    # -- transport ---------------------------------------------------------

    async def _request(
        self, method: str, url: str, body: bytes | None = None, accept: bytes | None = None
    ) -> ACMEResponse:
        def timedOut(result: object, timeout: float) -> ACMEResponse:
            # whatever the cancelled request failed with, the cause is the timeout
            raise ACMETimeout(f"no complete answer from {url} within {timeout:g} s")

        d = Deferred.fromCoroutine(self._exchange(method, url, body, accept))
        d.addTimeout(self.requestTimeout, self.clock, onTimeoutCancel=timedOut)
        return await d

    async def _exchange(
        self, method: str, url: str, body: bytes | None, accept: bytes | None
    ) -> ACMEResponse:
        headers = Headers({b"User-Agent": [USER_AGENT]})
        if body is not None:
            headers.setRawHeaders(b"Content-Type", [JOSE_JSON])
        if accept is not None:
            headers.setRawHeaders(b"Accept", [accept])
        response = await self.http.request(method, url, headers=headers, data=body, allow_redirects=False)
        if method == "HEAD":
            content = b""
        else:
            content = await readLimited(response, self.maxResponseBytes, url)
        result = ACMEResponse(url, response.code, response.headers, content)
        nonce = result.header("Replay-Nonce")
        if nonce:
            self._nonces.append(nonce)
            del self._nonces[:-8]
        return result

    def _raiseForStatus(self, response: ACMEResponse) -> None:
        if response.code < 400:
            return
        try:
            document = json.loads(response.body)
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("type"), str):
            raise ACMEServerError.fromProblem(document, response.code, response.url)
        snippet = " ".join(response.body[:200].decode("utf-8", "replace").split())
        raise ACMEProtocolError(f"HTTP {response.code} from {response.url}: {snippet or '(empty body)'}")

    async def directory(self) -> dict[str, Any]:
        """
        The server's directory (fetched once).
        """
        if self._directory is None:
            response = await self._request("GET", self.directoryURL)
            self._raiseForStatus(response)
            document = response.jsonObject()
            for field in ("newNonce", "newAccount", "newOrder"):
                if not isinstance(document.get(field), str):
                    raise ACMEProtocolError(f"directory at {self.directoryURL} has no {field} URL")
            self._directory = document
        return self._directory

    async def _nonce(self) -> str:
        if self._nonces:
            return self._nonces.pop()
        url = (await self.directory())["newNonce"]
        response = await self._request("HEAD", url)
        self._raiseForStatus(response)
        if not self._nonces:
            raise ACMEProtocolError(f"no Replay-Nonce header from {url}")
        return self._nonces.pop()

    async def post(
        self, url: str, payload: dict[str, Any] | None, accept: bytes | None = None, useJWK: bool = False
    ) -> ACMEResponse:
        """
        POST a JWS to C{url}: C{payload} as JSON, or the empty payload of a
        POST-as-GET when C{None}.  The header carries the account URL
        (C{kid}), or the public key itself when C{useJWK} (C{newAccount}).
        A C{badNonce} problem is retried once with a fresh nonce.

        @raise ACMEServerError: for any other problem document.
        """
        kid = None
        if not useJWK:
            if self.accountURL is None:
                await self.account()
            kid = self.accountURL
        data = b"" if payload is None else json.dumps(payload).encode("utf-8")
        for attempt in (1, 2):
            nonce = await self._nonce()
            try:
                nonceBytes = jose.decode_b64jose(nonce)
            except jose.DeserializationError:
                raise ACMEProtocolError(f"malformed Replay-Nonce {nonce[:40]!r} from the server")
            signed = acmeJWS.JWS.sign(data, key=self.jwk, alg=self.alg, nonce=nonceBytes, url=url, kid=kid)
            response = await self._request("POST", url, signed.json_dumps().encode("utf-8"), accept)
            if (
                response.code >= 400
                and attempt == 1
                and _problemType(response) == ACME_ERROR_PREFIX + "badNonce"
            ):
                log.debug("ACME server rejected a nonce at {url}; retrying once", url=url)
                continue
            break
        self._raiseForStatus(response)
        return response

    # -- account -----------------------------------------------------------

    async def account(self, onlyReturnExisting: bool = False) -> str:
        """
        Create the account for this key, or find it (the server answers
        200 for a key it already knows); fire with the account URL.

        @param onlyReturnExisting: only look the account up; fails with
            C{accountDoesNotExist} when there is none.
        """
        if self.accountURL is not None:
            return self.accountURL
        url = (await self.directory())["newAccount"]
        payload: dict[str, Any]
        if onlyReturnExisting:
            payload = {"onlyReturnExisting": True}
        else:
            registration = messages.NewRegistration(contact=self.contact, terms_of_service_agreed=True)
            payload = registration.to_json()
        response = await self.post(url, payload, useJWK=True)
        location = response.header("Location")
        if not location:
            raise ACMEProtocolError(f"no Location header in the newAccount answer from {url}")
        status = response.jsonObject().get("status")
        if status not in (None, "valid"):
            raise ACMEProtocolError(f"account {location} is {status}")
        log.info(
            "ACME account {account} ({how})",
            account=location,
            how="new" if response.code == 201 else "existing",
        )
        self.accountURL = location
        return location

    # -- issuance ----------------------------------------------------------

    def issue(self, names: Sequence[str]) -> Deferred[StoredCertificate]:
        """
        Obtain a certificate for C{names} with a fresh key (see the module
        docstring for the steps).
        """
        return Deferred.fromCoroutine(self.issueCertificate(names))

    async def issueCertificate(self, names: Sequence[str]) -> StoredCertificate:
        """
        The coroutine behind L{issue}.
        """
        wanted = _normalise(names)
        await self.account()
        keyPEM = await self.runInThread(keys.generatePrivateKeyPEM, self.keyKind)
        orderURL, order = await self._newOrder(wanted)
        await self._authorize(order)
        order = await self._pollOrder(orderURL, {"ready", "valid"}, "ready")
        if order.get("status") == "ready":
            csr = await self.runInThread(keys.makeCSR, keyPEM, wanted)
            finalizeURL = _url(order, "finalize", orderURL)
            response = await self.post(finalizeURL, {"csr": jose.encode_b64jose(csr)})
            order = response.jsonObject()
            if order.get("status") != "valid":
                order = await self._pollOrder(orderURL, {"valid"}, "valid")
        chainPEM = await self._download(_url(order, "certificate", orderURL), keyPEM, wanted)
        log.info("ACME issued a certificate for {names}", names=",".join(wanted))
        return StoredCertificate(chainPEM, keyPEM)

    async def _newOrder(self, names: Sequence[str]) -> tuple[str, dict[str, Any]]:
        url = (await self.directory())["newOrder"]
        order = messages.NewOrder(
            identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in names]
        )
        response = await self.post(url, order.to_json())
        location = response.header("Location")
        if not location:
            raise ACMEProtocolError(f"no Location header in the newOrder answer from {url}")
        document = response.jsonObject()
        _decoded(messages.Order, document, "order", location)
        return location, document

    async def _authorize(self, order: dict[str, Any]) -> None:
        pending: list[tuple[str, str, str]] = []  # authorization URL, challenge URL, domain
        published: list[tuple[str, str]] = []
        try:
            for authzURL in order.get("authorizations") or ():
                response = await self.post(authzURL, None)
                document = response.jsonObject()
                authz = _decoded(messages.Authorization, document, "authorization", authzURL)
                domain = authz.identifier.value
                status = authz.status.name
                if status == "valid":
                    continue
                if status != "pending":
                    raise ChallengeFailed.forIdentifier(domain, _challengeProblem(document))
                challenge = next(
                    (c for c in authz.challenges if isinstance(c.chall, acmeChallenges.DNS01)), None
                )
                if challenge is None:
                    raise ACMEProtocolError(f"the server offers no dns-01 challenge for {domain}")
                name = acmeChallenges.DNS01.LABEL + "." + domain
                value = challenge.chall.validation(self.jwk)
                await self.publisher.publish(name, value)
                published.append((name, value))
                pending.append((authzURL, challenge.uri, domain))
            for _, challengeURL, _ in pending:
                await self.post(challengeURL, {})
            for authzURL, _, domain in pending:
                await self._pollAuthorization(authzURL, domain)
        finally:
            await self._unpublish(published)

    async def _unpublish(self, published: Iterable[tuple[str, str]]) -> None:
        for name, value in published:
            try:
                await self.publisher.unpublish(name, value)
            except Exception:  # best-effort clean-up: logged, the rest go on
                log.failure("could not unpublish the DNS-01 value of {name}", name=name)

    async def _poll(self, url: str, what: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        start = self.clock.seconds()
        attempt = 0
        while True:
            response = await self.post(url, None)
            document = response.jsonObject()
            if done(document):
                return document
            delay = self.poll.delay(
                attempt, parseRetryAfter(response.header("Retry-After"), self.clock.seconds())
            )
            attempt += 1
            if self.clock.seconds() + delay - start > self.poll.timeout:
                raise ACMETimeout(
                    f"{what} at {url} still {document.get('status')!s} after {self.clock.seconds() - start:.0f} s"
                )
            await deferLater(self.clock, delay, lambda: None)

    async def _pollAuthorization(self, url: str, domain: str) -> None:
        def done(document: dict[str, Any]) -> bool:
            status = document.get("status")
            if status in _FINAL_AUTHZ:
                raise ChallengeFailed.forIdentifier(domain, _challengeProblem(document))
            return status == "valid"

        await self._poll(url, f"authorization for {domain}", done)

    async def _pollOrder(self, url: str, wanted: set[str], what: str) -> dict[str, Any]:
        def done(document: dict[str, Any]) -> bool:
            status = document.get("status")
            if status == "invalid":
                problem = document.get("error")
                if isinstance(problem, dict):
                    raise ACMEServerError.fromProblem(problem, None, url)
                raise ACMEServerError("about:blank", f"order {url} is invalid")
            return status in wanted

        return await self._poll(url, f"order (waiting for {what})", done)

    async def _download(self, url: str, keyPEM: bytes, names: Sequence[str]) -> bytes:
        response = await self.post(url, None, accept=PEM_CHAIN)
        try:
            chain = x509.load_pem_x509_certificates(response.body)
        except ValueError:
            raise ACMEProtocolError(f"certificate at {url} is not a PEM chain")
        key = serialization.load_pem_private_key(keyPEM, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) or not keyMatchesCertificate(
            key, chain[0]
        ):
            raise ACMEProtocolError(f"certificate at {url} is not for the key this client sent")
        return certificateToPEM(*chain)


def _normalise(names: Sequence[str]) -> list[str]:
    seen: list[str] = []
    for name in names:
        name = name.strip().lower().rstrip(".")
        if not name:
            raise ValueError("empty domain name")
        if name not in seen:
            seen.append(name)
    if not seen:
        raise ValueError("a certificate needs at least one name")
    return seen


def _url(document: dict[str, Any], field: str, where: str) -> str:
    value = document.get(field)
    if not isinstance(value, str):
        raise ACMEProtocolError(f"{where} has no {field} URL")
    return value


def _challengeProblem(authorization: dict[str, Any]) -> dict[str, Any] | None:
    for challenge in authorization.get("challenges") or ():
        if isinstance(challenge, dict) and isinstance(challenge.get("error"), dict):
            problem: dict[str, Any] = challenge["error"]
            return problem
    return None
