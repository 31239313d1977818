"""
Error reporting to Sentry: the real sentry-sdk client sends to a local
stand-in speaking Sentry's envelope API; secrets never leave the process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.daemon import ConfigError
from suite.pki.ca import initBundle
from suite.sentry import SentryService, checkDSN
from suite.specter.options import Options as SpecterOptions
from tests.support.http import serveLoopback
from tests.support.process import DaemonProcess, freePort, scriptArgs
from tests.support.sentry import Envelope, sentryStandIn


async def _until(received: list[Envelope], predicate: Any, timeout: float = 15.0) -> list[Envelope]:
    """
    Wait (polling the real reactor) until the stand-in got what C{predicate}
    looks for; the client sends from its own thread.
    """
    deadline = time.monotonic() + timeout
    while not predicate(received):
        if time.monotonic() > deadline:
            raise AssertionError(f"Sentry stand-in got {len(received)} envelopes, not what was expected")
        await deferLater(reactor, 0.05, lambda: None)
    return received


def _events(received: list[Envelope]) -> list[dict[str, Any]]:
    return [e for envelope in received for e in envelope.events()]


class DSNTests(SynchronousTestCase):
    def test_badDSN(self) -> None:
        """
        A malformed DSN is a start-up error naming the flag, without the DSN.
        """
        e = self.assertRaises(ConfigError, checkDSN, "--sentry", "http://127.0.0.1:5/1")
        self.assertIn("--sentry", str(e))
        self.assertNotIn("127.0.0.1", str(e))
        self.assertEqual(checkDSN("--sentry", "https://key@sentry.example/1"), "https://key@sentry.example/1")

    def test_specterOptions(self) -> None:
        """
        C{specter server --sentry} checks the DSN; SENTRY_DSN fills it.
        """
        base = ["server", "--data", "d", "--cert", "c"]
        o = SpecterOptions(environ={})
        e = self.assertRaises(ConfigError, o.parseOptions, [*base, "--sentry", "nope"])
        self.assertIn("--sentry", str(e))
        o = SpecterOptions(environ={"SENTRY_DSN": "https://k@sentry.example/42"})
        o.parseOptions(base)
        self.assertEqual(o.subOptions["sentry"], "https://k@sentry.example/42")
        self.assertEqual(o.subOptions.laterFeatures(), [])


class ReportingTests(TestCase):
    timeout = 60

    async def test_errorsWithBreadcrumbs(self) -> None:
        """
        An error with a failure arrives as an exception event carrying the
        earlier info lines as breadcrumbs; an error without one arrives as a
        message; secrets in fields and URLs are redacted.
        """
        site, received = sentryStandIn()
        portNumber = await serveLoopback(self, site)
        dsn = f"http://publickey@127.0.0.1:{portNumber}/42"
        publisher = LogPublisher()
        service = SentryService(dsn, reactor, publisher=publisher, release="test@1")
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        self.assertFalse(service.client.should_send_default_pii())
        log = Logger(namespace="suite.test", observer=publisher)
        # secrets made at run time, so only runtime data could carry them out
        password, token, urlPass = "hun" + "ter2", "tok-" + "secret", "s3" + "cret"
        log.info("peer {peer} joined with password={password}", peer="10.0.0.7", password=password)
        log.debug("too chatty to keep")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.failure("applying {what} failed", what="a batch", token=token)
        log.error("upstream {url} unreachable", url=f"https://ops:{urlPass}@backend.example/x")
        await _until(received, lambda r: len(_events(r)) >= 2)
        await service.stopService()

        raw = b"".join(envelope.raw for envelope in received)
        for secret in (b"hunter2", b"tok-secret", b"s3cret"):
            self.assertNotIn(secret, raw)
        events = _events(received)
        crash = next(e for e in events if e.get("exception"))
        self.assertEqual(crash["exception"]["values"][-1]["type"], "ZeroDivisionError")
        frames = crash["exception"]["values"][-1]["stacktrace"]["frames"]
        self.assertTrue(frames)
        self.assertFalse([f for f in frames if f.get("vars")])
        self.assertEqual(crash["release"], "test@1")
        self.assertEqual(crash["tags"]["logger"], "suite.test")
        crumbs = [c["message"] for c in crash["breadcrumbs"]["values"]]
        self.assertIn("peer 10.0.0.7 joined with password=***", crumbs)
        self.assertNotIn("too chatty to keep", crumbs)
        message = next(e for e in events if not e.get("exception"))
        self.assertEqual(message["level"], "error")
        text = message.get("logentry", {}).get("message") or message.get("message")
        self.assertIn("backend.example", text)

    async def test_specterServer(self) -> None:
        """
        C{specter server --sentry DSN} starts with reporting on and logs that
        it is, without the DSN's key.
        """
        site, received = sentryStandIn()
        portNumber = await serveLoopback(self, site)
        base = os.path.abspath(self.mktemp())
        initBundle(os.path.join(base, "cert"), ["127.0.0.1"])
        ring, internal = freePort(), freePort()
        proc = DaemonProcess(
            self,
            scriptArgs(
                "specter",
                "server",
                "--data",
                os.path.join(base, "data"),
                "--cert",
                os.path.join(base, "cert"),
                "--listen-tcp",
                f"127.0.0.1:{ring}",
                "--advertise-addr",
                f"127.0.0.1:{ring}",
                "--listen-rpc",
                f"tcp://127.0.0.1:{freePort()}",
                "--listen-internal",
                f"tcp://127.0.0.1:{internal}",
                "--virtual",
                "1",
            ),
            env={"SENTRY_DSN": f"http://publickey@127.0.0.1:{portNumber}/42"},
            name="specter",
        ).start()
        await proc.waitForHTTP(f"http://127.0.0.1:{internal}/readyz")
        self.assertIn("errors are reported to Sentry", proc.output())
        self.assertNotIn("publickey", proc.output())
