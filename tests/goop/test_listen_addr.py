"""
C{p2p.listen_addr}: the address the P2P streams bind.  Validated at start-up
(a bad value stops the daemon with one line naming the key), every IPv4
interface by default, and the listener really binds the address given.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import cast

from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.testing import MemoryReactor
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.daemon import ConfigError, StartupBarrier
from suite.goop.config import CONFIG_NAME, defaultDocument, loadConfig
from suite.goop.logbuffer import LogBuffer
from suite.goop.p2p.streams import streamsDescription, streamsEndpoint
from suite.goop.peer.service import PeerService, makeRendezvousOnly
from tests.support.process import twistdArgs


def peerDirectory(case: SynchronousTestCase, p2p: dict[str, object]) -> str:
    d = os.path.abspath(case.mktemp())
    os.makedirs(d)
    with open(os.path.join(d, CONFIG_NAME), "w") as f:
        json.dump({"p2p": {"mdns_tag": "", **p2p}}, f)
    return d


class ConfigTests(SynchronousTestCase):
    def test_default(self) -> None:
        """Unset, the streams bind every interface; a new goop.json does not write the key."""
        self.assertEqual(loadConfig(peerDirectory(self, {})).listenAddr, "")
        self.assertNotIn("listen_addr", defaultDocument()["p2p"])

    def test_addresses(self) -> None:
        """IPv4 and IPv6 literals are accepted (IPv6 in its canonical form); "" means every interface."""
        for given, kept in [
            ("127.0.0.1", "127.0.0.1"),
            ("0.0.0.0", "0.0.0.0"),
            ("::1", "::1"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("", ""),
        ]:
            self.assertEqual(loadConfig(peerDirectory(self, {"listen_addr": given})).listenAddr, kept)

    def test_badValues(self) -> None:
        """Anything but an IP address string is refused with one line naming the key."""
        for bad in ["localhost", "10.0.0", "127.0.0.1:4001", "[::1]", " 127.0.0.1", 127, None, ["127.0.0.1"]]:
            e = self.assertRaises(ConfigError, loadConfig, peerDirectory(self, {"listen_addr": bad}))
            self.assertIn("goop.json: p2p.listen_addr: ", str(e))
            self.assertNotIn("\n", str(e))


class EndpointTests(SynchronousTestCase):
    def test_endpoints(self) -> None:
        """The address reaches the listenTCP call: "" (all IPv4 interfaces), IPv4, IPv6."""
        for interface in ["", "127.0.0.1", "::1"]:
            r = MemoryReactor()
            streamsEndpoint(r, 4001, interface).listen(object())  # type: ignore[arg-type]
            (port, _, _, bound) = r.tcpServers[0]
            self.assertEqual((port, bound), (4001, interface))

    def test_description(self) -> None:
        """Start-up messages name the address with the port."""
        self.assertEqual(streamsDescription(4001), "tcp:4001")
        self.assertEqual(streamsDescription(4001, "127.0.0.1"), "127.0.0.1:4001")
        self.assertEqual(streamsDescription(4001, "::1"), "[::1]:4001")


class ListenerTests(TestCase):
    async def test_bindsTheAddress(self) -> None:
        """A peer with p2p.listen_addr 127.0.0.1 listens there (getsockname) and answers a TLS client."""
        d = peerDirectory(self, {"listen_addr": "127.0.0.1"})
        root = MultiService()
        peer = PeerService(loadConfig(d), reactor, LogBuffer())
        peer.setServiceParent(root)
        barrier = StartupBarrier("goop", reactor).attach(root)
        root.startService()
        self.addCleanup(root.stopService)
        started = await barrier.whenStarted()
        # the started line names the port the OS chose, known to the peer by then
        self.assertEqual(started, [f"127.0.0.1:{peer.p2pPort} (p2p.listen_port)"])
        self.assertNotEqual(peer.p2pPort, 0)
        hosts = [p.getHost() for p in peer._listeners]
        self.assertEqual([(h.host, h.port) for h in hosts], [("127.0.0.1", peer.p2pPort)])
        with socket.create_connection(("127.0.0.1", peer.p2pPort), timeout=5):
            pass

    async def test_rendezvousOnlyViewerPort(self) -> None:
        """
        A rendezvous-only process's settings viewer takes a free loopback
        port: the C{started} line names that port (not 0), and comes after
        the viewer's own line.
        """
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        with open(os.path.join(d, CONFIG_NAME), "w") as f:
            json.dump(
                {
                    "p2p": {"mdns_tag": ""},
                    "presence": {"rendezvous_host": True, "rendezvous_only": True, "rendezvous_port": 0},
                },
                f,
            )
        events: list[dict[str, object]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        root = MultiService()
        peer = makeRendezvousOnly(loadConfig(d), reactor, LogBuffer())
        peer.setServiceParent(root)
        barrier = StartupBarrier("goop", reactor).attach(root)
        root.startService()
        self.addCleanup(root.stopService)
        started = await barrier.whenStarted()
        port = cast(PeerService, peer).viewerPort
        self.assertNotEqual(port, 0)
        self.assertIn(f"127.0.0.1:{port} (viewer.http_addr)", started)
        self.assertFalse([s for s in started if ":0 (" in s], started)
        texts = [formatEvent(e) for e in events]
        (line,) = [t for t in texts if t.startswith("goop started")]
        self.assertIn(f"127.0.0.1:{port} (viewer.http_addr)", line)
        viewer = texts.index(f"viewer on http://127.0.0.1:{port}/")
        self.assertLess(viewer, texts.index(line))

    async def test_addressNotOnThisHost(self) -> None:
        """An address this host does not have fails start-up naming the key and the address."""
        d = peerDirectory(self, {"listen_addr": "192.0.2.1"})  # TEST-NET-1: never local
        root = MultiService()
        PeerService(loadConfig(d), reactor, LogBuffer()).setServiceParent(root)
        barrier = StartupBarrier("goop", reactor).attach(root)
        root.startService()
        self.addCleanup(root.stopService)
        with self.assertRaises(RuntimeError) as cm:
            await barrier.whenStarted()
        self.assertIn("p2p.listen_port: cannot listen on 192.0.2.1:0", str(cm.exception))


class StartupTests(SynchronousTestCase):
    def test_badValueStopsTwistd(self) -> None:
        """twistd goop peer with a bad p2p.listen_addr exits non-zero with one line naming the key."""
        d = peerDirectory(self, {"listen_addr": "localhost"})
        r = subprocess.run(twistdArgs("goop", "peer", d), capture_output=True, text=True, timeout=60)
        output = r.stdout + r.stderr
        self.assertNotEqual(r.returncode, 0, output[-3000:])
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if "p2p.listen_addr" in line]
        self.assertEqual(len(lines), 1, output[-3000:])
        self.assertIn("'localhost' is not an IP address", lines[0])
