"""
Real processes: a gateway that drains (SIGTERM) shuts its HTTP/2 visitors'
connections down gracefully (RFC 9113 section 6.8: GOAWAY NO_ERROR naming
2^31-1 and a PING, then, once the PING is acknowledged, GOAWAY naming the
last stream it took) and lets the response in flight finish; the client is
nghttp (Debian's nghttp2-client), which prints every frame it sends and
receives.
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
        GOAWAY 2^31-1 and a PING, acknowledges it, then gets GOAWAY naming
        its stream, both with NO_ERROR, then the whole response; nghttp
        exits 0 and so does the gateway.
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
        goAways = list(
            re.finditer(r"recv GOAWAY frame <[^>]*>\s*\(last_stream_id=(\d+), error_code=(\w+)", out)
        )
        assert sent is not None, out
        self.assertEqual(
            [g.group(1, 2) for g in goAways], [("2147483647", "NO_ERROR"), (sent.group(1), "NO_ERROR")], out
        )
        # the PING came with the first GOAWAY and was acknowledged before the second
        between = out[goAways[0].end() : goAways[1].start()]
        self.assertRegex(out[goAways[0].end() :], r"recv PING frame <length=8, flags=0x00")
        self.assertRegex(
            between, r"send PING frame <length=8, flags=0x01[^>]*>\s*; ACK\s*\(opaque_data=647261696e000000\)"
        )
        # the body (printed between the frames) is whole, its second part
        # (written 1.5 s after the SIGTERM) after the final GOAWAY, and the
        # stream ends cleanly
        after = out[goAways[1].end() :]
        self.assertIn("first\n", out)
        self.assertIn("second\n", after)
        self.assertRegex(
            after, rf"recv DATA frame <[^>]*flags=0x01, stream_id={sent.group(1)}>\s*; END_STREAM"
        )
        self.assertNotIn("RST_STREAM", out)
        self.assertEqual(await h.gateway.waitExit(30), 0, h.gateway.output())
