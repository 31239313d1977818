"""
ACME certificates for C{specter server --apex ... --acme acme://EMAIL@ZONE}:
the L{suite.acme} client and renewal service wired to the ring KV.

  - L{RingChallengePublisher}: DNS-01 values of C{_acme-challenge.<apex>}
    (apex and wildcard alike) go to the KV set C{acme/challenge/managed},
    which C{specter dns} answers as C{managed.<ACME_ZONE>} TXT; the
    operator's CNAME C{_acme-challenge.<apex>} -> C{managed.<ACME_ZONE>}
    joins the two.  Those of a validated custom domain go to the set of its
    token, C{acme/challenge/<token>} (the customer's CNAME points at
    C{<token>.<ACME_ZONE>}).
  - L{RingCertificateStore}: the account key under C{acme/account/<email>}
    and each certificate (private key and chain, PEM) under
    C{acme/cert/<name>}, so every gateway of the ring serves the same one.
  - L{LeasedIssuer}: takes the KV lease C{acme/lease/<name>} before
    ordering, so one node orders at a time; the others fail that attempt
    with L{OrderInProgress}, back off and then find the shared certificate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from zope.interface import implementer

from suite.acme.errors import ACMEError
from suite.acme.interfaces import ICertificateIssuer, ICertificateStore, IChallengePublisher
from suite.acme.store import StoredCertificate
from suite.specter import acmekeys
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.web.errors import JSONMethodsMixin

__all__ = [
    "CERT_PREFIX",
    "ACCOUNT_PREFIX",
    "LEASE_PREFIX",
    "MAX_STORED",
    "NotAnApex",
    "OrderInProgress",
    "RingChallengePublisher",
    "RingCertificateStore",
    "LeasedIssuer",
    "ACMEService",
    "ACMECollector",
    "ACMEInventory",
    "AccountIssuer",
    "certificateNames",
    "makeACMEService",
]

log = Logger(namespace="specter.acme")

#: KV keys of certificates (value: key PEM then chain PEM).
CERT_PREFIX = b"acme/cert/"
#: KV keys of ACME account keys, one per contact e-mail.
ACCOUNT_PREFIX = b"acme/account/"
#: KV lease names: one per certificate, held while a node orders it.
LEASE_PREFIX = b"acme/lease/"
#: Largest certificate value written (the RPC and KV accept 8 MiB; a key
#: and a chain are a few KiB).
MAX_STORED = 1024 * 1024
#: How long the ordering lease lasts: longer than an order's authorization
#: and order polling (15 minutes each at most) plus the requests around them.
LEASE_TTL = 45 * 60.0

#: Renew this long before expiry.
RENEW_BEFORE = 30 * 86400.0

_LABEL = "_acme-challenge."


class NotAnApex(ACMEError):
    """
    A DNS-01 name outside the C{--apex} list: only apexes (and their
    wildcards) are delegated to C{managed.<ACME_ZONE>}.
    """


class OrderInProgress(ACMEError):
    """
    Another node holds the ordering lease of this certificate.
    """


def _apexOf(name: str, apexes: Sequence[str]) -> str:
    text = name.lower().rstrip(".")
    if not text.startswith(_LABEL):
        raise NotAnApex(f"{name!r} is not an _acme-challenge name")
    domain = text[len(_LABEL) :]
    if domain.startswith("*."):
        domain = domain[2:]
    if domain not in apexes:
        raise NotAnApex(
            f"{domain!r} is not an --apex ({', '.join(apexes)}): only apex names are delegated to "
            f"{acmekeys.MANAGED}.<ACME_ZONE>"
        )
    return domain


@implementer(IChallengePublisher)
class RingChallengePublisher:
    """
    Publishes C{_acme-challenge.<apex>} values (apex or wildcard
    authorizations) into the ring KV set that C{specter dns} answers as
    C{managed.<ACME_ZONE>}.

    @param ring: anything with C{kv(op, key, args)} (a L{ChordNode}).
    @param apexes: the C{--apex} names.
    """

    def __init__(self, ring: Any, apexes: Sequence[str]) -> None:
        self.ring = ring
        self.apexes = [a.lower().rstrip(".") for a in apexes]

    async def _key(self, name: str) -> bytes:
        try:
            _apexOf(name, self.apexes)
        except NotAnApex as e:
            text = name.lower().rstrip(".")
            domain = text[len(_LABEL) :] if text.startswith(_LABEL) else ""
            if any(domain == a or domain.endswith("." + a) for a in self.apexes):
                raise  # names under an apex are never custom domains
            record = await self._custom(domain)
            if record is None:
                raise e from None
            return acmekeys.challengeKey(record["token"])
        return acmekeys.challengeKey(acmekeys.MANAGED)

    async def _custom(self, domain: str) -> dict[str, Any] | None:
        """
        The validated custom-domain record of C{domain}, if there is one.
        """
        try:
            key = acmekeys.customKey(domain)
        except ValueError:
            return None
        raw = await self.ring.kv("get", key, [])
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(bytes(raw))
        return record if record.get("validated") else None

    async def _change(self, op: str, name: str, value: str) -> None:
        key = await self._key(name)
        data = value.encode("ascii")
        if not 0 < len(data) <= acmekeys.MAX_VALUE:
            raise ValueError(f"a TXT value must be 1 to {acmekeys.MAX_VALUE} bytes")
        await self.ring.kv(op, key, [data])

    def publish(self, name: str, value: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._change("append", name, value))

    def unpublish(self, name: str, value: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._change("remove", name, value))


def certificateKey(name: str) -> bytes:
    """
    The KV key of the certificate stored under C{name}.
    """
    from suite.acme.store import fileNameFor

    fileNameFor(name)  # validates the name
    return CERT_PREFIX + name.encode("ascii")


def accountKey(email: str) -> bytes:
    """
    The KV key of the account key of contact C{email}.
    """
    return ACCOUNT_PREFIX + email.lower().encode("utf-8")


@implementer(ICertificateStore)
class RingCertificateStore:
    """
    Account key and certificates in the ring KV (replicated like every
    key, so on every holder's disk).
    """

    def __init__(self, ring: Any, email: str) -> None:
        self.ring = ring
        self.email = email

    async def _get(self, key: bytes) -> bytes | None:
        value = await self.ring.kv("get", key, [])
        return bytes(value) if value is not None else None

    async def _put(self, key: bytes, value: bytes) -> None:
        if len(value) > MAX_STORED:
            raise ValueError(f"{key.decode()}: {len(value)} bytes is more than the {MAX_STORED} kept")
        await self.ring.kv("put", key, [value])

    def loadAccountKey(self) -> Deferred[bytes | None]:
        return Deferred.fromCoroutine(self._get(accountKey(self.email)))

    def saveAccountKey(self, pem: bytes) -> Deferred[None]:
        return Deferred.fromCoroutine(self._put(accountKey(self.email), pem))

    async def _load(self, name: str) -> StoredCertificate | None:
        data = await self._get(certificateKey(name))
        return None if data is None else StoredCertificate.fromPEM(data)

    def loadCertificate(self, name: str) -> Deferred[StoredCertificate | None]:
        return Deferred.fromCoroutine(self._load(name))

    def saveCertificate(self, name: str, certificate: StoredCertificate) -> Deferred[None]:
        return Deferred.fromCoroutine(self._put(certificateKey(name), certificate.toPEM()))


@implementer(ICertificateIssuer)
class LeasedIssuer:
    """
    Wraps an issuer: an order is placed only while holding the KV lease
    C{acme/lease/<first name>} (holder: this node's address); without it
    the attempt fails with L{OrderInProgress}.  Given C{store} and
    C{clock}, it looks in the store once the lease is held and returns a
    certificate another node saved meanwhile (one good for more than
    C{fresherThan} seconds) instead of ordering again.
    """

    def __init__(
        self,
        issuer: Any,
        ring: Any,
        holder: str,
        ttl: float = LEASE_TTL,
        store: ICertificateStore | None = None,
        fresherThan: float = 0.0,
        clock: Any = None,
    ) -> None:
        self.issuer = ICertificateIssuer(issuer)
        self.description = self.issuer.description
        self.ring = ring
        self.holder = holder
        self.ttl = ttl
        self.store = store
        self.fresherThan = fresherThan
        self.clock = clock

    async def _alreadyStored(self, names: list[str]) -> StoredCertificate | None:
        """
        With the lease held: a certificate another node saved after this
        one last looked, good for longer than C{fresherThan} seconds.
        """
        if self.store is None or self.clock is None:
            return None
        stored: StoredCertificate | None = await self.store.loadCertificate(names[0])
        if stored is None or not set(names) <= set(stored.names):
            return None
        if stored.notAfter - self.clock.seconds() <= self.fresherThan:
            return None
        return stored

    async def _issue(self, names: list[str]) -> StoredCertificate:
        lease = LEASE_PREFIX + names[0].encode("ascii")
        try:
            granted = await self.ring.kv("acquire", lease, [self.holder.encode("utf-8"), self.ttl])
        except RemoteError as e:
            if e.code != E.LEASE_HELD:
                raise
            raise OrderInProgress(
                f"another node is ordering {names[0]} ({e.message or 'lease held'}); the shared "
                "certificate is picked up from the ring KV"
            ) from None
        token = granted[2]
        try:
            fresh = await self._alreadyStored(names)
            if fresh is not None:
                log.info("certificate {name}: another node saved one meanwhile, using it", name=names[0])
                return fresh
            stored: StoredCertificate = await self.issuer.issue(names)
        finally:
            try:
                await self.ring.kv("release", lease, [token])
            except Exception as e:  # the lease lapses by itself: logged
                log.warn("could not release the ACME lease of {name}: {e}", name=names[0], e=e)
        return stored

    def issue(self, names: Sequence[str]) -> Deferred[StoredCertificate]:
        return Deferred.fromCoroutine(self._issue(list(names)))


@implementer(ICertificateIssuer)
class AccountIssuer:
    """
    The ACME client of this ring's account: made on the first order, once
    the account key is read from the ring KV (or made and saved there).
    Logs each certificate it obtains.
    """

    def __init__(
        self, directory: str, email: str, store: ICertificateStore, publisher: Any, reactor: Any, http: Any
    ) -> None:
        self.description = directory
        self.email = email
        self.store = store
        self.publisher = publisher
        self.reactor = reactor
        self.http = http
        self.client: Any = None

    async def _issue(self, names: list[str]) -> StoredCertificate:
        from suite.acme.client import ACMEClient, loadOrCreateAccountKey
        from suite.acme.transport import threadRunner

        if self.client is None:
            runner = threadRunner(self.reactor)
            pem = await loadOrCreateAccountKey(self.store, runner)
            self.client = ACMEClient(
                self.description,
                pem,
                self.publisher,
                clock=self.reactor,
                http=self.http,
                runInThread=runner,
                contact=[f"mailto:{self.email}"],
            )
        started = self.reactor.seconds()
        stored: StoredCertificate = await self.client.issue(names)
        log.info(
            "acquired ACME certificate for {names} (expires {expires}) in {s:.1f}s",
            names=", ".join(names),
            expires=stored.leaf.not_valid_after_utc.isoformat(),
            s=self.reactor.seconds() - started,
        )
        return stored

    def issue(self, names: Sequence[str]) -> Deferred[StoredCertificate]:
        return Deferred.fromCoroutine(self._issue(list(names)))


def certificateNames(apexes: Sequence[str]) -> list[list[str]]:
    """
    One certificate per apex: the apex and its wildcard.
    """
    return [[apex, f"*.{apex}"] for apex in apexes]


class ACMEService(Service):
    """
    Starts the renewal service once every vnode of this process serves
    keys (the store and the lease are in the ring KV), and stops it.
    """

    name = "specter-acme"

    def __init__(self, renewal: Any, node: Any, clock: Any) -> None:
        self.renewal = renewal
        self.node = node
        self.clock = clock
        #: The wait for the ring (L{suite.specter.chord.node.ChordNode.whenServing}).
        self._serving: Deferred[None] | None = None
        self._call: Any = None
        #: A L{suite.specter.customdomains.CustomDomainWatcher} started
        #: with the renewal service.
        self.watcher: Any = None

    def _ringServes(self, _: None) -> None:
        self._serving = None
        # on the next turn: the ring announced it from inside a vnode's
        # membership machine, which must not be reentered
        self._call = self.clock.callLater(0, self._start)

    def _start(self) -> None:
        self._call = None
        self.renewal.startService()
        if self.watcher is not None:
            self.watcher.start()

    def startService(self) -> None:
        super().startService()
        self._serving = self.node.whenServing()
        self._serving.addCallbacks(self._ringServes, lambda f: f.trap(CancelledError))

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._serving is not None:
            self._serving.cancel()
        self._serving = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.watcher is not None:
            self.watcher.stop()
        if self.renewal.running:
            result: Deferred[None] | None = self.renewal.stopService()
            return result
        return None

    def rows(self) -> list[tuple[str, str, float | None]]:
        """
        C{(name, state, notAfter)} for each certificate (state C{Idle}
        before the ring is ready).
        """
        out = []
        for name, machine in self.renewal.machines.items():
            status = machine.describe()
            out.append((name, status.state, status.notAfter))
        return out


class ACMECollector:
    """
    Prometheus metrics of the ACME certificates, read at scrape time.
    """

    STATES = ("Idle", "Loading", "Ordering", "Valid", "Renewing", "Failed", "Stopped")

    def __init__(self, service: ACMEService) -> None:
        self.service = service

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        state = GaugeMetricFamily(
            "specter_acme_certificate_state",
            "1 for the lifecycle state each ACME certificate is in.",
            labels=["name", "state"],
        )
        expiry = GaugeMetricFamily(
            "specter_acme_certificate_expiry_seconds",
            "When each ACME certificate in use expires (seconds since the epoch).",
            labels=["name"],
        )
        for name, current, notAfter in self.service.rows():
            for known in self.STATES:
                state.add_metric([name, known], 1.0 if known == current else 0.0)
            if notAfter is not None:
                expiry.add_metric([name], notAfter)
        yield state
        yield expiry


class ACMEInventory(JSONMethodsMixin):
    """
    C{/_internal/acme}: each certificate's names, lifecycle state, expiry
    and whether the gateway serves it, as JSON.
    """

    isLeaf = True

    def __init__(self, service: ACMEService, directory: str, served: Callable[[str], bool]) -> None:
        super().__init__()
        self.service = service
        self.directory = directory
        self.served = served

    def render_GET(self, request: Any) -> bytes:
        certificates = []
        for name, state, notAfter in self.service.rows():
            core = self.service.renewal.cores[name]
            certificates.append(
                {
                    "name": name,
                    "names": list(core.names),
                    "state": state,
                    "notAfter": notAfter,
                    "served": self.served(name),
                }
            )
        request.setHeader(b"content-type", b"application/json")
        body = {"directory": self.directory, "certificates": certificates}
        return json.dumps(body, indent=2).encode() + b"\n"


class ACMEOff(JSONMethodsMixin):
    """
    C{/_internal/acme} of a gateway without C{--acme}: no ACME certificates,
    every apex is served its self-signed certificate.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        from suite.web.errors import jsonResponse

        body: dict[str, Any] = {
            "directory": None,
            "certificates": [],
            "reason": "ACME is off (no --acme): every apex is served the self-signed certificate",
        }
        return jsonResponse(request, body)


def makeACMEService(
    options: Any,
    node: Any,
    reactor: Any,
    install: Callable[[str, StoredCertificate], object],
) -> ACMEService:
    """
    The ACME client and renewal service of a ring node: certificates for
    every C{--apex} and its wildcard, installed through C{install(name,
    certificate)} whenever one is issued or found in the store.
    """
    from suite.acme.renewal import RenewalService
    from suite.acme.transport import makeHTTPClient

    email, zone = options["acme"]
    apexes = list(options["apex"])
    store = RingCertificateStore(node, email)
    publisher = RingChallengePublisher(node, apexes)
    http = makeHTTPClient(reactor, options["acme-ca-pems"] or None)

    issuer = LeasedIssuer(
        AccountIssuer(options["acme-directory"], email, store, publisher, reactor, http),
        node,
        node.addr,
        store=store,
        fresherThan=RENEW_BEFORE,
        clock=reactor,
    )

    def installSafely(name: str, stored: StoredCertificate) -> None:
        try:
            install(name, stored)
        except Exception:  # a bad certificate must not stop renewal: logged
            log.failure("installing the ACME certificate of {name}", name=name)
        else:
            log.info(
                "serving the ACME certificate of {name} (expires {expires})",
                name=name,
                expires=stored.leaf.not_valid_after_utc.isoformat(),
            )

    renewal = RenewalService(
        issuer,
        store,
        certificateNames(apexes),
        reactor,
        renewBefore=RENEW_BEFORE,
        onIssued=installSafely,
        onLoaded=installSafely,
    )
    log.info(
        "ACME certificates for {apexes} from {directory} (DNS-01 through managed.{zone})",
        apexes=", ".join(apexes),
        directory=options["acme-directory"],
        zone=zone,
    )
    return ACMEService(renewal, node, reactor)
