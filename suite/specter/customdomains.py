"""
Custom domains: C{specter client acme DOMAIN} and C{specter client
validate DOMAIN}, answered by the gateway for the client certificate's
owner.

  1. C{claim}: allocate (or return) the domain's token and store the record
     C{acme/custom/<domain>} (see L{suite.specter.acmekeys}) naming the
     owner and the owner's tunnel hostname; the customer publishes
     C{_acme-challenge.<domain>} CNAME C{<token>.<ACME_ZONE>}.
  2. C{validate}: look that CNAME up (through the configured resolver),
     mark the record validated and answer what C{<domain>} should point at
     (the first C{--apex}).
  3. C{remove}: the owner forgets the domain (C{specter client acme DOMAIN
     --remove}); releasing a tunnel hostname keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSQueryTimeoutError, DomainError

from suite.specter import acmekeys

__all__ = [
    "CustomDomain",
    "CustomDomains",
    "DomainRefused",
    "ValidationFailed",
    "challengeName",
    "makeCustomDomains",
    "makeResolver",
]

log = Logger(namespace="specter.custom")


class DomainRefused(ValueError):
    """
    The domain cannot be claimed (invalid, under an apex, another owner's).
    """


class ValidationFailed(ValueError):
    """
    The C{_acme-challenge} CNAME of a domain is missing or points elsewhere.
    """


@dataclass
class CustomDomain:
    """
    One record under C{acme/custom/<domain>}.
    """

    domain: str
    token: str
    owner: str
    hostname: str
    validated: bool = False

    def toJSON(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def fromJSON(cls, data: bytes) -> CustomDomain:
        entry = json.loads(data)
        return cls(
            domain=str(entry["domain"]),
            token=str(entry["token"]),
            owner=str(entry["owner"]),
            hostname=str(entry["hostname"]),
            validated=bool(entry.get("validated", False)),
        )


def challengeName(domain: str) -> str:
    """
    The name the customer publishes as a CNAME.
    """
    return f"_acme-challenge.{domain}"


def makeResolver(address: tuple[str, int] | None, reactor: Any = None) -> Any:
    """
    A L{twisted.names} resolver: the server at C{address}, or the system's
    (C{/etc/resolv.conf}) when L{None}.
    """
    from twisted.names import client

    if address is None:
        return client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)
    return client.Resolver(servers=[address], reactor=reactor)


class CustomDomains:
    """
    The custom-domain records of a ring.

    @param ring: anything with C{kv(op, key, args)} (a L{ChordNode}).
    @param apexes: the C{--apex} names (not claimable; the first is the
        target customers point their domain at).
    @param zone: the ACME zone C{specter dns} serves.
    @param resolver: an L{twisted.internet.interfaces.IResolver} used to
        check the customer's CNAME.
    """

    def __init__(self, ring: Any, apexes: Sequence[str], zone: str, resolver: Any) -> None:
        self.ring = ring
        self.apexes = [a.lower().rstrip(".") for a in apexes]
        self.zone = zone.lower().rstrip(".")
        self.resolver = resolver

    def normalise(self, domain: str) -> str:
        """
        The lower-case domain, or L{DomainRefused} saying why it cannot be
        a custom domain.
        """
        name = str(domain).strip().rstrip(".").lower()
        if not acmekeys.validDomain(name):
            raise DomainRefused(f"{domain!r} is not a valid domain name")
        for apex in self.apexes:
            if name == apex or name.endswith("." + apex):
                raise DomainRefused(f"{name} is under the apex {apex}: use a tunnel hostname instead")
        if name == self.zone or name.endswith("." + self.zone):
            raise DomainRefused(f"{name} is under the ACME zone {self.zone}")
        return name

    def target(self, record: CustomDomain) -> str:
        """
        The CNAME target of C{<token>.<ACME_ZONE>} for C{record}.
        """
        return f"{record.token}.{self.zone}"

    async def _get(self, domain: str) -> CustomDomain | None:
        raw = await self.ring.kv("get", acmekeys.customKey(domain), [])
        return None if raw is None else CustomDomain.fromJSON(bytes(raw))

    def get(self, domain: str) -> Deferred[CustomDomain | None]:
        """
        Fire with the record of C{domain}, or L{None}.
        """
        return Deferred.fromCoroutine(self._get(domain))

    async def _put(self, record: CustomDomain) -> None:
        await self.ring.kv("put", acmekeys.customKey(record.domain), [record.toJSON()])

    async def _owned(self, domain: str, owner: str) -> CustomDomain:
        record = await self._get(domain)
        if record is None:
            raise DomainRefused(f"{domain} is not claimed: run 'specter client acme {domain}' first")
        if record.owner != owner:
            raise DomainRefused(f"{domain} is claimed by another client")
        return record

    async def _claim(self, domain: str, owner: str, hostname: str) -> CustomDomain:
        name = self.normalise(domain)
        record = await self._get(name)
        if record is not None and record.owner != owner:
            raise DomainRefused(f"{name} is claimed by another client")
        if record is None:
            record = CustomDomain(name, acmekeys.newToken(), owner, hostname)
            log.info(
                "custom domain {domain} claimed by {owner} for {hostname}",
                domain=name,
                owner=owner,
                hostname=hostname,
            )
        elif record.hostname != hostname:
            record.hostname = hostname
        else:
            return record
        await self._put(record)
        return record

    def claim(self, domain: str, owner: str, hostname: str) -> Deferred[CustomDomain]:
        """
        Claim C{domain} for C{owner}, served by the tunnel C{hostname}: fire
        with its record (the existing token when it was claimed before).
        """
        return Deferred.fromCoroutine(self._claim(domain, owner, hostname))

    async def _check(self, record: CustomDomain) -> None:
        name = challengeName(record.domain)
        want = self.target(record)
        try:
            answers, _, _ = await self.resolver.lookupCNAME(name)
        except DNSNameError:
            raise ValidationFailed(f"no CNAME at {name} (NXDOMAIN): publish {name} CNAME {want}") from None
        except DomainError as e:
            raise ValidationFailed(
                f"no CNAME at {name} ({type(e).__name__}): publish {name} CNAME {want}"
            ) from None
        except (DNSQueryTimeoutError, TimeoutError):
            raise ValidationFailed(f"looking up {name} timed out: is the DNS resolver reachable?") from None
        except Exception as e:
            raise ValidationFailed(f"looking up {name} failed: {e or type(e).__name__}") from None
        found = [
            str(a.payload.name).lower().rstrip(".")
            for a in answers
            if a.type == dns.CNAME and str(a.name).lower().rstrip(".") == name
        ]
        if not found:
            raise ValidationFailed(f"no CNAME at {name}: publish {name} CNAME {want}")
        if want not in found:
            raise ValidationFailed(f"{name} is a CNAME to {found[0]}, not {want}")

    async def _validate(self, domain: str, owner: str) -> tuple[CustomDomain, str]:
        name = self.normalise(domain)
        record = await self._owned(name, owner)
        await self._check(record)
        if not record.validated:
            record.validated = True
            await self._put(record)
            log.info("custom domain {domain} of {owner} validated", domain=name, owner=owner)
        return record, self.apexes[0]

    def validate(self, domain: str, owner: str) -> Deferred[tuple[CustomDomain, str]]:
        """
        Check the CNAME of C{domain} (claimed by C{owner}), mark it
        validated; fire with the record and what C{domain} should point at.
        """
        return Deferred.fromCoroutine(self._validate(domain, owner))

    async def _remove(self, domain: str, owner: str) -> CustomDomain:
        name = self.normalise(domain)
        record = await self._owned(name, owner)
        await self.ring.kv("delete", acmekeys.customKey(name), [])
        log.info("custom domain {domain} removed by {owner}", domain=name, owner=owner)
        return record

    def remove(self, domain: str, owner: str) -> Deferred[CustomDomain]:
        """
        Forget C{domain} (only its owner may).
        """
        return Deferred.fromCoroutine(self._remove(domain, owner))


def makeCustomDomains(options: Any, node: Any, reactor: Any) -> CustomDomains:
    """
    The custom domains of a C{specter server --acme ...}: records in the
    ring KV, CNAMEs checked through C{--dns-resolver} (or the system's).
    """
    _, zone = options["acme"]
    resolver = makeResolver(options.get("dns-resolver") or None, reactor)
    return CustomDomains(node, list(options["apex"]), zone, resolver)
