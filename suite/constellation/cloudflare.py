"""
Cloudflare v4 DNS records API (C{/zones/{zone}/dns_records}) with treq.

Fencing: the API has no conditional writes, so the fence is best effort.
The zone holds a TXT record C{_constellation-fence.DOMAIN} with the highest
token that has written; before every batch the writer reads it, refuses
when it is higher than its own token and raises it when lower.  That stops
a deposed writer whose lease ran out long ago, but a write already past
that check when the new writer raises the fence still lands: the window is
one read-then-write round trip, and the next reconcile of the new writer
(on change, or within 60 s) overwrites it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import treq
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from zope.interface import implementer

from suite.constellation.dns import FENCE_LABEL, Fenced, addressType
from suite.constellation.interfaces import IDNSProvider
from suite.logging import Secret
from suite.web.client import BodyTooLarge, collectBody

__all__ = ["CloudflareProvider", "CloudflareError", "DEFAULT_API"]

log = Logger(namespace="constellation.dns")

DEFAULT_API = "https://api.cloudflare.com/client/v4"
_MAX_BODY = 4 * 1024 * 1024


TTL = 60


class CloudflareError(Exception):
    """
    The API refused or failed; the message carries Cloudflare's errors.

    @ivar retryAfter: seconds the API asked to wait (C{Retry-After} of a
        rate-limited answer, HTTP 429), or None.
    """

    def __init__(self, message: str, retryAfter: float | None = None) -> None:
        super().__init__(message)
        self.retryAfter = retryAfter


#: Longest Retry-After honoured, in seconds.
MAX_RETRY_AFTER = 3600.0


def _retryAfter(response: Any) -> float | None:
    """
    The C{Retry-After} seconds of a rate-limited answer (a delay in seconds;
    an HTTP date is not used), capped at L{MAX_RETRY_AFTER}.
    """
    if response.code != 429:
        return None
    values = response.headers.getRawHeaders(b"retry-after") or []
    try:
        seconds = float(values[0].decode("ascii").strip()) if values else None
    except (ValueError, UnicodeDecodeError):
        return None
    if seconds is None or not seconds >= 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


@implementer(IDNSProvider)
class CloudflareProvider:
    name = "cloudflare"
    fencing = (
        "best effort: the API has no conditional writes; a fence TXT record is checked and raised "
        "before each batch, which stops a long-deposed writer, but a write racing the new writer's "
        "first batch can land until the next reconcile overwrites it"
    )

    def __init__(
        self,
        reactor: Any,
        zoneId: str,
        token: Secret,
        domain: str,
        api: str = DEFAULT_API,
        timeout: float = 10.0,
    ) -> None:
        self.reactor, self.zoneId, self.token, self.domain = reactor, zoneId, token, domain
        self.api = api.rstrip("/")
        self.timeout = timeout
        self.fence = f"{FENCE_LABEL}.{domain}"

    async def _call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> Any:
        url = f"{self.api}/zones/{self.zoneId}/dns_records{path}"
        if query:
            url += "?" + urlencode(query)
        headers: dict[bytes | str, list[bytes | str]] = {
            b"Authorization": [f"Bearer {self.token.reveal()}".encode()],
            b"Content-Type": [b"application/json"],
        }
        data = json.dumps(body).encode() if body is not None else None

        async def fetch() -> tuple[Any, bytes]:
            response = await treq.request(method, url, headers=headers, data=data, persistent=False)
            return response, await collectBody(response, _MAX_BODY)

        # The timeout and the size limit cover the whole answer, body included.
        fetching = Deferred.fromCoroutine(fetch())
        fetching.addTimeout(self.timeout, self.reactor)
        try:
            response, raw = await fetching
        except BodyTooLarge:
            raise CloudflareError(
                f"{method} dns_records{path}: answer larger than {_MAX_BODY} bytes"
            ) from None
        except (TimeoutError, CancelledError):
            raise CloudflareError(
                f"{method} dns_records{path}: no answer within {self.timeout:g} s"
            ) from None
        except Exception as e:  # one CloudflareError with the reason
            raise CloudflareError(f"{method} dns_records{path}: {e}") from None
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise CloudflareError(
                f"{method} dns_records{path}: HTTP {response.code}, not JSON", _retryAfter(response)
            ) from None
        if not isinstance(doc, dict) or not doc.get("success"):
            errors = doc.get("errors") if isinstance(doc, dict) else None
            what = "; ".join(
                f"{e.get('code')}: {e.get('message')}" for e in errors or [] if isinstance(e, dict)
            )
            raise CloudflareError(
                f"{method} dns_records{path}: HTTP {response.code}: {what or 'failed'}", _retryAfter(response)
            )
        return doc.get("result")

    async def _list(self, name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            result = await self._call("GET", "", query={"name": name, "per_page": "100", "page": str(page)})
            if not isinstance(result, list):
                raise CloudflareError("GET dns_records: result is not a list")
            out.extend(r for r in result if isinstance(r, dict) and r.get("name") == name)
            if len(result) < 100:
                return out
            page += 1

    async def records(self, names: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name in names:
            addrs = sorted(r["content"] for r in await self._list(name) if r.get("type") in ("A", "AAAA"))
            if addrs:
                out[name] = addrs
        return out

    async def _checkFence(self, token: int) -> None:
        fences = [r for r in await self._list(self.fence) if r.get("type") == "TXT"]
        values = [
            int(str(r.get("content", "")).strip('"'))
            for r in fences
            if str(r.get("content", "")).strip('"').isdigit()
        ]
        current = max(values) if values else None
        if current is not None and current > token:
            raise Fenced(f"the zone's fence is at token {current}, above ours ({token})")
        if current == token:
            return
        body = {"type": "TXT", "name": self.fence, "content": f'"{token}"', "ttl": TTL}
        if fences:
            await self._call("PUT", f"/{fences[0]['id']}", body)
        else:
            await self._call("POST", "", body)

    async def apply(self, changes: Sequence[tuple[str, Sequence[str]]], token: int) -> None:
        await self._checkFence(token)
        comment = f"constellation (fencing token {token})"
        for name, addrs in changes:
            existing = [r for r in await self._list(name) if r.get("type") in ("A", "AAAA")]
            have = {r["content"]: r for r in existing}
            # Add before removing: a name never resolves to nothing mid-change,
            # and a batch that fails half-way leaves the old address in place.
            for address in addrs:
                if address not in have:
                    await self._call(
                        "POST",
                        "",
                        {
                            "type": addressType(address),
                            "name": name,
                            "content": address,
                            "ttl": TTL,
                            "proxied": False,
                            "comment": comment,
                        },
                    )
            for address, record in have.items():
                if address not in addrs:
                    await self._call("DELETE", f"/{record['id']}")
