"""
Peer discovery through Tailscale: the status read from tailscaled's
LocalAPI, the seeds and advertised address it yields, and a second agent
started without --join that finds the first through it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import tempfile
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from suite.constellation.membership import GossipService
from suite.constellation.service import makeService
from suite.constellation.tailscale import (
    MAX_STATUS_BYTES,
    NoTailscale,
    TailnetView,
    TailscaleError,
    discover,
    parseStatus,
    readStatus,
)
from suite.daemon import ConfigError
from tests.clustor.helpers import captureLogs
from tests.constellation.support import startAgent
from tests.constellation.test_service import _Reactor, options
from tests.support.process import freePort


def status(selfIPs: list[str], peers: dict[str, tuple[list[str], bool]], backend: str = "Running") -> Any:
    """A tailscaled status: this node's addresses, and peers by host name."""
    return {
        "Version": "1.76.0",
        "BackendState": backend,
        "TailscaleIPs": selfIPs,
        "Self": {"HostName": "me", "TailscaleIPs": selfIPs, "Online": True},
        "Peer": {
            f"nodekey:{name}": {"HostName": name, "TailscaleIPs": ips, "Online": online, "OS": "linux"}
            for name, (ips, online) in peers.items()
        },
        "MagicDNSSuffix": "tailnet.ts.net",
    }


class ParseTests(SynchronousTestCase):
    """
    Which peers and which own address a status yields.
    """

    def test_onlinePeersOfTheFamily(self) -> None:
        """
        Online peers with an address of the asked family, by host name;
        offline peers, peers without such an address and junk are left out.
        """
        s = status(
            ["100.64.0.1", "fd7a:115c:a1e0::1"],
            {
                "edge": (["100.64.0.3", "fd7a:115c:a1e0::3"], True),
                "cloudserver1": (["100.64.0.2"], True),
                "laptop": (["100.64.0.9"], False),
                "v6only": (["fd7a:115c:a1e0::7"], True),
                "broken": (["not-an-ip"], True),
            },
        )
        view = parseStatus(s)
        self.assertEqual(view.backendState, "Running")
        self.assertEqual(view.selfAddresses, ["100.64.0.1"])
        self.assertEqual(view.peers, [("cloudserver1", "100.64.0.2"), ("edge", "100.64.0.3")])
        six = parseStatus(s, 6)
        self.assertEqual(six.selfAddresses, ["fd7a:115c:a1e0::1"])
        self.assertEqual([n for n, _ in six.peers], ["edge", "v6only"])

    def test_notAStatus(self) -> None:
        """
        A status that is not an object is an error; missing parts are empty.
        """
        with self.assertRaises(TailscaleError):
            parseStatus([1, 2])
        view = parseStatus({"BackendState": "NeedsLogin", "Peer": None})
        self.assertEqual((view.backendState, view.selfAddresses, view.peers), ("NeedsLogin", [], []))


class DiscoverTests(SynchronousTestCase):
    """
    A tailscaled still starting is waited for, briefly.
    """

    def test_waitsWhileStarting(self) -> None:
        """
        NoState and Starting are asked again every half second until
        Running, or until the wait is over; other states answer at once.
        """
        clock = Clock()
        answers = ["NoState", "Starting", "Running"]
        asked: list[str] = []

        def reader(path: str) -> Any:
            asked.append(path)
            return status(["100.64.0.1"], {"a": (["100.64.0.2"], True)}, answers.pop(0))

        view = discover("/ts.sock", reader=reader, sleep=clock.advance, clock=clock.seconds)
        assert view is not None
        self.assertEqual((view.backendState, view.peers), ("Running", [("a", "100.64.0.2")]))
        self.assertEqual((len(asked), clock.seconds()), (3, 1.0))

        def starting(path: str) -> Any:
            asked.append(path)
            return status([], {}, "Starting")

        del asked[:]
        view = discover("/ts.sock", reader=starting, wait=3, sleep=clock.advance, clock=clock.seconds)
        assert view is not None
        self.assertEqual((view.backendState, len(asked)), ("Starting", 7))
        view = discover("/ts.sock", reader=lambda p: status([], {}, "NeedsLogin"), sleep=clock.advance)
        assert view is not None
        self.assertEqual(view.backendState, "NeedsLogin")


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Any = self.server
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            data += chunk
        server.requests.append(data)
        if server.answer is not None:
            self.request.sendall(server.answer)
        else:
            server.release.wait(5)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    answer: bytes | None
    requests: list[bytes]
    release: threading.Event


