"""
Real processes: C{specter client tunnel} on SIGTERM finishes the responses
in flight within its grace period, and resets (never completes) the ones
that outlast it; a client certificate the gateway refuses is reported and
ends the command with exit status 1.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.specter.gateway.support import GatewayHarness, curlTLS, listenLocal


class _Slow(Protocol):
    """
    Answers any request with a body delimited by the connection's end
    (the hardest case: nothing but a clean close says it is complete),
    written in two parts C{delay} seconds apart.
    """

    transport: Any = None
    head = b""

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in self.head:
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        factory = self.factory
        assert isinstance(factory, _SlowFactory)
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nfirst\n"
        )
        factory.requests += 1
        if factory.requests == factory.expect:
            factory.started.callback(None)
        self.call = reactor.callLater(factory.delay, self.finish)

    def finish(self) -> None:
        self.transport.write(b"second\n")
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        call = getattr(self, "call", None)
        if call is not None and call.active():
            call.cancel()


class _SlowFactory(Factory[_Slow]):
    """
    Builds L{_Slow}: each waits C{delay} seconds before finishing;
    C{started} fires once C{expect} requests arrived.
    """

    protocol = _Slow

    def __init__(self, delay: float, expect: int) -> None:
        self.delay = delay
        self.requests = 0
        self.expect = expect
        self.started: Deferred[None] = Deferred()


def _slowBackend(test: TestCase, delay: float, expect: int = 1) -> tuple[_SlowFactory, int]:
    """
    A L{_Slow} backend; its factory's C{started} fires once C{expect}
    requests arrived.
    """
    factory = _SlowFactory(delay, expect)
    port, number = listenLocal(factory)
    test.addCleanup(port.stopListening)
    return factory, number


class ClientDrainTests(TestCase):
    timeout = 90

    async def _curl(self, h: GatewayHarness, host: str, *flags: str) -> tuple[str, str, int]:
        return await curlTLS(host, h.port, h.cacert, "/slow", *flags, maxTime=20)

    async def test_inFlightResponsesFinish(self) -> None:
        """
        SIGTERM during a response: it completes, a request arriving
        meanwhile is not sent to the draining client, and the client exits 0.
        """
        factory, backendPort = _slowBackend(self, 1.5)
        h = GatewayHarness(self)
        await h.start()
        proc = h.client("tunnel", "--drain-timeout", "20", "--target", f"http://127.0.0.1:{backendPort}")
        host = (await proc.waitForLog(r"tunnel (\S+) linked through")).group(1)
        visitor = Deferred.fromCoroutine(self._curl(h, host, "--http1.1"))
        await factory.started
        proc.sendSignal(signal.SIGTERM)
        await proc.waitForLog("draining tunnel links")
        await h.gateway.waitForLog("is draining its link")
        late, _, _ = await self._curl(h, host, "--http1.1", "-o", "/dev/null", "-w", "%{http_code}")
        self.assertNotEqual(late, "200")
        out, err, code = await visitor
        self.assertEqual((out, code), ("first\nsecond\n", 0), err)
        self.assertEqual(await proc.waitExit(15), 0, proc.output())

    async def test_overdueResponsesReset(self) -> None:
        """
        A response still running when the grace period ends is reset: the
        HTTP/1.1 and HTTP/2 visitors see an error, not a complete answer.
        """
        factory, backendPort = _slowBackend(self, 30, expect=2)
        h = GatewayHarness(self)
        await h.start()
        proc = h.client("tunnel", "--drain-timeout", "1", "--target", f"http://127.0.0.1:{backendPort}")
        host = (await proc.waitForLog(r"tunnel (\S+) linked through")).group(1)
        h1 = Deferred.fromCoroutine(self._curl(h, host, "--http1.1"))
        h2 = Deferred.fromCoroutine(self._curl(h, host, "--http2"))
        await factory.started
        proc.sendSignal(signal.SIGTERM)
        self.assertEqual(await proc.waitExit(15), 0, proc.output())
        self.assertIn("resetting them", proc.output())
        for visitor, name in ((h1, "HTTP/1.1"), (h2, "HTTP/2")):
            out, err, code = await visitor
            self.assertNotEqual(code, 0, f"{name}: {out!r} looked complete ({err})")
            self.assertNotIn("second", out)


class RefusedCertificateTests(TestCase):
    timeout = 60

    async def test_refusalReportedAndFatal(self) -> None:
        """
        A client certificate from another CA: C{tunnel} (without
        --verbose) names the TLS alert and the refusal, and exits 1.
        """
        h = GatewayHarness(self)
        mallory = h.foreignClient()
        await h.start()
        out, err, code = await h.runClient("tunnel", "--target", "http://127.0.0.1:1", identity=mallory)
        self.assertEqual(code, 1)
        lines = [line for line in err.decode().splitlines() if not line.startswith("{")]
        self.assertEqual(len(lines), 1, err)
        last = lines[0]
        self.assertTrue(last.startswith("specter client tunnel: error: gateway 127.0.0.1:"), last)
        self.assertIn("alert unknown ca", last)
        self.assertIn("certificate not trusted by the gateway", last)
