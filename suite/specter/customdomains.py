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
from collections.abc import Callable, Sequence
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
    "CustomDomainWatcher",
    "DomainRefused",
    "ValidationFailed",
    "challengeName",
    "makeCustomDomains",
    "makeResolver",
]

log = Logger(namespace="specter.custom")


#: KV leases held while a domain's first record is written.
CLAIM_PREFIX = b"acme/claim/"
#: How long that lease lasts at most.
CLAIM_TTL = 30.0


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
        #: Called with each record validated or removed here.
        self.onChanged: list[Callable[[CustomDomain], object]] = []

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
            return await self._claimNew(name, owner, hostname)
        if record.hostname != hostname:
            record.hostname = hostname
            await self._put(record)
        return record

    async def _claimNew(self, name: str, owner: str, hostname: str) -> CustomDomain:
        """
        Store the first record of C{name} while holding the KV lease
        C{acme/claim/<domain>}, so two clients claiming it at once cannot
        both win.
        """
        from suite.specter.chord import errors as E
        from suite.specter.chord.errors import RemoteError

        lease = CLAIM_PREFIX + name.encode("ascii")
        try:
            granted = await self.ring.kv("acquire", lease, [owner.encode("utf-8"), CLAIM_TTL])
        except RemoteError as e:
            if e.code != E.LEASE_HELD:
                raise
            raise DomainRefused(f"{name} is being claimed by another client") from None
        try:
            record = await self._get(name)
            if record is not None:
                if record.owner != owner:
                    raise DomainRefused(f"{name} is claimed by another client")
                return record
            record = CustomDomain(name, acmekeys.newToken(), owner, hostname)
            await self._put(record)
            log.info(
                "custom domain {domain} claimed by {owner} for {hostname}",
                domain=name,
                owner=owner,
                hostname=hostname,
            )
            return record
        finally:
            try:
                await self.ring.kv("release", lease, [granted[2]])
            except Exception as e:  # the lease lapses by itself: logged
                log.warn("could not release the claim lease of {domain}: {e}", domain=name, e=e)

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
            answers, _, _ = await self.resolver.lookupCanonicalName(name)
        except DNSNameError:
            raise ValidationFailed(f"no CNAME at {name} (NXDOMAIN): publish {name} CNAME {want}") from None
        except DomainError as e:
            raise ValidationFailed(
                f"no CNAME at {name} ({type(e).__name__}): publish {name} CNAME {want}"
            ) from None
        except (DNSQueryTimeoutError, TimeoutError):
            raise ValidationFailed(f"looking up {name} timed out: is the DNS resolver reachable?") from None
        except Exception as e:  # resolver boundary: a reason for the caller
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
        await self.ring.kv("append", acmekeys.VALIDATED_SET, [name.encode("ascii")])
        for hook in list(self.onChanged):
            hook(record)
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
        await self.ring.kv("remove", acmekeys.VALIDATED_SET, [name.encode("ascii")])
        await self.ring.kv("delete", acmekeys.customKey(name), [])
        log.info("custom domain {domain} removed by {owner}", domain=name, owner=owner)
        for hook in list(self.onChanged):
            hook(record)
        return record

    async def _validated(self) -> list[CustomDomain]:
        out = []
        for member in await self.ring.kv("list", acmekeys.VALIDATED_SET, []):
            domain = bytes(member).decode("ascii", "replace")
            try:
                record = await self._get(domain)
            except ValueError:
                continue
            if record is not None and record.validated:
                out.append(record)
        return sorted(out, key=lambda r: r.domain)

    def validated(self) -> Deferred[list[CustomDomain]]:
        """
        Fire with the records of every validated custom domain.
        """
        return Deferred.fromCoroutine(self._validated())

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


class CustomDomainWatcher:
    """
    Keeps a gateway serving the validated custom domains of the ring: reads
    C{acme/domains} at start and every C{interval} seconds (and right after
    a validation or removal here), routes each domain to its owner's tunnel hostname
    (C{gateway.customHosts}) and hands new ones to C{addCertificate} (the
    renewal service, which loads the stored certificate or orders one);
    removed ones go to C{removeCertificate} (renewal stops, the gateway
    stops serving it).
    """

    def __init__(
        self,
        domains: CustomDomains,
        gateway: Any,
        clock: Any,
        addCertificate: Callable[[list[str]], object],
        interval: float = 30.0,
        removeCertificate: Callable[[str], object] | None = None,
    ) -> None:
        self.domains = domains
        self.gateway = gateway
        self.clock = clock
        self.addCertificate = addCertificate
        self.removeCertificate = removeCertificate
        self.interval = interval
        self.known: set[str] = set()
        self._loop: Any = None
        domains.onChanged.append(lambda record: self.refresh())

    async def _refresh(self) -> None:
        records = await self.domains.validated()
        hosts = {r.domain: r.hostname for r in records}
        self.gateway.customHosts.clear()
        self.gateway.customHosts.update(hosts)
        self.gateway.customOwners.clear()
        self.gateway.customOwners.update({r.domain: r.owner for r in records})
        for domain in sorted(set(hosts) - self.known):
            self.known.add(domain)
            log.info(
                "custom domain {domain}: serving it for {hostname}", domain=domain, hostname=hosts[domain]
            )
            self.addCertificate([domain])
        for domain in sorted(self.known - set(hosts)):
            self.known.discard(domain)
            log.info("custom domain {domain}: removed, no longer routed", domain=domain)
            if self.removeCertificate is not None:
                self.removeCertificate(domain)

    def refresh(self) -> Deferred[None]:
        """
        Read the validated domains now.
        """
        d = Deferred.fromCoroutine(self._refresh())
        d.addErrback(
            lambda f: log.warn("reading the custom domains failed: {error}", error=f.getErrorMessage())
        )
        return d

    def start(self) -> None:
        from twisted.internet.task import LoopingCall

        if self._loop is None:
            self._loop = LoopingCall(self.refresh)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
