"""
The Docker Engine API client against a real private engine, and against a
stand-in for the faults a real engine cannot be made to show.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from suite.constellation.docker import Container, DockerClient, DockerError
from tests.support.dockerd import DockerEngine
from tests.support.process import sleep


class RealEngineTests(TestCase):
    """
    Requests to a real engine (Debian's speaks API 1.41).
    """

    engine: DockerEngine

    @classmethod
    def setUpClass(cls) -> None:
        cls.engine = DockerEngine.shared(__name__)

    def client(self, **kw: Any) -> DockerClient:
        return DockerClient(reactor, self.engine.endpoint, **kw)

    async def test_negotiate(self) -> None:
        """
        The lower of the client's newest version and the engine's is used,
        as the Docker CLI does.
        """
        client = self.client()
        version = await client.negotiate()
        self.assertEqual(version, client.engine["ApiVersion"])
        self.assertEqual(version, "1.41")
        old = self.client(clientVersion="1.30")
        self.assertEqual(await old.negotiate(), "1.30")
        containers = await old.containers()
        self.assertIsInstance(containers, list)

    async def test_health(self) -> None:
        """
        Healthy, unhealthy, without healthcheck, dead: the label filter picks
        only the agent's containers; a dead container is not listed.
        """
        e = self.engine
        self.addCleanup(e.remove, "h-ok", "h-bad", "h-none", "h-dies", "h-other")
        e.run(
            "h-ok", {"grp": "health", "traefik.http.services.x.loadbalancer.server.port": "80"}, health="true"
        )
        e.run("h-bad", {"grp": "health"}, health="false")
        e.run("h-none", {"grp": "health"})
        e.run("h-dies", {"grp": "health"}, command=["exit", "3"])
        e.run("h-other", {"grp": "other"}, health="true")
        e.waitHealth("h-ok", "healthy")
        e.waitHealth("h-bad", "unhealthy")
        client = self.client()
        found = {c.name: c for c in await client.monitored(["grp=health"])}
        self.assertEqual(sorted(found), ["h-bad", "h-none", "h-ok"])
        self.assertEqual((found["h-ok"].health, found["h-ok"].healthy), ("healthy", True))
        self.assertEqual((found["h-bad"].health, found["h-bad"].healthy), ("unhealthy", False))
        self.assertEqual((found["h-none"].health, found["h-none"].healthy), ("none", True))
        self.assertEqual(found["h-ok"].labels["traefik.http.services.x.loadbalancer.server.port"], "80")
        self.assertEqual(found["h-ok"].networkMode, "host")
        with self.assertRaises(DockerError) as caught:
            await client.inspect("no-such-container")
        self.assertIn("HTTP 404", str(caught.exception))

    async def test_events(self) -> None:
        """
        The event stream delivers a started container's events; stop() ends it.
        """
        client = self.client()
        events: list[dict[str, Any]] = []
        got: Deferred[None] = Deferred()

        def onEvent(event: dict[str, Any]) -> None:
            events.append(event)
            if event.get("status") == "start" and not got.called:
                got.callback(None)

        stream = client.events(onEvent, ["grp=events"])
        await sleep(0.3)
        self.addCleanup(self.engine.remove, "ev1")
        self.engine.run("ev1", {"grp": "events"})
        got.addTimeout(20, reactor)
        await got
        self.assertEqual(events[-1]["Actor"]["Attributes"]["name"], "ev1")
        stream.stop()
        await stream.done

    async def test_noEngine(self) -> None:
        """
        A socket nobody listens on: one line naming the request.
        """
        client = DockerClient(reactor, "unix:" + os.path.join(self.mktemp() + "-none.sock"))
        with self.assertRaises(DockerError) as caught:
            await client.containers()
        self.assertIn("GET /version", str(caught.exception))
        self.assertTrue(
            str(caught.exception).endswith(": cannot connect: No such file or directory"),
            str(caught.exception),
        )
        self.assertNotIn("\n", str(caught.exception))


class _Fault(Resource):
    isLeaf = True

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def render_GET(self, request: Any) -> Any:
        if request.path == b"/version":
            return b'{"ApiVersion": "1.43", "MinAPIVersion": "1.12"}'
        if self.mode == "garbled":
            return b"\x00\xffnot json at all"
        if self.mode == "huge":
            return b"[" + b'{"Id": "x"},' * 20000 + b'{"Id": "y"}]'
        if self.mode == "error":
            request.setResponseCode(500)
            return b'{"message": "engine on fire"}'
        return NOT_DONE_YET  # slow: never answers

    def render_POST(self, request: Any) -> bytes:
        progress = b'{"status":"Downloading","progressDetail":{"current":1,"total":9},"id":"abc"}\n' * 5000
        if self.mode == "pull-error":
            return progress + b'{"errorDetail":{"message":"unauthorized"},"error":"unauthorized: denied"}\n'
        return progress + b'{"status":"Status: Downloaded newer image for x:1"}\n'


class StandInTests(TestCase):
    """
    Slow, garbled, over-sized and failing answers from a stand-in engine.
    """

    async def serve(self, mode: str) -> str:
        directory = tempfile.mkdtemp(prefix="dkf")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "d.sock")
        port = await UNIXServerEndpoint(reactor, path).listen(Site(_Fault(mode)))
        self.addCleanup(port.stopListening)
        return "unix:" + path

    async def fails(self, mode: str, **kw: Any) -> str:
        client = DockerClient(reactor, await self.serve(mode), **kw)
        with self.assertRaises(DockerError) as caught:
            await client.containers()
        self.assertEqual(client.apiVersion, "1.43")
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertIn("GET /containers/json", message)
        return message

    async def test_garbled(self) -> None:
        """
        A body that is not JSON.
        """
        self.assertIn("answer is not JSON", await self.fails("garbled"))

    async def test_huge(self) -> None:
        """
        A body over the size limit.
        """
        self.assertIn("answer larger than 4096 bytes", await self.fails("huge", maxBody=4096))

    async def test_slow(self) -> None:
        """
        No answer within the timeout.
        """
        self.assertIn("no answer within 0.5 s", await self.fails("slow", timeout=0.5))

    async def test_pullStream(self) -> None:
        """
        A pull's progress stream is read line by line whatever its length
        (here 400 KB against a 4 KiB body limit); an error line in it is
        the pull's error, with the registry's message.
        """
        client = DockerClient(reactor, await self.serve("pull-ok"), maxBody=4096)
        await client.pull("x:1")
        client = DockerClient(reactor, await self.serve("pull-error"), maxBody=4096)
        with self.assertRaises(DockerError) as caught:
            await client.pull("registry.example/x:1")
        self.assertEqual(str(caught.exception), "docker: pull registry.example/x:1: unauthorized: denied")

    async def test_error(self) -> None:
        """
        An error answer carries the engine's message.
        """
        self.assertIn("HTTP 500: engine on fire", await self.fails("error"))


class ContainerTests(TestCase):
    """
    L{Container.fromInspect}.
    """

    def test_malformed(self) -> None:
        """
        A document without an Id is one DockerError.
        """
        self.assertRaises(DockerError, Container.fromInspect, {"State": {}})

    def test_published(self) -> None:
        """
        Networks with addresses and published ports are read.
        """
        c = Container.fromInspect(
            {
                "Id": "abc",
                "Name": "/web",
                "State": {"Running": True, "Health": {"Status": "starting"}},
                "Config": {"Labels": {"a": "b"}, "ExposedPorts": {"80/tcp": {}}},
                "HostConfig": {"NetworkMode": "backend"},
                "NetworkSettings": {
                    "Networks": {"backend": {"IPAddress": "172.18.0.2"}, "none": {"IPAddress": ""}},
                    "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
                },
            }
        )
        self.assertEqual(c.name, "web")
        self.assertFalse(c.healthy)
        self.assertEqual(dict(c.networks), {"backend": "172.18.0.2"})
        self.assertEqual(dict(c.published), {"80/tcp": 8080})
        self.assertEqual(c.exposed, ("80/tcp",))
