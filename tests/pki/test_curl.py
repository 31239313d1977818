"""
A real HTTP client (curl) against an mTLS server built from a bundle.
"""

from __future__ import annotations

import os
import shutil

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SkipTest, TestCase

from suite.pki.ca import initBundle
from suite.pki.tls import serverContextFactory


class _Hello(Protocol):
    """
    Answers any request with a fixed HTTP/1.1 response; its factory declares
    no ALPN protocols of its own (unlike C{twisted.web.server.Site}).
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        )
        self.transport.loseConnection()  # type: ignore[union-attr]


class CurlTests(TestCase):
    """
    curl offers ALPN by default; a server that names no ALPN protocols must
    still complete the handshake (Twisted's stock callback answers with an
    empty protocol, which OpenSSL 3 turns into an "internal error" alert).
    """

    async def test_curlWithoutServerALPN(self) -> None:
        """
        curl with a client certificate from the bundle's CA fetches a page
        from a server whose context sets no ALPN protocols.
        """
        curl = shutil.which("curl")
        if curl is None:
            raise SkipTest("curl is not installed")
        directory = self.mktemp()
        bundle = initBundle(directory, ["127.0.0.1"])
        factory = TLSMemoryBIOFactory(serverContextFactory(bundle), False, Factory.forProtocol(_Hello))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        out, err, code = await getProcessOutputAndValue(
            curl,
            [
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                os.path.join(directory, "ca.crt"),
                "--cert",
                os.path.join(directory, "node.crt"),
                "--key",
                os.path.join(directory, "node.key"),
                f"https://127.0.0.1:{port.getHost().port}/",
            ],
            env=os.environ,
        )
        self.assertEqual((code, out), (0, b"hello"), err)
