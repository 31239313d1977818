"""
HTTP helpers for tests that talk to real servers.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IProtocolFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from suite.netutil import boundPort

__all__ = ["httpHeaders", "serveLoopback"]


def httpHeaders(values: Mapping[str, str] | Mapping[bytes, list[bytes]]) -> Headers:
    """
    treq's C{headers=} argument from a plain mapping (one value per name,
    or a list of raw values per raw name).  treq's own dict types are a
    union of invariant dicts that mypy cannot match a dict display against.
    """
    headers = Headers()
    for name, value in values.items():
        if isinstance(name, bytes) and isinstance(value, list):
            headers.setRawHeaders(name, value)
        elif isinstance(name, str) and isinstance(value, str):
            headers.setRawHeaders(name, [value])
        else:
            raise TypeError(f"header {name!r}: {value!r}")
    return headers


async def serveLoopback(testCase: SynchronousTestCase, factory: IProtocolFactory) -> int:
    """
    Serve C{factory} on a loopback TCP port the system chooses, until
    C{testCase} ends; the port number.
    """
    from twisted.internet import reactor

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    testCase.addCleanup(port.stopListening)
    return boundPort(port)
