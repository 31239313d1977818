"""
End-to-end: a real gateway process, a real C{specter client} process, a
backend on loopback and real curl.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.specter.gateway.support import APEX, PY, GatewayHarness, listenLocal
from tests.support.process import freePort


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"hello from the backend " + request.uri


class _Echo(Protocol):
    transport: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class GatewayEndToEndTests(TestCase):
    timeout = 90

    async def test_httpThroughTunnel(self) -> None:
        """
        curl over HTTP/1.1 and HTTP/2 reaches the backend through gateway and
        tunnel; an unknown host gets 404, oversized headers 431 (over both).
        """
        port, backendPort = listenLocal(Site(_Hello()))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        await h.start()
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")
        self.assertTrue(host.endswith("." + APEX))
        out, err, code = await h.curl(host, "--http1.1")
        self.assertEqual(code, 0, err)
        self.assertIn("hello from the backend /path?q=1", out)
        self.assertTrue(out.endswith("200 1.1"), out)
        out, err, code = await h.curl(host, "--http2")
        self.assertEqual(code, 0, err)
        self.assertIn("hello from the backend /path?q=1", out)
        self.assertTrue(out.endswith("200 2"), out)
        out, _, _ = await h.curl("nobody." + APEX, "--http1.1")
        self.assertIn("no tunnel is serving nobody." + APEX, out)
        self.assertTrue(out.endswith("404 1.1"), out)
        out, _, _ = await h.curl("nobody." + APEX, "--http2")
        self.assertTrue(out.endswith("404 2"), out)
        out, _, _ = await h.curl(host, "--http1.1", "-H", "X-Big: " + "a" * 20000)
        self.assertTrue(out.endswith("431 1.1"), out)
        # over HTTP/2 the refused stream is answered 431 too (not reset)
        out, err, code = await h.curl(host, "--http2", "-H", "X-Big: " + "a" * 20000)
        self.assertEqual(code, 0, err)
        self.assertIn("request headers larger than 16384 bytes", out)
        self.assertTrue(out.endswith("431 2"), out)

    async def test_rawTCPConnect(self) -> None:
        """
        Bytes on stdin of 'specter client connect HOST' reach a TCP echo
        backend through the raw-TCP ALPN and come back on stdout; 'ls' lists
        the hostname and 'release' forgets it.
        """
        port, echoPort = listenLocal(Factory.forProtocol(_Echo))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        await h.start()
        _, host = await h.tunnel(f"tcp://127.0.0.1:{echoPort}")
        script = (
            "import subprocess,sys;"
            "r=subprocess.run(sys.argv[1:],input=b'ping through the tunnel\\n',capture_output=True,timeout=30);"
            "sys.stdout.buffer.write(r.stdout);sys.exit(r.returncode)"
        )
        out, err, code = await getProcessOutputAndValue(
            PY,
            [
                "-c",
                script,
                PY,
                "-m",
                "suite.specter.client",
                "--server",
                f"127.0.0.1:{h.port}",
                "connect",
                "--cacert",
                h.cacert,
                "--linger",
                "1",
                host,
            ],
            env=os.environ,
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(out, b"ping through the tunnel\n")
        base = [
            PY,
            "-m",
            "suite.specter.client",
            "--server",
            f"127.0.0.1:{h.port}",
            "connect",
            "--linger",
            "1",
        ]
        out, err, code = await getProcessOutputAndValue(
            PY, ["-c", script, *base, "--insecure", host], env=os.environ
        )
        self.assertEqual((code, out), (0, b"ping through the tunnel\n"), err)
        out, err, code = await getProcessOutputAndValue(PY, ["-c", script, *base, host], env=os.environ)
        self.assertNotEqual(code, 0, "an unverifiable gateway certificate must fail")
        out, err, code = await h.runClient("ls")
        self.assertEqual(code, 0, err)
        self.assertIn(host, out.decode().split())
        out, err, code = await h.runClient("release", host)
        self.assertEqual(code, 0, err)
        out, err, code = await h.runClient("ls")
        self.assertNotIn(host, out.decode().split())

    async def test_foreignClientCertificateRefused(self) -> None:
        """
        A client certificate from another CA cannot open a tunnel link.
        """
        h = GatewayHarness(self)
        mallory = h.foreignClient()
        await h.start()
        out, err, code = await h.runClient("--timeout", "5", "ls", identity=mallory)
        self.assertNotEqual(code, 0)
        self.assertIn(b"specter client", err)
        await h.gateway.waitForLog("TLS peer certificate refused")


class _WhoAmI(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return f"client={request.getClientAddress().host}".encode()


_PROXY_VISITOR = r"""
import socket, ssl, sys
host, port, cafile, header = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
raw = socket.create_connection(("127.0.0.1", port), timeout=10)
if header:
    raw.sendall(header.encode() + b"\r\n")
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
try:
    s = ctx.wrap_socket(raw, server_hostname=host)
    s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    sys.stdout.write(data.decode())
except (ssl.SSLError, OSError) as e:
    sys.stdout.write("refused: " + type(e).__name__)
