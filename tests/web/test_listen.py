"""
Address helpers and the listener service.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase

from suite.daemon import ConfigError
from suite.web.listen import ListenerService, hostPortEndpoint, parseHostPort
from tests.clustor.helpers import captureLogs


class HostPortTests(SynchronousTestCase):
    """
    C{HOST:PORT} parsing and conversion to endpoint strings.
    """

    def test_parse(self) -> None:
        """
        IPv4, names and bracketed IPv6 are split; errors name the variable.
        """
        self.assertEqual(parseHostPort("127.0.0.1:26020", "X"), ("127.0.0.1", 26020))
        self.assertEqual(parseHostPort("node.example:1", "X"), ("node.example", 1))
        self.assertEqual(parseHostPort("[::1]:9", "X"), ("::1", 9))
        for bad, why in (
            ("::1:9", "HOST:PORT"),
            (":9", "no host"),
            ("h:x", "not a number"),
            ("h:99999", "range"),
        ):
            with self.assertRaises(ConfigError) as cm:
                parseHostPort(bad, "CEPTRA_ADMIN_BIND")
            self.assertIn("CEPTRA_ADMIN_BIND", str(cm.exception))
            self.assertIn(why, str(cm.exception))

    def test_endpoint(self) -> None:
        """
        IPv6 addresses get a tcp6 endpoint with escaped colons.
        """
        self.assertEqual(hostPortEndpoint("127.0.0.1", 1), "tcp:1:interface=127.0.0.1")
        self.assertEqual(hostPortEndpoint("::1", 2), "tcp6:2:interface=\\:\\:1")
        self.assertEqual(hostPortEndpoint("localhost", 3), "tcp:3:interface=localhost")


class _FailingEndpoint:
    def listen(self, factory: Any) -> Deferred[Any]:
        return fail(CannotListenError("127.0.0.1", 80, OSError(13, "Permission denied")))


class _Reactor:
    running = True

    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


class ListenerServiceTests(SynchronousTestCase):
    """
    A listener that cannot listen says so in one line and stops the reactor.
    """

    def test_listenFails(self) -> None:
        """
        The critical line names the flag and the endpoint; the reactor stops.
        """
        events = captureLogs(self)
        reactor = _Reactor()
        service = ListenerService(_FailingEndpoint(), Factory(), reactor, "tcp:80", "--listen (X)")
        service.startService()
        self.assertEqual(reactor.stopped, 1)
        critical = [e for e in events if getattr(e.get("log_level"), "name", "") == "critical"]
        self.assertEqual(len(critical), 1)
        self.assertEqual((critical[0]["flag"], critical[0]["endpoint"]), ("--listen (X)", "tcp:80"))
        self.assertIsNone(service.stopService())
