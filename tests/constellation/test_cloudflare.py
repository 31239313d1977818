"""
The Cloudflare provider against a local stand-in of the v4 DNS records API.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from suite.constellation.cloudflare import CloudflareError, CloudflareProvider
from suite.constellation.dns import Fenced
from suite.constellation.interfaces import IDNSProvider
from suite.logging import Secret
from tests.support.cloudflare import CloudflareStandIn

ZONE = "0123456789abcdef0123456789abcdef"
DOMAIN = "example.test"


class CloudflareTests(TestCase):
    timeout = 60

    async def _serve(self) -> tuple[CloudflareStandIn, str]:
        standIn = CloudflareStandIn(ZONE, "tok")
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(standIn))
        self.addCleanup(port.stopListening)
        return standIn, f"http://127.0.0.1:{port.getHost().port}/client/v4"

    def provider(self, api: str, token: str = "tok") -> CloudflareProvider:
        return CloudflareProvider(reactor, ZONE, Secret(token), DOMAIN, api)

    async def test_minimalChangesAndFence(self) -> None:
        standIn, api = await self._serve()
        p = self.provider(api)
        self.assertTrue(verifyObject(IDNSProvider, p))
        await p.apply([(DOMAIN, ["192.0.2.1"]), (f"*.{DOMAIN}", ["192.0.2.1"])], 5)
        self.assertEqual(
            await p.records([DOMAIN, f"*.{DOMAIN}", f"*.n1.{DOMAIN}"]),
            {DOMAIN: ["192.0.2.1"], f"*.{DOMAIN}": ["192.0.2.1"]},
        )
        before = len(standIn.calls)
        await p.apply([(DOMAIN, ["192.0.2.1", "2001:db8::1"])], 5)
        writes = [c for c in standIn.calls[before:] if c[0] != "GET"]
        self.assertEqual([m for m, _ in writes], ["POST"])  # only the new AAAA
        self.assertEqual(standIn.addresses(DOMAIN), ["192.0.2.1", "2001:db8::1"])
        await p.apply([(DOMAIN, ["192.0.2.7"])], 6)
        self.assertEqual(standIn.addresses(DOMAIN), ["192.0.2.7"])
        with self.assertRaises(Fenced):
            await self.provider(api).apply([(DOMAIN, ["192.0.2.1"])], 5)
        self.assertEqual(standIn.addresses(DOMAIN), ["192.0.2.7"])

    async def test_addsBeforeRemoving(self) -> None:
        """
        A name moving to another address gets the new record before the old
        one is deleted: when the write of the new one fails (here Cloudflare's
        rate limit), the name still resolves to the old address.
        """
        standIn, api = await self._serve()
        p = self.provider(api)
        await p.apply([(DOMAIN, ["192.0.2.1"])], 5)
        render = standIn.render

        def limited(request: Any) -> bytes:
            if request.method == b"POST" and b"192.0.2.9" in request.content.getvalue():
                standIn.calls.append(("POST", request.path.decode()))
                request.setHeader(b"retry-after", b"7")
                return standIn._answer(request, 429, errors=[{"code": 10000, "message": "rate limited"}])
            return render(request)

        standIn.render = limited  # type: ignore[method-assign]
        before = len(standIn.calls)
        with self.assertRaises(CloudflareError) as cm:
            await p.apply([(DOMAIN, ["192.0.2.9"])], 5)
        self.assertIn("HTTP 429", str(cm.exception))
        self.assertEqual(cm.exception.retryAfter, 7.0)
        self.assertEqual(standIn.addresses(DOMAIN), ["192.0.2.1"])
        self.assertNotIn("DELETE", [m for m, _ in standIn.calls[before:]])
        standIn.render = render  # type: ignore[method-assign]
        before = len(standIn.calls)
        await p.apply([(DOMAIN, ["192.0.2.9"])], 5)
        self.assertEqual([m for m, _ in standIn.calls[before:] if m != "GET"], ["POST", "DELETE"])
        self.assertEqual(standIn.addresses(DOMAIN), ["192.0.2.9"])

    async def test_badTokenIsOneLine(self) -> None:
        _, api = await self._serve()
        try:
            await self.provider(api, "wrong").records([DOMAIN])
        except CloudflareError as e:
            self.assertIn("403", str(e))
            self.assertNotIn("wrong", str(e))
        else:
            self.fail("no CloudflareError")

    async def test_boundedAnswer(self) -> None:
        """
        An answer larger than 4 MiB is refused without being read whole, and
        one whose body stops coming fails at the timeout: one line each.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import NOT_DONE_YET

        pending: list[Any] = []

        class Endless(Resource):
            isLeaf = True

            def __init__(self, stall: bool) -> None:
                super().__init__()
                self.stall = stall

            def render_GET(self, request: Any) -> Any:
                pending.append(request)
                if self.stall:
                    request.write(b'{"success": true, "result": [')
                else:
                    for _ in range(5):
                        request.write(b" " * (1024 * 1024))
                return NOT_DONE_YET

        def finish() -> None:
            for request in pending:
                if not request.finished and not request._disconnected:
                    request.finish()

        self.addCleanup(finish)
        for stall, why in ((False, "answer larger than 4194304 bytes"), (True, "no answer within 0.5 s")):
            port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(Endless(stall)))
            self.addCleanup(port.stopListening)
            api = f"http://127.0.0.1:{port.getHost().port}/client/v4"
            provider = CloudflareProvider(
                reactor, ZONE, Secret("tok"), DOMAIN, api, timeout=0.5 if stall else 30
            )
            with self.assertRaises(CloudflareError) as caught:
                await provider.records([DOMAIN])
            self.assertIn(why, str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))
