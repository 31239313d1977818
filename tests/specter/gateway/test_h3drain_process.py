"""
Real processes: a gateway that drains (SIGTERM) sends its HTTP/3 visitors
GOAWAY (RFC 9114 section 5.2) on its control stream, lets the request in
flight finish, then closes the QUIC connection with H3_NO_ERROR; the
client is aioquic's, in a subprocess (aioquic's client ignores GOAWAY, so
the script reads the gateway's control stream itself).
"""

from __future__ import annotations

import os
import signal

from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.specter.gateway.support import PY, GatewayHarness
from tests.specter.gateway.test_client_drain import _slowBackend

SCRIPT = os.path.join(os.path.dirname(__file__), "h3drainclient.py")


class H3DrainProcessTests(TestCase):
    timeout = 90

    async def test_goAwayAndInFlightFinishes(self) -> None:
        """
        SIGTERM while an HTTP/3 response is in flight: the client gets
        GOAWAY naming the stream after its request's, then the whole
        response, then the connection's close with H3_NO_ERROR (0x100);
        the gateway exits 0.
        """
        factory, backendPort = _slowBackend(self, 1.5)
        h = GatewayHarness(self)
        await h.start("--listen-udp", f"127.0.0.1:{h.port}")
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")
        await h.gateway.waitForLog("HTTP/3 \\(QUIC\\) listening")
        client = Deferred.fromCoroutine(_run(host, h.port, h.cacert))
        await factory.started
        h.gateway.sendSignal(signal.SIGTERM)
        out, err, code = await client
        self.assertEqual(code, 0, err)
        self.assertEqual(
            out,
            "stream=0\nstatus=200\nbody=b'first\\nsecond\\n'\ngoaways=[4]\nclosed=256\n",
            err,
        )
        self.assertEqual(await h.gateway.waitExit(30), 0, h.gateway.output())


async def _run(host: str, port: int, cafile: str) -> tuple[str, str, int]:
    out, err, code = await getProcessOutputAndValue(
        PY, [SCRIPT, host, str(port), "/slow", cafile], env=os.environ
    )
    return out.decode(), err.decode(), code
