"""
Reading an HTTP client's answers within a size limit.

L{collect} feeds a body to a function chunk by chunk through Twisted's
C{IResponse.deliverBody}, as treq's C{collect} does, without importing
treq: a process whose only HTTP client is Twisted's C{Agent} (a Goop2
peer's hub client) keeps treq's modules out (docs/performance.md, resident
memory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

__all__ = ["BodyTooLarge", "collect", "collectBody"]


class BodyTooLarge(ValueError):
    """
    An answer's body was larger than its limit; reading stopped there.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.limit = limit


class _Collector(Protocol):
    """
    Hands each chunk to C{collector}; if that raises, drops the connection
    and fails C{finished} with the exception.
    """

    def __init__(self, finished: Deferred[None], collector: Callable[[bytes], None]) -> None:
        self.finished: Deferred[None] | None = finished
        self.collector = collector

    def dataReceived(self, data: bytes) -> None:
        try:
            self.collector(data)
        except BaseException:
            if self.transport is not None:
                self.transport.loseConnection()
            if self.finished is not None:
                self.finished.errback(Failure())
            self.finished = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished is None:
            return
        finished, self.finished = self.finished, None
        # An HTTP/1.0 body without a length ends with the connection
        # (PotentialDataLoss): that is its normal end.
        if reason.check(ResponseDone, PotentialDataLoss):
            finished.callback(None)
        else:
            finished.errback(reason)


def collect(response: Any, collector: Callable[[bytes], None]) -> Deferred[None]:
    """
    Feed the body of C{response} (an L{twisted.web.iweb.IResponse}) to
    C{collector}, one chunk at a time; fires when the body has ended.  An
    exception from C{collector} fails it (the connection is dropped then).
    """
    if response.length == 0:
        return succeed(None)
    finished: Deferred[None] = Deferred()
    response.deliverBody(_Collector(finished, collector))
    return finished


def collectBody(response: Any, limit: int) -> Deferred[bytes]:
    """
    The whole body of C{response} (an L{twisted.web.iweb.IResponse}).

    @raise BodyTooLarge: (as the failure) as soon as more than C{limit}
        bytes have arrived; the connection is dropped then.
    """
    chunks: list[bytes] = []
    size = 0

    def take(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)

    return collect(response, take).addCallback(lambda _: b"".join(chunks))
