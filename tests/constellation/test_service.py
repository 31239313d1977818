"""
C{makeService} of the Constellation agent: what runs, and what is refused.
"""

from __future__ import annotations

import base64
import os
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.constellation import service, tap
from suite.constellation.interfaces import IServiceCatalog
from suite.constellation.options import Options
from suite.daemon import ConfigError
from tests.clustor.helpers import captureLogs
from tests.test_fileutil import lockedElsewhere

ZONE = "0123456789abcdef0123456789abcdef"


class _UDPPort:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: list[tuple[bytes, Any]] = []

    def write(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def stopListening(self) -> None:
        return None

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "0.0.0.0", self.port)


class _Reactor(MemoryReactorClock):
    """
    A memory reactor that also takes UDP listeners (gossip binds one).
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpPorts: dict[int, tuple[int, Any, int, str]] = {}

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> _UDPPort:
        self.udpPorts[port] = (port, protocol, maxPacketSize, interface)
        return _UDPPort(port)

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        # The Raft WAL's writer thread reports back through this.
        self.callLater(0, f, *args, **kw)


_DATA: list[str] = []


def options(argv: list[str] | None = None, **env: str) -> Options:
    env.setdefault("TS_HOSTNAME", "cloudserver1")
    if "DATA_DIR" not in env:
        import tempfile

        env["DATA_DIR"] = tempfile.mkdtemp(prefix="constellation-test-")
        _DATA.append(env["DATA_DIR"])
    env.setdefault("CONSTELLATION_PUBLIC_IP_SOURCES", "none")
    # no host's own tailscaled is read
    env.setdefault("CONSTELLATION_TAILSCALE_SOCKET", "/nonexistent/tailscaled.sock")
    o = Options(environ=env)
    o.parseOptions(argv or [])
    return o


class MakeServiceTests(SynchronousTestCase):
    """
    The provider, Raft, the DNS writer run; bad settings fail at start-up.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)
        import shutil

        def removeData() -> None:
            for d in _DATA:
                shutil.rmtree(d, True)

        self.addCleanup(removeData)

    def messages(self) -> list[str]:
        return [e.get("log_format", "") for e in self.events]

    def bindLines(self) -> list[str]:
        """The lines logged about the gossip and Raft bind address."""
        return [
            formatEvent(e)
            for e in self.events
            if "gossip-key-file" in formatEvent(e) and e.get("log_namespace") == "constellation.gossip"
        ]

    def test_provider(self) -> None:
        """
        Gossip binds UDP and TCP 7946, Raft 8300 and the HTTP provider
        8081, all on loopback here (no gossip key, no tailscaled, no
        --bind-addr), which one line says, with how to open them; the
        guide's gossip, Raft and success lines are logged; the Raft
        directories exist under DATA_DIR/raft.
        """
        reactor = _Reactor()
        opts = options()
        root = service.makeService(opts, reactor)
        self.assertEqual(
            [s.name for s in root], ["data-lock", "gossip", "raft-agent", "dns-writer", "http-provider"]
        )
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual(
            sorted((p[0], p[3]) for p in reactor.tcpServers),
            [(7946, "127.0.0.1"), (8081, "127.0.0.1"), (8300, "127.0.0.1")],
        )
        self.assertEqual([(p[0], p[3]) for p in reactor.udpPorts.values()], [(7946, "127.0.0.1")])
        messages = self.messages()
        self.assertIn("Initializing gossip cluster...", messages)
        self.assertIn("Initializing Raft consensus...", messages)
        self.assertIn("Constellation Agent started successfully", messages)
        self.assertEqual(
            self.bindLines(),
            [
                "gossip and Raft bind 127.0.0.1 only (no tailscaled socket at "
                "/nonexistent/tailscaled.sock, no gossip key, no --bind-addr): other nodes cannot reach "
                "this one; set --gossip-key-file (CONSTELLATION_GOSSIP_KEY_FILE) on every node, or "
                "--bind-addr (CONSTELLATION_BIND_ADDR) to open them"
            ],
        )
        for sub in ("logs", "stable", "snapshots"):
            self.assertTrue(os.path.isdir(os.path.join(opts["data-dir"], "raft", sub)))
        # Lease notifications (every renewal) reach the DNS writer only
        # through its check of the plan and its token.
        writer = root.getServiceNamed("dns-writer")
        self.assertEqual(root.getServiceNamed("raft-agent").keeper.changed, [writer.pokeIfChanged])

    def test_gossipKey(self) -> None:
        """
        --gossip-key-file: a key that is not base64 of 16/24/32 bytes, or a
        missing file, is one error naming the flag; with a key, gossip and
        Raft bind every interface and no warning is logged.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"short\n")
        with self.assertRaises(ConfigError) as cm:
            service.makeService(options(["--gossip-key-file", path]), MemoryReactorClock())
        self.assertIn("--gossip-key-file", str(cm.exception))
        self.assertIn("base64", str(cm.exception))
        with self.assertRaises(ConfigError) as cm:
            service.makeService(options(["--gossip-key-file", path + ".missing"]), MemoryReactorClock())
        self.assertIn("cannot read", str(cm.exception))
        with open(path, "wb") as f:
            f.write(base64.b64encode(b"0123456789abcdef0123456789abcdef") + b"\n")
        reactor = _Reactor()
        root = service.makeService(options(["--gossip-key-file", path]), reactor)
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual(
            root.getServiceNamed("gossip").node.keyring.keys, [b"0123456789abcdef0123456789abcdef"]
        )
        self.assertEqual(
            sorted((p[0], p[3]) for p in reactor.tcpServers),
            [(7946, "0.0.0.0"), (8081, "127.0.0.1"), (8300, "0.0.0.0")],
        )
        self.assertEqual([(p[0], p[3]) for p in reactor.udpPorts.values()], [(7946, "0.0.0.0")])
        self.assertEqual(self.bindLines(), [])
        self.assertIn(
            "Raft on 0.0.0.0:8300: mTLS with an identity derived from the gossip key",
            [formatEvent(e) for e in self.events],
        )

    def test_raftCertDir(self) -> None:
        """
        --raft-cert-dir: a missing bundle, or a node certificate not named
        after the node or without its Raft address, is one error naming the
        flag at start-up; the node's own bundle turns on Raft mTLS.
        """
        from suite.pki.ca import initBundle, writeNodeCertificate

        base = self.mktemp()
        argv = ["--bind-addr", "127.0.0.1", "--raft-cert-dir"]
        good = os.path.join(base, "good")
        initBundle(good, ["127.0.0.1"], commonName="cloudserver1")
        otherName = os.path.join(base, "name")
        writeNodeCertificate(good, otherName, ["127.0.0.1"], commonName="edge2")
        otherIP = os.path.join(base, "ip")
        writeNodeCertificate(good, otherIP, ["10.9.9.9"], commonName="cloudserver1")
        for directory, why in (
            (os.path.join(base, "missing"), "no such certificate bundle directory"),
            (otherName, "common name is 'edge2', not this node's name 'cloudserver1'"),
            (otherIP, "127.0.0.1"),
        ):
            with self.assertRaises(ConfigError) as cm:
                service.makeService(options([*argv, directory]), _Reactor())
            self.assertTrue(
                str(cm.exception).startswith("--raft-cert-dir (CONSTELLATION_RAFT_CERT_DIR): "),
                str(cm.exception),
            )
            self.assertIn(why, str(cm.exception))
        root = service.makeService(options([*argv, good]), _Reactor())
        self.assertEqual(root.getServiceNamed("raft-agent").name, "raft-agent")
        self.assertFalse([m for m in self.messages() if "Raft" in m and "unauthenticated" in m])
        self.assertIn(
            "Raft on 127.0.0.1:8300: mTLS with the --raft-cert-dir bundle",
            [formatEvent(e) for e in self.events],
        )

    def test_dataDirInUse(self) -> None:
        """
        A second agent on a data directory another process holds fails at
        start-up with one line naming the flag, the directory and that
        process.
        """
        data = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(data, "raft"))
        pid = lockedElsewhere(self, os.path.join(data, "raft"))
        with self.assertRaises(ConfigError) as cm:
            service.makeService(options(DATA_DIR=data), _Reactor())
        self.assertEqual(
            str(cm.exception),
            f"--data-dir (DATA_DIR): {os.path.realpath(data)}/raft is in use by another process (pid {pid}): "
            "is another agent running on it?",
        )

    def test_remoteProvider(self) -> None:
        """
        A non-loopback provider needs --allow-remote-provider.
        """
        with self.assertRaises(ConfigError) as cm:
            service.makeService(
                options(["--http-provider", "tcp:8081:interface=0.0.0.0"]), MemoryReactorClock()
            )
        self.assertIn("--http-provider", str(cm.exception))
        root = service.makeService(
            options(["--http-provider", "tcp:8081:interface=0.0.0.0", "--allow-remote-provider"]),
            MemoryReactorClock(),
        )
        self.assertEqual(len(list(root)), 5)

    def test_cloudflareNeedsToken(self) -> None:
        """
        With CLOUDFLARE_ZONE_ID set, a missing token file is reported first, by path.
        """
        secrets = self.mktemp()
        with self.assertRaises(ConfigError) as cm:
            service.makeService(options(CLOUDFLARE_ZONE_ID=ZONE, SECRETS_PATH=secrets), MemoryReactorClock())
        self.assertIn(os.path.join(secrets, "cf-api-token.txt"), str(cm.exception))
        os.makedirs(secrets)
        with open(os.path.join(secrets, "cf-api-token.txt"), "w") as f:
            f.write("\n")
        with self.assertRaises(ConfigError) as cm:
            service.makeService(options(CLOUDFLARE_ZONE_ID=ZONE, SECRETS_PATH=secrets), MemoryReactorClock())
        self.assertIn("is empty", str(cm.exception))

    def test_cloudflareTokenUnreadable(self) -> None:
        """
        A token file the agent's user may not read (the guide's root-owned
        0600 file under a unit that runs as another user) says who must be
        able to read it.
        """
        import builtins
        import pwd

        secrets = self.mktemp()
        os.makedirs(secrets)
        token = os.path.join(secrets, "cf-api-token.txt")
        with open(token, "w") as f:
            f.write("sekrit-token-value\n")
        realOpen = builtins.open

        def denyingOpen(path: Any, *args: Any, **kw: Any) -> Any:
            if path == token:
                raise PermissionError(13, "Permission denied", path)
            return realOpen(path, *args, **kw)

        self.patch(builtins, "open", denyingOpen)
        with self.assertRaises(ConfigError) as cm:
            service.readCloudflareToken(secrets)
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.assertEqual(
            str(cm.exception),
            f"SECRETS_PATH: cannot read {token} (needed because CLOUDFLARE_ZONE_ID is set): Permission denied "
            f"(the agent runs as user {user}: chown {user} {token}, or make it readable by that user)",
        )

    def test_cloudflareProvider(self) -> None:
        """
        With a token, the DNS writer uses the Cloudflare provider; the token
        is never shown; a token file other users can read is warned about.
        """
        secrets = self.mktemp()
        os.makedirs(secrets)
        token = os.path.join(secrets, "cf-api-token.txt")
        with open(token, "w") as f:
            f.write("sekrit-token-value\n")
        os.chmod(token, 0o644)
        service.readCloudflareToken(secrets)
        loose = [m for m in self.messages() if "readable by other users" in m]
        self.assertEqual(len(loose), 1)
        os.chmod(token, 0o600)
        root = service.makeService(options(CLOUDFLARE_ZONE_ID=ZONE, SECRETS_PATH=secrets), _Reactor())
        self.assertEqual(len([m for m in self.messages() if "readable by other users" in m]), 1)
        writer = root.getServiceNamed("dns-writer")
        self.assertEqual(writer.provider.name, "cloudflare")
        self.assertFalse(writer.dryRun)
        self.assertNotIn("sekrit", repr(writer.status()))
        self.assertEqual(str(service.readCloudflareToken(secrets)), "***")
        self.assertEqual(service.readCloudflareToken(secrets).reveal(), "sekrit-token-value")

    def test_warpAndRFC2136(self) -> None:
        """
        --warp-container needs --docker and adds the WARP monitor; an
        unreadable TSIG key file is one error naming the flag.
        """
        with self.assertRaises(ConfigError) as cm:
            options(["--warp-container", "warp"])
        self.assertIn("--docker", str(cm.exception))
        root = service.makeService(
            options(["--warp-container", "warp", "--docker", "unix:///var/run/docker.sock"]), _Reactor()
        )
        self.assertIn("warp", [s.name for s in root])
        with self.assertRaises(ConfigError) as cm:
            service.makeService(
                options(["--dns-server", "127.0.0.1:53", "--tsig-key-file", "/nonexistent/key"]), _Reactor()
            )
        self.assertIn("--tsig-key-file", str(cm.exception))

    def test_dockerAndPublicIP(self) -> None:
        """
        --docker adds the Docker monitor; without PUBLIC_IP and with sources,
        public IP detection runs; the node meta is in the replicated state.
        """
        root = service.makeService(
            options(
                ["--docker", "unix:///var/run/docker.sock", "--roles", "lb,dns"],
                CONSTELLATION_PUBLIC_IP_SOURCES="http://127.0.0.1:9/ip",
            ),
            MemoryReactorClock(),
        )
        self.assertEqual(
            [s.name for s in root],
            [
                "data-lock",
                "gossip",
                "docker-monitor",
                "raft-agent",
                "dns-writer",
                "deploy",
                "public-ip",
                "http-provider",
            ],
        )
        state = root.getServiceNamed("gossip").state
        self.assertEqual(
            state.entries("cloudserver1")["node"], {"priority": 10, "ip": None, "roles": ["lb", "dns"]}
        )

    def test_tapExitsTwo(self) -> None:
        """
        Through the plugin entry a refusal is exit code 2.
        """
        with self.assertRaises(SystemExit) as cm:
            tap.makeService(
                options(["--dns-server", "127.0.0.1:53", "--tsig-key-file", "/nonexistent/key"]),
                MemoryReactorClock(),
            )
        self.assertEqual(cm.exception.code, 2)

    def test_manhole(self) -> None:
        """
        --manhole adds the shared manhole child, listening on the unix socket.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "manhole.sock")
        os.makedirs(os.path.dirname(path))
        reactor = _Reactor()
        root = service.makeService(options(["--manhole", f"unix:{path}"]), reactor)
        self.assertEqual(
            sorted(s.name for s in root),
            ["data-lock", "dns-writer", "gossip", "http-provider", "manhole", "raft-agent"],
        )
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual([p[0] for p in reactor.unixServers], [path])