"""


class GatewayEdgeTests(TestCase):
    timeout = 90

    async def test_proxyProtocol(self) -> None:
        """
        With --proxy-protocol the visitor address from the PROXY header
        reaches the backend (the client passes it on as a PROXY line);
        a visitor without a header is refused.
        """
        from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

        port, backendPort = listenLocal(HAProxyWrappingFactory(Site(_WhoAmI())))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        await h.start("--proxy-protocol")
        proc = h.client(
            "tunnel", "--proxy-protocol", "--target", f"http://127.0.0.1:{backendPort}", name="tunnel"
        )
        host = (await proc.waitForLog(r"tunnel (\S+) linked through")).group(1)
        out, err, code = await getProcessOutputAndValue(
            PY,
            ["-c", _PROXY_VISITOR, host, str(h.port), h.cacert, "PROXY TCP4 203.0.113.7 127.0.0.1 40000 443"],
            env=os.environ,
        )
        self.assertIn("client=203.0.113.7", out.decode(), err)
        out, err, code = await getProcessOutputAndValue(
            PY, ["-c", _PROXY_VISITOR, host, str(h.port), h.cacert, ""], env=os.environ
        )
        self.assertNotIn("client=", out.decode())
        out, err, code = await getProcessOutputAndValue(
            PY, ["-c", _PROXY_VISITOR, host, str(h.port), h.cacert, "PROXY TCP4 bogus"], env=os.environ
        )
        self.assertNotIn("client=", out.decode())
        self.assertTrue(h.gateway.running())

    async def test_connectAndRedirect(self) -> None:
        """
        The plain HTTP listener tunnels CONNECT to a tunnel hostname and
        redirects anything else to HTTPS.
        """
        port, backendPort = listenLocal(Site(_Hello()))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        httpPort = freePort()
        await h.start("--listen-http", f"tcp:{httpPort}:interface=127.0.0.1")
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")
        out, err, code = await getProcessOutputAndValue(
            "curl",
            [
                "-sS",
                "--max-time",
                "10",
                "--proxytunnel",
                "--proxy",
                f"http://127.0.0.1:{httpPort}",
                f"http://{host}/via-connect",
            ],
            env=os.environ,
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"hello from the backend /via-connect", out)
        out, err, code = await getProcessOutputAndValue(
            "curl",
            [
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                "-H",
                f"Host: {host}",
                f"http://127.0.0.1:{httpPort}/a/b?c=d",
            ],
            env=os.environ,
        )
        self.assertEqual(out.decode(), f"308 https://{host}:{h.port}/a/b?c=d")


class HTTP3Tests(TestCase):
    timeout = 90

    async def test_http3(self) -> None:
        """
        An aioquic HTTP/3 client reaches the backend through the QUIC
        listener (gateway on the asyncio reactor); HTTP/2 answers carry
        Alt-Svc for h3, and so does the first HTTP/1.1 answer of a connection.
        """
        port, backendPort = listenLocal(Site(_Hello()))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        await h.start("--listen-udp", f"127.0.0.1:{h.port}")
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")
        await h.gateway.waitForLog("HTTP/3 \\(QUIC\\) listening")
        script = os.path.join(os.path.dirname(__file__), "h3client.py")
        out, err, code = await getProcessOutputAndValue(
            PY, [script, host, str(h.port), "/over/quic", h.cacert], env=os.environ
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(out.decode(), "status=200\nhello from the backend /over/quic")
        out, err, code = await h.curl(host, "--http2", "-D", "-")
        self.assertIn(f'alt-svc: h3=":{h.port}"', out)
        out, err, code = await h.curl(host, "--http1.1", "-D", "-")
        self.assertIn(f'Alt-Svc: h3=":{h.port}"', out)
        self.assertIn("hello from the backend /path?q=1", out)

    async def test_altSvcNamesTheAdvertisedPort(self) -> None:
        """
        Alt-Svc names the advertised port (the one visitors reach, as the
        HTTPS redirects do), not a UDP bind behind a port mapping; with no
        UDP bind on that port, start-up says so in a warning.
        """
        port, backendPort = listenLocal(Site(_Hello()))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        udp = freePort()
        await h.start("--listen-udp", f"127.0.0.1:{udp}", "--advertise", f"127.0.0.1:{h.port}")
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")
        await h.gateway.waitForLog("HTTP/3 \\(QUIC\\) listening")
        await h.gateway.waitForLog(f"advertised port {h.port}, where no UDP bind listens")
        out, err, code = await h.curl(host, "--http2", "-D", "-")
        self.assertIn(f'alt-svc: h3=":{h.port}"', out)
        self.assertNotIn(f":{udp}", out)


class HTTP2LimitTests(TestCase):
    timeout = 60

    async def test_oversizedBody(self) -> None:
        """
        An HTTP/2 request body over the limit is answered 413, and the
        gateway keeps serving.
        """
        port, backendPort = listenLocal(Site(_Hello()))
        self.addCleanup(port.stopListening)
        h = GatewayHarness(self)
        await h.start()
        _, host = await h.tunnel(f"http://127.0.0.1:{backendPort}")
        big = os.path.join(h.base, "big")
        with open(big, "wb") as f:
            f.write(b"x" * (9 * 1024 * 1024))
        out, err, code = await h.curl(host, "--http2", "--data-binary", f"@{big}")
        self.assertTrue(out.endswith("413 2"), out[-200:] + err)
        out, err, code = await h.curl(host, "--http2")
        self.assertTrue(out.endswith("200 2"), out)
