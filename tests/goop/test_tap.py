"""
The twistd plugin: option parsing and the service tree makeService builds.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from suite.goop.peer.service import PeerService
from suite.goop.rendezvous.hub import RendezvousHub
from suite.goop.tap import Options, makeService


def parse(*argv: str) -> Options:
    o = Options(environ={})
    o.parseOptions(list(argv))
    return o


class OptionsTests(SynchronousTestCase):
    def test_subcommands(self) -> None:
        """peer and rendezvous take a directory; hub limit flags are parsed."""
        o = parse("peer", "/tmp/x")
        self.assertEqual((o.subCommand, o.subOptions["directory"]), ("peer", "/tmp/x"))
        o = parse("rendezvous", "--publish-rate", "5", "--max-sse-clients", "10", "/tmp/y")
        self.assertEqual(o.subOptions["publish-rate"], 5.0)
        self.assertEqual(o.subOptions["max-sse-clients"], 10)

    def test_errors(self) -> None:
        """A missing directory, a missing subcommand or a bad number is a usage error."""
        self.assertRaises(usage.UsageError, parse, "peer")
        self.assertRaises(usage.UsageError, parse)
        self.assertRaises(usage.UsageError, parse, "rendezvous", "--publish-rate", "-1", "/tmp/x")

    def test_hubLimitErrors(self) -> None:
        """
        A cap below 1, a non-integer cap, a rate or burst that is not finite,
        or a burst below 1 with a rate set is a usage error naming the flag
        (not a traceback from deep inside the hub).
        """
        for flag, value in [
            ("--max-sse-clients", "-3"),
            ("--max-sse-clients", "0"),
            ("--max-sse-clients", "x"),
            ("--max-sse-per-ip", "-1"),
            ("--max-sse-per-ip", "0"),
            ("--max-sse-per-ip", "2.5"),
            ("--publish-rate", "nan"),
            ("--publish-rate", "inf"),
            ("--publish-burst", "inf"),
            ("--publish-burst", "0.5"),
        ]:
            for sub in ("peer", "rendezvous"):
                e = self.assertRaises(usage.UsageError, parse, sub, flag, value, "/tmp/x")
                self.assertIn(flag, str(e), (sub, flag, value))
        o = parse("rendezvous", "--publish-rate", "0", "--publish-burst", "0", "/tmp/x")
        self.assertEqual(o.subOptions["publish-rate"], 0.0)


class MakeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        from twisted.logger import globalLogPublisher

        before = list(globalLogPublisher._observers)
        self.addCleanup(lambda: setattr(globalLogPublisher, "_observers", before))

    def dir(self, doc: dict[str, object]) -> str:
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        with open(os.path.join(d, "goop.json"), "w") as f:
            json.dump(doc, f)
        return d

    def test_peerTree(self) -> None:
        """goop peer DIR builds a PeerService; with rendezvous_host the hub is its child."""
        d = self.dir({"presence": {"rendezvous_host": True, "rendezvous_port": 0}, "p2p": {"mdns_tag": ""}})
        root = makeService(parse("peer", d), reactor=MemoryReactorClock())
        self.assertIsInstance(root, MultiService)
        peer = root.namedServices.get("peer") or list(root)[0]
        self.assertIsInstance(peer, PeerService)
        hubs = [s for s in peer if isinstance(s, RendezvousHub)]
        self.assertEqual(len(hubs), 1)
        self.assertTrue(os.path.isfile(os.path.join(d, "identity.key")))
        self.assertTrue(os.path.isfile(os.path.join(d, "site", "index.html")))

    def test_rendezvousNeedsHost(self) -> None:
        """goop rendezvous DIR without rendezvous_host exits 2 with one line naming the key."""
        d = self.dir({})
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        e = self.assertRaises(SystemExit, makeService, parse("rendezvous", d), MemoryReactorClock())
        self.assertEqual(e.code, 2)
        self.assertIn("presence.rendezvous_host", err.getvalue())
        self.assertEqual(err.getvalue().count("\n"), 1)

    def test_peerDbPathChecked(self) -> None:
        """
        A presence.peer_db_path whose directory does not exist stops
        start-up with one line naming the key (exit 2), before the reactor
        runs, instead of a runtime failure and a traceback.
        """
        missing = os.path.join(os.path.abspath(self.mktemp()), "nope", "peers.db")
        d = self.dir(
            {
                "presence": {
                    "rendezvous_only": True,
                    "rendezvous_host": True,
                    "rendezvous_port": 0,
                    "peer_db_path": missing,
                }
            }
        )
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        e = self.assertRaises(SystemExit, makeService, parse("rendezvous", d), MemoryReactorClock())
        self.assertEqual(e.code, 2)
        self.assertIn("presence.peer_db_path: directory does not exist", err.getvalue())
        self.assertEqual(err.getvalue().count("\n"), 1)

    def test_rendezvousOnly(self) -> None:
        """A rendezvous-only directory runs the hub and a minimal viewer, no P2P store."""
        d = self.dir({"presence": {"rendezvous_host": True, "rendezvous_only": True}})
        root = makeService(parse("rendezvous", d), reactor=MemoryReactorClock())
        peer = list(root)[0]
        self.assertTrue(peer.minimal)
        self.assertIsNone(peer.store)
        self.assertEqual(peer.hub.port, 8787)


class FileLimitTests(SynchronousTestCase):
    """
    The daemon raises its open-file limit so the hub's SSE cap fits.
    """

    def fake(self, soft: int, hard: int, fail: bool = False) -> tuple[Any, Any, list[tuple[int, int]]]:
        import resource

        calls: list[tuple[int, int]] = []

        def getrlimit(which: int) -> tuple[int, int]:
            self.assertEqual(which, resource.RLIMIT_NOFILE)
            return soft, hard

        def setrlimit(which: int, limits: tuple[int, int]) -> None:
            if fail:
                raise ValueError("not allowed")
            calls.append(limits)

        return getrlimit, setrlimit, calls

    def test_raisedToHard(self) -> None:
        """
        A systemd-style 1024 soft limit is raised to the hard limit; no
        warning when the cap fits.
        """
        from suite.goop.limits import raiseFileLimit

        get, set_, calls = self.fake(1024, 524288)
        self.assertEqual(raiseFileLimit(2048 + 1024, get, set_), (1024, 524288, None))
        self.assertEqual(calls, [(524288, 524288)])

    def test_warnsWhenTooLow(self) -> None:
        """
        When the hard limit (or a refused raise) leaves too few descriptors
        for the SSE cap, the warning names --max-sse-clients and LimitNOFILE.
        """
        from suite.goop.limits import raiseFileLimit

        for get, set_, _calls in (self.fake(1024, 2048), self.fake(1024, 524288, fail=True)):
            before, after, warning = raiseFileLimit(3072, get, set_)
            self.assertEqual(before, 1024)
            self.assertLess(after, 3072)
            assert warning is not None
            self.assertIn("--max-sse-clients", warning)
            self.assertIn("LimitNOFILE", warning)

    def test_makeServiceRaises(self) -> None:
        """
        makeService for a hub asks for the cap plus headroom.
        """
        from twisted.logger import globalLogPublisher

        from suite.goop import limits

        asked: list[int] = []

        def fakeRaise(needed: int) -> tuple[int, int, str | None]:
            asked.append(needed)
            return 1024, 4096, "too low"

        self.patch(limits, "raiseFileLimit", fakeRaise)
        before = list(globalLogPublisher._observers)
        self.addCleanup(lambda: setattr(globalLogPublisher, "_observers", before))
        events: list[dict[str, Any]] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        with open(os.path.join(d, "goop.json"), "w") as f:
            json.dump(
                {"presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": 0}}, f
            )
        makeService(parse("rendezvous", "--max-sse-clients", "5000", d), reactor=MemoryReactorClock())
        self.assertEqual(asked, [5000 + limits.FD_HEADROOM])
        self.assertTrue(any(e.get("warning") == "too low" for e in events))


class ManagerStartTests(SynchronousTestCase):
    """
    C{goop2 manager} that cannot start says why in one line and exits
    non-zero (it printed a Twisted traceback for both).
    """

    def runManager(self, *args: str) -> Any:
        import subprocess

        from tests.support.process import scriptArgs

        return subprocess.run(
            scriptArgs("goop2", "manager", *args), capture_output=True, text=True, timeout=60
        )

    def test_unusablePeersDir(self) -> None:
        """A peers directory that cannot be created: exit 2, one line naming --peers-dir."""
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w") as f:
            f.write("a file")
        r = self.runManager("--listen", "127.0.0.1:0", "--peers-dir", os.path.join(blocker, "peers"))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn("--peers-dir: cannot create", r.stderr)

    def test_portInUse(self) -> None:
        """A listen address in use: exit 1, one line naming --listen."""
        import socket

        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = self.runManager("--listen", f"127.0.0.1:{port}", "--peers-dir", os.path.abspath(self.mktemp()))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(
            r.stderr.splitlines(),
            [f"goop2: error: --listen: cannot listen on 127.0.0.1:{port}: address already in use"],
        )
