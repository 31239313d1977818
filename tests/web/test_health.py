"""
Tests for C{/healthz}, C{/readyz} and L{HealthReport}.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.web.admin import makeAdminResource
from suite.web.health import FunctionHealth, HealthReport, collectReadiness
from suite.web.interfaces import IHealth
from suite.web.limits import LimitedSite

from .support import Connection, parseResponse


@implementer(IHealth)
class Fixed:
    def __init__(self, name: str, report: Any) -> None:
        self.name = name
        self.report = report

    def check(self) -> Any:
        if isinstance(self.report, BaseException):
            raise self.report
        return self.report


def _get(resource: Any, path: bytes, clock: Clock | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    site = LimitedSite(resource, reactor=clock or Clock())
    conn = Connection(site)
    conn.get(path)
    return parseResponse(conn.received())


class HealthReportTests(SynchronousTestCase):
    """
    L{HealthReport} is a small frozen value.
    """

    def test_defaults(self) -> None:
        """
        Reasons default to empty, details to an empty mapping.
        """
        r = HealthReport(True)
        self.assertEqual((r.ready, r.reasons, dict(r.details)), (True, (), {}))

    def test_frozenAndNormalised(self) -> None:
        """
        Reasons become a tuple (a lone string is one reason); the value
        cannot be changed.
        """
        r = HealthReport(False, "disk full")
        self.assertEqual(r.reasons, ("disk full",))
        self.assertEqual(HealthReport(False, ["a", "b"]).reasons, ("a", "b"))
        self.assertRaises(AttributeError, setattr, r, "ready", True)

    def test_verifyObject(self) -> None:
        """
        L{FunctionHealth} and the test provider implement L{IHealth}.
        """
        self.assertTrue(verifyObject(IHealth, FunctionHealth("x", lambda: HealthReport(True))))
        self.assertTrue(verifyObject(IHealth, Fixed("y", HealthReport(True))))


class LivenessTests(SynchronousTestCase):
    """
    C{/healthz}.
    """

    def test_ok(self) -> None:
        """
        C{/healthz} answers 200 C{ok} even when readiness fails.
        """
        root = makeAdminResource([Fixed("db", HealthReport(False, ("down",)))])
        code, headers, body = _get(root, b"/healthz")
        self.assertEqual((code, body), (200, b"ok\n"))
        self.assertTrue(headers[b"content-type"].startswith(b"text/plain"))


class PathsBelowTests(SynchronousTestCase):
    """
    C{/healthz}, C{/readyz} and C{/metrics} are leaves that answer only
    their own path.
    """

    def test_pathsBelowAre404(self) -> None:
        """
        A path below a probe or C{/metrics} is a JSON 404 naming the path,
        not the probe's answer.
        """
        root = makeAdminResource([Fixed("db", HealthReport(True))])
        for path in (b"/healthz/x", b"/readyz/anything", b"/metrics/x", b"/healthz/a/b", b"/readyz//x"):
            code, headers, body = _get(root, path)
            self.assertEqual(code, 404, path)
            self.assertTrue(headers[b"content-type"].startswith(b"application/json"), path)
            self.assertEqual(json.loads(body), {"error": "no such resource", "path": path.decode()}, path)

    def test_ownPathAndTrailingSlash(self) -> None:
        """
        The probe's own path, with or without a trailing slash, answers as
        before.
        """
        root = makeAdminResource([Fixed("db", HealthReport(True))])
        for path in (b"/healthz", b"/healthz/"):
            self.assertEqual(_get(root, path)[::2], (200, b"ok\n"), path)
        for path in (b"/readyz", b"/readyz/"):
            self.assertEqual(_get(root, path)[0], 200, path)
        self.assertEqual(_get(root, b"/metrics")[0], 200)


class ReadinessTests(SynchronousTestCase):
    """
    C{/readyz} aggregates every provider.
    """

    def readyz(self, *providers: Any, clock: Clock | None = None) -> tuple[int, dict[str, Any]]:
        code, headers, body = _get(makeAdminResource(providers, clock=clock), b"/readyz", clock)
        self.assertTrue(headers[b"content-type"].startswith(b"application/json"))
        return code, json.loads(body)

    def test_allReady(self) -> None:
        """
        All providers ready: 200, C{ready: true}, no reasons, each check
        listed with its details.
        """
        code, body = self.readyz(
            Fixed("raft", HealthReport(True, details={"term": 3})), Fixed("feed", HealthReport(True))
        )
        self.assertEqual(code, 200)
        self.assertEqual(body["ready"], True)
        self.assertEqual(body["reasons"], [])
        self.assertEqual(body["checks"]["raft"], {"ready": True, "reasons": [], "details": {"term": 3}})

    def test_noProviders(self) -> None:
        """
        With no providers the daemon is ready.
        """
        code, body = self.readyz()
        self.assertEqual((code, body["ready"]), (200, True))

    def test_notReady(self) -> None:
        """
        One provider not ready: 503 and its reasons, prefixed by its name.
        """
        code, body = self.readyz(
            Fixed("raft", HealthReport(False, ("no leader known",))),
            Fixed("placement", HealthReport(False, ("feed stale for 31000 ms", "feed lagging"))),
            Fixed("kv", HealthReport(True)),
        )
        self.assertEqual(code, 503)
        self.assertEqual(body["ready"], False)
        self.assertEqual(
            body["reasons"],
            [
                "raft: no leader known",
                "placement: feed stale for 31000 ms",
                "placement: feed lagging",
            ],
        )
        self.assertEqual(body["checks"]["kv"]["ready"], True)

    def test_notReadyWithoutReason(self) -> None:
        """
        A provider not ready without saying why still gets a reason.
        """
        code, body = self.readyz(Fixed("x", HealthReport(False)))
        self.assertEqual((code, body["reasons"]), (503, ["x: not ready"]))

    def test_raisingProvider(self) -> None:
        """
        A provider that raises counts as not ready with the exception text
        as its reason; the traceback is logged, never sent.
        """
        code, body = self.readyz(
            Fixed("db", RuntimeError("database locked")), Fixed("ok", HealthReport(True))
        )
        self.assertEqual(code, 503)
        self.assertEqual(body["reasons"], ["db: health check failed: database locked"])
        self.assertNotIn("Traceback", json.dumps(body))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_wrongType(self) -> None:
        """
        A provider returning something other than a report is not ready.
        """
        code, body = self.readyz(Fixed("odd", True))
        self.assertEqual(code, 503)
        self.assertIn("not a HealthReport", body["reasons"][0])

    def test_deferredProvider(self) -> None:
        """
        A provider may answer with a Deferred; the response waits for it.
        """
        pending: Deferred[HealthReport] = Deferred()
        site = LimitedSite(makeAdminResource([FunctionHealth("slow", lambda: pending)]), reactor=Clock())
        conn = Connection(site)
        conn.get(b"/readyz")
        self.assertEqual(conn.received(), b"")
        pending.callback(HealthReport(True))
        code, _, body = parseResponse(conn.received())
        self.assertEqual((code, json.loads(body)["ready"]), (200, True))

    def test_timeout(self) -> None:
        """
        With a clock, a provider slower than the timeout is not ready.
        """
        clock = Clock()
        never: Deferred[HealthReport] = Deferred()
        root = makeAdminResource([FunctionHealth("stuck", lambda: never)], clock=clock, readinessTimeout=2)
        site = LimitedSite(root, reactor=clock)
        conn = Connection(site)
        conn.get(b"/readyz")
        clock.advance(2)
        code, _, body = parseResponse(conn.received())
        self.assertEqual(code, 503)
        self.assertIn("stuck: health check failed", json.loads(body)["reasons"][0])
        self.flushLoggedErrors()

    def test_collectNeverFails(self) -> None:
        """
        L{collectReadiness} fires with a report per provider.
        """
        d = collectReadiness(
            [FunctionHealth("a", lambda: succeed(HealthReport(True))), Fixed("b", ValueError())]
        )
        reports = self.successResultOf(d)
        self.assertEqual(sorted(reports), ["a", "b"])
        self.assertFalse(reports["b"].ready)
        self.assertEqual(reports["b"].reasons, ("health check failed: ValueError",))
        self.flushLoggedErrors(ValueError)

    def test_notAProvider(self) -> None:
        """
        Passing something that is not an L{IHealth} fails when the admin
        resource is built.
        """
        self.assertRaises(TypeError, makeAdminResource, [object()])


class ServiceHealthTests(SynchronousTestCase):
    """
    Plain services adapt to L{IHealth}: ready while running.
    """

    def test_adapter(self) -> None:
        """
        C{IHealth(service)} is a L{ServiceHealth} named after the service;
        C{/readyz} reports it not ready until the service runs.
        """
        from twisted.application.service import Service

        from suite.web.health import ServiceHealth

        service = Service()
        service.setName("gossip")
        health = IHealth(service)
        self.assertIsInstance(health, ServiceHealth)
        self.assertTrue(verifyObject(IHealth, health))
        root = makeAdminResource([service])
        code, _, body = _get(root, b"/readyz")
        self.assertEqual(
            (code, json.loads(body)["reasons"]), (503, ["gossip: service gossip is not running"])
        )
        service.startService()
        code, _, body = _get(root, b"/readyz")
        self.assertEqual(code, 200)