class ClusterCatalogTests(SynchronousTestCase):
    """
    The catalog's nodes come from gossip members and the meta they published.
    """

    def test_nodes(self) -> None:
        """
        This node first; others with their gossip status and published meta
        (gossip metadata when no meta entry arrived yet).
        """
        from suite.constellation.catalog import ClusterCatalog
        from suite.constellation.state import ClusterState
        from suite.gossip.member import Member

        clock = Clock()
        state = ClusterState("cloudserver1", 1, clock)
        state.update({"node": {"priority": 10, "ip": "203.0.113.1", "roles": ["lb"]}})
        edge2 = ClusterState("edge2", 1, clock)
        edge2.update(
            {"node": {"priority": 50, "ip": "203.0.113.2", "roles": []}, "svc/web": {"container": "web"}}
        )
        state.mergeRemoteState(edge2.localState(False), False)
        members = [
            Member("cloudserver1", ("10.0.0.1", 7946), "alive", 0, {"priority": 10}),
            Member("edge2", ("10.0.0.2", 7946), "suspect", 3, {}),
            Member("edge3", ("10.0.0.3", 7946), "dead", 1, {"priority": "high"}),
        ]
        catalog = ClusterCatalog("cloudserver1", state, lambda: members)
        self.assertTrue(verifyObject(IServiceCatalog, catalog))
        self.assertEqual(
            [n.toJSON() for n in catalog.nodes()],
            [
                {
                    "name": "cloudserver1",
                    "priority": 10,
                    "status": "alive",
                    "publicIP": "203.0.113.1",
                    "roles": ["lb"],
                },
                {
                    "name": "edge2",
                    "priority": 50,
                    "status": "suspect",
                    "publicIP": "203.0.113.2",
                    "roles": [],
                },
                {"name": "edge3", "priority": 50, "status": "dead", "publicIP": None, "roles": []},
            ],
        )
        self.assertEqual([(s.name, s.node) for s in catalog.services()], [("web", "edge2")])
        members[1] = Member("edge2", ("10.0.0.2", 7946), "dead", 3, {})
        self.assertEqual(catalog.services(), [])


