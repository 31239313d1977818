"""
A real C{specter server} and a real C{specter dns} on loopback, asked with
C{dig} over UDP and TCP: challenge values put through C{specter kv} are
answered, the zone's static records and error codes are right, and while
the ring is stopped the solver answers SERVFAIL (logged once) until the
ring is back.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile

import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.specter.ring import RingProcess, makeBundles
from tests.support.process import DaemonProcess, freePort, scriptArgs

DIG = shutil.which("dig")
ZONE = "acme.test"


class Dig:
    def __init__(self, port: int) -> None:
        self.port = port

    async def __call__(self, *args: str) -> tuple[str, str, str]:
        """
        Ask; return (status, flags, full output).
        """
        assert DIG is not None
        out, err, code = await getProcessOutputAndValue(
            DIG,
            ["@127.0.0.1", "-p", str(self.port), "+time=3", "+tries=1", "+norec", *args],
            env=dict(os.environ),
            reactor=reactor,
        )
        text = out.decode()
        status = re.search(r"status: (\w+)", text)
        flags = re.search(r"flags: ([a-z ]*);", text)
        return (status.group(1) if status else f"no answer ({code})", flags.group(1) if flags else "", text)

    async def short(self, *args: str) -> list[str]:
        assert DIG is not None
        out, err, code = await getProcessOutputAndValue(
            DIG,
            ["@127.0.0.1", "-p", str(self.port), "+time=3", "+tries=1", "+short", *args],
            env=dict(os.environ),
            reactor=reactor,
        )
        return sorted(line for line in out.decode().splitlines() if line)


class SolverProcessTests(TestCase):
    """
    One ring process with its RPC on a unix socket, one solver.
    """

    timeout = 120

    def setUp(self) -> None:
        if DIG is None:
            raise SkipTest("dig (bind9-dnsutils) is not installed")
        self.base = self.mktemp()
        os.makedirs(self.base)
        self.cert = makeBundles(self.base, 1)[0]
        # unix socket paths are limited to ~100 bytes: keep it short
        self.sockDir = tempfile.mkdtemp(prefix="sdns-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.sockDir, True)
        self.rpc = f"unix://{self.sockDir}/rpc.sock"

    async def startRing(self, name: str = "ring", **kw: object) -> RingProcess:
        ring = RingProcess(
            self,
            self.base,
            name,
            self.cert,
            "--listen-rpc",
            self.rpc,
            "--virtual",
            "2",
            "--aof-flush-interval",
            "0.1",
            **kw,  # type: ignore[arg-type]
        ).start()
        await ring.ready()
        return ring

    async def startSolver(self, *extra: str) -> tuple[DaemonProcess, Dig]:
        port = freePort()
        proc = DaemonProcess(
            self,
            scriptArgs(
                "specter",
                "dns",
                "--acme",
                f"acme://ops@example.net@{ZONE}",
                "--acme-ns",
                f"ns1.{ZONE}/127.0.0.1,::1",
                "--acme-ns",
                "ns2.elsewhere.example/192.0.2.2",
                "--rpc",
                self.rpc,
                "--listen-addr",
                f"127.0.0.1:{port}",
                *extra,
            ),
            name="dns",
        ).start()
        await proc.waitForLog("ACME DNS for acme.test")
        return proc, Dig(port)

    async def kv(self, *args: str) -> str:
        out, err, code = await getProcessOutputAndValue(
            scriptArgs("specter")[0], ["kv", "--rpc", self.rpc, *args], env=dict(os.environ), reactor=reactor
        )
        self.assertEqual(code, 0, err)
        return out.decode()

    async def test_answers(self) -> None:
        """
        TXT values put with C{specter kv} are answered over UDP and TCP,
        several at one name; SOA, NS with glue, NXDOMAIN, NODATA and
        REFUSED are as a zone's authoritative server gives them.
        """
        await self.startRing()
        solver, dig = await self.startSolver()
        await self.kv("append", "acme/challenge/managed", "apex-token-value")
        await self.kv("append", "acme/challenge/managed", "wildcard-token-value")
        await self.kv("append", "acme/challenge/custom1", "custom-value")
        want = ['"apex-token-value"', '"wildcard-token-value"']
        self.assertEqual(await dig.short("TXT", f"managed.{ZONE}"), want)
        self.assertEqual(await dig.short("+tcp", "TXT", "MANAGED.Acme.Test"), want)
        self.assertEqual(await dig.short("TXT", f"custom1.{ZONE}"), ['"custom-value"'])

        status, flags, text = await dig("TXT", f"managed.{ZONE}")
        self.assertEqual(status, "NOERROR")
        self.assertIn("aa", flags.split())
        self.assertNotIn("ra", flags.split())
        self.assertRegex(text, r"managed\.acme\.test\.\s+10\s+IN\s+TXT")

        status, flags, text = await dig("SOA", ZONE)
        self.assertEqual((status, "aa" in flags.split()), ("NOERROR", True))
        self.assertRegex(text, r"acme\.test\.\s+\d+\s+IN\s+SOA\s+ns1\.acme\.test\. ops\.example\.net\.")
        status, flags, text = await dig("+tcp", "NS", ZONE)
        self.assertEqual(status, "NOERROR")
        self.assertRegex(text, r"IN\s+NS\s+ns1\.acme\.test\.")
        self.assertRegex(text, r"IN\s+NS\s+ns2\.elsewhere\.example\.")
        self.assertRegex(text, r"ADDITIONAL SECTION:\nns1\.acme\.test\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1")
        self.assertRegex(text, r"ns1\.acme\.test\.\s+\d+\s+IN\s+AAAA\s+::1")
        self.assertEqual(await dig.short("A", f"ns1.{ZONE}"), ["127.0.0.1"])
        self.assertEqual(await dig.short("AAAA", f"ns1.{ZONE}"), ["::1"])

        for name in (f"unknown.{ZONE}", f"a.b.{ZONE}"):
            status, flags, text = await dig("TXT", name)
            self.assertEqual((status, "aa" in flags.split()), ("NXDOMAIN", True), name)
            self.assertRegex(text, r"AUTHORITY SECTION:\nacme\.test\.\s+\d+\s+IN\s+SOA")
        status, flags, text = await dig("A", f"managed.{ZONE}")
        self.assertEqual(status, "NOERROR")
        self.assertRegex(text, r"ANSWER: 0, AUTHORITY: 1")
        for args in (("A", "example.com"), ("+tcp", "TXT", "managed.example.org")):
            status, flags, _ = await dig(*args)
            self.assertEqual(status, "REFUSED", args)
            self.assertNotIn("aa", flags.split())

        await self.kv("remove", "acme/challenge/custom1", "custom-value")
        await solver.waitFor(
            lambda: self._status(dig, f"custom1.{ZONE}", "NXDOMAIN"),
            "custom1 to disappear",
            timeout=10,
            interval=0.3,
        )
        self.assertNotIn("Traceback", solver.output())

    async def _status(self, dig: Dig, name: str, want: str) -> bool:
        return (await dig("TXT", name))[0] == want

    async def test_ringOutage(self) -> None:
        """
        With the ring stopped, challenge names are SERVFAIL over UDP and
        TCP (the zone's own records still answer), the outage is logged
        once and /readyz of the helper says not ready; when the ring is back
        the values are answered again.
        """
        ring = await self.startRing()
        helper = f"http://127.0.0.1:{freePort()}"
        solver, dig = await self.startSolver("--listen-internal", helper.replace("http", "tcp"))
        await solver.waitForHTTP(f"{helper}/readyz")
        await self.kv("append", "acme/challenge/managed", "kept-value")
        # /readyz read the (then empty) set: the cache holds that for up to a second
        await solver.waitFor(
            lambda: self._short(dig, f"managed.{ZONE}", ['"kept-value"']),
            "the value",
            timeout=10,
            interval=0.3,
        )
        code = await ring.proc.stop(signal.SIGTERM, timeout=60)
        self.assertIn(code, (0, -signal.SIGTERM))
        await solver.waitFor(
            lambda: self._status(dig, f"managed.{ZONE}", "SERVFAIL"), "SERVFAIL", timeout=10, interval=0.3
        )
        for args in (
            ("TXT", f"managed.{ZONE}"),
            ("+tcp", "TXT", f"other.{ZONE}"),
            ("TXT", f"managed.{ZONE}"),
        ):
            self.assertEqual((await dig(*args))[0], "SERVFAIL", args)
        self.assertEqual((await dig("SOA", ZONE))[0], "NOERROR")
        self.assertEqual(solver.output().count("ring RPC unavailable"), 1)
        await solver.waitForHTTP(f"{helper}/readyz", code=503)
        await solver.waitForHTTP(f"{helper}/healthz")
        metrics = await (await treq.get(f"{helper}/metrics", persistent=False)).text()
        self.assertIn("specter_dns_ring_up 0.0", metrics)
        self.assertRegex(metrics, r'specter_dns_responses_total\{rcode="SERVFAIL"\} [1-9]')

        await self.startRing("ring-again", port=ring.port, dataDir=ring.dataDir)
        await solver.waitFor(
            lambda: self._short(dig, f"managed.{ZONE}", ['"kept-value"']),
            "the value to be answered again",
            timeout=20,
            interval=0.3,
        )
        await solver.waitForHTTP(f"{helper}/readyz")
        out = solver.output()
        self.assertEqual(out.count("ring RPC unavailable"), 1)
        self.assertEqual(out.count("ring RPC reachable again"), 1)
        self.assertNotIn("Traceback", out)

    async def _short(self, dig: Dig, name: str, want: list[str]) -> bool:
        return await dig.short("TXT", name) == want

    async def test_badFlags(self) -> None:
        """
        A bad flag is one line on stderr and exit code 2, through the
        console script and twistd alike.
        """
        from tests.support.process import twistdArgs

        for argv in (
            scriptArgs("specter", "dns", "--acme", "nope", "--acme-ns", "ns1.zone/192.0.2.1"),
            twistdArgs("specter", "dns", "--acme", "acme://a@b.example@zone", "--acme-ns", "ns1.zone"),
        ):
            out, err, code = await getProcessOutputAndValue(
                argv[0], argv[1:], env=dict(os.environ), reactor=reactor
            )
            lines = err.decode().strip().splitlines()
            self.assertEqual(code, 2, err)
            self.assertIn("error:", lines[0])
            self.assertRegex(lines[0], "--acme")
            self.assertNotIn("Traceback", err.decode())
