"""
Real processes: a gateway that drains (SIGTERM) sends its HTTP/2 visitors
GOAWAY (NO_ERROR, the last stream it took) and lets the response in flight
finish; the client is nghttp (Debian's nghttp2-client), which prints every
frame it receives.
"""

from __future__ import annotations

import re
import signal

from twisted.trial.unittest import TestCase

from tests.specter.gateway.support import GatewayHarness
from tests.specter.gateway.test_client_drain import _slowBackend
from tests.support.process import DaemonProcess


class H2DrainProcessTests(TestCase):
    timeout = 90

    async def test_goAwayAndInFlightFinishes(self) -> None:
        """
        SIGTERM while an HTTP/2 response is in flight: the visitor gets
        GOAWAY naming its stream, with NO_ERROR, then the whole response;
        nghttp exits 0 and so does the gateway.
        """
        factory, backendPort = _slowBackend(self, 1.5)
        h = GatewayHarness(self)
        await h.start()
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")
        nghttp = DaemonProcess(
            self,
            ["nghttp", "-v", "-t", "20", "-H", f":authority: {host}", f"https://127.0.0.1:{h.port}/slow"],
            name="nghttp",
        ).start()
        await factory.started
        h.gateway.sendSignal(signal.SIGTERM)
        self.assertEqual(await nghttp.waitExit(30), 0, nghttp.output())
        out = nghttp.output()
        sent = re.search(r"send HEADERS frame <[^>]*stream_id=(\d+)>", out)
        goAway = re.search(r"recv GOAWAY frame <[^>]*>\s*\(last_stream_id=(\d+), error_code=(\w+)", out)
        assert sent is not None and goAway is not None, out
        self.assertEqual(goAway.group(1, 2), (sent.group(1), "NO_ERROR"), out)
        # the body (printed between the frames) is whole, its second part
        # (written 1.5 s after the SIGTERM) after the GOAWAY, and the
        # stream ends cleanly
        after = out[goAway.end() :]
        self.assertIn("first\n", out)
        self.assertIn("second\n", after)
        self.assertRegex(
            after, rf"recv DATA frame <[^>]*flags=0x01, stream_id={sent.group(1)}>\s*; END_STREAM"
        )
        self.assertNotIn("RST_STREAM", out)
        self.assertEqual(await h.gateway.waitExit(30), 0, h.gateway.output())
