"""
Public IP auto-detection: ask each source URL in turn (C{--public-ip-sources},
ipify, ifconfig.me, icanhazip by default) for this node's address, with a
timeout and a size limit each; the first answer that is an IP address wins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from suite.web.client import BodyTooLarge, collectBody

__all__ = ["detectPublicIP", "MAX_ANSWER"]

#: Largest answer read from a source.
MAX_ANSWER = 256


async def _ask(http: HTTPClient, reactor: Any, url: str, timeout: float) -> str:
    async def run() -> str:
        response = await http.get(
            url, headers=Headers({b"Accept": [b"text/plain"], b"User-Agent": [b"constellation"]})
        )
        if response.code != 200:
            raise ValueError(f"HTTP {response.code}")
        text = (await collectBody(response, MAX_ANSWER)).decode("ascii", "replace").strip()
        try:
            return ipaddress.ip_address(text).compressed
        except ValueError:
            raise ValueError(f"answer {text[:40]!r} is not an IP address") from None

    d = Deferred.fromCoroutine(run())
    d.addTimeout(timeout, reactor)
    return await d


async def detectPublicIP(
    reactor: Any, sources: Sequence[str], timeout: float = 5.0, http: HTTPClient | None = None
) -> tuple[str | None, list[str]]:
    """
    Try C{sources} in order.

    @return: the first IP address found (or None) and one line per source
        that failed.
    """
    http = http or HTTPClient(Agent(reactor))
    errors: list[str] = []
    for url in sources:
        try:
            return await _ask(http, reactor, url, timeout), errors
        except BodyTooLarge:
            errors.append(f"{url}: answer larger than {MAX_ANSWER} bytes")
        except (TimeoutError, CancelledError):
            errors.append(f"{url}: no answer within {timeout:g} s")
        except Exception as e:  # next source; every reason is reported
            reasons = getattr(e, "reasons", None)
            if reasons and any(r.check(CancelledError) for r in reasons):
                errors.append(f"{url}: no answer within {timeout:g} s")
            else:
                detail = "; ".join(r.getErrorMessage() for r in reasons) if reasons else str(e)
                errors.append(f"{url}: {detail.splitlines()[0] if detail else type(e).__name__}")
    return None, errors