def serveLocalAPI(test: SynchronousTestCase, answer: bytes | None) -> tuple[str, _Server]:
    """
    A tailscaled LocalAPI stand-in on a unix socket answering C{answer}
    (None: no answer until the test ends), in a thread; removed on cleanup.
    """
    directory = tempfile.mkdtemp(prefix="ts-")  # short: unix socket paths are limited
    path = os.path.join(directory, "tailscaled.sock")
    server = _Server(path, _Handler)
    server.answer, server.requests, server.release = answer, [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.release.set()
        server.shutdown()
        server.server_close()
        os.unlink(path)
        os.rmdir(directory)

    test.addCleanup(stop)
    return path, server


class ReadStatusTests(SynchronousTestCase):
    """
    The LocalAPI read over a real unix socket.
    """

    def serve(self, answer: bytes | None) -> tuple[str, _Server]:
        return serveLocalAPI(self, answer)

    def http(self, code: str, body: bytes) -> bytes:
        return f"HTTP/1.1 {code}\r\nContent-Type: application/json\r\n\r\n".encode() + body

    def test_status(self) -> None:
        """
        GET /localapi/v0/status with tailscaled's host name; the JSON is
        decoded.
        """
        s = status(["100.64.0.1"], {"peer": (["100.64.0.2"], True)})
        path, server = self.serve(self.http("200 OK", json.dumps(s).encode()))
        self.assertEqual(readStatus(path), s)
        request = server.requests[0].decode()
        self.assertTrue(request.startswith("GET /localapi/v0/status HTTP/1."))
        self.assertIn("Host: local-tailscaled.sock\r\n", request)
        view = discover(path)
        assert view is not None
        self.assertEqual(view.peers, [("peer", "100.64.0.2")])

    def test_errors(self) -> None:
        """
        No socket: no Tailscale (discover answers None); an error status,
        a body that is not JSON, an answer over the limit or no answer in
        time are errors saying so.
        """
        missing = os.path.join(tempfile.gettempdir(), "no-such-dir-ts", "tailscaled.sock")
        with self.assertRaises(NoTailscale):
            readStatus(missing)
        self.assertIsNone(discover(missing))
        cases = [
            (self.http("403 Forbidden", b"access denied"), "HTTP 403 Forbidden: access denied"),
            (self.http("200 OK", b"<html>"), "not JSON"),
            (self.http("200 OK", b" " * (MAX_STATUS_BYTES + 70000)), "larger than"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP"),
        ]
        for answer, why in cases:
            path, _ = self.serve(answer)
            with self.assertRaises(TailscaleError) as cm:
                readStatus(path)
            self.assertNotIsInstance(cm.exception, NoTailscale)
            self.assertIn(why, str(cm.exception))
        path, _ = self.serve(None)
        with self.assertRaises(TailscaleError) as cm:
            readStatus(path, timeout=0.2)
        self.assertIn("no answer within 0.2 s", str(cm.exception))


class GossipDiscoveryTests(SynchronousTestCase):
    """
    What the gossip service does with the tailnet.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)
        self.asked: list[tuple[str, int]] = []

    def gossip(
        self, view: TailnetView | None | Exception, argv: list[str], start: bool = True
    ) -> GossipService:
        def discoverer(path: str, version: int) -> TailnetView | None:
            self.asked.append((path, version))
            if isinstance(view, Exception):
                raise view
            return view

        o = options(["--bind-port", "17946", "--raft-port", "18300", *argv])
        # the Tailscale addresses of these views are this host's
        service = GossipService(o, _Reactor(), discoverer=discoverer, bindable=lambda address: True)
        if start:
            service.startService()
            self.addCleanup(service.stopService)
        return service

    def logged(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if "Tailscale" in e.get("log_format", "")]

    def test_seedsAndAddress(self) -> None:
        """
        Without --join, the online peers are the seeds on --bind-port and an
        unspecified --bind-addr advertises this node's Tailscale address;
        without a gossip key it is also the only address bound.
        """
        view = TailnetView("Running", ["100.64.0.1"], [("a", "100.64.0.2"), ("b", "100.64.0.3")])
        g = self.gossip(view, [])
        self.assertEqual(self.asked, [("/nonexistent/tailscaled.sock", 4)])
        self.assertEqual(g.node.address, ("100.64.0.1", 17946))
        self.assertEqual(g.bindAddress, "100.64.0.1")
        self.assertEqual(g.node.seeds, [("100.64.0.2", 17946), ("100.64.0.3", 17946)])
        self.assertEqual(
            self.logged(),
            [
                "Tailscale discovery: 2 online tailnet peer(s) (a, b); joining through them",
                "gossip and Raft bind the Tailscale address 100.64.0.1 only (no gossip key): only tailnet "
                "peers reach them; set --gossip-key-file (CONSTELLATION_GOSSIP_KEY_FILE) on every node to "
                "authenticate them as well",
            ],
        )

    def test_joinWins(self) -> None:
        """
        With --join the tailnet gives no seeds, but its address is still
        advertised when the peers are names (no route can be asked for
        yet); an explicit --bind-addr is advertised as given.
        """
        view = TailnetView("Running", ["100.64.0.1"], [("a", "100.64.0.2")])
        g = self.gossip(view, ["--join", "cloudserver1.tailnet.ts.net"], start=False)
        self.assertEqual(g.node.address, ("100.64.0.1", 17946))
        self.assertEqual(g.discovered, [])
        assert g.discoveryNote is not None
        self.assertIn("--join is given", g.discoveryNote[1])
        pinned = self.gossip(view, ["--bind-addr", "127.0.0.1"])
        self.assertEqual(pinned.node.address, ("127.0.0.1", 17946))
        self.assertEqual(pinned.node.seeds, [("100.64.0.2", 17946)])

    def test_nothingToDiscover(self) -> None:
        """
        No tailscaled, one that is not running, or one that cannot be read:
        one line each, no seeds, and the agent still starts; --discover none
        does not ask.
        """
        for view, line in (
            (None, "Tailscale discovery: no tailscaled socket at /nonexistent/tailscaled.sock; "),
            (
                TailnetView("NeedsLogin", [], []),
                "Tailscale discovery: tailscaled on /nonexistent/tailscaled.sock is NeedsLogin, not Running",
            ),
            (
                TailscaleError("HTTP 403 Forbidden"),
                "Tailscale discovery: cannot read the status of tailscaled on "
                "/nonexistent/tailscaled.sock: HTTP 403 Forbidden; peers only from --join",
            ),
        ):
            del self.events[:]
            g = self.gossip(view, [])
            self.assertEqual(g.node.seeds, [])
            self.assertEqual(len(self.logged()), 1)
            self.assertTrue(self.logged()[0].startswith(line), self.logged())
        del self.asked[:]
        self.gossip(TailnetView("Running", ["100.64.0.1"], [("a", "100.64.0.2")]), ["--discover", "none"])
        self.assertEqual(self.asked, [])

    def test_rediscoveryWhileAlone(self) -> None:
        """
        Without --join, the tailnet is read again every 30 s while no other
        member is alive; new online peers become seeds and are joined; once
        another member is alive it is not read.
        """
        from twisted.internet.defer import succeed

        views = [
            TailnetView("Starting", [], []),
            TailnetView("Running", ["100.64.0.1"], [("a", "100.64.0.2"), ("b", "100.64.0.3")]),
        ]
        g = self.gossip(TailnetView("Running", ["100.64.0.1"], [("a", "100.64.0.2")]), [])
        asked: list[int] = []

        def rediscover() -> Any:
            asked.append(1)
            return succeed(views.pop(0))

        g.rediscover = rediscover
        reactor = g.reactor
        reactor.advance(29)
        self.assertEqual(asked, [])
        reactor.advance(1)  # tailscaled not running: nothing new
        self.assertEqual((len(asked), g.node.seeds), (1, [("100.64.0.2", 17946)]))
        reactor.advance(30)
        self.assertEqual(g.node.seeds, [("100.64.0.2", 17946), ("100.64.0.3", 17946)])
        self.assertIn(
            "Tailscale discovery: 1 new online tailnet peer(s) (b); joining through them", self.logged()
        )
        self.patch(g.node, "summary", lambda: {"members": {"alive": 2}})
        reactor.advance(60)
        self.assertEqual(len(asked), 2)
        g.stopService()
        self.assertFalse([c for c in reactor.getDelayedCalls() if "rediscover" in repr(c.func)])

    def test_option(self) -> None:
        """
        --discover (CONSTELLATION_DISCOVER) is tailscale or none.
        """
        self.assertEqual(options()["discover"], "tailscale")
        self.assertEqual(options(CONSTELLATION_DISCOVER="None")["discover"], "none")
        with self.assertRaises(ConfigError) as cm:
            options(["--discover", "mdns"])
        self.assertEqual(
            str(cm.exception), "--discover (CONSTELLATION_DISCOVER): 'mdns' is not tailscale or none"
        )


class ServiceBindTests(SynchronousTestCase):
    """
    Where the agent's listeners bind with a tailscaled (stand-in) that
    gives this node a Tailscale address.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)
        body = json.dumps(status(["127.0.0.2"], {"cloudserver1": (["127.0.0.1"], True)})).encode()
        self.path, _ = serveLocalAPI(
            self, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body
        )

    def listeners(self, argv: list[str]) -> tuple[list[tuple[int, str]], list[tuple[int, str]], Any]:
        reactor = _Reactor()
        opts = options(argv, CONSTELLATION_TAILSCALE_SOCKET=self.path, DATA_DIR=self.mktemp())
        root = makeService(opts, reactor)
        root.startService()
        self.addCleanup(root.stopService)
        tcp = sorted((p[0], p[3]) for p in reactor.tcpServers)
        udp = [(p[0], p[3]) for p in reactor.udpPorts.values()]
        return tcp, udp, root.getServiceNamed("gossip")

    def test_noKeyBindsTheTailnetAddress(self) -> None:
        """
        No gossip key, no --bind-addr: gossip (UDP and TCP) and Raft bind
        the Tailscale address only, which is advertised; one line says so.
        """
        tcp, udp, gossip = self.listeners([])
        self.assertEqual(tcp, [(7946, "127.0.0.2"), (8081, "127.0.0.1"), (8300, "127.0.0.2")])
        self.assertEqual(udp, [(7946, "127.0.0.2")])
        self.assertEqual(gossip.node.address, ("127.0.0.2", 7946))
        from twisted.logger import formatEvent

        lines = [formatEvent(e) for e in self.events if "gossip and Raft bind" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("gossip and Raft bind the Tailscale address 127.0.0.2 only"))

    def test_keyOrExplicitAddress(self) -> None:
        """
        With a gossip key every interface is bound (the tailnet address is
        still advertised); an explicit --bind-addr is bound as given.
        """
        import base64

        key = self.mktemp()
        with open(key, "wb") as f:
            f.write(base64.b64encode(b"k" * 32) + b"\n")
        tcp, udp, gossip = self.listeners(["--gossip-key-file", key])
        self.assertEqual(tcp, [(7946, "0.0.0.0"), (8081, "127.0.0.1"), (8300, "0.0.0.0")])
        self.assertEqual(udp, [(7946, "0.0.0.0")])
        self.assertEqual(gossip.node.address, ("127.0.0.2", 7946))
        tcp, udp, gossip = self.listeners(
            ["--bind-addr", "127.0.0.3", "--bind-port", "17946", "--raft-port", "18300"]
        )
        self.assertEqual(tcp, [(8081, "127.0.0.1"), (17946, "127.0.0.3"), (18300, "127.0.0.3")])


class _Status(Resource):
    isLeaf = True

    def __init__(self, body: Any) -> None:
        super().__init__()
        self.body = body

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.body).encode()


