"""
End-to-end: a real gateway process, a real C{specter client} process, a
backend on loopback and real curl.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from suite.pki.ca import initBundle, writeClientCertificate
from tests.specter.gateway.support import listenLocal
from tests.support.process import DaemonProcess, freePort

PY = sys.executable
APEX = "example.test"


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"hello from the backend " + request.uri


class _Echo(Protocol):
    transport: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class GatewayHarness:
    """
    A CA, a gateway process and helpers for one test.
    """

    def __init__(self, test: TestCase) -> None:
        self.test = test
        self.base = os.path.abspath(test.mktemp())
        os.makedirs(self.base)
        self.certs = os.path.join(self.base, "certs")
        bundle = initBundle(self.certs, ["127.0.0.1"])
        self.alice = os.path.join(self.base, "alice")
        writeClientCertificate(bundle, "alice", self.alice)
        self.port = freePort()
        self.data = os.path.join(self.base, "data")
        self.cacert = os.path.join(self.data, "gateway", "selfsigned.crt")

    async def start(self, *extra: str) -> None:
        argv = [
            PY,
            "-m",
            "suite.specter.gateway",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--cert-dir",
            self.certs,
            "--apex",
            APEX,
            "--data-dir",
            self.data,
            *extra,
        ]
        self.gateway = DaemonProcess(self.test, argv, name="gateway")
        self.gateway.start()
        await self.gateway.waitForPort(self.port)

    def client(self, *args: str, identity: str | None = None, name: str = "client") -> DaemonProcess:
        argv = [
            PY,
            "-m",
            "suite.specter.client",
            "--server",
            f"127.0.0.1:{self.port}",
            "--cert-dir",
            identity or self.alice,
            *args,
        ]
        return DaemonProcess(self.test, argv, name=name).start()

    async def tunnel(self, target: str) -> tuple[DaemonProcess, str]:
        proc = self.client("tunnel", "--target", target, name=f"tunnel-{freePort()}")
        match = await proc.waitForLog(r"tunnel (\S+) linked through")
        return proc, match.group(1)

    async def curl(self, host: str, *extra: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(
            "curl",
            [
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                self.cacert,
                "--resolve",
                f"{host}:{self.port}:127.0.0.1",
                "-w",
                "\n%{http_code} %{http_version}",
                *extra,
                f"https://{host}:{self.port}/path?q=1",
            ],
            env=os.environ,
        )
        return out.decode(), err.decode(), code


def _listen(factory: Any) -> tuple[Any, int]:
    port, portNumber = listenLocal(factory)
    return port, portNumber


class GatewayEndToEndTests(TestCase):
    timeout = 90

    async def test_httpThroughTunnel(self) -> None:
        """
        curl over HTTP/1.1 and HTTP/2 reaches the backend through gateway and
        tunnel; an unknown host gets 404, oversized headers 431.
        """
        port, backendPort = _listen(Site(_Hello()))
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

    async def test_rawTCPConnect(self) -> None:
        """
        Bytes on stdin of 'specter client connect HOST' reach a TCP echo
        backend through the raw-TCP ALPN and come back on stdout; 'ls' lists
        the hostname and 'release' forgets it.
        """
        port, echoPort = _listen(Factory.forProtocol(_Echo))
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
        out, err, code = await getProcessOutputAndValue(
            PY,
            ["-m", "suite.specter.client", "--server", f"127.0.0.1:{h.port}", "--cert-dir", h.alice, "ls"],
            env=os.environ,
        )
        self.assertEqual(code, 0, err)
        self.assertIn(host, out.decode().split())
        out, err, code = await getProcessOutputAndValue(
            PY,
            [
                "-m",
                "suite.specter.client",
                "--server",
                f"127.0.0.1:{h.port}",
                "--cert-dir",
                h.alice,
                "release",
                host,
            ],
            env=os.environ,
        )
        self.assertEqual(code, 0, err)
        out, err, code = await getProcessOutputAndValue(
            PY,
            ["-m", "suite.specter.client", "--server", f"127.0.0.1:{h.port}", "--cert-dir", h.alice, "ls"],
            env=os.environ,
        )
        self.assertNotIn(host, out.decode().split())

    async def test_foreignClientCertificateRefused(self) -> None:
        """
        A client certificate from another CA cannot open a tunnel link.
        """
        h = GatewayHarness(self)
        other = initBundle(os.path.join(h.base, "other"), ["127.0.0.1"])
        mallory = os.path.join(h.base, "mallory")
        writeClientCertificate(other, "mallory", mallory)
        # mallory trusts the real gateway CA, so only the gateway's check can refuse her
        with (
            open(os.path.join(h.certs, "ca.crt"), "rb") as f,
            open(os.path.join(mallory, "ca.crt"), "wb") as g,
        ):
            g.write(f.read())
        await h.start()
        out, err, code = await getProcessOutputAndValue(
            PY,
            [
                "-m",
                "suite.specter.client",
                "--server",
                f"127.0.0.1:{h.port}",
                "--cert-dir",
                mallory,
                "--timeout",
                "5",
                "ls",
            ],
            env=os.environ,
        )
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

        port, backendPort = _listen(HAProxyWrappingFactory(Site(_WhoAmI())))
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
        port, backendPort = _listen(Site(_Hello()))
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
        port, backendPort = _listen(Site(_Hello()))
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


class HTTP2LimitTests(TestCase):
    timeout = 60

    async def test_oversizedBody(self) -> None:
        """
        An HTTP/2 request body over the limit is answered 413, and the
        gateway keeps serving.
        """
        port, backendPort = _listen(Site(_Hello()))
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
