"""
The specter command-line surface: every documented flag and environment
variable parses, bad values fail with one line naming the flag, and
makeService builds the ring node's services.
"""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any

from twisted.application.service import IServiceCollection
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.daemon import ConfigError
from suite.pki.ca import initBundle
from suite.specter.options import ConsoleOptions, Options, parseHostPort, parseSize, rpcEndpoint
from tests.support.process import freePort, scriptArgs, twistdArgs


def parse(*argv: str, env: dict[str, str] | None = None, console: bool = False) -> usage.Options:
    o = (ConsoleOptions if console else Options)(environ=env or {})
    o.parseOptions(list(argv))
    return o.subOptions


BASE = ("server", "--data", "/tmp/specter-data", "--cert", "/tmp/specter-cert")


class ServerOptionsTests(SynchronousTestCase):
    """
    C{specter server} flags, defaults and environment fallbacks.
    """

    def test_defaults(self) -> None:
        """
        The documented defaults: 5 vnodes, R=3, aof flushed every 3 s, RPC on
        tcp://127.0.0.1:11180, 16KiB buffers, no join (seed).
        """
        o = parse(*BASE)
        self.assertEqual(o["virtual"], 5)
        self.assertEqual(o["replicas"], 3)
        self.assertEqual(o["kv"], "aof")
        self.assertEqual(o["aof-flush-interval"], 3.0)
        self.assertEqual(o["rpc-endpoint"], "tcp:11180:interface=127.0.0.1")
        self.assertEqual(o["transport-buffer"], 16384)
        self.assertEqual(o["proxy-buffer"], 16384)
        self.assertEqual(o["join"], [])
        self.assertEqual(o["data-dir"], "/tmp/specter-data")
        self.assertEqual(o["cert-dir"], "/tmp/specter-cert")

    def test_everyFlag(self) -> None:
        """
        Every documented server flag is accepted and parsed.
        """
        o = parse(
            "--verbose",
            "server",
            "--data-dir",
            "/d",
            "--cert-dir",
            "/c",
            "--apex",
            "Example.com",
            "--apex",
            "b.example",
            "--acme",
            "acme://ops@example.net@acme-hosted.net",
            "--acme-ns",
            "ns1.acme-hosted.net/203.0.113.10,2001:db8::1",
            "--join",
            "10.0.0.1:443",
            "--virtual",
            "8",
            "--advertise-addr",
            "10.0.0.2:8443",
            "--listen-addr",
            "0.0.0.0:8443",
            "--listen-tcp",
            "127.0.0.1:9443",
            "--listen-udp",
            "0.0.0.0:8443",
            "--listen-http",
            "8080",
            "--listen-rpc",
            "unix:///run/specter.sock",
            "--proxy-protocol",
            "--transport-buffer",
            "32KiB",
            "--proxy-buffer",
            "1MiB",
            "--auth_user",
            "ops",
            "--auth_pass",
            "pw",
            "--sentry",
            "https://key@sentry.example/1",
            "--kv",
            "sqlite",
            "--replicas",
            "2",
            "--aof-flush-interval",
            "1.5",
        )
        self.assertTrue(o["verbose"])
        self.assertEqual(o["apex"], ["example.com", "b.example"])
        self.assertEqual(o["acme"], ("ops@example.net", "acme-hosted.net"))
        self.assertEqual(o["acme-ns"], [("ns1.acme-hosted.net", ["203.0.113.10", "2001:db8::1"])])
        self.assertEqual(o["acme-directory"], "https://acme-v02.api.letsencrypt.org/directory")
        self.assertEqual(o["acme-ca-pems"], [])
        self.assertEqual(o["join"], [("10.0.0.1", 443)])
        self.assertEqual(o["advertise-addr"], ("10.0.0.2", 8443))
        self.assertEqual(o["tcp-binds"], [("127.0.0.1", 9443)])
        self.assertEqual(o["udp-binds"], [("0.0.0.0", 8443)])
        self.assertEqual(o["listen-http"], ("0.0.0.0", 8080))
        self.assertEqual(o["rpc-endpoint"], "unix:/run/specter.sock")
        self.assertEqual(o["proxy-buffer"], 1024 * 1024)
        self.assertEqual(str(o["auth_pass"]), "***")
        self.assertEqual(o["auth_pass"].reveal(), "pw")
        self.assertEqual(o["kv"], "sqlite")
        self.assertEqual(
            o.laterFeatures(),  # type: ignore[attr-defined]
            [
                "QUIC/UDP listeners (--listen-udp)",
                "HTTP CONNECT/redirect listener (--listen-http)",
                "PROXY protocol (--proxy-protocol)",
                "gateway buffer tuning (--transport-buffer)",
                "gateway buffer tuning (--proxy-buffer)",
            ],
        )

    def test_environment(self) -> None:
        """
        LISTEN_ADDR/LISTEN_TCP/LISTEN_UDP (comma-separated), INTERNAL_USER,
        INTERNAL_PASS and SENTRY_DSN fill flags that were not given.
        """
        env = {
            "LISTEN_ADDR": "0.0.0.0:8443, 0.0.0.0:9443",
            "LISTEN_UDP": "0.0.0.0:7443",
            "INTERNAL_USER": "ops",
            "INTERNAL_PASS": "secret",
            "SENTRY_DSN": "https://k@s/1",
        }
        o = parse(*BASE, "--apex", "example.com", env=env)
        self.assertEqual(o["tcp-binds"], [("0.0.0.0", 8443), ("0.0.0.0", 9443)])
        self.assertEqual(o["udp-binds"], [("0.0.0.0", 7443)])
        self.assertEqual(o["advertise-addr"], ("127.0.0.1", 8443))
        self.assertEqual(o["auth_user"], "ops")
        self.assertEqual(o["auth_pass"].reveal(), "secret")
        self.assertEqual(o["sentry"], "https://k@s/1")
        flags = parse(*BASE, "--listen-tcp", "127.0.0.1:1443", env={"LISTEN_TCP": "0.0.0.0:2443"})
        self.assertEqual(flags["tcp-binds"], [("127.0.0.1", 1443)])

    def test_errorsNameTheFlag(self) -> None:
        """
        Each bad value fails with a one-line ConfigError naming its flag.
        """
        cases = [
            (("server", "--cert", "/c"), "--data-dir"),
            (("server", "--data", "/d"), "--cert-dir"),
            ((*BASE, "--cert-env"), "--cert-env"),
            ((*BASE, "--virtual", "0"), "--virtual"),
            ((*BASE, "--virtual", "many"), "--virtual"),
            ((*BASE, "--replicas", "9"), "--replicas"),
            ((*BASE, "--kv", "redis"), "--kv"),
            ((*BASE, "--proxy-buffer", "lots"), "--proxy-buffer"),
            ((*BASE, "--acme", "mailto:x"), "--acme"),
            ((*BASE, "--acme-ns", "ns1"), "--acme-ns"),
            ((*BASE, "--acme", "acme://a@b.example@zone.example"), "--acme"),
            ((*BASE, "--acme-directory", "http://127.0.0.1/dir"), "--acme-directory"),
            ((*BASE, "--acme-directory", "https://h:99999/dir"), "--acme-directory"),
            ((*BASE, "--acme-ca", "/nonexistent/ca.pem"), "--acme-ca"),
            ((*BASE, "--acme-ca", __file__), "--acme-ca"),
            ((*BASE, "--acme-ns", "ns1.z/not-an-ip"), "--acme-ns"),
            ((*BASE, "--listen-rpc", "tcp://0.0.0.0:11180"), "--listen-rpc"),
            ((*BASE, "--listen-rpc", "http://x"), "--listen-rpc"),
            ((*BASE, "--listen-internal", "tcp://0.0.0.0:9999"), "--listen-internal"),
            ((*BASE, "--advertise-addr", "0.0.0.0:443"), "--advertise-addr"),
            ((*BASE, "--advertise-addr", "foo"), "--advertise-addr"),
            ((*BASE, "--advertise-addr", "bad_name.example:443"), "--advertise-addr"),
            ((*BASE, "--join", "nonsense"), "--join"),
            ((*BASE, "--join", "nonsense:7440"), "--join"),
            ((*BASE, "--join", ","), "--join"),
            ((*BASE, "--bootstrap", "--join", "10.0.0.1:443"), "--bootstrap"),
            ((*BASE, "--listen-tcp", "h:99999"), "--listen-tcp"),
            ((*BASE, "--auth_user", "ops"), "--auth_user"),
            ((*BASE, "--aof-flush-interval", "-1"), "--aof-flush-interval"),
            ((*BASE, "--auth-ldap", "ldap://127.0.0.1"), "--auth-ldap"),
            ((*BASE, "--auth-ldap", "ldap://127.0.0.1", "--auth-ldap-dn", "cn=admin"), "--auth-ldap-dn"),
        ]
        for argv, flag in cases:
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn(flag, str(e), argv)
            self.assertNotIn("\n", str(e))

    def test_acmeServerFlags(self) -> None:
        """
        --acme-directory takes an https URL; --acme-ca reads the PEM trust
        roots of the ACME server's HTTPS.
        """
        from suite.pki.keys import certificateToPEM
        from suite.pki.mint import mintCA

        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(certificateToPEM(mintCA("test ACME TLS CA", days=1)[0]))
        o = parse(
            *BASE,
            "--apex",
            "example.test",
            "--acme",
            "acme://ops@example.test@acme.test",
            "--acme-directory",
            "https://127.0.0.1:14000/dir",
            "--acme-ca",
            path,
        )
        self.assertEqual(o["acme"], ("ops@example.test", "acme.test"))
        self.assertEqual(o["acme-directory"], "https://127.0.0.1:14000/dir")
        [pem] = o["acme-ca-pems"]
        self.assertTrue(pem.startswith(b"-----BEGIN CERTIFICATE-----"))
        self.assertEqual(o.laterFeatures(), [])  # type: ignore[attr-defined]

    def test_dnsResolver(self) -> None:
        """
        --dns-resolver is HOST[:PORT] (port 53 by default); unset means the
        system resolver; a bad port names the flag.
        """
        self.assertIsNone(parse(*BASE)["dns-resolver"])
        self.assertEqual(
            parse(*BASE, "--dns-resolver", "127.0.0.1:5353")["dns-resolver"], ("127.0.0.1", 5353)
        )
        self.assertEqual(parse(*BASE, "--dns-resolver", "192.0.2.53")["dns-resolver"], ("192.0.2.53", 53))
        e = self.assertRaises(ConfigError, parse, *BASE, "--dns-resolver", "127.0.0.1:99999")
        self.assertIn("--dns-resolver", str(e))

    def test_remoteRPCNeedsConsent(self) -> None:
        """
        A non-loopback RPC bind is accepted only with --rpc-allow-remote.
        """
        o = parse(*BASE, "--listen-rpc", "tcp://0.0.0.0:11180", "--rpc-allow-remote")
        self.assertEqual(o["rpc-endpoint"], "tcp:11180:interface=0.0.0.0")

    def test_subcommandRequired(self) -> None:
        """
        Without server or dns the parse fails, saying so.
        """
        e = self.assertRaises(ConfigError, Options(environ={}).parseOptions, [])
        self.assertIn("subcommand", str(e))


