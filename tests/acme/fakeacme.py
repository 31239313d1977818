"""
A small in-memory ACME server (a twisted.web resource) for unit tests of the
client through C{treq.testing.StubTreq}.

It checks what a real server checks of every request (JWS signature, nonce
freshness, the protected C{url}, C{jwk} only on newAccount and C{kid}
otherwise), records each request for assertions, validates DNS-01 by reading
the test's L{MemoryChallengePublisher}, and has knobs to inject problems,
bad nonces, slow authorizations and oversized bodies.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import josepy as jose
from acme import jws as acmeJWS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from suite.acme.publisher import MemoryChallengePublisher
from suite.pki.mint import mintCA

BASE = "https://acme.test"


@dataclass
class RecordedRequest:
    """
    One POST as the server saw it.
    """

    path: str
    contentType: str | None
    protected: dict[str, Any]
    payload: bytes


@dataclass
class _Authz:
    domain: str
    wildcard: bool
    token: str
    status: str = "pending"
    answered: bool = False
    polls: int = 0
    error: dict[str, Any] | None = None


@dataclass
class _Order:
    names: list[str]
    authzs: list[str]
    status: str = "pending"
    certificate: bytes | None = None
    finalizePolls: int = 0


@dataclass
class FakeACME:
    """
    Server state and knobs.

    @ivar pendingPolls: how many polls an answered authorization stays
        C{pending} before it is validated.
    @ivar retryAfter: C{Retry-After} value sent with pending answers.
    @ivar processingPolls: how many polls an order stays C{processing}
        after finalize.
    @ivar badNonces: how many of the next signed requests get C{badNonce}.
    @ivar problems: path -> (status, problem document or raw bytes) for the
        next request to that path (consumed once).
    """

    publisher: MemoryChallengePublisher
    pendingPolls: int = 0
    retryAfter: str | None = None
    processingPolls: int = 0
    badNonces: int = 0
    problems: dict[str, tuple[int, Any]] = field(default_factory=dict)
    directoryPadding: int = 0
    streamDirectory: bool = False
    hang: set[str] = field(default_factory=set)
    requests: list[RecordedRequest] = field(default_factory=list)
    accounts: dict[str, jose.JWK] = field(default_factory=dict)
    authzs: dict[str, _Authz] = field(default_factory=dict)
    orders: dict[str, _Order] = field(default_factory=dict)
    nonces: set[str] = field(default_factory=set)
    pollTimes: list[tuple[str, float]] = field(default_factory=list)
    clock: Any = None

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self.caCert, self.caKey = mintCA("fake ACME root", days=30)

    def nonce(self) -> str:
        value = jose.b64encode(hashlib.sha256(str(next(self._ids)).encode()).digest()[:16]).decode()
        self.nonces.add(value)
        return value


class FakeACMEResource(Resource):
    """
    The HTTP face of a L{FakeACME}.
    """

    isLeaf = True

    def __init__(self, state: FakeACME) -> None:
        super().__init__()
        self.state = state

    # -- helpers -----------------------------------------------------------

    def _json(self, request: Request, code: int, document: Any, location: str | None = None) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Replay-Nonce", self.state.nonce().encode())
        if location:
            request.setHeader(b"Location", location.encode())
        return json.dumps(document).encode()

    def _problem(self, request: Request, code: int, kind: str, detail: str) -> bytes:
        body = self._json(request, code, {"type": "urn:ietf:params:acme:error:" + kind, "detail": detail})
        request.setHeader(b"Content-Type", b"application/problem+json")
        return body

    # -- dispatch ----------------------------------------------------------

    def render(self, request: Request) -> Any:
        if request.path.decode() in self.state.hang:
            return NOT_DONE_YET
        return super().render(request)

    def render_GET(self, request: Request) -> Any:
        path = request.path.decode()
        if path == "/directory" and self.state.streamDirectory:
            request.setHeader(b"Content-Type", b"application/json")
            for _ in range(64):
                request.write(b" " * 512)
            return NOT_DONE_YET
        if path == "/directory":
            document = {
                "newNonce": BASE + "/new-nonce",
                "newAccount": BASE + "/new-account",
                "newOrder": BASE + "/new-order",
                "meta": {"termsOfService": BASE + "/tos", "padding": "x" * self.state.directoryPadding},
            }
            return self._json(request, 200, document)
        request.setResponseCode(405)
        return b"use POST-as-GET"

    def render_HEAD(self, request: Request) -> bytes:
        request.setHeader(b"Replay-Nonce", self.state.nonce().encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return b""

    def render_POST(self, request: Request) -> bytes:
        state = self.state
        path = request.path.decode()
        assert request.content is not None
        body = request.content.read()
        contentType = request.getHeader(b"content-type")
        signed = acmeJWS.JWS.json_loads(body)
        header = signed.signature.combined
        protected = json.loads(jose.b64decode(json.loads(body)["protected"]))
        state.requests.append(
            RecordedRequest(path, contentType.decode() if contentType else None, protected, signed.payload)
        )
        if protected.get("url") != BASE + path:
            return self._problem(request, 400, "malformed", f"url {protected.get('url')} != {BASE + path}")
        nonce = protected.get("nonce")
        if nonce not in state.nonces or state.badNonces > 0:
            state.badNonces = max(0, state.badNonces - 1)
            return self._problem(request, 400, "badNonce", "JWS has an invalid anti-replay nonce")
        state.nonces.discard(nonce)
        if path == "/new-account":
            if header.kid is not None or header.jwk is None:
                return self._problem(request, 400, "malformed", "newAccount needs jwk, not kid")
            key = header.jwk
        else:
            if header.jwk is not None or header.kid not in state.accounts:
                return self._problem(request, 400, "malformed", "expected the kid of a known account")
            key = state.accounts[header.kid]
        if not signed.verify(key):
            return self._problem(request, 400, "malformed", "bad signature")
        if path in state.problems:
            code, problem = state.problems.pop(path)
            request.setResponseCode(code)
            request.setHeader(b"Replay-Nonce", state.nonce().encode())
            if isinstance(problem, bytes):
                request.setHeader(b"Content-Type", b"text/html")
                return problem
            request.setHeader(b"Content-Type", b"application/problem+json")
            return json.dumps(problem).encode()
        payload = json.loads(signed.payload) if signed.payload else None
        return self._route(request, path, key, payload)

    def _route(self, request: Request, path: str, key: jose.JWK, payload: Any) -> bytes:
        state = self.state
        if path == "/new-account":
            thumb = key.thumbprint()
            for url, known in state.accounts.items():
                if known.thumbprint() == thumb:
                    return self._json(request, 200, {"status": "valid"}, url)
            if payload.get("onlyReturnExisting"):
                return self._problem(request, 400, "accountDoesNotExist", "no account for this key")
            url = f"{BASE}/acct/{next(state._ids)}"
            state.accounts[url] = key
            return self._json(request, 201, {"status": "valid", "contact": payload.get("contact", [])}, url)
        if path == "/new-order":
            names = [i["value"] for i in payload["identifiers"]]
            authzURLs = []
            for name in names:
                wildcard = name.startswith("*.")
                authzURL = f"{BASE}/authz/{next(state._ids)}"
                token = jose.b64encode(hashlib.sha256(authzURL.encode()).digest()).decode()
                state.authzs[authzURL] = _Authz(name[2:] if wildcard else name, wildcard, token)
                authzURLs.append(authzURL)
            orderURL = f"{BASE}/order/{next(state._ids)}"
            state.orders[orderURL] = _Order(names, authzURLs)
            return self._json(request, 201, self._order(orderURL), orderURL)
        if path.startswith("/authz/"):
            url = BASE + path
            authz = state.authzs[url]
            if state.clock is not None:
                state.pollTimes.append((path, state.clock.seconds()))
            if authz.answered and authz.status == "pending":
                authz.polls += 1
                if authz.polls > state.pendingPolls:
                    self._validate(authz, key)
            body = self._json(request, 200, self._authz(url))
            if authz.status == "pending" and state.retryAfter is not None:
                request.setHeader(b"Retry-After", state.retryAfter.encode())
            return body
        if path.startswith("/chall/"):
            authzURL = BASE + "/authz/" + path.split("/")[2]
            authz = state.authzs[authzURL]
            authz.answered = True
            return self._json(request, 200, self._challenge(authzURL), None)
        if path.startswith("/order/"):
            url = BASE + path
            order = state.orders[url]
            if order.status == "pending" and all(state.authzs[a].status == "valid" for a in order.authzs):
                order.status = "ready"
            if order.status == "pending" and any(state.authzs[a].status == "invalid" for a in order.authzs):
                order.status = "invalid"
            if order.status == "processing":
                order.finalizePolls += 1
                if order.finalizePolls > state.processingPolls:
                    order.status = "valid"
            return self._json(request, 200, self._order(url))
        if path.startswith("/finalize/"):
            url = BASE + "/order/" + path.split("/")[2]
            order = state.orders[url]
            if order.status != "ready":
                return self._problem(request, 403, "orderNotReady", f"order is {order.status}")
            csr = x509.load_der_x509_csr(jose.b64decode(payload["csr"]))
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            if sorted(sans.get_values_for_type(x509.DNSName)) != sorted(order.names):
                return self._problem(request, 400, "badCSR", "CSR names differ from the order")
            order.certificate = self._issue(csr, order.names)
            order.status = "processing" if state.processingPolls else "valid"
            return self._json(request, 200, self._order(url), None)
        if path.startswith("/cert/"):
            url = BASE + "/order/" + path.split("/")[2]
            order = state.orders[url]
            assert order.certificate is not None
            request.setHeader(b"Content-Type", b"application/pem-certificate-chain")
            request.setHeader(b"Replay-Nonce", state.nonce().encode())
            return order.certificate
        return self._problem(request, 404, "malformed", f"no such resource {path}")

    # -- documents ---------------------------------------------------------

    def _challenge(self, authzURL: str) -> dict[str, Any]:
        authz = self.state.authzs[authzURL]
        ident = authzURL.rsplit("/", 1)[1]
        challenge: dict[str, Any] = {
            "type": "dns-01",
            "url": f"{BASE}/chall/{ident}",
            "token": authz.token,
            "status": "processing" if authz.answered and authz.status == "pending" else authz.status,
        }
        if authz.error is not None:
            challenge["error"] = authz.error
        return challenge

    def _authz(self, url: str) -> dict[str, Any]:
        authz = self.state.authzs[url]
        ident = url.rsplit("/", 1)[1]
        http01 = {
            "type": "http-01",
            "url": f"{BASE}/chall-http/{ident}",
            "token": authz.token,
            "status": "pending",
        }
        document: dict[str, Any] = {
            "identifier": {"type": "dns", "value": authz.domain},
            "status": authz.status,
            "challenges": [http01, self._challenge(url)],
        }
        if authz.wildcard:
            document["wildcard"] = True
        return document

    def _order(self, url: str) -> dict[str, Any]:
        order = self.state.orders[url]
        ident = url.rsplit("/", 1)[1]
        document: dict[str, Any] = {
            "status": order.status,
            "identifiers": [{"type": "dns", "value": n} for n in order.names],
            "authorizations": order.authzs,
            "finalize": f"{BASE}/finalize/{ident}",
        }
        if order.status == "valid":
            document["certificate"] = f"{BASE}/cert/{ident}"
        if order.status == "invalid":
            document["error"] = {
                "type": "urn:ietf:params:acme:error:unauthorized",
                "detail": "authorization failed",
            }
        return document

    def _validate(self, authz: _Authz, key: jose.JWK) -> None:
        keyAuthz = authz.token + "." + jose.b64encode(key.thumbprint()).decode()
        expected = base64.urlsafe_b64encode(hashlib.sha256(keyAuthz.encode()).digest()).rstrip(b"=").decode()
        found = self.state.publisher.lookup("_acme-challenge." + authz.domain)
        if expected in found:
            authz.status = "valid"
        else:
            authz.status = "invalid"
            authz.error = {
                "type": "urn:ietf:params:acme:error:unauthorized",
                "detail": f"no TXT record {expected} at _acme-challenge.{authz.domain}",
            }

    def _issue(self, csr: x509.CertificateSigningRequest, names: list[str]) -> bytes:
        clock = self.state.clock
        now = datetime.datetime.fromtimestamp(
            clock.seconds() if clock is not None else time.time(), datetime.UTC
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.state.caCert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=True)
            .sign(self.state.caKey, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM) + self.state.caCert.public_bytes(
            serialization.Encoding.PEM
        )
