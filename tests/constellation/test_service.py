"""
C{makeService} of the Constellation agent: what runs, and what is refused
because it is not built yet.
"""

from __future__ import annotations

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from suite.constellation import service, tap
from suite.constellation.options import Options
from suite.daemon import ConfigError
from tests.clustor.helpers import captureLogs

ZONE = "0123456789abcdef0123456789abcdef"


def options(argv: list[str] | None = None, **env: str) -> Options:
    env.setdefault("TS_HOSTNAME", "cloudserver1")
    o = Options(environ=env)
    o.parseOptions(argv or [])
    return o


class MakeServiceTests(SynchronousTestCase):
    """
    The provider runs; configured-but-unbuilt features fail at start-up.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)

    def messages(self) -> list[str]:
        return [e.get("log_format", "") for e in self.events]

    def test_provider(self) -> None:
        """
        The HTTP provider listens on loopback 8081; the success line is logged
        once listening, and no gossip/Raft initialisation line is logged.
        """
        reactor = MemoryReactorClock()
        root = service.makeService(options(), reactor)
        self.assertEqual([s.name for s in root], ["http-provider"])
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual([(p[0], p[3]) for p in reactor.tcpServers], [(8081, "127.0.0.1")])
        self.assertIn("Constellation Agent started successfully", self.messages())
        self.assertNotIn("Initializing gossip cluster...", self.messages())
        self.assertNotIn("Initializing Raft consensus...", self.messages())

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
        self.assertEqual(len(list(root)), 1)

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

    def test_cloudflareNotImplemented(self) -> None:
        """
        With a token, Cloudflare DNS is refused as not implemented yet, and
        the token never appears in the message.
        """
        secrets = self.mktemp()
        os.makedirs(secrets)
        with open(os.path.join(secrets, "cf-api-token.txt"), "w") as f:
            f.write("sekrit-token-value\n")
        with self.assertRaises(ConfigError) as cm:
            service.makeService(options(CLOUDFLARE_ZONE_ID=ZONE, SECRETS_PATH=secrets), MemoryReactorClock())
        self.assertTrue(str(cm.exception).startswith("not implemented yet: Cloudflare DNS"))
        self.assertNotIn("sekrit", str(cm.exception))
        self.assertEqual(str(service.readCloudflareToken(secrets)), "***")
        self.assertEqual(service.readCloudflareToken(secrets).reveal(), "sekrit-token-value")

    def test_otherFeatures(self) -> None:
        """
        --join, --docker and --warp-container are refused as not implemented yet.
        """
        for argv, what in (
            (["--join", "peer.ts.net"], "gossip membership"),
            (["--docker", "unix:/var/run/docker.sock"], "Docker"),
            (["--warp-container", "warp"], "WARP"),
        ):
            with self.assertRaises(ConfigError) as cm:
                service.makeService(options(argv), MemoryReactorClock())
            self.assertIn("not implemented yet", str(cm.exception))
            self.assertIn(what, str(cm.exception))

    def test_tapExitsTwo(self) -> None:
        """
        Through the plugin entry the refusal is exit code 2.
        """
        with self.assertRaises(SystemExit) as cm:
            tap.makeService(options(["--join", "peer"]), MemoryReactorClock())
        self.assertEqual(cm.exception.code, 2)

    def test_manhole(self) -> None:
        """
        --manhole adds the shared manhole child, listening on the unix socket.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "manhole.sock")
        os.makedirs(os.path.dirname(path))
        reactor = MemoryReactorClock()
        root = service.makeService(options(["--manhole", f"unix:{path}"]), reactor)
        self.assertEqual(sorted(s.name for s in root), ["http-provider", "manhole"])
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual([p[0] for p in reactor.unixServers], [path])