class DiscoveryE2ETests(TestCase):
    """
    The guide's "start agent - it will automatically discover peers via
    Tailscale", with real agents and a LocalAPI on a unix socket.
    """

    async def test_secondNodeFindsTheFirst(self) -> None:
        """
        The first agent founds the cluster; a second one started without
        --join, whose tailscaled lists the first as an online peer (and an
        offline device), joins its gossip and its Raft group instead of
        founding a group of its own.  Both agents use the same ports on
        their own loopback addresses, as nodes of a tailnet do: the second
        is given no --bind-addr and no gossip key, so it binds gossip and
        Raft to its Tailscale address (127.0.0.2 here) alone; bound to every
        interface it could not share the ports with the first.
        """
        directory = tempfile.mkdtemp(prefix="ts-")  # short: unix socket paths are limited
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "tailscaled.sock")
        body = status(
            ["127.0.0.2"],
            {"cloudserver1": (["127.0.0.1"], True), "laptop": (["127.0.0.3"], False)},
        )
        listening = await UNIXServerEndpoint(reactor, path).listen(Site(_Status(body)))
        self.addCleanup(listening.stopListening)
        gossip, raft = freePort(), freePort()
        first = startAgent(self, "cloudserver1", gossip=gossip, raft=raft)
        await first.proc.waitForHTTP(first.url + "/healthz")
        second = startAgent(
            self,
            "node2",
            gossip=gossip,
            raft=raft,
            bind=None,
            env={"CONSTELLATION_TAILSCALE_SOCKET": path},
        )
        await second.proc.waitForLog(r"Tailscale discovery: 1 online tailnet peer\(s\) \(cloudserver1\)")
        await second.proc.waitForLog(r"gossip and Raft bind the Tailscale address 127\.0\.0\.2 only")

        async def joined() -> bool:
            state = await second.state()
            nodes = {n["name"]: n["status"] for n in state["nodes"]}
            raftState = state["raft"]
            return (
                nodes == {"cloudserver1": "alive", "node2": "alive"}
                and raftState["leader"] == "cloudserver1"
                and sorted(raftState["voters"]) == ["cloudserver1", "node2"]
            )

        await second.proc.waitFor(joined, "node2 in cloudserver1's gossip and Raft group", 60, 0.3)
        self.assertNotIn("founds a new Raft group", second.proc.output())
        self.assertIn("joined the cluster through 1 of 1 peers", second.proc.output())
        for port in (gossip, raft):
            # the second agent's own listeners, on its Tailscale address
            with socket.create_connection(("127.0.0.2", port), timeout=5):
                pass
