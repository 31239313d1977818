"""
Custom domains (C{specter client acme|validate}): the records in the ring
KV, the CNAME check through a fake resolver, and the gateway's control
messages.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSQueryTimeoutError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.specter import acmekeys
from suite.specter.customdomains import (
    CustomDomains,
    CustomDomainWatcher,
    DomainRefused,
    ValidationFailed,
    makeCustomDomains,
)
from suite.specter.gateway.core import Gateway, GatewayConfig, GatewayLink
from suite.specter.gateway.routes import MemoryRouteStore
from tests.specter.test_acme_wiring import FakeRing

ZONE = "acme.example.net"
APEX = "tunnels.test"


class KVRing(FakeRing):
    """
    L{FakeRing} that also deletes keys.
    """

    async def _kv(self, op: str, key: bytes, args: list[Any]) -> Any:
        if op == "delete":
            self.calls.append((op, key))
            return await self.store.delete(key)
        return await super()._kv(op, key, args)


class FakeResolver:
    """
    Answers C{lookupCanonicalName} from a dict: name -> target, or an exception.
    """

    def __init__(self) -> None:
        self.records: dict[str, Any] = {}
        self.asked: list[str] = []

    def lookupCanonicalName(self, name: str) -> defer.Deferred[Any]:
        self.asked.append(name)
        value = self.records.get(name)
        if value is None:
            return defer.fail(DNSNameError(name))
        if isinstance(value, Exception):
            return defer.fail(value)
        answer = dns.RRHeader(name, dns.CNAME, payload=dns.Record_CNAME(value))
        return defer.succeed(([answer], [], []))


class DomainsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ring = KVRing(Clock())
        self.resolver = FakeResolver()
        self.domains = CustomDomains(self.ring, [APEX, "other.test"], ZONE + ".", self.resolver)

    def record(self, domain: str) -> dict[str, Any]:
        raw = self.successResultOf(self.ring.kv("get", acmekeys.customKey(domain), []))
        result: dict[str, Any] = json.loads(raw)
        return result

    def test_claimStoresRecord(self) -> None:
        """
        A claim stores one JSON record under C{acme/custom/<domain>} with a
        fresh token; claiming again returns the same token.
        """
        record = self.successResultOf(self.domains.claim("Shop.Customer.Test.", "alice", "abc.tunnels.test"))
        self.assertEqual(record.domain, "shop.customer.test")
        self.assertTrue(acmekeys.validLabel(record.token))
        self.assertEqual(self.domains.target(record), f"{record.token}.{ZONE}")
        self.assertEqual(
            self.record("shop.customer.test"),
            {
                "domain": "shop.customer.test",
                "token": record.token,
                "owner": "alice",
                "hostname": "abc.tunnels.test",
                "validated": False,
            },
        )
        again = self.successResultOf(self.domains.claim("shop.customer.test", "alice", "abc.tunnels.test"))
        self.assertEqual(again.token, record.token)

    def test_claimMovesHostname(self) -> None:
        """
        The owner claiming again with another tunnel hostname keeps the
        token and changes the hostname.
        """
        first = self.successResultOf(self.domains.claim("shop.customer.test", "alice", "a.tunnels.test"))
        second = self.successResultOf(self.domains.claim("shop.customer.test", "alice", "b.tunnels.test"))
        self.assertEqual(first.token, second.token)
        self.assertEqual(self.record("shop.customer.test")["hostname"], "b.tunnels.test")

    def test_otherOwnerRefused(self) -> None:
        """
        A domain claimed by one owner is refused to another.
        """
        self.successResultOf(self.domains.claim("shop.customer.test", "alice", "a.tunnels.test"))
        f = self.failureResultOf(
            self.domains.claim("shop.customer.test", "bob", "b.tunnels.test"), DomainRefused
        )
        self.assertIn("claimed by another client", f.getErrorMessage())
        self.assertEqual(self.record("shop.customer.test")["owner"], "alice")

    def test_concurrentClaim(self) -> None:
        """
        While another client holds the claim lease of a domain (it is
        writing the first record), a claim is refused; the lease is released
        after each claim.
        """
        lease = self.successResultOf(
            self.ring.kv("acquire", b"acme/claim/shop.customer.test", [b"bob", 30.0])
        )
        f = self.failureResultOf(
            self.domains.claim("shop.customer.test", "alice", "a.tunnels.test"), DomainRefused
        )
        self.assertIn("being claimed by another client", f.getErrorMessage())
        self.successResultOf(self.ring.kv("release", b"acme/claim/shop.customer.test", [lease[2]]))
        self.successResultOf(self.domains.claim("shop.customer.test", "alice", "a.tunnels.test"))
        self.successResultOf(self.ring.kv("acquire", b"acme/claim/shop.customer.test", [b"bob", 30.0]))

    def test_invalidDomains(self) -> None:
        """
        Not a hostname, a single label, an IP address, a wildcard, an apex
        or a name under one, or the ACME zone: refused, nothing stored.
        """
        for bad in ["", "shop", "1.2.3.4", "*.customer.test", "bad_name.test", "a..test", APEX,
                    f"x.{APEX}", "y.other.test", f"t.{ZONE}", "x" * 64 + ".test"]:  # fmt: skip
            f = self.failureResultOf(self.domains.claim(bad, "alice", "a.tunnels.test"), DomainRefused)
            self.assertTrue(f.getErrorMessage())
        self.assertEqual([op for op, _ in self.ring.calls if op == "put"], [])

    def test_validate(self) -> None:
        """
        With C{_acme-challenge.<domain>} a CNAME to C{<token>.<ACME_ZONE>},
        validate marks the record and answers the first apex.
        """
        record = self.successResultOf(self.domains.claim("shop.customer.test", "alice", "a.tunnels.test"))
        self.resolver.records["_acme-challenge.shop.customer.test"] = f"{record.token}.{ZONE}"
        validated, target = self.successResultOf(self.domains.validate("shop.customer.test", "alice"))
        self.assertTrue(validated.validated)
        self.assertEqual(target, APEX)
        self.assertTrue(self.record("shop.customer.test")["validated"])
        self.assertEqual(self.resolver.asked, ["_acme-challenge.shop.customer.test"])

    def test_validateNoCNAME(self) -> None:
        """
        No record (NXDOMAIN), or a lookup timing out: a clear reason naming
        the record to publish; the record stays unvalidated.
        """
        record = self.successResultOf(self.domains.claim("shop.customer.test", "alice", "a.tunnels.test"))
        f = self.failureResultOf(self.domains.validate("shop.customer.test", "alice"), ValidationFailed)
        self.assertIn("no CNAME at _acme-challenge.shop.customer.test", f.getErrorMessage())
        self.assertIn(f"CNAME {record.token}.{ZONE}", f.getErrorMessage())
        self.resolver.records["_acme-challenge.shop.customer.test"] = DNSQueryTimeoutError(1)
        f = self.failureResultOf(self.domains.validate("shop.customer.test", "alice"), ValidationFailed)
        self.assertIn("timed out", f.getErrorMessage())
        self.assertFalse(self.record("shop.customer.test")["validated"])

    def test_validateWrongTarget(self) -> None:
        """
        A CNAME to something else is named in the failure.
        """
        self.successResultOf(self.domains.claim("shop.customer.test", "alice", "a.tunnels.test"))
        self.resolver.records["_acme-challenge.shop.customer.test"] = f"someoneelse.{ZONE}"
        f = self.failureResultOf(self.domains.validate("shop.customer.test", "alice"), ValidationFailed)
        self.assertIn(f"is a CNAME to someoneelse.{ZONE}, not ", f.getErrorMessage())
        self.assertFalse(self.record("shop.customer.test")["validated"])

    def test_validateNotClaimedOrOthers(self) -> None:
        """
        Validating an unclaimed domain, or another owner's, is refused
        without a lookup.
        """
        f = self.failureResultOf(self.domains.validate("shop.customer.test", "alice"), DomainRefused)
        self.assertIn("specter client acme shop.customer.test", f.getErrorMessage())
        self.successResultOf(self.domains.claim("shop.customer.test", "alice", "a.tunnels.test"))
        self.failureResultOf(self.domains.validate("shop.customer.test", "bob"), DomainRefused)
        self.assertEqual(self.resolver.asked, [])

    def test_remove(self) -> None:
        """
        Only the owner removes a record; afterwards another owner may claim
        the domain (with a new token).
        """
        first = self.successResultOf(self.domains.claim("shop.customer.test", "alice", "a.tunnels.test"))
        self.failureResultOf(self.domains.remove("shop.customer.test", "bob"), DomainRefused)
        self.successResultOf(self.domains.remove("shop.customer.test", "alice"))
        self.assertIsNone(self.successResultOf(self.domains.get("shop.customer.test")))
        self.failureResultOf(self.domains.remove("shop.customer.test", "alice"), DomainRefused)
        second = self.successResultOf(self.domains.claim("shop.customer.test", "bob", "b.tunnels.test"))
        self.assertNotEqual(first.token, second.token)

    def test_makeCustomDomains(self) -> None:
        """
        The server's wiring: the zone of C{--acme}, the apexes, and a
        resolver for C{--dns-resolver}.
        """
        options = {"acme": ("ops@example.net", ZONE), "apex": [APEX], "dns-resolver": ("127.0.0.1", 5353)}
        clock = Clock()
        domains = makeCustomDomains(options, self.ring, clock)
        self.assertEqual((domains.zone, domains.apexes), (ZONE, [APEX]))
        self.assertEqual(domains.resolver.servers, [("127.0.0.1", 5353)])


class LinkTests(SynchronousTestCase):
    """
    The gateway's C{acme} and C{validate} control messages.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.routes = MemoryRouteStore(self.clock)
        self.gateway = Gateway(
            GatewayConfig(apexes=[APEX], advertise="127.0.0.1:4443"), self.routes, self.clock
        )
        self.ring = KVRing(self.clock)
        self.resolver = FakeResolver()
        self.gateway.customDomains = CustomDomains(self.ring, [APEX], ZONE, self.resolver)

    def ask(self, owner: str, message: dict[str, Any]) -> dict[str, Any]:
        link = GatewayLink(self.gateway, owner)
        sent: list[dict[str, Any]] = []
        self.patch(link, "sendControl", sent.append)
        link.controlReceived({"id": 7, **message})
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0]["id"], 7)
        return sent[0]

    def publish(self, hostname: str, owner: str) -> None:
        self.successResultOf(self.routes.publish(hostname, owner, "http", "127.0.0.1:4443", 30.0))

    def test_acmeAndValidate(self) -> None:
        """
        C{acme} answers the CNAME for the owner's only tunnel hostname;
        C{validate} then answers the apex to point the domain at.
        """
        self.publish(f"abc.{APEX}", "alice")
        answer = self.ask("alice", {"t": "acme", "domain": "shop.customer.test"})
        self.assertEqual(answer["t"], "acme")
        self.assertEqual(answer["name"], "_acme-challenge.shop.customer.test")
        self.assertEqual(answer["hostname"], f"abc.{APEX}")
        self.assertTrue(answer["cname"].endswith("." + ZONE))
        self.resolver.records[answer["name"]] = answer["cname"]
        validated = self.ask("alice", {"t": "validate", "domain": "shop.customer.test"})
        self.assertEqual(
            validated,
            {
                "t": "validated",
                "id": 7,
                "domain": "shop.customer.test",
                "hostname": f"abc.{APEX}",
                "target": APEX,
            },
        )

    def test_hostnameChoice(self) -> None:
        """
        No tunnel hostname, several without --hostname, or one that is not
        the owner's: clear errors; an owned --hostname is used.
        """
        answer = self.ask("alice", {"t": "acme", "domain": "shop.customer.test"})
        self.assertEqual(answer["t"], "error")
        self.assertIn("no tunnel hostname", answer["reason"])
        self.publish(f"a.{APEX}", "alice")
        self.publish(f"b.{APEX}", "alice")
        self.publish(f"c.{APEX}", "bob")
        answer = self.ask("alice", {"t": "acme", "domain": "shop.customer.test"})
        self.assertIn("--hostname", answer["reason"])
        answer = self.ask("alice", {"t": "acme", "domain": "shop.customer.test", "hostname": f"c.{APEX}"})
        self.assertIn("not one of your tunnel hostnames", answer["reason"])
        answer = self.ask("alice", {"t": "acme", "domain": "shop.customer.test", "hostname": f"b.{APEX}"})
        self.assertEqual(answer["hostname"], f"b.{APEX}")

    def test_errors(self) -> None:
        """
        Another owner's domain, an invalid one, a failed validation and a
        removal are answered as the client prints them.
        """
        self.publish(f"a.{APEX}", "alice")
        self.publish(f"b.{APEX}", "bob")
        self.ask("alice", {"t": "acme", "domain": "shop.customer.test"})
        answer = self.ask("bob", {"t": "acme", "domain": "shop.customer.test"})
        self.assertEqual(
            answer, {"t": "error", "id": 7, "reason": "shop.customer.test is claimed by another client"}
        )
        answer = self.ask("bob", {"t": "acme", "domain": f"x.{APEX}"})
        self.assertIn("under the apex", answer["reason"])
        answer = self.ask("alice", {"t": "validate", "domain": "shop.customer.test"})
        self.assertIn("no CNAME at _acme-challenge.shop.customer.test", answer["reason"])
        answer = self.ask("alice", {"t": "acme", "domain": "shop.customer.test", "remove": True})
        self.assertEqual(answer, {"t": "acme", "id": 7, "domain": "shop.customer.test", "removed": True})
        answer = self.ask("bob", {"t": "acme", "domain": "shop.customer.test"})
        self.assertEqual(answer["hostname"], f"b.{APEX}")

    def test_releaseKeepsDomain(self) -> None:
        """
        Releasing the tunnel hostname leaves the custom-domain record.
        """
        self.publish(f"a.{APEX}", "alice")
        self.ask("alice", {"t": "acme", "domain": "shop.customer.test"})
        released = self.ask("alice", {"t": "release", "hostname": f"a.{APEX}"})
        self.assertTrue(released["existed"])
        record = self.successResultOf(self.gateway.customDomains.get("shop.customer.test"))
        self.assertEqual(record.hostname, f"a.{APEX}")

    def test_off(self) -> None:
        """
        Without C{--acme} the gateway says custom domains are off.
        """
        self.gateway.customDomains = None
        answer = self.ask("alice", {"t": "acme", "domain": "shop.customer.test"})
        self.assertIn("custom domains are off", answer["reason"])

    def test_unexpectedFailure(self) -> None:
        """
        A KV failure is logged and answered as an internal error.
        """
        self.publish(f"a.{APEX}", "alice")

        def broken(op: str, key: bytes, args: list[Any]) -> defer.Deferred[Any]:
            return defer.fail(Failure(RuntimeError("disk on fire")))

        self.ring.kv = broken  # type: ignore[method-assign]
        answer = self.ask("alice", {"t": "acme", "domain": "shop.customer.test"})
        self.assertEqual(answer["reason"], "internal error, try again")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class WatcherTests(SynchronousTestCase):
    """
    Validated domains are routed and handed to the renewal service, at
    start, on validation here and on the periodic read.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.routes = MemoryRouteStore(self.clock)
        self.gateway = Gateway(
            GatewayConfig(apexes=[APEX], advertise="127.0.0.1:4443"), self.routes, self.clock
        )
        self.ring = KVRing(self.clock)
        self.resolver = FakeResolver()
        self.domains = CustomDomains(self.ring, [APEX], ZONE, self.resolver)
        self.added: list[list[str]] = []
        self.watcher = CustomDomainWatcher(
            self.domains, self.gateway, self.clock, self.added.append, interval=30
        )

    def validate(self, domain: str, owner: str, hostname: str) -> None:
        record = self.successResultOf(self.domains.claim(domain, owner, hostname))
        self.resolver.records[f"_acme-challenge.{domain}"] = self.domains.target(record)
        self.successResultOf(self.domains.validate(domain, owner))

    def test_startAndValidate(self) -> None:
        """
        A domain validated before the start is picked up at start; one
        validated here afterwards at once; unvalidated ones never.
        """
        self.validate("shop.customer.test", "alice", f"a.{APEX}")
        self.successResultOf(self.domains.claim("pending.customer.test", "alice", f"a.{APEX}"))
        self.watcher.start()
        self.assertEqual(self.added, [["shop.customer.test"]])
        self.assertEqual(self.gateway.customHosts, {"shop.customer.test": f"a.{APEX}"})
        self.validate("other.customer.test", "bob", f"b.{APEX}")
        self.assertEqual(self.added, [["shop.customer.test"], ["other.customer.test"]])
        self.clock.advance(30)
        self.assertEqual(len(self.added), 2)
        self.watcher.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_otherGatewayAndRemoval(self) -> None:
        """
        A domain validated through another gateway (only in the KV) is seen
        on the next read; a removed one stops being routed.
        """
        self.watcher.start()
        other = CustomDomains(self.ring, [APEX], ZONE, self.resolver)
        record = self.successResultOf(other.claim("shop.customer.test", "alice", f"a.{APEX}"))
        self.resolver.records["_acme-challenge.shop.customer.test"] = other.target(record)
        self.successResultOf(other.validate("shop.customer.test", "alice"))
        self.assertEqual(self.added, [])
        self.clock.advance(30)
        self.assertEqual(self.added, [["shop.customer.test"]])
        removed: list[str] = []
        self.watcher.removeCertificate = removed.append
        self.successResultOf(other.remove("shop.customer.test", "alice"))
        self.clock.advance(30)
        self.assertEqual(self.gateway.customHosts, {})
        self.assertEqual(removed, ["shop.customer.test"])
        self.watcher.stop()

    def test_resolveRoutesToTunnel(self) -> None:
        """
        The gateway resolves a validated custom domain as its owner's tunnel
        hostname.
        """
        link = GatewayLink(self.gateway, "alice")
        link.closed = False
        self.gateway.registry.add(f"a.{APEX}", link)
        self.assertIsNone(self.successResultOf(self.gateway.resolve("shop.customer.test")))
        self.validate("shop.customer.test", "alice", f"a.{APEX}")
        self.watcher.start()
        self.assertIs(self.successResultOf(self.gateway.resolve("Shop.Customer.Test")), link)
        self.watcher.stop()

    def test_hostnameTakenByAnother(self) -> None:
        """
        When the bound tunnel hostname now belongs to another client (it was
        released and taken), the domain's visitors are not sent to it.
        """
        self.validate("shop.customer.test", "alice", f"a.{APEX}")
        self.watcher.start()
        link = GatewayLink(self.gateway, "bob")
        link.closed = False
        self.gateway.registry.add(f"a.{APEX}", link)
        self.assertIsNone(self.successResultOf(self.gateway.resolve("shop.customer.test")))
        self.gateway.registry.remove(f"a.{APEX}", link)
        self.successResultOf(self.routes.publish(f"a.{APEX}", "bob", "http", "10.0.0.2:443", 30.0))
        self.clock.advance(2)  # past the route cache's negative answer
        self.assertIsNone(self.successResultOf(self.gateway.resolve("shop.customer.test")))
        # the hostname itself still resolves (to bob's remote gateway)
        self.assertIn("10.0.0.2:443", self.successResultOf(self.gateway.resolve(f"a.{APEX}")))
        self.watcher.stop()

    def test_readFailureLogged(self) -> None:
        """
        A failed read is logged and retried on the next tick.
        """
        real = self.ring.kv

        def broken(op: str, key: bytes, args: list[Any]) -> defer.Deferred[Any]:
            return defer.fail(RuntimeError("ring unavailable"))

        self.ring.kv = broken  # type: ignore[method-assign]
        self.watcher.start()
        self.assertEqual(self.added, [])
        self.ring.kv = real  # type: ignore[method-assign]
        self.validate("shop.customer.test", "alice", f"a.{APEX}")
        self.assertEqual(self.added, [["shop.customer.test"]])
        self.watcher.stop()
