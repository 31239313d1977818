"""
End to end with real processes: C{specter server --apex example.test
--acme ...} gets a certificate for the apex and its wildcard from Debian's
C{pebble}, proving DNS-01 through the ring KV set C{acme/challenge/managed}
answered by a real C{specter dns} for the zone C{acme.test}.

pebble asks its one DNS server directly for C{_acme-challenge.example.test};
that server is a small in-test stand-in for public DNS (twisted.names on a
loopback port) answering with the operator's CNAME to
C{managed.acme.test} and the TXT records it fetched from C{specter dns}.
A second node joining afterwards serves the certificate the first stored
in the ring KV without ordering one.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from typing import Any

import treq
from cryptography import x509
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.utils import getProcessOutputAndValue
from twisted.names import client as dnsclient
from twisted.names import dns, server
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from suite.pki.ca import writeClientCertificate
from suite.pki.load import loadBundle
from tests.specter.ring import RingProcess, makeBundles
from tests.support.pebble import PEBBLE, startPebble
from tests.support.process import DaemonProcess, freePort, scriptArgs

CURL = shutil.which("curl")
APEX = "example.test"
ZONE = "acme.test"
DOMAIN = "shop.customer.test"


class PublicDNS(ResolverBase):
    """
    The public DNS as pebble sees it: C{_acme-challenge.example.test} is a
    CNAME to C{managed.acme.test}, whose TXT records are asked of the
    solver (one recursive step); every other name exists with no records.
    """

    def __init__(self, solverPort: int) -> None:
        super().__init__()
        #: False: the operator has not published the CNAME.
        self.delegated = True
        #: More CNAMEs published: C{_acme-challenge.<domain>} -> target.
        self.cnames: dict[str, str] = {}
        self.upstream = dnsclient.Resolver(servers=[("127.0.0.1", solverPort)], reactor=reactor)
        self.fetched: list[list[bytes]] = []

    async def _answer(
        self, name: bytes, to: str = f"managed.{ZONE}"
    ) -> tuple[list[Any], list[Any], list[Any]]:
        target = to.encode()
        try:
            answers, _, _ = await self.upstream.lookupText(target, timeout=(2, 2))
        except DNSNameError:
            answers = []  # a token's set is empty (NXDOMAIN) until an order publishes values
        records = [a for a in answers if a.type == dns.TXT]
        self.fetched.append([b"".join(a.payload.data) for a in records])
        cname = dns.RRHeader(name, dns.CNAME, dns.IN, 0, dns.Record_CNAME(target, ttl=0))
        txts = [dns.RRHeader(target, dns.TXT, dns.IN, 0, a.payload) for a in records]
        return [cname, *txts], [], []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> defer.Deferred[Any]:
        text = name.decode("ascii").lower().rstrip(".")
        wanted = type in (dns.TXT, dns.CNAME, dns.ALL_RECORDS)
        if self.delegated and wanted and text == f"_acme-challenge.{APEX}":
            return defer.Deferred.fromCoroutine(self._answer(name))
        if wanted and text in self.cnames:
            return defer.Deferred.fromCoroutine(self._answer(name, self.cnames[text]))
        return defer.succeed(([], [], []))


class ACMEServerTests(TestCase):
    """
    pebble, one ring node with the gateway and ACME, the solver, the
    public-DNS stand-in.
    """

    timeout = 180

    def setUp(self) -> None:
        if not os.access(PEBBLE, os.X_OK):
            raise SkipTest("pebble is not installed (apt-get install pebble)")
        if CURL is None:
            raise SkipTest("curl is not installed")
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    async def startPublicDNS(self, solverPort: int) -> tuple[int, PublicDNS]:
        resolver = PublicDNS(solverPort)
        factory = server.DNSServerFactory(authorities=[resolver])
        port = freePort()
        udp = reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")  # type: ignore[attr-defined]
        tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        self.addCleanup(tcp.stopListening)
        return port, resolver

    async def fetch(self, name: str, port: int, caPath: str, path: str) -> tuple[int, bytes, bytes]:
        """
        GET C{https://name:port/path} with curl trusting C{caPath}: exit
        code, body followed by a line with the HTTP status, and stderr.
        """
        assert CURL is not None
        out, err, code = await getProcessOutputAndValue(
            CURL,
            [
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                caPath,
                "--resolve",
                f"{name}:{port}:127.0.0.1",
                "-w",
                "\n%{http_code}",
                f"https://{name}:{port}{path}",
            ],
            env=dict(os.environ),
            reactor=reactor,
        )
        return code, out, err

    async def curl(self, name: str, port: int, caPath: str) -> tuple[int, str]:
        assert CURL is not None
        out, err, code = await getProcessOutputAndValue(
            CURL,
            [
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
                "--cacert",
                caPath,
                "--resolve",
                f"{name}:{port}:127.0.0.1",
                f"https://{name}:{port}/",
            ],
            env=dict(os.environ),
            reactor=reactor,
        )
        return code, (out + err).decode()

    async def startAll(self, delegated: bool = True, *extra: str) -> RingProcess:
        """
        The public-DNS stand-in (with the CNAME published or not), pebble,
        the solver and one ring node with the gateway and ACME.
        """
        solverPort = freePort()
        dnsPort, self.public = await self.startPublicDNS(solverPort)
        self.pebble = pebble = await startPebble(self, dnsPort=dnsPort)
        self.pebbleCA = pebbleCA = os.path.join(self.base, "pebble-tls-ca.pem")
        with open(pebbleCA, "wb") as f:
            f.write(pebble.tlsCAPEM)
        self.cert, self.secondCert = makeBundles(self.base, 2)
        sockDir = tempfile.mkdtemp(prefix="sacme-", dir="/tmp")
        self.addCleanup(shutil.rmtree, sockDir, True)
        rpc = f"unix://{sockDir}/rpc.sock"

        solver = DaemonProcess(
            self,
            scriptArgs(
                "specter",
                "dns",
                "--acme",
                f"acme://ops@{APEX}@{ZONE}",
                "--acme-ns",
                f"ns1.{ZONE}/127.0.0.1",
                "--rpc",
                rpc,
                "--listen-addr",
                f"127.0.0.1:{solverPort}",
            ),
            name="dns",
        ).start()
        await solver.waitForLog(f"ACME DNS for {ZONE}")

        self.ring = ring = RingProcess(
            self,
            self.base,
            "ring",
            self.cert,
            "--listen-rpc",
            rpc,
            "--virtual",
            "2",
            "--aof-flush-interval",
            "0.1",
            "--apex",
            APEX,
            "--acme",
            f"acme://ops@{APEX}@{ZONE}",
            "--acme-directory",
            pebble.directoryURL,
            "--acme-ca",
            pebbleCA,
            "--auth_user",
            "ops",
            "--auth_pass",
            "pw",
            "--dns-resolver",
            f"127.0.0.1:{dnsPort}",
            *extra,
        ).start()
        self.public.delegated = delegated
        await ring.ready()
        return ring

    async def test_certificateFromPebble(self) -> None:
        """
        The server logs the acquired certificate; curl verifies the apex
        and a name one label under it against pebble's root (a name two
        labels deep still gets the self-signed one); the challenge set is
        empty afterwards; a second node serves the shared certificate;
        /metrics shows it Valid.
        """
        ring = await self.startAll()
        await ring.proc.waitForLog(
            r"acquired ACME certificate for example\.test, \*\.example\.test", timeout=90
        )
        await ring.proc.waitForLog(r"serving the ACME certificate of example\.test", timeout=10)
        self.assertTrue(any(values for values in self.public.fetched), self.public.fetched)

        root = await self.pebble.get("/roots/0")
        x509.load_pem_x509_certificate(root)
        rootPath = os.path.join(self.base, "pebble-root.pem")
        with open(rootPath, "wb") as f:
            f.write(root)
        for name in (APEX, f"www.{APEX}"):
            code, text = await self.curl(name, ring.port, rootPath)
            self.assertEqual(code, 0, f"curl https://{name}: {text}")
        # a name two labels deep is not covered by the wildcard: self-signed, refused
        code, text = await self.curl(f"a.b.{APEX}", ring.port, rootPath)
        self.assertNotEqual(code, 0, text)

        client = await ring.rpc()
        self.assertEqual(await client.kv("list", b"acme/challenge/managed"), [])
        stored = await client.kv("get", b"acme/cert/example.test")
        self.assertIn(b"PRIVATE KEY", stored)
        # a second gateway joining the ring serves the shared certificate without ordering one
        second = RingProcess(
            self,
            self.base,
            "second",
            self.secondCert,
            "--virtual",
            "2",
            "--aof-flush-interval",
            "0.1",
            "--join",
            ring.addr,
            "--apex",
            APEX,
            "--acme",
            f"acme://ops@{APEX}@{ZONE}",
            "--acme-directory",
            self.pebble.directoryURL,
            "--acme-ca",
            self.pebbleCA,
        ).start()
        await second.ready()
        await second.proc.waitForLog(r"serving the ACME certificate of example\.test", timeout=30)
        self.assertNotIn("acquired ACME certificate", second.proc.output())
        code, text = await self.curl(f"www.{APEX}", second.port, rootPath)
        self.assertEqual(code, 0, f"curl https://www.{APEX} on the second node: {text}")

        response = await treq.get(f"http://127.0.0.1:{ring.httpPort}/metrics", timeout=10, persistent=False)
        body = await response.content()
        self.assertIn(b'specter_acme_certificate_state{name="example.test",state="Valid"} 1.0', body)
        response = await treq.get(
            f"http://127.0.0.1:{ring.httpPort}/_internal/acme",
            auth=("ops", "pw"),
            timeout=10,
            persistent=False,
        )
        self.assertEqual(response.code, 200)
        [inventory] = (await response.json())["certificates"]
        self.assertEqual(
            (inventory["name"], inventory["names"], inventory["state"], inventory["served"]),
            (APEX, [APEX, f"*.{APEX}"], "Valid", True),
        )

    async def test_failureWithoutCNAME(self) -> None:
        """
        Without the operator's CNAME the order fails: one log line with the
        ACME problem, the challenge values are withdrawn, the self-signed
        certificate is served and the node stays ready.
        """
        ring = await self.startAll(delegated=False)
        match = await ring.proc.waitForLog(
            r"certificate example\.test: issuance failed: [^\n]*urn:ietf:params:acme:error:[^\n]*", timeout=90
        )
        self.assertNotIn("acquired ACME certificate", ring.proc.output())
        self.assertIn("retrying in", ring.proc.output())
        self.assertNotIn("\\n", match.group(0))
        client = await ring.rpc()
        self.assertEqual(await client.kv("list", b"acme/challenge/managed"), [])
        self.assertIsNone(await client.kv("get", b"acme/cert/example.test"))
        rootPath = os.path.join(self.base, "pebble-root.pem")
        with open(rootPath, "wb") as f:
            f.write(await self.pebble.get("/roots/0"))
        code, text = await self.curl(APEX, ring.port, rootPath)
        self.assertNotEqual(code, 0, text)
        response = await treq.get(f"http://127.0.0.1:{ring.httpPort}/readyz", timeout=10, persistent=False)
        self.assertEqual(response.code, 200)
        await response.content()

    async def specterClient(self, identity: str, *args: str) -> tuple[int, str, str]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "suite.specter.client", "--server", self.ring.addr, "--cert-dir", identity, *args],
            env=dict(os.environ),
            reactor=reactor,
        )
        return code, out.decode(), err.decode()

    async def test_customDomain(self) -> None:
        """
        A client claims shop.customer.test with C{specter client acme};
        validating fails until the public DNS has the printed CNAME, then
        succeeds; the server orders a certificate for the domain through
        the token's challenge set and serves it by SNI, routing visitors of
        the domain to the client's tunnel; another client cannot claim it.
        """
        site = Site(_Backend())
        # Twisted types Site as a ServerFactory of a protocol proxy that does
        # not match IReactorTCP.listenTCP's (invariant) factory type.
        backend = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(backend.stopListening)
        backendAddress = backend.getHost()
        assert isinstance(backendAddress, IPv4Address), backendAddress
        ring = await self.startAll()
        alice = os.path.join(self.base, "alice")
        bob = os.path.join(self.base, "bob")
        writeClientCertificate(loadBundle(self.cert), "alice", alice)
        writeClientCertificate(loadBundle(self.cert), "bob", bob)
        tunnel = DaemonProcess(
            self,
            [
                sys.executable,
                "-m",
                "suite.specter.client",
                "--server",
                ring.addr,
                "--cert-dir",
                alice,
                "tunnel",
                "--links",
                "1",
                "--target",
                f"http://127.0.0.1:{backendAddress.port}",
            ],
            name="client",
        ).start()
        host = (await tunnel.waitForLog(r"tunnel (\S+) linked through")).group(1)

        code, out, err = await self.specterClient(alice, "acme", DOMAIN)
        self.assertEqual(code, 0, err)
        match = re.match(
            rf"^_acme-challenge\.{re.escape(DOMAIN)}\. CNAME ([a-z0-9]+\.{ZONE})\.$", out.strip()
        )
        self.assertIsNotNone(match, out)
        assert match is not None
        target = match.group(1)

        code, out, err = await self.specterClient(alice, "validate", DOMAIN)
        self.assertNotEqual(code, 0, out)
        self.assertIn(f"no CNAME at _acme-challenge.{DOMAIN}", err)

        self.public.cnames[f"_acme-challenge.{DOMAIN}"] = target
        code, out, err = await self.specterClient(alice, "validate", DOMAIN)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip(), f"{DOMAIN}. CNAME {APEX}.")
        self.assertIn(host, err)

        code, out, err = await self.specterClient(bob, "acme", DOMAIN)
        self.assertNotEqual(code, 0, out)
        self.assertIn(f"{DOMAIN} is claimed by another client", err)

        await ring.proc.waitForLog(rf"acquired ACME certificate for {re.escape(DOMAIN)} ", timeout=90)
        await ring.proc.waitForLog(rf"serving the ACME certificate of {re.escape(DOMAIN)} ", timeout=10)
        rootPath = os.path.join(self.base, "pebble-root.pem")
        with open(rootPath, "wb") as f:
            f.write(await self.pebble.get("/roots/0"))
        code, out_, err_ = await self.fetch(DOMAIN, ring.port, rootPath, "/hello")
        # the target sees the Host the visitor asked for, port included (as for every tunnel)
        self.assertEqual(out_.decode(), f"backend {DOMAIN}:{ring.port} /hello\n200", err_)
        client = await ring.rpc()
        self.assertEqual(await client.kv("list", f"acme/challenge/{target.split('.')[0]}".encode()), [])
        self.assertIn(b"PRIVATE KEY", await client.kv("get", f"acme/cert/{DOMAIN}".encode()))

        # only the owner removes it; then the gateway stops serving it
        code, out, err = await self.specterClient(bob, "acme", "--remove", DOMAIN)
        self.assertNotEqual(code, 0, out)
        self.assertIn("claimed by another client", err)
        code, out, err = await self.specterClient(alice, "acme", "--remove", DOMAIN)
        self.assertEqual((code, out), (0, f"removed {DOMAIN}\n"), err)
        await ring.proc.waitForLog(rf"custom domain {re.escape(DOMAIN)}: removed", timeout=10)
        self.assertIsNone(await client.kv("get", f"acme/custom/{DOMAIN}".encode()))
        code, out_, err_ = await self.fetch(DOMAIN, ring.port, rootPath, "/hello")
        self.assertNotEqual(code, 0, out_)


class _Backend(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"backend " + (request.getHeader(b"host") or b"?") + b" " + request.uri
