"""
Reading an HTTP client's answers within a size limit.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet.defer import Deferred

__all__ = ["BodyTooLarge", "collectBody"]


class BodyTooLarge(ValueError):
    """
    An answer's body was larger than its limit; reading stopped there.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.limit = limit


def collectBody(response: Any, limit: int) -> Deferred[bytes]:
    """
    The whole body of C{response} (an L{twisted.web.iweb.IResponse}).

    @raise BodyTooLarge: (as the failure) as soon as more than C{limit}
        bytes have arrived; the connection is dropped then.
    """
    chunks: list[bytes] = []
    size = 0

    def collect(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)

    reading: Deferred[None] = treq.collect(response, collect)
    return reading.addCallback(lambda _: b"".join(chunks))