class DNSAndConsoleTests(SynchronousTestCase):
    """
    C{specter dns} flags and the console-only subcommands.
    """

    def test_dns(self) -> None:
        """
        dns takes --acme, repeatable --acme-ns, --rpc and the listeners (53 by default port).
        """
        o = parse(
            "dns",
            "--acme",
            "acme://ops@example.net@acme-hosted.net",
            "--acme-ns",
            "ns1.acme-hosted.net/203.0.113.10",
            "--acme-ns",
            "ns2.acme-hosted.net/203.0.113.11",
            "--rpc",
            "unix:///var/run/specter-rpc.sock",
            "--listen-addr",
            "0.0.0.0",
        )
        self.assertEqual(len(o["acme-ns"]), 2)
        self.assertEqual(o["rpc-client"], "unix:/var/run/specter-rpc.sock")
        self.assertEqual(o["tcp-binds"], [("0.0.0.0", 53)])
        self.assertRaises(ConfigError, parse, "dns", "--acme", "acme://a@b@c")

    def test_kvHelper(self) -> None:
        """
        specter kv ACTION args parses its action and arity.
        """
        o = parse("kv", "--rpc", "tcp://127.0.0.1:7000", "put", "k", "v", console=True)
        self.assertEqual(
            (o["action"], o["args"], o["rpc-client"]), ("put", ["k", "v"], "tcp:host=127.0.0.1:port=7000")
        )
        self.assertRaises(ConfigError, parse, "kv", "frob", console=True)
        self.assertRaises(ConfigError, parse, "kv", "get", console=True)

    def test_helpers(self) -> None:
        """
        Sizes, host:port pairs and RPC URIs parse as documented.
        """
        self.assertEqual(parseSize("--x", "16KiB"), 16384)
        self.assertEqual(parseSize("--x", "1MB"), 1_000_000)
        self.assertEqual(parseHostPort("--x", "[::1]:80"), ("::1", 80))
        self.assertEqual(rpcEndpoint("--x", "tcp://[::1]:5"), "tcp:5:interface=\\:\\:1")