class PublicIPDetectionTests(SynchronousTestCase):
    """
    The public IP is detected at start-up, retried until found and checked
    again now and then; changes are published.
    """

    def test_retriesAndFollowsChanges(self) -> None:
        from twisted.logger import formatEvent

        events = captureLogs(self)
        clock = Clock()
        answers: list[tuple[str | None, list[str]]] = [
            (None, ["http://a/: no answer within 5 s"]),
            (None, ["http://a/: no answer within 5 s"]),
            ("203.0.113.5", ["http://a/: no answer within 5 s"]),
            ("203.0.113.5", []),
            (None, ["http://a/: HTTP 502"]),
            ("198.51.100.7", []),
        ]
        published: list[Any] = []

        async def detect(reactor: Any, sources: list[str]) -> tuple[str | None, list[str]]:
            return answers.pop(0)

        class State:
            def update(self, entries: dict[str, Any]) -> None:
                published.append(entries["node"]["ip"])

        class Node:
            running = True
            meta: dict[str, Any] = {"priority": 50}

            def setMetadata(self, meta: dict[str, Any]) -> None:
                Node.meta = meta

        class Gossip:
            node = Node()

        meta: dict[str, Any] = {"priority": 50, "ip": None}
        detection = service._PublicIPDetection(
            clock,
            ["http://a/"],
            cast(Any, State()),
            cast(Any, Gossip()),
            meta,
            detect=detect,
        )
        detection.startService()
        self.assertEqual((published, detection.found), ([], None))
        clock.advance(30)  # still failing: retried after 30 s, logged once
        self.assertEqual(published, [])
        clock.advance(30)
        self.assertEqual(
            (published, meta["ip"], Node.meta["ip"]), (["203.0.113.5"], "203.0.113.5", "203.0.113.5")
        )
        clock.advance(299)
        self.assertEqual(len(answers), 3)
        clock.advance(1)  # checked again after 5 minutes: unchanged, nothing published
        self.assertEqual((published, len(answers)), (["203.0.113.5"], 2))
        clock.advance(300)  # a failure keeps the last address and retries sooner
        self.assertEqual(detection.found, "203.0.113.5")
        clock.advance(30)
        self.assertEqual(published, ["203.0.113.5", "198.51.100.7"])
        lines = [formatEvent(e) for e in events if "public IP" in e.get("log_format", "")]
        self.assertEqual(
            lines,
            [
                "public IP source failed: http://a/: no answer within 5 s",
                "public IP not detected from 1 sources; set PUBLIC_IP (retrying every 30 s)",
                "public IP source failed: http://a/: no answer within 5 s",
                "public IP 203.0.113.5 detected",
                "public IP source failed: http://a/: HTTP 502",
                "public IP not detected from 1 sources; set PUBLIC_IP (retrying every 30 s)",
                "public IP changed from 203.0.113.5 to 198.51.100.7",
            ],
        )
        detection.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])
