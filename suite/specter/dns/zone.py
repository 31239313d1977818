"""
The answers of the ACME zone, independent of sockets: given a query name,
type and class, what goes in the answer, authority and additional sections
and which response code.

    apex            SOA, NS (with A/AAAA glue for in-zone name servers)
    ns host         A, AAAA from --acme-ns
    managed         TXT from the ring KV (may be empty: NODATA)
    <token>         TXT from the ring KV (empty: NXDOMAIN)
    anything else   NXDOMAIN, SOA in authority
    outside         REFUSED (not a resolver)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.names import dns

from suite.daemon import ConfigError
from suite.specter.acmekeys import MANAGED, validLabel

__all__ = ["Answer", "ACMEZone", "checkZone", "ChallengeSource", "Unavailable", "TXT_TTL", "NEGATIVE_TTL"]

log = Logger()

#: TTL of the TXT answers: short, so a new challenge value is seen quickly.
TXT_TTL = 10
#: Negative-caching TTL (SOA minimum and the TTL of the SOA in authority).
NEGATIVE_TTL = 10
#: TTL of the static records (SOA, NS, name-server addresses).
STATIC_TTL = 3600


class Unavailable(Exception):
    """
    The ring KV could not be asked (RPC down, timed out or failing).
    """


class ChallengeSource(Protocol):
    def txt(self, label: str) -> Deferred[list[bytes]]: ...

    def freshUntil(self, label: str) -> float:
        """
        Until when (reactor seconds) the values last answered for C{label}
        are reused without asking the ring.
        """

    def watch(self, callback: Callable[[str], None]) -> None:
        """
        Call C{callback(label)} whenever the values read for C{label} change.
        """


@dataclass
class Answer:
    """
    One response: code, sections and the AA bit.

    @ivar expires: until when (reactor seconds) the same question gets the
        same answer: never stale for static names, the ring cache's expiry
        for challenge names, 0 for answers that must not be reused.
    @ivar label: the challenge label whose ring values the answer depends on.
    """

    rCode: int
    answers: list[dns.RRHeader] = field(default_factory=list)
    authority: list[dns.RRHeader] = field(default_factory=list)
    additional: list[dns.RRHeader] = field(default_factory=list)
    authoritative: bool = True
    expires: float = math.inf
    label: str | None = None


def _hostname(flag: str, name: str) -> bytes:
    text = name.strip().rstrip(".").lower()
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_validHostLabel(label) for label in labels):
        raise ConfigError(f"{flag}: {name!r} is not a valid domain name")
    return text.encode("ascii")


def checkZone(zone: str, nameServers: Sequence[str]) -> None:
    """
    Raise L{ConfigError} unless the ACME zone and name-server names are
    valid domain names.
    """
    _hostname("--acme", zone)
    for name in nameServers:
        _hostname("--acme-ns", name)


def _validHostLabel(label: str) -> bool:
    return validLabel(label) and len(label) <= 63


def _txtStrings(value: bytes) -> list[bytes]:
    return [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]


class ACMEZone:
    """
    The authoritative data of C{ACME_ZONE}: static apex and name-server
    records, TXT values asked from C{source}.
    """

    def __init__(
        self,
        zone: str,
        email: str,
        nameServers: Sequence[tuple[str, Sequence[str]]],
        source: ChallengeSource,
        serial: int | None = None,
    ) -> None:
        self.zone = _hostname("--acme", zone)
        self.source = source
        self.hosts: dict[bytes, list[str]] = {}
        for name, addrs in nameServers:
            self.hosts.setdefault(_hostname("--acme-ns", name), []).extend(addrs)
        self.nsNames = list(self.hosts)
        local, _, domain = email.rpartition("@")
        mailbox = f"{local}.{domain}" if local and domain and "." not in local else f"hostmaster.{zone}"
        if serial is None:
            # the same on every solver given the same flags
            static = repr((self.zone, self.nsNames, sorted(self.hosts.items()), mailbox))
            serial = zlib.crc32(static.encode()) or 1
        self.soa = dns.Record_SOA(
            mname=self.nsNames[0],
            rname=mailbox.lower().encode("ascii", "replace"),
            serial=serial & 0xFFFFFFFF,
            refresh=3600,
            retry=600,
            expire=1209600,
            minimum=NEGATIVE_TTL,
            ttl=STATIC_TTL,
        )
        # names that exist only because a name server sits below them
        self.emptyNonTerminals: set[bytes] = set()
        for host in self.hosts:
            if self.inZone(host):
                labels = host.split(b".")
                for i in range(1, len(labels)):
                    parent = b".".join(labels[i:])
                    if parent != self.zone and self.inZone(parent):
                        self.emptyNonTerminals.add(parent)

    def inZone(self, name: bytes) -> bool:
        return name == self.zone or name.endswith(b"." + self.zone)

    def _rr(self, name: bytes, payload: Any, ttl: int) -> dns.RRHeader:
        return dns.RRHeader(name=name, type=payload.TYPE, cls=dns.IN, ttl=ttl, payload=payload, auth=True)

    def _soaAuthority(self) -> list[dns.RRHeader]:
        return [self._rr(self.zone, self.soa, NEGATIVE_TTL)]

    def _addresses(self, asked: bytes, host: bytes, qtype: int) -> list[dns.RRHeader]:
        out = []
        for addr in self.hosts[host]:
            v6 = ":" in addr
            if qtype in (dns.ALL_RECORDS, dns.AAAA if v6 else dns.A):
                record: Any = (
                    dns.Record_AAAA(addr, ttl=STATIC_TTL) if v6 else dns.Record_A(addr, ttl=STATIC_TTL)
                )
                out.append(self._rr(asked, record, STATIC_TTL))
        return out

    def _glue(self) -> list[dns.RRHeader]:
        out = []
        for host in self.nsNames:
            if self.inZone(host):
                out += self._addresses(host, host, dns.ALL_RECORDS)
        return out

    def lookup(self, qname: bytes, qtype: int, qcls: int = dns.IN) -> Deferred[Answer]:
        """
        Answer one question; C{qname} as it came on the wire (any case).
        """
        name = qname.rstrip(b".").lower()
        if qcls not in (dns.IN, dns.ANY) or not self.inZone(name):
            return succeed(Answer(dns.EREFUSED, authoritative=False))
        if qtype in (dns.AXFR, dns.IXFR, dns.MAILA, dns.MAILB):
            return succeed(Answer(dns.EREFUSED, authoritative=False))
        if name == self.zone:
            answers = []
            if qtype in (dns.SOA, dns.ALL_RECORDS):
                answers.append(self._rr(qname, self.soa, STATIC_TTL))
            if qtype in (dns.NS, dns.ALL_RECORDS):
                answers += [
                    self._rr(qname, dns.Record_NS(n, ttl=STATIC_TTL), STATIC_TTL) for n in self.nsNames
                ]
            if not answers:
                return succeed(Answer(dns.OK, authority=self._soaAuthority()))
            glue = self._glue() if qtype in (dns.NS, dns.ALL_RECORDS) else []
            return succeed(Answer(dns.OK, answers, additional=glue))
        if name in self.hosts:
            answers = self._addresses(qname, name, qtype)
            return succeed(Answer(dns.OK, answers, authority=[] if answers else self._soaAuthority()))
        if name in self.emptyNonTerminals:
            return succeed(Answer(dns.OK, authority=self._soaAuthority()))
        label = name[: -len(self.zone) - 1]
        text = label.decode("ascii", "replace")
        if b"." in label or not validLabel(text):
            return succeed(Answer(dns.ENAME, authority=self._soaAuthority()))
        return Deferred.fromCoroutine(self._challenge(qname, text, qtype))

    async def _challenge(self, qname: bytes, label: str, qtype: int) -> Answer:
        try:
            values = await self.source.txt(label)
        except Unavailable:
            return Answer(dns.ESERVER, authoritative=False, expires=0.0)
        expires = self.source.freshUntil(label)
        if not values and label != MANAGED:
            return Answer(dns.ENAME, authority=self._soaAuthority(), expires=expires, label=label)
        if qtype not in (dns.TXT, dns.ALL_RECORDS) or not values:
            return Answer(dns.OK, authority=self._soaAuthority(), expires=expires, label=label)
        answers = [self._rr(qname, dns.Record_TXT(*_txtStrings(v), ttl=TXT_TTL), TXT_TTL) for v in values]
        return Answer(dns.OK, answers, expires=expires, label=label)
