"""
The Docker monitor's schedule on a fake clock with a scripted client, and
public IP detection against local sources.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.constellation.docker import Container, DockerClient, DockerError, EventStream
from suite.constellation.interfaces import IContainerEngine
from suite.constellation.monitor import DockerMonitor
from suite.constellation.publicip import detectPublicIP
from tests.clustor.helpers import captureLogs
from tests.support.process import freePort


@implementer(IContainerEngine)
class _Client:
    """
    A scripted client: each monitored() call is a Deferred the test fires.
    """

    description = "unix:/fake.sock"
    apiVersion = "1.41"

    def __init__(self) -> None:
        self.calls: list[Deferred[list[Container]]] = []
        self.streams: list[tuple[EventStream, Any]] = []

    def negotiate(self) -> Any:
        raise NotImplementedError()

    def containers(self, labels: Any = (), all: bool = False) -> Any:
        raise NotImplementedError()

    def inspect(self, containerID: str) -> Any:
        raise NotImplementedError()

    def monitored(self, labels: Any = ()) -> Deferred[list[Container]]:
        d: Deferred[list[Container]] = Deferred()
        self.calls.append(d)
        return d

    def events(self, onEvent: Any, labels: Any = ()) -> EventStream:
        stream = EventStream()
        self.streams.append((stream, onEvent))
        return stream

    def networks(self) -> Any:
        raise NotImplementedError()

    def createNetwork(self, config: Any) -> Any:
        raise NotImplementedError()

    def connectNetwork(self, network: str, containerID: str, aliases: Any = ()) -> Any:
        raise NotImplementedError()

    def image(self, name: str) -> Any:
        raise NotImplementedError()

    def pull(self, image: str, timeout: float = 600.0) -> Any:
        raise NotImplementedError()

    def createContainer(self, name: str, config: Any) -> Any:
        raise NotImplementedError()

    def startContainer(self, containerID: str) -> Any:
        raise NotImplementedError()

    def stopContainer(self, containerID: str, grace: int | None = None) -> Any:
        raise NotImplementedError()

    def renameContainer(self, containerID: str, name: str) -> Any:
        raise NotImplementedError()

    def removeContainer(self, containerID: str, force: bool = True) -> Any:
        raise NotImplementedError()

    def execute(self, containerID: str, command: Any, timeout: float = 15.0) -> Any:
        raise NotImplementedError()


def container(name: str, health: str = "healthy") -> Container:
    return Container(name, name, {}, True, health, "host")


class DockerMonitorTests(SynchronousTestCase):
    """
    Checks every interval and soon after events; failures keep the last result.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.client = _Client()
        self.published: list[list[str]] = []
        self.events = captureLogs(self)
        self.monitor = DockerMonitor(
            self.client,
            self.clock,
            ["constellation.node=a"],
            lambda cs: self.published.append([c.name for c in cs]),
            interval=10,
        )
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    def test_interfaces(self) -> None:
        """
        The real client and the scripted one provide L{IContainerEngine}.
        """
        self.assertTrue(verifyObject(IContainerEngine, DockerClient(self.clock, "unix:/nonexistent.sock")))
        self.assertTrue(verifyObject(IContainerEngine, self.client))

    def test_interval(self) -> None:
        """
        A check at start, the next one 10 s after it ends; a check asked for
        while one runs follows it at once.
        """
        self.assertEqual(len(self.client.calls), 1)
        self.client.calls[0].callback([container("web")])
        self.assertEqual(self.published, [["web"]])
        self.clock.advance(9.9)
        self.assertEqual(len(self.client.calls), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.client.calls), 2)
        self.monitor.check()
        self.assertEqual(len(self.client.calls), 2)
        self.client.calls[1].callback([])
        self.assertEqual(len(self.client.calls), 3)
        self.client.calls[2].callback([container("web", "unhealthy")])
        self.assertEqual(self.published, [["web"], [], ["web"]])
        self.assertEqual(self.monitor.status()["checks"], 3)

    def test_healthChangesLogged(self) -> None:
        """
        Every container's health is logged at the first check and whenever
        it changes, as the guide's C{grep "service health"} expects; an
        unchanged check logs nothing, a container turning unhealthy is a
        warning.
        """

        def lines() -> list[tuple[str, str]]:
            from twisted.logger import formatEvent

            return [
                (e["log_level"].name, formatEvent(e))
                for e in self.events
                if formatEvent(e).startswith("service health")
            ]

        self.assertEqual(len(lines()), 1)  # the start line
        self.assertIn("service health monitoring: watching Docker containers", lines()[0][1])
        self.client.calls[0].callback([container("web"), container("db", "starting"), container("x", "none")])
        self.clock.advance(10)
        self.client.calls[1].callback([container("web"), container("db", "starting"), container("x", "none")])
        self.clock.advance(10)
        self.client.calls[2].callback([container("web", "unhealthy"), container("db")])
        self.assertEqual(
            lines()[1:],
            [
                ("info", "service health: db is starting"),
                ("info", "service health: web is healthy"),
                ("info", "service health: x is running (no healthcheck)"),
                ("info", "service health: db is now healthy (was starting)"),
                ("warn", "service health: web is now unhealthy (was healthy)"),
                ("info", "service health: x is no longer running"),
            ],
        )

    def test_failure(self) -> None:
        """
        A failed check is logged once, keeps the last containers, and the
        schedule goes on; recovery is logged.
        """
        self.client.calls[0].callback([container("web")])
        for i in (1, 2):
            self.clock.advance(10)
            self.client.calls[i].errback(
                DockerError("docker: GET /version on unix:/fake.sock: cannot connect")
            )
        self.assertEqual(
            self.monitor.status()["error"], "docker: GET /version on unix:/fake.sock: cannot connect"
        )
        failures = [e for e in self.events if "health check failed" in e.get("log_format", "")]
        self.assertEqual(len(failures), 1)
        self.assertEqual(self.published, [["web"]])
        self.clock.advance(10)
        self.client.calls[3].callback([])
        self.assertIsNone(self.monitor.status()["error"])
        self.assertEqual(self.published, [["web"], []])

    def test_events(self) -> None:
        """
        Events make a check come within eventDelay (once for a burst); a
        stream that ends is followed again after a backoff.
        """
        self.client.calls[0].callback([])
        stream, onEvent = self.client.streams[0]
        for _ in range(5):
            onEvent({"status": "health_status: unhealthy"})
        self.clock.advance(0.2)
        self.assertEqual(len(self.client.calls), 2)
        stream.done.errback(DockerError("docker: event stream lost"))
        self.assertEqual(len(self.client.streams), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.client.streams), 2)

    def test_stop(self) -> None:
        """
        Stopping cancels every timer and closes the stream.
        """
        self.client.calls[0].callback([])
        self.monitor.stopService()
        self.assertTrue(self.client.streams[0][0].done.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class _Source(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> Any:
        path = request.path
        if path == b"/ok":
            return b"198.51.100.4\n"
        if path == b"/v6":
            return b"2001:db8::1"
        if path == b"/garbage":
            return b"<html>hello</html>"
        if path == b"/huge":
            return b"1" * 1000
        if path == b"/slow":
            return NOT_DONE_YET
        request.setResponseCode(503)
        return b""


class PublicIPTests(TestCase):
    """
    L{detectPublicIP} tries sources in order.
    """

    async def test_fallback(self) -> None:
        """
        Failing, garbled, over-sized and slow sources are skipped with one
        line each; the first good answer wins.
        """
        port = freePort()
        listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(Site(_Source()))
        self.addCleanup(listening.stopListening)
        base = f"http://127.0.0.1:{port}"
        sources = [f"{base}/{p}" for p in ("down", "garbage", "huge", "slow", "ok", "v6")]
        ip, errors = await detectPublicIP(reactor, sources, timeout=0.5)
        self.assertEqual(ip, "198.51.100.4")
        self.assertEqual(len(errors), 4)
        self.assertIn("HTTP 503", errors[0])
        self.assertIn("not an IP address", errors[1])
        self.assertIn("larger than", errors[2])
        self.assertIn("no answer within 0.5 s", errors[3])
        ip, errors = await detectPublicIP(reactor, [f"{base}/v6"])
        self.assertEqual(ip, "2001:db8::1")
        ip, errors = await detectPublicIP(reactor, [])
        self.assertEqual((ip, errors), (None, []))


class ResolvePeersTests(TestCase):
    """
    --join host names resolve through the system resolver in the thread pool.
    """

    async def test_names(self) -> None:
        """
        localhost resolves (with the port kept); a name that does not
        resolve is left out with a warning.
        """
        from suite.constellation.membership import resolvePeers

        events = captureLogs(self)
        addresses = await resolvePeers(reactor, [("localhost", 7946), ("no-such-host.invalid", 7946)])
        self.assertIn(("127.0.0.1", 7946), addresses)
        self.assertTrue(all(port == 7946 for _, port in addresses))
        self.assertTrue([e for e in events if "cannot resolve" in e.get("log_format", "")])
