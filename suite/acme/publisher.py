"""
L{MemoryChallengePublisher}: DNS-01 values held in memory, for tests and for
a DNS server in the same process that answers from them.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from suite.acme.interfaces import IChallengePublisher

__all__ = ["MemoryChallengePublisher"]


@implementer(IChallengePublisher)
class MemoryChallengePublisher:
    """
    TXT values by record name (lower case, no trailing dot), in publication
    order.  C{history} records every call as C{("publish"|"unpublish", name,
    value)}.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.history: list[tuple[str, str, str]] = []

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".")

    def publish(self, name: str, value: str) -> Deferred[None]:
        self.history.append(("publish", name, value))
        values = self.records.setdefault(self._key(name), [])
        if value not in values:
            values.append(value)
        return defer.succeed(None)

    def unpublish(self, name: str, value: str) -> Deferred[None]:
        self.history.append(("unpublish", name, value))
        key = self._key(name)
        values = self.records.get(key, [])
        if value in values:
            values.remove(value)
        if not values:
            self.records.pop(key, None)
        return defer.succeed(None)

    def lookup(self, name: str) -> list[str]:
        """
        The values currently published under C{name}.
        """
        return list(self.records.get(self._key(name), ()))
