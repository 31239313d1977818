"""
Start-up of a CEPtra node: identity, storage, the service tree, readiness
and log metrics.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.ceptra import service, tap
from suite.ceptra.health import PartitionsHealth, PlacementFeedHealth
from suite.ceptra.interfaces import IRaftStatus
from suite.ceptra.logmetrics import LogCounterService
from suite.ceptra.storage import PROBE_NAME, prepareStorage
from suite.clustor.interfaces import IFeedClient
from suite.daemon import ConfigError
from suite.web.interfaces import IHealth
from tests.ceptra.support import SPIFFE, makePKI, nodeOptions
from tests.clustor.certs import CertAuthority
from tests.test_fileutil import lockedElsewhere


@implementer(IRaftStatus)
class _RaftStatus:
    """
    What L{PartitionsHealth} reads from the partition manager: one hosted
    partition without a leader.
    """

    def leaderKnown(self) -> bool:
        return False

    def notReadyReasons(self) -> tuple[str, ...]:
        return ("partition p0: no raft leader known (term 3)",)

    def hostedIds(self) -> list[str]:
        return ["p0"]

    def partitionStatus(self, pid: str) -> dict[str, Any]:
        return {"partition": pid, "state": "running", "role": "follower"}

    def diskStatuses(self) -> dict[str, Any]:
        return {"retired": {}, "stopped": {}, "orphaned": {}}


class IdentityTests(SynchronousTestCase):
    """
    The mTLS identity is loaded and must name this node.
    """

    def setUp(self) -> None:
        self.base = self.mktemp()
        self.ca, self.identity = makePKI(os.path.join(self.base, "pki"))

    def load(self, **extra: str) -> Any:
        return service.loadNodeIdentity(nodeOptions(self.base, self.identity, None, **extra))

    def test_loads(self) -> None:
        """
        A matching identity loads.
        """
        bundle = self.load()
        self.assertEqual(bundle.identity.spiffeId, SPIFFE)

    def test_policyReusesContexts(self) -> None:
        """
        The HTTPS policy builds one TLS context per host and hands it out
        again for further connections to that host.
        """
        policy = service.MTLSPolicy(self.load())
        first = policy.creatorForNetloc(b"127.0.0.1", 1)
        self.assertIs(policy.creatorForNetloc(b"127.0.0.1", 2), first)
        other = policy.creatorForNetloc(b"node.example", 1)
        self.assertIsNot(other, first)
        self.assertIs(policy.creatorForNetloc(b"node.example", 1), other)
        for n in range(policy.MAX_CACHED):
            policy.creatorForNetloc(f"n{n}.example".encode(), 1)
        self.assertLessEqual(len(policy._creators), policy.MAX_CACHED)

    def test_missingFile(self) -> None:
        """
        A missing key file is fatal, naming the variable and the file.
        """
        missing = os.path.join(self.base, "nope.key")
        with self.assertRaises(ConfigError) as cm:
            self.load(CEPTRA_TLS_IDENTITY_KEY=missing)
        self.assertIn("CEPTRA_TLS_IDENTITY_KEY", str(cm.exception))
        self.assertIn(missing, str(cm.exception))

    def test_keyMismatch(self) -> None:
        """
        A key that does not belong to the certificate is fatal.
        """
        other = self.ca.identity("other", SPIFFE)
        with self.assertRaises(ConfigError) as cm:
            self.load(CEPTRA_TLS_IDENTITY_KEY=other.key)
        self.assertIn("CEPTRA_TLS_IDENTITY_KEY", str(cm.exception))

    def test_foreignTrust(self) -> None:
        """
        A certificate not issued by the trust bundle is fatal.
        """
        foreign = CertAuthority(os.path.join(self.base, "foreign"), "foreign CA")
        with self.assertRaises(ConfigError) as cm:
            self.load(CEPTRA_TLS_TRUST_BUNDLE=foreign.trustPath)
        self.assertIn("CEPTRA_TLS_IDENTITY_CERT", str(cm.exception))
        self.assertIn(f"not signed by CEPTRA_TLS_TRUST_BUNDLE ({foreign.trustPath})", str(cm.exception))

    def test_spiffeMismatch(self) -> None:
        """
        CEPTRA_NODE_SPIFFE must be the certificate's SPIFFE ID.
        """
        with self.assertRaises(ConfigError) as cm:
            self.load(CEPTRA_NODE_SPIFFE="spiffe://example.org/ceptra/node-2")
        message = str(cm.exception)
        self.assertIn("CEPTRA_TLS_IDENTITY_CERT", message)
        self.assertIn("spiffe://example.org/ceptra/node-2", message)

    def test_advertiseHostNotInSANs(self) -> None:
        """
        CEPTRA_ADVERTISE_HOST must be covered by the certificate's SANs.
        """
        with self.assertRaises(ConfigError) as cm:
            self.load(CEPTRA_ADVERTISE_HOST="node-9.example.org")
        self.assertIn("node-9.example.org", str(cm.exception))
        with self.assertRaises(ConfigError):
            self.load(CEPTRA_ADVERTISE_HOST="10.9.9.9")


class StorageTests(SynchronousTestCase):
    """
    The directories are created and proven writable.
    """

    def test_creates(self) -> None:
        """
        Data, WAL and snapshot directories are created with a .write_probe.
        """
        base = os.path.abspath(self.mktemp())
        layout = prepareStorage(base, os.path.join(base, "wal"), os.path.join(self.mktemp(), "snap"))
        for path in (layout.dataDir, layout.walDir, layout.snapshotDir):
            self.assertTrue(os.path.isfile(os.path.join(path, PROBE_NAME)))

    def test_notADirectory(self) -> None:
        """
        A file where a directory should be is fatal, naming variable and path.
        """
        base = self.mktemp()
        os.makedirs(base)
        blocker = os.path.join(base, "wal")
        with open(blocker, "w") as f:
            f.write("x")
        with self.assertRaises(ConfigError) as cm:
            prepareStorage(base, blocker, os.path.join(base, "snap"))
        self.assertIn("CEPTRA_WAL_DIR", str(cm.exception))
        self.assertIn(blocker, str(cm.exception))

    def test_overlappingDirectories(self) -> None:
        """
        WAL and snapshot directories that are the same, one inside the
        other, the data directory itself, or around it are refused before
        anything is created, naming both variables; inside the data
        directory (the default) they are fine.
        """
        base = os.path.abspath(self.mktemp())
        data, wal, snap = (os.path.join(base, n) for n in ("data", "wal", "snap"))
        for layout, inner, outer in (
            ((data, wal, wal), "CEPTRA_SNAPSHOT_DIR", "CEPTRA_WAL_DIR"),
            ((data, wal, os.path.join(wal, "snapshots")), "CEPTRA_SNAPSHOT_DIR", "CEPTRA_WAL_DIR"),
            ((data, os.path.join(snap, "p0"), snap), "CEPTRA_WAL_DIR", "CEPTRA_SNAPSHOT_DIR"),
            ((data, data, snap), "CEPTRA_WAL_DIR", "CEPTRA_DATA_DIR"),
            ((data, wal, data), "CEPTRA_SNAPSHOT_DIR", "CEPTRA_DATA_DIR"),
            ((os.path.join(wal, "data"), wal, snap), "CEPTRA_DATA_DIR", "CEPTRA_WAL_DIR"),
        ):
            with self.assertRaises(ConfigError, msg=repr(layout)) as cm:
                prepareStorage(*layout)
            message = str(cm.exception)
            self.assertTrue(message.startswith(f"{inner}: "), message)
            self.assertIn(f" {outer} (", message)
            self.assertNotIn("\n", message)
            self.assertFalse(os.path.exists(base))
        # a symbolic link is followed
        os.makedirs(wal)
        os.symlink(wal, os.path.join(base, "alias"))
        self.assertRaises(ConfigError, prepareStorage, data, wal, os.path.join(base, "alias", "s"))
        made = prepareStorage(data, os.path.join(data, "wal"), os.path.join(data, "snapshots"))
        self.assertEqual(made.walDir, os.path.join(data, "wal"))

    def test_probeFails(self) -> None:
        """
        A probe that cannot be written is fatal, naming the probe path.
        """
        base = os.path.abspath(self.mktemp())
        snap = os.path.join(base, "snap")
        os.makedirs(os.path.join(snap, PROBE_NAME))
        with self.assertRaises(ConfigError) as cm:
            prepareStorage(base, os.path.join(base, "wal"), snap)
        self.assertIn("CEPTRA_SNAPSHOT_DIR", str(cm.exception))
        self.assertIn(os.path.join(snap, PROBE_NAME), str(cm.exception))


class MakeServiceTests(SynchronousTestCase):
    """
    The node's service tree under a memory reactor.
    """

    def test_children(self) -> None:
        """
        Log metrics, feed client, partitions, Raft and admin listeners are
        children; starting listens on the admin and Raft ports and connects
        to the control plane.
        """
        base = self.mktemp()
        _, identity = makePKI(os.path.join(base, "pki"))
        options = nodeOptions(
            base,
            identity,
            url="https://127.0.0.1:26555",
            CEPTRA_ADMIN_BIND="127.0.0.1:26999",
        )
        reactor = MemoryReactorClock()
        root = service.makeService(options, reactor)
        self.assertTrue({"log-metrics", "feeds", "admin", "raft", "partitions"} <= {s.name for s in root})
        self.assertTrue(os.path.isfile(os.path.join(base, "data", "wal", PROBE_NAME)))
        root.startService()
        self.assertEqual(
            sorted((p[0], p[3]) for p in reactor.tcpServers), [(26021, "127.0.0.1"), (26999, "127.0.0.1")]
        )
        self.assertEqual({(c[0], c[1]) for c in reactor.tcpClients}, {("127.0.0.1", 26555)})
        root.stopService()

    def test_storageInUse(self) -> None:
        """
        A second node on storage another process holds fails at start-up
        with one line naming the directory and that process.
        """
        base = self.mktemp()
        _, identity = makePKI(os.path.join(base, "pki"))
        options = nodeOptions(base, identity)
        wal = os.path.join(base, "data", "wal")
        os.makedirs(wal)
        pid = lockedElsewhere(self, wal)
        with self.assertRaises(ConfigError) as cm:
            service.makeService(options, MemoryReactorClock())
        self.assertEqual(
            str(cm.exception),
            f"CEPTRA_DATA_DIR: {os.path.realpath(wal)} is in use by another process (pid {pid}): "
            "is another ceptra node running on this storage?",
        )

    def test_plainAdminRefusesWebPages(self) -> None:
        """
        The plain-HTTP admin listener (loopback only) serves no web page:
        a DNS-rebinding page's own name in C{Host} gets 421, and a page on
        another site posting rules to the loopback port gets 403; local
        clients are served.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        base = self.mktemp()
        _, identity = makePKI(os.path.join(base, "pki"))
        options = nodeOptions(base, identity, CEPTRA_ADMIN_BIND="127.0.0.1:26999", CEPTRA_ADMIN_TLS="off")
        reactor = MemoryReactorClock()
        root = service.makeService(options, reactor)
        root.startService()
        self.addCleanup(root.stopService)
        [site] = [p[1] for p in reactor.tcpServers if p[0] == 26999]

        def status(request: bytes) -> int:
            address = IPv4Address("TCP", "127.0.0.1", 26999)
            protocol: Any = site.buildProtocol(address)
            transport = StringTransport(peerAddress=address, hostAddress=address)
            protocol.makeConnection(transport)
            protocol.dataReceived(request)
            return int(transport.value().split(b" ", 2)[1])

        self.assertEqual(status(b"GET /healthz HTTP/1.1\r\nHost: evil.example:26999\r\n\r\n"), 421)
        rules = b'{"rules": []}'
        self.assertEqual(
            status(
                b"POST /rules HTTP/1.1\r\nHost: 127.0.0.1:26999\r\nOrigin: https://evil.example\r\n"
                b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(rules), rules)
            ),
            403,
        )
        self.assertEqual(status(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:26999\r\n\r\n"), 200)

    def test_plainAdminOffLoopbackRefused(self) -> None:
        """
        Plain-HTTP admin on a non-loopback address is refused, naming the variable.
        """
        base = self.mktemp()
        _, identity = makePKI(os.path.join(base, "pki"))
        options = nodeOptions(base, identity, CEPTRA_ADMIN_BIND="0.0.0.0:26999", CEPTRA_ADMIN_TLS="off")
        with self.assertRaises(ConfigError) as cm:
            service.makeService(options, MemoryReactorClock())
        self.assertIn("CEPTRA_ADMIN_BIND", str(cm.exception))

    def test_tapExitsTwo(self) -> None:
        """
        Through the plugin entry a start-up error is exit code 2.
        """
        base = self.mktemp()
        _, identity = makePKI(os.path.join(base, "pki"))
        options = nodeOptions(base, identity, CEPTRA_NODE_SPIFFE="spiffe://example.org/x")
        with self.assertRaises(SystemExit) as cm:
            tap.makeService(options, MemoryReactorClock())
        self.assertEqual(cm.exception.code, 2)


@implementer(IFeedClient)
class FakeFeeds:
    feeds = ("placement",)

    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None
        self.stale = True
        self.staleness = 0.0

    def stalenessMs(self, feed: str) -> float:
        return self.staleness

    def latest(self, feed: str) -> dict[str, Any] | None:
        return self.document

    def isStale(self, feed: str) -> bool:
        return self.stale


class HealthTests(SynchronousTestCase):
    """
    Readiness: placement feed freshness and Raft leader presence.
    """

    def test_interfaces(self) -> None:
        """
        The providers and the Raft placeholder provide their interfaces.
        """
        feeds = FakeFeeds()
        self.assertTrue(verifyObject(IFeedClient, feeds))
        self.assertTrue(verifyObject(IHealth, PlacementFeedHealth(feeds)))
        self.assertTrue(verifyObject(IHealth, PartitionsHealth(_RaftStatus())))

    def test_placement(self) -> None:
        """
        Never fetched, stale, then fresh.
        """
        feeds = FakeFeeds()
        health = PlacementFeedHealth(feeds)
        self.assertEqual(health.check().reasons, ("placement feed never fetched",))
        feeds.document = {"revision": 3}
        feeds.staleness = 31000.0
        report = health.check()
        self.assertFalse(report.ready)
        self.assertEqual(report.reasons, ("placement feed stale for 31000 ms",))
        feeds.stale = False
        feeds.staleness = 500.0
        report = health.check()
        self.assertTrue(report.ready)
        self.assertEqual(report.details["revision"], 3)

    def test_partitions(self) -> None:
        """
        The raft check: not ready with the partitions' reasons, details
        per hosted partition and the replicas kept on disk.
        """
        report = PartitionsHealth(_RaftStatus()).check()
        self.assertFalse(report.ready)
        self.assertEqual(report.reasons, ("partition p0: no raft leader known (term 3)",))
        self.assertEqual(report.details["partitions"]["p0"]["role"], "follower")
        self.assertEqual(report.details["orphaned"], {})


class LogMetricsTests(SynchronousTestCase):
    """
    clustor_system_logs_total counts log events by level from construction
    (start-up lines included) until stopped.
    """

    def test_counts(self) -> None:
        """
        Events are counted from construction until stop.
        """
        registry = CollectorRegistry()
        publisher = LogPublisher()
        svc = LogCounterService(registry, publisher)
        log = Logger(observer=publisher)
        log.warn("before")
        svc.startService()
        log.warn("one")
        log.error("two")
        log.warn("three")
        svc.stopService()
        log.warn("after")
        self.assertEqual(registry.get_sample_value("clustor_system_logs_total", {"level": "warn"}), 3.0)
        self.assertEqual(registry.get_sample_value("clustor_system_logs_total", {"level": "error"}), 1.0)
        self.assertEqual(registry.get_sample_value("clustor_system_logs_total", {"level": "debug"}), 0.0)
