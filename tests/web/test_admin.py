"""
Tests for the admin site and its service.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import treq
from prometheus_client import CollectorRegistry, Gauge
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from suite.daemon import ConfigError
from suite.web.admin import makeAdminResource, makeAdminService
from suite.web.endpoint import EndpointError, isLoopbackHost, loopbackEndpoint, splitEndpoint
from suite.web.health import FunctionHealth, HealthReport
from suite.web.limits import LimitedSite


class EndpointCheckTests(SynchronousTestCase):
    """
    Admin endpoints listen on loopback or unix sockets unless allowed.
    """

    def test_split(self) -> None:
        """
        Endpoint strings split like serverFromString's, escapes included.
        """
        self.assertEqual(splitEndpoint("tcp6:80:interface=\\:\\:1"), ("tcp6", ["80"], {"interface": "::1"}))
        self.assertEqual(
            splitEndpoint("unix:/run/a.sock:mode=600"), ("unix", ["/run/a.sock"], {"mode": "600"})
        )
        self.assertRaises(EndpointError, splitEndpoint, " ")

    def test_loopbackHosts(self) -> None:
        """
        127/8, ::1 and localhost are loopback; others are not.
        """
        for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
            self.assertTrue(isLoopbackHost(host), host)
        for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", ""):
            self.assertFalse(isLoopbackHost(host), host)

    def test_defaultsToLoopback(self) -> None:
        """
        A TCP endpoint without an interface gets the loopback one.
        """
        self.assertEqual(loopbackEndpoint("tcp:9000"), "tcp:9000:interface=127.0.0.1")
        self.assertEqual(loopbackEndpoint("tcp6:9000"), "tcp6:9000:interface=\\:\\:1")
        private = os.path.abspath(self.mktemp())
        os.makedirs(private, mode=0o700)
        self.assertEqual(loopbackEndpoint(f"unix:{private}/x"), f"unix:{private}/x:mode=600")
        self.assertEqual(loopbackEndpoint(f"unix:{private}/x:mode=660"), f"unix:{private}/x:mode=660")

    def test_socketDirectoryNotWorldWritable(self) -> None:
        """
        A unix socket in a directory anyone may write to (where another user
        could replace it) is refused, naming the setting and the directory.
        """
        shared = os.path.abspath(self.mktemp())
        os.makedirs(shared)
        os.chmod(shared, 0o1777)
        e = self.assertRaises(EndpointError, loopbackEndpoint, f"unix:{shared}/a.sock", what="--admin")
        self.assertIn("--admin", str(e))
        self.assertIn(f"{shared} is writable by everyone", str(e))
        self.assertRaises(
            ConfigError,
            makeAdminService,
            f"unix:{shared}/a.sock",
            makeAdminResource([]),
            MemoryReactorClock(),
        )

    def test_refusesRemote(self) -> None:
        """
        A non-loopback interface or an unknown endpoint type is refused,
        naming the setting and the value.
        """
        e = self.assertRaises(EndpointError, loopbackEndpoint, "tcp:9000:interface=0.0.0.0", what="--admin")
        self.assertIn("--admin 'tcp:9000:interface=0.0.0.0'", str(e))
        self.assertIn("not loopback", str(e))
        self.assertRaises(EndpointError, loopbackEndpoint, "tcp:9000:10.1.1.1")
        self.assertRaises(EndpointError, loopbackEndpoint, "ws:9000")
        self.assertEqual(
            loopbackEndpoint("tcp:9000:interface=0.0.0.0", allowRemote=True), "tcp:9000:interface=0.0.0.0"
        )

    def test_serviceRefusesAllInterfaces(self) -> None:
        """
        C{makeAdminService} raises a ConfigError naming the flag and value
        for 0.0.0.0 without C{allowRemote}, and builds the service with it.
        """
        resource = makeAdminResource([])
        e = self.assertRaises(
            ConfigError,
            makeAdminService,
            "tcp:8080:interface=0.0.0.0",
            resource,
            MemoryReactorClock(),
            flag="--listen-admin",
        )
        self.assertIn("--listen-admin 'tcp:8080:interface=0.0.0.0'", str(e))
        service = makeAdminService(
            "tcp:8080:interface=0.0.0.0", resource, MemoryReactorClock(), allowRemote=True
        )
        self.assertEqual(service.name, "admin")

    def test_refusesWebPages(self) -> None:
        """
        The admin site refuses web pages on loopback connections (DNS
        rebinding, cross-site posts), unless told otherwise.
        """
        site: Any = makeAdminService("tcp:8080", makeAdminResource([]), MemoryReactorClock())
        self.assertTrue(site.factory.localHostsOnly)
        plain: Any = makeAdminService(
            "tcp:8080", makeAdminResource([]), MemoryReactorClock(), localHostsOnly=False
        )
        self.assertFalse(plain.factory.localHostsOnly)

    def test_malformed(self) -> None:
        """
        A malformed description is a ConfigError, not a traceback.
        """
        e = self.assertRaises(
            ConfigError, makeAdminService, "tcp:notaport", makeAdminResource([]), MemoryReactorClock()
        )
        self.assertIn("'tcp:notaport'", str(e))

    def test_listensOnLoopback(self) -> None:
        """
        Started on a memory reactor, the service listens on 127.0.0.1 with a
        L{LimitedSite}.
        """
        memory = MemoryReactorClock()
        service = makeAdminService("tcp:8089", makeAdminResource([]), memory, maxBodyBytes=10)
        service.privilegedStartService()
        service.startService()
        [(port, factory, _, interface)] = memory.tcpServers
        site: Any = factory
        self.assertEqual((port, interface), (8089, "127.0.0.1"))
        self.assertIsInstance(factory, LimitedSite)
        self.assertEqual(site.maxBodyBytes, 10)


@implementer(IAgentEndpointFactory)
class _UnixEndpoints:
    def __init__(self, path: str) -> None:
        self.path = path

    def endpointForURI(self, uri: object) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(reactor, self.path)


class AdminServiceTests(TestCase):
    """
    The whole admin surface over real loopback connections.
    """

    async def test_endToEnd(self) -> None:
        """
        C{/healthz}, C{/readyz}, C{/metrics} and a JSON 404 answer over TCP.
        """
        registry = CollectorRegistry()
        Gauge("ceptra_partition_committed_index", "x", registry=registry).set(42)
        ready = [False]
        provider = FunctionHealth("raft", lambda: HealthReport(ready[0], () if ready[0] else ("no leader",)))
        resource = makeAdminResource([provider], registry=registry, forbidSecondsSuffix=True)
        service = makeAdminService("tcp:0", resource, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = service._waitingForPort.result.getHost().port  # type: ignore[attr-defined]
        base = f"http://127.0.0.1:{port}"

        response = await treq.get(base + "/healthz", persistent=False)
        self.assertEqual((response.code, await response.text()), (200, "ok\n"))
        response = await treq.get(base + "/readyz", persistent=False)
        self.assertEqual(response.code, 503)
        self.assertEqual((await response.json())["reasons"], ["raft: no leader"])
        ready[0] = True
        response = await treq.get(base + "/readyz", persistent=False)
        self.assertEqual(response.code, 200)
        await response.text()
        response = await treq.get(base + "/metrics", persistent=False)
        self.assertIn("ceptra_partition_committed_index 42.0", await response.text())
        response = await treq.get(base + "/nowhere", persistent=False)
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(await response.text()), {"error": "no admin resource /nowhere"})
        response = await treq.get(base + "/", persistent=False)
        self.assertEqual((await response.json())["endpoints"], ["/healthz", "/metrics", "/readyz"])

    async def test_unixSocket(self) -> None:
        """
        The admin site also serves on a unix socket, which only its owner
        may connect to.
        """
        os.makedirs(self.mktemp())
        path = os.path.join(self.mktemp(), "admin.sock")
        os.makedirs(os.path.dirname(path))
        service = makeAdminService(f"unix:{path}", makeAdminResource([]), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        agent = Agent.usingEndpointFactory(reactor, _UnixEndpoints(path))
        response = await treq.get("http://admin/healthz", agent=agent)
        self.assertEqual((response.code, await response.text()), (200, "ok\n"))
