"""
HTTP plumbing of the ACME client: the treq client factory with explicit
trust roots, responses read whole through a size limit, C{Retry-After}
parsing, and the runners that keep blocking work off the reactor.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
from treq.client import HTTPClient
from twisted.internet import defer, ssl, threads
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from suite.acme.errors import ACMEProtocolError, ResponseTooLarge

__all__ = [
    "MAX_RESPONSE_BYTES",
    "Runner",
    "threadRunner",
    "inlineRunner",
    "makeHTTPClient",
    "parseRetryAfter",
    "ACMEResponse",
    "readLimited",
]

_T = TypeVar("_T")

#: Largest response body read from the server (directory, objects, chains).
MAX_RESPONSE_BYTES = 1024 * 1024

#: Runs a blocking callable and fires with its result.
Runner = Callable[..., "Deferred[Any]"]


def threadRunner(reactor: Any) -> Runner:
    """
    A runner that calls blocking work in C{reactor}'s thread pool.
    """

    def run(f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run


def inlineRunner(f: Callable[..., _T], *args: Any) -> Deferred[_T]:
    """
    A runner that calls the work at once (tests with a fake clock and
    pre-made keys).
    """
    return defer.maybeDeferred(f, *args)


def makeHTTPClient(
    reactor: Any, trustRootsPEM: Sequence[bytes] | None = None, pool: HTTPConnectionPool | None = None
) -> HTTPClient:
    """
    A treq client whose HTTPS checks server certificates against
    C{trustRootsPEM} (PEM CA certificates), or the platform's trust store
    when C{None}, on C{pool} (a persistent pool by default; the caller
    closes it with C{closeCachedConnections} when done).
    """

    if trustRootsPEM:
        roots = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem) for pem in trustRootsPEM])
        policy = BrowserLikePolicyForHTTPS(trustRoot=roots)
    else:
        policy = BrowserLikePolicyForHTTPS()
    if pool is None:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 2
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))


def parseRetryAfter(value: str | None, now: float) -> float | None:
    """
    Seconds to wait from a C{Retry-After} header (delta seconds or an HTTP
    date), or C{None} when absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


@attrs.define(frozen=True)
class ACMEResponse:
    """
    A response whose body was read (within the size limit).
    """

    url: str
    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """
        The first value of header C{name}, decoded, or C{None}.
        """
        values = self.headers.getRawHeaders(name.encode("ascii"))
        return values[0].decode("latin-1") if values else None

    def json(self) -> Any:
        """
        The body decoded as JSON.

        @raise ACMEProtocolError: if it is not JSON.
        """
        try:
            return json.loads(self.body)
        except ValueError:
            raise ACMEProtocolError(f"HTTP {self.code} from {self.url}: body is not JSON")

    def jsonObject(self) -> dict[str, Any]:
        """
        The body as a JSON object.
        """
        document = self.json()
        if not isinstance(document, dict):
            raise ACMEProtocolError(f"HTTP {self.code} from {self.url}: expected a JSON object")
        return document


class _LimitedBody(Protocol):
    """
    Collects a response body up to C{limit} bytes into C{finished}; more
    than that stops the transfer and fails with L{ResponseTooLarge}.
    Cancelling C{finished} stops the transfer too.
    """

    def __init__(self, limit: int, url: str) -> None:
        self.limit = limit
        self.url = url
        self.chunks: list[bytes] = []
        self.size = 0
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[bytes]) -> None:
        self.finished = Deferred()  # whatever the transport reports now goes nowhere
        self._stopTransfer()

    def _stopTransfer(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.chunks = []
            self.finished.errback(
                ResponseTooLarge(f"response from {self.url} is larger than {self.limit} bytes")
            )
            self._stopTransfer()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def readLimited(response: Any, limit: int, url: str) -> Deferred[bytes]:
    """
    Read C{response}'s body, failing with L{ResponseTooLarge} beyond
    C{limit} bytes (at once when the declared length is larger).
    """
    length = getattr(response, "length", None)
    if isinstance(length, int) and length > limit:
        body = _LimitedBody(0, url)
        response.deliverBody(body)
        body.finished.addErrback(lambda _: None)
        return defer.fail(ResponseTooLarge(f"response from {url} is {length} bytes (limit {limit})"))
    body = _LimitedBody(limit, url)
    response.deliverBody(body)
    return body.finished