class MakeServiceTests(SynchronousTestCase):
    """
    makeServerService builds the node under a memory reactor.
    """

    def test_services(self) -> None:
        """
        The root holds the mTLS ring listener, the RPC listener and the
        helper site; each vnode's store lives in DATA/i.
        """
        from suite.specter.service import makeServerService

        base = self.mktemp()
        initBundle(os.path.join(base, "cert"), ["127.0.0.1"])
        o = parse(
            "server",
            "--data",
            os.path.join(base, "data"),
            "--cert",
            os.path.join(base, "cert"),
            "--virtual",
            "3",
            "--listen-tcp",
            "127.0.0.1:7443",
        )
        reactor = MemoryReactorClock()
        root = makeServerService(o, reactor)
        self.assertTrue(IServiceCollection.providedBy(root))
        self.assertEqual(len(list(root)), 3)
        self.assertEqual(len(root.node.vnodes), 3)
        for i in range(3):
            self.assertTrue(os.path.exists(os.path.join(base, "data", str(i), "kv.aof")))
        self.assertEqual(root.node.addr, "127.0.0.1:7443")

    def test_ringHandshakeDeadline(self) -> None:
        """
        The ring's own mTLS listener closes a connection that has not
        completed its TLS handshake 10 s after it was accepted.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from suite.specter.service import makeServerService

        base = self.mktemp()
        initBundle(os.path.join(base, "cert"), ["127.0.0.1"])
        o = parse(
            "server",
            "--data",
            os.path.join(base, "data"),
            "--cert",
            os.path.join(base, "cert"),
            "--listen-tcp",
            "127.0.0.1:7443",
        )
        reactor = MemoryReactorClock()
        root = makeServerService(o, reactor)
        [ring] = [s for s in root if getattr(s, "flag", None) == "--listen-tcp"]
        peer = IPv4Address("TCP", "192.0.2.1", 40000)
        protocol = ring.factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        reactor.advance(9)
        self.assertFalse(transport.disconnecting)
        reactor.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_privateDataDirectory(self) -> None:
        """
        The data directory and each vnode's store directory are created
        0700 (the KV holds ACME private keys); an existing data directory
        open to other users is kept but named in a warning.
        """
        import stat

        from twisted.logger import globalLogPublisher

        from suite.specter.service import makeServerService

        base = os.path.abspath(self.mktemp())
        initBundle(os.path.join(base, "cert"), ["127.0.0.1"])
        warnings: list[str] = []

        def warned(event: dict[str, object]) -> None:
            if "open to other users" in str(event.get("log_format", "")):
                warnings.append(str(event["dir"]))

        observe: Any = warned
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        for kv in ("aof", "sqlite"):
            data = os.path.join(base, kv)
            argv = (
                "server",
                "--data",
                data,
                "--cert",
                os.path.join(base, "cert"),
                "--virtual",
                "1",
                "--kv",
                kv,
            )
            root: Any = makeServerService(
                parse(*argv, "--listen-tcp", "127.0.0.1:7443"), MemoryReactorClock()
            )
            for path in [data, os.path.join(data, "0")] + (
                [os.path.join(data, "cache")] if kv == "sqlite" else []
            ):
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700, path)
            root.dataLock.release()
        self.assertEqual(warnings, [])
        shared = os.path.join(base, "shared")
        os.makedirs(shared, mode=0o755)
        makeServerService(
            parse(
                "server",
                "--data",
                shared,
                "--cert",
                os.path.join(base, "cert"),
                "--listen-tcp",
                "127.0.0.1:7443",
            ),
            MemoryReactorClock(),
        )
        self.assertEqual(warnings, [shared])

    def test_memoryBackendWarns(self) -> None:
        """
        C{--kv memory} (tests only) says at start that the keys are lost on stop.
        """
        from twisted.logger import LogLevel, globalLogPublisher

        from suite.specter.service import makeServerService

        base = os.path.abspath(self.mktemp())
        initBundle(os.path.join(base, "cert"), ["127.0.0.1"])
        warnings: list[str] = []

        def warned(event: dict[str, object]) -> None:
            if event.get("log_level") == LogLevel.warn:
                warnings.append(str(event.get("log_format", "")))

        observe: Any = warned
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        for kv, expected in (("aof", 0), ("memory", 1)):
            data = os.path.join(base, kv)
            argv = ("server", "--data", data, "--cert", os.path.join(base, "cert"), "--kv", kv)
            del warnings[:]
            root: Any = makeServerService(
                parse(*argv, "--listen-tcp", "127.0.0.1:7443"), MemoryReactorClock()
            )
            root.dataLock.release()
            self.assertEqual(len([w for w in warnings if w.startswith("--kv memory:")]), expected, warnings)

    def test_gatewayFlagsNeedApex(self) -> None:
        """
        Gateway flags without C{--apex} fail at parsing, naming the missing
        C{--apex} as the cause (not "not implemented yet").
        """
        base = self.mktemp()
        for flags in (
            ["--listen-udp", "0.0.0.0:443"],
            ["--proxy-protocol"],
            ["--listen-http", "8080"],
            ["--transport-buffer", "32KiB"],
            ["--proxy-buffer", "4096"],
        ):
            e = self.assertRaises(
                ConfigError,
                parse,
                "server",
                "--data",
                os.path.join(base, "d"),
                "--cert",
                os.path.join(base, "cert"),
                *flags,
            )
            self.assertTrue(str(e).startswith(flags[0] + ": needs --apex"), str(e))
            self.assertNotIn("not implemented", str(e))

    def test_badBundle(self) -> None:
        """
        A missing CA bundle is one error naming the file.
        """
        from suite.specter.service import makeServerService

        base = self.mktemp()
        o = parse("server", "--data", os.path.join(base, "d"), "--cert", os.path.join(base, "nope"))
        e = self.assertRaises(ConfigError, makeServerService, o, MemoryReactorClock())
        self.assertIn("nope", str(e))

    def test_ldapGroupMustNameTheUser(self) -> None:
        """
        C{--auth-ldap-group '(cn=ops)'} would let every LDAP user in: the
        server refuses to start, naming the flag.
        """
        from suite.specter.service import makeServerService

        base = self.mktemp()
        initBundle(os.path.join(base, "cert"), ["127.0.0.1"])
        argv = [*BASE[:1], "--data", os.path.join(base, "d"), "--cert", os.path.join(base, "cert")]
        argv += ["--auth-ldap", "ldap://127.0.0.1", "--auth-ldap-dn", "uid={username},ou=people,dc=x,dc=org"]
        o = parse(*argv, "--auth-ldap-group", "(cn=ops)")
        e = self.assertRaises(ConfigError, makeServerService, o, MemoryReactorClock())
        self.assertIn("--auth-ldap", str(e))
        self.assertIn("does not reference the user", str(e))


class CommandLineTests(TestCase):
    """
    The real commands print help and one-line errors.
    """

    def test_help(self) -> None:
        """
        twistd specter server --help names the documented flags.
        """
        out = subprocess.run(
            twistdArgs("specter", "server", "--help"), capture_output=True, text=True, timeout=60
        ).stdout
        for flag in (
            "--data-dir",
            "--cert-dir",
            "--cert-env",
            "--apex",
            "--acme",
            "--acme-ns",
            "--acme-directory",
            "--acme-ca",
            "--join",
            "--virtual",
            "--advertise-addr",
            "--listen-addr",
            "--listen-tcp",
            "--listen-udp",
            "--listen-http",
            "--listen-rpc",
            "--proxy-protocol",
            "--transport-buffer",
            "--proxy-buffer",
            "--auth_user",
            "--auth_pass",
            "--sentry",
            "--kv",
            "--replicas",
            "--manhole",
            "LISTEN_ADDR",
            "INTERNAL_USER",
            "SENTRY_DSN",
        ):
            self.assertIn(flag, out)

    def test_oneLineErrors(self) -> None:
        """
        A bad flag or a busy port (ring node or DNS solver) ends the
        command with one stderr line and exit code 2.
        """
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        base = self.mktemp()
        initBundle(os.path.join(base, "cert"), ["127.0.0.1"])
        taken = f"tcp://127.0.0.1:{busy.getsockname()[1]}"
        for argv, needle in (
            (
                (
                    "server",
                    "--data",
                    os.path.join(base, "d"),
                    "--cert",
                    os.path.join(base, "cert"),
                    "--listen-tcp",
                    f"127.0.0.1:{freePort()}",
                    "--listen-internal",
                    f"tcp://127.0.0.1:{freePort()}",
                    "--listen-rpc",
                    taken,
                ),
                "cannot listen",
            ),
            (("server", "--data", "/tmp/x"), "--cert-dir"),
            (("dns", "--acme", "acme://a@b.example@zone", "--acme-ns", "ns1.zone/nope"), "--acme-ns"),
            (("client", "connect", "--linger", "-1", "app.example.com"), "--linger"),
            (("kv", "--timeout", "-1", "get", "k"), "--timeout"),
            (
                (
                    "dns",
                    "--acme",
                    "acme://a@b.example@zone",
                    "--acme-ns",
                    "ns1.zone/192.0.2.1",
                    "--listen-addr",
                    f"127.0.0.1:{busy.getsockname()[1]}",
                ),
                "cannot listen",
            ),
        ):
            r = subprocess.run(scriptArgs("specter", *argv), capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 1 if needle == "cannot listen" else 2, r.stderr)
            self.assertIn(needle, r.stderr)
            self.assertNotIn("Traceback", r.stderr)


class BoundsTests(SynchronousTestCase):
    """
    Values that parse but make no sense are refused naming the flag (or the
    environment variable they came from).
    """

    def test_bufferBounds(self) -> None:
        """
        --transport-buffer is 1KiB to 16MiB (each socket read allocates that
        much); --proxy-buffer 1KiB to 1MiB (a DATA frame's largest payload).
        """
        apex = (*BASE, "--apex", "example.com")
        o = parse(*apex, "--transport-buffer", "16MiB", "--proxy-buffer", "1MiB")
        self.assertEqual((o["transport-buffer"], o["proxy-buffer"]), (16 << 20, 1 << 20))
        o = parse(*apex, "--transport-buffer", "1KiB", "--proxy-buffer", "1024")
        self.assertEqual((o["transport-buffer"], o["proxy-buffer"]), (1024, 1024))
        for flag, value in (
            ("--transport-buffer", "4000MiB"),
            ("--transport-buffer", "17MiB"),
            ("--transport-buffer", "1023"),
            ("--proxy-buffer", "2MiB"),
            ("--proxy-buffer", "1"),
        ):
            e = self.assertRaises(ConfigError, parse, *apex, flag, value)
            self.assertIn(f"{flag}: must be between", str(e))

    def test_aofSync(self) -> None:
        """
        --aof-sync is off by default, on when given, and only for --kv aof.
        """
        self.assertFalse(parse(*BASE)["aof-sync"])
        self.assertTrue(parse(*BASE, "--aof-sync")["aof-sync"])
        for kv in ("sqlite", "memory"):
            e = self.assertRaises(ConfigError, parse, *BASE, "--aof-sync", "--kv", kv)
            self.assertTrue(str(e).startswith("--aof-sync: only for --kv aof"), str(e))

    def test_acmeURI(self) -> None:
        """
        acme://EMAIL@ACME_ZONE: the zone is a DNS name (kept lower-case,
        without a trailing dot); EMAIL is an address with one @, no spaces and
        a dotted domain. A bad part is named.
        """
        ns = ("--acme-ns", "ns1.acme-hosted.net/192.0.2.1")
        o = parse("dns", "--acme", "acme://ops@example.net@ACME-Hosted.net.", *ns)
        self.assertEqual(o["acme"], ("ops@example.net", "acme-hosted.net"))
        o = parse("dns", "--acme", "acme://first.last+tag@example.co.uk@acme-hosted.net", *ns)
        self.assertEqual(o["acme"][0], "first.last+tag@example.co.uk")
        for uri, part in (
            ("acme://ops@exa mple.net@acme-hosted.net", "EMAIL"),
            ("acme://o ps@example.net@acme-hosted.net", "EMAIL"),
            ("acme://ops@localhost@acme-hosted.net", "EMAIL"),
            ("acme://ops@example.net@bad_zone!", "ACME_ZONE"),
            ("acme://ops@example.net@*.acme-hosted.net", "ACME_ZONE"),
            ("acme://ops@example.net@acme-hosted.net\n", "ACME_ZONE"),
        ):
            for argv in (("dns", "--acme", uri, *ns), (*BASE, "--apex", "example.com", "--acme", uri)):
                e = self.assertRaises(ConfigError, parse, *argv)
                self.assertTrue(str(e).startswith(f"--acme: {part} of acme://EMAIL@ACME_ZONE"), (uri, str(e)))

    def test_namesAreWholeStrings(self) -> None:
        """
        Name checks match the whole string: a trailing newline (which a
        regular expression's C{$} lets through) is refused in DNS names,
        KV challenge labels, custom domains and peer addresses.
        """
        from suite.pki.names import dnsName
        from suite.specter.acmekeys import validDomain, validLabel
        from suite.specter.addresses import parsePeerAddress

        self.assertEqual(dnsName("Acme-Hosted.net."), "acme-hosted.net")
        self.assertRaises(ValueError, dnsName, "acme-hosted.net\n")
        self.assertTrue(validDomain("shop.example.com"))
        self.assertFalse(validDomain("shop.example.com\n"))
        self.assertTrue(validLabel("managed"))
        self.assertFalse(validLabel("managed\n"))
        self.assertEqual(parsePeerAddress("--join", "node1.example.com:443"), ("node1.example.com", 443))
        self.assertRaises(ConfigError, parsePeerAddress, "--join", "node1.example.com\n:443")

    def test_integerWording(self) -> None:
        """
        A flag taking an integer says so.
        """
        e = self.assertRaises(ConfigError, parse, *BASE, "--virtual", "abc")
        self.assertEqual(str(e), "--virtual: 'abc' is not an integer")

    def test_sentryFromEnvironment(self) -> None:
        """
        Both daemons take --sentry or SENTRY_DSN; a malformed DSN from the
        environment names the variable, and the key is never echoed.
        """
        dns = (
            "dns",
            "--acme",
            "acme://ops@example.net@acme-hosted.net",
            "--acme-ns",
            "ns1.acme-hosted.net/192.0.2.1",
        )
        for argv in (BASE, dns):
            e = self.assertRaises(ConfigError, parse, *argv, env={"SENTRY_DSN": "secretkey-garbage"})
            self.assertTrue(str(e).startswith("SENTRY_DSN (--sentry): not a Sentry DSN"), str(e))
            self.assertNotIn("secretkey", str(e))
            e = self.assertRaises(ConfigError, parse, *argv, "--sentry", "secretkey-garbage")
            self.assertTrue(str(e).startswith("--sentry: "), str(e))
            dsn = "https://key@sentry.example/1"
            self.assertEqual(parse(*argv, env={"SENTRY_DSN": dsn})["sentry"], dsn)
            self.assertEqual(parse(*argv, "--sentry", dsn)["sentry"], dsn)

    def test_dnsSentryService(self) -> None:
        """
        specter dns with --sentry runs the Sentry service; without, none.
        """
        from suite.sentry import SentryService
        from suite.specter.dns import makeDNSService

        dns = (
            "dns",
            "--acme",
            "acme://ops@example.net@acme-hosted.net",
            "--acme-ns",
            "ns1.acme-hosted.net/192.0.2.1",
        )
        for extra, expected in (((), 0), (("--sentry", "https://key@sentry.example/1"), 1)):
            root = makeDNSService(parse(*dns, *extra), MemoryReactorClock())
            found = [s for s in root if isinstance(s, SentryService)]
            self.assertEqual(len(found), expected, extra)

    def test_clientAndKVSeconds(self) -> None:
        """
        specter client --timeout and specter kv --timeout are more than 0
        (and at most an hour); connect --linger is 0 or more: a bad value is
        a usage error naming the flag, not a failure after connecting.
        """
        self.assertEqual(parse("client", "--timeout", "2.5", "ls", console=True)["timeout"], 2.5)
        o = parse("client", "connect", "--linger", "0", "app.example.com", console=True)
        self.assertEqual(o.subOptions["linger"], 0.0)
        self.assertEqual(parse("kv", "--timeout", "0.5", "get", "k", console=True)["timeout"], 0.5)
        for argv, flag in (
            (("client", "--timeout", "0", "ls"), "--timeout"),
            (("client", "--timeout", "-5", "ls"), "--timeout"),
            (("client", "--timeout", "nan", "ls"), "--timeout"),
            (("client", "--timeout", "1e9", "ls"), "--timeout"),
            (("client", "connect", "--linger", "-1", "h.example.com"), "--linger"),
            (("client", "connect", "--linger", "abc", "h.example.com"), "--linger"),
            (("kv", "--timeout", "-1", "get", "k"), "--timeout"),
            (("kv", "--timeout", "0", "get", "k"), "--timeout"),
            (("kv", "--timeout", "inf", "get", "k"), "--timeout"),
            (("client", "enroll", "--name", "bad name", "http://127.0.0.1:9999"), "--name"),
        ):
            e = self.assertRaises(usage.UsageError, parse, *argv, console=True)
            self.assertTrue(str(e).startswith(f"{flag}: "), (argv, str(e)))


class CertEnvTests(SynchronousTestCase):
    """
    --cert-env loads the bundle from base64 environment variables.
    """

    def test_certEnv(self) -> None:
        """
        A bundle given as CERT_* variables builds the node; a missing
        variable is one error naming it.
        """
        import base64

        from suite.specter.service import makeServerService

        base = self.mktemp()
        cert = os.path.join(base, "cert")
        initBundle(cert, ["127.0.0.1"])
        env = {}
        for name, file in (
            ("CERT_CA", "ca.crt"),
            ("CERT_NODE", "node.crt"),
            ("CERT_NODE_KEY", "node.key"),
            ("CERT_CLIENT_CA", "client-ca.crt"),
            ("CERT_CLIENT_CA_KEY", "client-ca.key"),
        ):
            with open(os.path.join(cert, file), "rb") as f:
                env[name] = base64.b64encode(f.read()).decode()
        o = parse("server", "--data", os.path.join(base, "d"), "--cert-env", "--virtual", "1", env=env)
        root = makeServerService(o, MemoryReactorClock())
        self.assertEqual(len(root.node.vnodes), 1)
        del env["CERT_NODE_KEY"]
        o = parse("server", "--data", os.path.join(base, "d2"), "--cert-env", env=env)
        e = self.assertRaises(ConfigError, makeServerService, o, MemoryReactorClock())
        self.assertIn("CERT_NODE_KEY", str(e))


class PeerAddressTests(SynchronousTestCase):
    """
    Ring node addresses and the private RPC socket.
    """

    def test_peerAddresses(self) -> None:
        """
        IP addresses, localhost and dotted DNS names are accepted, with 443
        when the port is left out.
        """
        from suite.specter.addresses import parsePeerAddress

        self.assertEqual(parsePeerAddress("--join", "10.0.0.1"), ("10.0.0.1", 443))
        self.assertEqual(parsePeerAddress("--join", "[::1]:7440"), ("::1", 7440))
        self.assertEqual(parsePeerAddress("--join", "localhost:7440"), ("localhost", 7440))
        self.assertEqual(parsePeerAddress("--join", "seed.example.com."), ("seed.example.com", 443))
        o = parse(*BASE, "--join", "10.0.0.1:7440,seed.example.com")
        self.assertEqual(o["join"], [("10.0.0.1", 7440), ("seed.example.com", 443)])
        self.assertFalse(o["bootstrap"])
        self.assertTrue(parse(*BASE, "--bootstrap")["bootstrap"])

    def test_privateSocket(self) -> None:
        """
        A unix endpoint gets mode 0600; a directory writable by everyone or
        a missing one is refused naming the flag; TCP passes through.
        """
        from suite.specter.addresses import privateSocket

        base = self.mktemp()
        os.makedirs(base)
        os.chmod(base, 0o700)
        self.assertEqual(privateSocket("--listen-rpc", f"unix:{base}/r.sock"), f"unix:{base}/r.sock:mode=600")
        self.assertEqual(
            privateSocket("--listen-rpc", "tcp:1:interface=127.0.0.1"), "tcp:1:interface=127.0.0.1"
        )
        os.chmod(base, 0o777)
        e = self.assertRaises(ConfigError, privateSocket, "--listen-rpc", f"unix:{base}/r.sock")
        self.assertIn("--listen-rpc: socket directory", str(e))
        e = self.assertRaises(ConfigError, privateSocket, "--listen-rpc", f"unix:{base}/nope/r.sock")
        self.assertIn("--listen-rpc", str(e))


class ConsoleReactorTests(SynchronousTestCase):
    """
    The console script asks for the asyncio reactor exactly when the
    server is to serve QUIC.
    """

    def test_wantsQUIC(self) -> None:
        from suite.specter.cli import wantsQUIC

        apex = ["--apex", "example.com"]
        self.assertTrue(wantsQUIC(["server", *apex, "--listen-udp", "127.0.0.1:443"], {}))
        self.assertTrue(wantsQUIC(["--verbose", "server", "--apex=a.b", "--listen-addr=0.0.0.0:443"], {}))
        self.assertTrue(wantsQUIC(["server", "--data", "d", *apex], {"LISTEN_UDP": "0.0.0.0:443"}))
        self.assertTrue(wantsQUIC(["server", *apex], {"LISTEN_ADDR": "0.0.0.0:443"}))
        self.assertFalse(wantsQUIC(["server", *apex, "--listen-tcp", "127.0.0.1:443"], {}))
        # a ring node without the gateway keeps the default reactor
        self.assertFalse(wantsQUIC(["server"], {"LISTEN_ADDR": "0.0.0.0:443"}))
        self.assertFalse(wantsQUIC(["dns", "--listen-udp", "127.0.0.1:53"], {}))
        self.assertFalse(wantsQUIC(["kv", "get", "--listen-udp"], {"LISTEN_UDP": "x"}))
