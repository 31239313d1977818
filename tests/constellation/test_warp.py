"""
WARP egress health: the container through a real Docker engine and the
egress probe against a local HTTP server.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from suite.constellation.docker import DockerClient
from suite.constellation.warp import WarpMonitor
from tests.support.dockerd import DockerEngine


class _Probe(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.code = 200
        self.body = b"fl=1\nwarp=on\ngateway=off\n"
        self.requests = 0

    def render_GET(self, request: Any) -> bytes:
        self.requests += 1
        request.setResponseCode(self.code)
        return self.body


class _Endless(Resource):
    """
    Answers 200 and a body that never ends: C{chunk} bytes at once, then
    nothing more (C{trickle}) or far more than any probe reads.
    """

    isLeaf = True

    def __init__(self, trickle: bool) -> None:
        super().__init__()
        self.trickle = trickle
        self.requests: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.requests.append(request)
        request.write(b"x" * 1024 if self.trickle else b"x" * (1024 * 1024))
        return NOT_DONE_YET


class ProbeLimitTests(TestCase):
    """
    The egress probe reads a bounded answer within a bounded time.
    """

    timeout = 30

    async def serve(self, resource: Resource) -> str:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(resource))
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/cdn-cgi/trace"

    async def test_largeAnswer(self) -> None:
        """
        An answer past 64 KiB is not read to its end: the probe fails,
        saying so.
        """
        endless = _Endless(trickle=False)
        monitor = WarpMonitor(None, reactor, "warp", await self.serve(endless), timeout=30)
        status = await monitor.check()
        self.assertIn("egress probe answered more than 65536 bytes", status["reason"])
        self.assertIsNone(status["egressStatus"])
        for request in endless.requests:
            if not request.finished and not request._disconnected:
                request.finish()

    async def test_bodyNeverEnds(self) -> None:
        """
        An answer whose body stops coming fails the probe at the timeout
        (the body included), so the check ends and the next one runs.
        """
        endless = _Endless(trickle=True)
        monitor = WarpMonitor(None, reactor, "warp", await self.serve(endless), timeout=0.5)
        status = await monitor.check()
        self.assertIn("egress probe took longer than 0.5 s", status["reason"])
        for request in endless.requests:
            if not request.finished and not request._disconnected:
                request.finish()


class WarpTests(TestCase):
    engine: DockerEngine
    timeout = 120

    @classmethod
    def setUpClass(cls) -> None:
        cls.engine = DockerEngine.shared(__name__)

    async def probe(self) -> tuple[_Probe, str]:
        resource = _Probe()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(resource))
        self.addCleanup(port.stopListening)
        return resource, f"http://127.0.0.1:{port.getHost().port}/cdn-cgi/trace"

    async def test_containerAndEgress(self) -> None:
        """
        Healthy with the container running healthy and the probe answering
        2xx; each failure is named in the reason; a missing container too.
        """
        probe, url = await self.probe()
        name = "warp-test"
        self.addCleanup(self.engine.remove, name)
        self.engine.run(name, health="test -f /tmp/ok")
        self.engine.waitHealth(name, "healthy")
        changes: list[dict[str, Any]] = []
        monitor = WarpMonitor(
            DockerClient(reactor, self.engine.endpoint), reactor, name, url, onChange=changes.append
        )
        status = await monitor.check()
        self.assertTrue(status["healthy"], status)
        self.assertEqual((status["containerState"], status["containerHealth"]), ("running", "healthy"))
        self.assertIs(status["tunnelChecked"], True)
        self.assertEqual(status["egressStatus"], 200)
        probe.code = 503
        status = await monitor.check()
        self.assertFalse(status["healthy"])
        self.assertIn("egress probe answered HTTP 503", status["reason"])
        probe.code = 200
        self.engine.docker("stop", "-t", "0", name)
        status = await monitor.check()
        self.assertFalse(status["healthy"])
        self.assertIn("container warp-test is exited", status["reason"])
        missing = WarpMonitor(DockerClient(reactor, self.engine.endpoint), reactor, "no-such-warp", url)
        status = await missing.check()
        self.assertFalse(status["healthy"])
        self.assertIn("no-such-warp", status["reason"])
        self.assertEqual(len(changes), 3)
        self.assertEqual(monitor.status()["healthy"], False)

    async def test_probeThroughTheContainer(self) -> None:
        """
        With the probe run from the container, the fetch is made inside it
        (busybox wget here) and a Cloudflare trace must say warp=on: off,
        an error status or an unreachable URL are each named; a container
        without a healthcheck then counts as checked.
        """
        probe, url = await self.probe()
        name = "warp-exec"
        self.addCleanup(self.engine.remove, name)
        self.engine.run(name)
        monitor = WarpMonitor(
            DockerClient(reactor, self.engine.endpoint), reactor, name, url, timeout=5, probeFrom="container"
        )
        status = await monitor.check()
        self.assertTrue(status["healthy"], status)
        self.assertEqual((status["egressFrom"], status["egressExit"], probe.requests), ("container", 0, 1))
        self.assertIs(status["tunnelChecked"], True)
        probe.body = b"fl=1\nwarp=off\n"
        status = await monitor.check()
        self.assertFalse(status["healthy"])
        self.assertEqual(
            status["reason"], "the Cloudflare trace seen through the tunnel does not say warp=on"
        )
        probe.body, probe.code = b"warp=on\n", 503
        status = await monitor.check()
        self.assertEqual(status["reason"], f"egress probe through the tunnel failed ({url})")
        probe.code = 200
        self.engine.docker("stop", "-t", "0", name)
        status = await monitor.check()
        self.assertEqual(status["reason"], f"container {name} is exited")
        self.assertNotIn("egressExit", status)

    async def test_withoutHealthcheck(self) -> None:
        """
        A WARP container without a healthcheck leaves the tunnel unchecked:
        said once, and shown as C{tunnelChecked: false}.
        """
        from twisted.logger import formatEvent

        from tests.clustor.helpers import captureLogs

        events = captureLogs(self)
        _, url = await self.probe()
        name = "warp-nohealth"
        self.addCleanup(self.engine.remove, name)
        self.engine.run(name)
        monitor = WarpMonitor(DockerClient(reactor, self.engine.endpoint), reactor, name, url)
        status = await monitor.check()
        self.assertTrue(status["healthy"], status)
        self.assertIs(status["tunnelChecked"], False)
        await monitor.check()
        told = [formatEvent(e) for e in events if "has no healthcheck" in e.get("log_format", "")]
        self.assertEqual(len(told), 1)
        self.assertIn("WARP container warp-nohealth has no healthcheck", told[0])

    def test_schedule(self) -> None:
        """
        A check at start and every interval; none after stop.
        """
        clock = Clock()
        monitor = WarpMonitor(None, clock, "warp", None, interval=30.0)
        monitor.startService()
        clock.advance(0)
        self.assertEqual(monitor.checks, 1)
        self.assertIn("no Docker engine", monitor.status()["reason"])
        clock.advance(30)
        self.assertEqual(monitor.checks, 2)
        monitor.stopService()
        clock.advance(60)
        self.assertEqual(monitor.checks, 2)


class _SlowEngine:
    """
    An engine whose inspections the test answers by hand.
    """

    def __init__(self) -> None:
        self.calls: list[Deferred[dict[str, Any]]] = []

    def inspect(self, name: str) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self.calls.append(d)
        return d


class WarpScheduleTests(SynchronousTestCase):
    def test_slowCheckSkipsTicks(self) -> None:
        """
        Ticks while a check waits on the engine start nothing (no pile-up);
        the next tick after it ends checks again.
        """
        clock = Clock()
        engine = _SlowEngine()
        monitor = WarpMonitor(cast(Any, engine), clock, "warp", None, interval=30.0)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        clock.advance(0)
        clock.advance(30)
        clock.advance(30)
        self.assertEqual((len(engine.calls), monitor.checks), (1, 0))
        engine.calls[0].callback({"State": {"Running": True, "Status": "running"}})
        self.assertEqual((monitor.checks, monitor.status()["healthy"]), (1, True))
        clock.advance(29)
        self.assertEqual(len(engine.calls), 1)
        clock.advance(1)
        self.assertEqual(len(engine.calls), 2)
