"""
Options of the Constellation agent: the guide's environment and flags.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from suite.constellation.options import DEFAULT_HTTP_PROVIDER, Options, warnPlaceholderDomain
from suite.daemon import ConfigError


def parse(argv: list[str] | None = None, **env: str) -> Options:
    options = Options(environ=env)
    options.parseOptions(argv or [])
    return options


class OptionsTests(SynchronousTestCase):
    """
    Defaults, environment, flags and errors.
    """

    def test_placeholderDomainWarns(self) -> None:
        """
        Without --domain/DOMAIN the agent uses the placeholder example.org
        (never a real third party's domain) and says so; a domain given
        either way is quiet.
        """
        from tests.clustor.helpers import captureLogs

        events = captureLogs(self)
        placeholder = parse()
        self.assertEqual(placeholder["domain"], "example.org")
        # parsing is quiet (the console script parses twice); building the service warns once
        self.assertEqual([e for e in events if "placeholder domain" in e.get("log_format", "")], [])
        warnPlaceholderDomain(placeholder)
        warnings = [e for e in events if "placeholder domain" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["domain"], "example.org")
        warnPlaceholderDomain(parse(["--domain", "example.net"]))
        warnPlaceholderDomain(parse(DOMAIN="example.com"))
        self.assertEqual(len([e for e in events if "placeholder domain" in e.get("log_format", "")]), 1)

    def test_privatePublicIP(self) -> None:
        """
        A PUBLIC_IP that is not globally routable is warned about, naming it.
        """
        from twisted.logger import formatEvent

        from suite.constellation.options import warnPrivatePublicIP
        from tests.clustor.helpers import captureLogs

        events = captureLogs(self)
        for ip in ("10.0.0.3", "100.64.0.1", "8.8.8.8", "2001:4860::8888"):
            warnPrivatePublicIP(parse(PUBLIC_IP=ip))
        warnPrivatePublicIP(parse())
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "--public-ip (PUBLIC_IP): 10.0.0.3 is not a public address; the DNS records of this node "
                "will point at it",
                "--public-ip (PUBLIC_IP): 100.64.0.1 is not a public address; the DNS records of this node "
                "will point at it",
            ],
        )

    def test_defaults(self) -> None:
        """
        The guide's defaults; the node name is the system host name.
        """
        o = parse()
        self.assertEqual(o["ts-hostname"], socket.gethostname().split(".")[0])
        self.assertEqual(o["domain"], "example.org")
        self.assertIsNone(o["public-ip"])
        self.assertEqual(o["config-path"], "/opt/constellation/volumes")
        self.assertEqual(o["secrets-path"], "/opt/constellation/secrets")
        self.assertEqual(o["data-dir"], "/opt/constellation/data")
        self.assertIsNone(o["cloudflare-zone-id"])
        # unset: chosen when the service is built (suite.constellation.bind)
        self.assertEqual((o["bind-addr"], o["bind-port"], o["raft-port"]), (None, 7946, 8300))
        self.assertEqual(o["http-provider"], DEFAULT_HTTP_PROVIDER)
        self.assertEqual(o["join"], [])

    def test_environment(self) -> None:
        """
        Every variable of the guide lands in its option; a flag wins.
        """
        o = parse(
            TS_HOSTNAME="cloudserver1",
            DOMAIN="Example.ORG.",
            PUBLIC_IP="203.0.113.7",
            CONFIG_PATH="/srv/volumes",
            SECRETS_PATH="/srv/secrets",
            DATA_DIR="/srv/data",
            CLOUDFLARE_ZONE_ID="0123456789abcdef0123456789abcdef",
            CONSTELLATION_JOIN="a.ts.net:7946, b.ts.net",
        )
        self.assertEqual(o["ts-hostname"], "cloudserver1")
        self.assertEqual(o["domain"], "example.org")
        self.assertEqual(o["public-ip"], "203.0.113.7")
        self.assertEqual(o["config-path"], "/srv/volumes")
        self.assertEqual(o["secrets-path"], "/srv/secrets")
        self.assertEqual(o["data-dir"], "/srv/data")
        self.assertEqual(o["cloudflare-zone-id"], "0123456789abcdef0123456789abcdef")
        self.assertEqual(o["join"], ["a.ts.net:7946", "b.ts.net"])
        self.assertEqual(parse(["--domain", "other.net"], DOMAIN="example.org")["domain"], "other.net")

    def test_shippedEnvironmentLeavesTheGuideVariablesToTheUnit(self) -> None:
        """
        The guide sets its variables as Environment= lines of the unit, and
        systemd lets the unit's EnvironmentFile win over those: the shipped
        environment file sets none of them (nor does the unit), so what the
        operator writes in the unit takes effect.
        """
        import configparser
        import os

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        guide = {"TS_HOSTNAME", "DOMAIN", "PUBLIC_IP", "CONFIG_PATH", "SECRETS_PATH", "DATA_DIR"}
        guide.add("CLOUDFLARE_ZONE_ID")
        with open(os.path.join(root, "conf", "constellation", "constellation.env")) as f:
            assigned = {
                line.partition("=")[0].strip() for line in f if line.strip() and not line.startswith("#")
            }
        self.assertEqual(assigned & guide, set())
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(os.path.join(root, "conf", "systemd", "constellation-agent.service"))
        self.assertEqual(unit["Service"]["EnvironmentFile"], "/etc/suite/constellation.env")
        self.assertNotIn("Environment", unit["Service"])

    def test_gossipProfile(self) -> None:
        """
        --gossip-profile lan (default), wan (memberlist's WAN timers, for
        the guide's slow networks) or local; anything else names the flag.
        """
        from suite.constellation.membership import gossipSettings
        from suite.gossip.settings import GossipSettings

        self.assertEqual(parse()["gossip-profile"], "lan")
        self.assertEqual(parse(CONSTELLATION_GOSSIP_PROFILE="wan")["gossip-profile"], "wan")
        self.assertEqual(gossipSettings("lan"), GossipSettings())
        self.assertEqual(gossipSettings("local"), GossipSettings.local())
        wan = gossipSettings("wan")
        self.assertEqual((wan.probeInterval, wan.probeTimeout, wan.suspicionMult), (5.0, 3.0, 6))
        self.assertEqual((wan.pushPullInterval, wan.pushPullTimeout), (60.0, 30.0))
        self.assertGreater(wan.suspicionBounds(3)[0], GossipSettings().suspicionBounds(3)[0])
        self.assertError(
            "--gossip-profile (CONSTELLATION_GOSSIP_PROFILE): 'slow' is not lan, wan",
            ["--gossip-profile", "slow"],
        )

    def test_ports(self) -> None:
        """
        --bind-addr (CONSTELLATION_BIND_ADDR), --bind-port and --raft-port
        are parsed; an empty variable leaves the address unset.
        """
        o = parse(["--bind-addr", "100.64.0.1", "--bind-port", "17946", "--raft-port", "18300"])
        self.assertEqual((o["bind-addr"], o["bind-port"], o["raft-port"]), ("100.64.0.1", 17946, 18300))
        self.assertEqual(parse(CONSTELLATION_BIND_ADDR=" 0:0::0 ")["bind-addr"], "::")
        self.assertIsNone(parse(CONSTELLATION_BIND_ADDR="")["bind-addr"])
        self.assertEqual(
            parse(["--bind-addr", "127.0.0.1"], CONSTELLATION_BIND_ADDR="10.0.0.1")["bind-addr"], "127.0.0.1"
        )

    def assertError(self, name: str, argv: list[str] | None = None, **env: str) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse(argv, **env)
        self.assertIn(name, str(cm.exception))
        self.assertNotIn("\n", str(cm.exception))

    def test_errors(self) -> None:
        """
        Each bad value names its variable or flag.
        """
        self.assertError("TS_HOSTNAME", TS_HOSTNAME="bad name")
        self.assertError("DOMAIN", DOMAIN="localhost")
        self.assertError("DOMAIN", DOMAIN="exa mple.org")
        self.assertError("PUBLIC_IP", PUBLIC_IP="my-ip")
        self.assertError("CLOUDFLARE_ZONE_ID", CLOUDFLARE_ZONE_ID="zone")
        self.assertError("--bind-port", ["--bind-port", "0"])
        self.assertError("--raft-port", ["--raft-port", "x"])
        self.assertError("--raft-port", ["--raft-port", "7946"])
        self.assertError("--bind-addr", ["--bind-addr", "eth0"])
        self.assertError("--bind-addr (CONSTELLATION_BIND_ADDR)", CONSTELLATION_BIND_ADDR="eth0")
        self.assertError("CONSTELLATION_JOIN", CONSTELLATION_JOIN="a.ts.net:99999")
        self.assertError("CONSTELLATION_JOIN", CONSTELLATION_JOIN=":7946")
        self.assertError("CONSTELLATION_JOIN", CONSTELLATION_JOIN="[::1]x")
        self.assertEqual(
            parse(CONSTELLATION_JOIN="[fd7a::1]:7946,fd7a::2")["join"], ["[fd7a::1]:7946", "fd7a::2"]
        )

    def test_dockerAndProvider(self) -> None:
        """
        Docker, provider and public IP options: parsed lists and numbers,
        'none' values, and one error line naming the flag or variable.
        """
        o = parse(
            [
                "--docker",
                "unix:///run/docker.sock",
                "--docker-label",
                "a=b, c",
                "--entrypoints",
                "web,websecure",
            ],
            CONSTELLATION_CERT_RESOLVER="none",
            CONSTELLATION_PUBLIC_IP_SOURCES="none",
            CONSTELLATION_DOCKER_INTERVAL="2.5",
            CONSTELLATION_ROLES="lb, dns",
        )
        self.assertEqual(o["docker"], "unix:///run/docker.sock")
        self.assertEqual(o["docker-label"], ["a=b", "c"])
        self.assertEqual(o["entrypoints"], ["web", "websecure"])
        self.assertEqual((o["cert-resolver"], o["public-ip-sources"]), (None, []))
        self.assertEqual((o["docker-interval"], o["roles"]), (2.5, ["lb", "dns"]))
        defaults = parse()
        self.assertEqual(defaults["docker-interval"], 10.0)
        self.assertEqual(defaults["cert-resolver"], "letsencrypt")
        self.assertEqual(len(defaults["public-ip-sources"]), 3)
        self.assertError("CONSTELLATION_DOCKER", CONSTELLATION_DOCKER="bogus:x")
        self.assertError("--docker-interval", ["--docker-interval", "0"])
        self.assertError("CONSTELLATION_PUBLIC_IP_SOURCES", CONSTELLATION_PUBLIC_IP_SOURCES="ftp://x")
        self.assertError("--service-address", ["--service-address", "host"])
        self.assertError("--entrypoints", ["--entrypoints", ","])


class LeaseAndDNSOptionsTests(SynchronousTestCase):
    """
    Raft, lease, DNS provider and WARP settings.
    """

    def assertError(self, name: str, argv: list[str] | None = None, **env: str) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse(argv, **env)
        self.assertIn(name, str(cm.exception))
        self.assertNotIn("\n", str(cm.exception))

    def test_providerChoice(self) -> None:
        """
        The provider follows the settings unless named; rfc2136 needs a
        server and a key file; the zone defaults to DOMAIN.
        """
        self.assertEqual(parse()["dns-provider"], "none")
        self.assertEqual(
            parse(CLOUDFLARE_ZONE_ID="0123456789abcdef0123456789abcdef")["dns-provider"], "cloudflare"
        )
        o = parse(["--dns-server", "192.0.2.53:5353", "--tsig-key-file", "k"], DOMAIN="example.org")
        self.assertEqual(
            (o["dns-provider"], o["dns-server"], o["dns-zone"]),
            ("rfc2136", ("192.0.2.53", 5353), "example.org"),
        )
        self.assertEqual(
            parse(["--dns-server", "[2001:db8::1]", "--tsig-key-file", "k"])["dns-server"],
            ("2001:db8::1", 53),
        )
        self.assertError("--tsig-key-file", ["--dns-server", "192.0.2.53"])
        self.assertError("--dns-server", ["--dns-provider", "rfc2136"])
        self.assertError("--dns-server", ["--dns-server", "ns1.example.org", "--tsig-key-file", "k"])
        self.assertError("CLOUDFLARE_ZONE_ID", ["--dns-provider", "cloudflare"])
        self.assertError("--dns-provider", ["--dns-provider", "route53"])
        # settings that would be ignored are refused, naming them
        zone = "0123456789abcdef0123456789abcdef"
        self.assertError(
            "both --cloudflare-zone-id (CLOUDFLARE_ZONE_ID) and --dns-server (CONSTELLATION_DNS_SERVER) are set",
            ["--dns-server", "192.0.2.53", "--tsig-key-file", "k"],
            CLOUDFLARE_ZONE_ID=zone,
        )
        self.assertEqual(
            parse(
                ["--dns-provider", "rfc2136", "--dns-server", "192.0.2.53", "--tsig-key-file", "k"],
                CLOUDFLARE_ZONE_ID=zone,
            )["dns-provider"],
            "rfc2136",
        )
        self.assertError(
            "--tsig-key-file (CONSTELLATION_TSIG_KEY_FILE): only used by --dns-provider rfc2136 "
            "(the provider is none)",
            ["--tsig-key-file", "k"],
        )
        self.assertError(
            "CONSTELLATION_DNS_ZONE", CLOUDFLARE_ZONE_ID=zone, CONSTELLATION_DNS_ZONE="example.org"
        )
        self.assertError(
            "--dns-server",
            ["--dns-provider", "cloudflare", "--dns-server", "192.0.2.53"],
            CLOUDFLARE_ZONE_ID=zone,
        )

    def test_timings(self) -> None:
        """
        Numbers in range; the lease at least twice the election timeout.
        """
        o = parse(["--lease-seconds", "3", "--raft-election-ms", "500"])
        self.assertEqual((o["lease-seconds"], o["raft-election-ms"]), (3.0, 500.0))
        self.assertError("--lease-seconds", ["--lease-seconds", "1", "--raft-election-ms", "1000"])
        self.assertError("--dns-interval", ["--dns-interval", "0"])
        self.assertError("--raft-remove-after", ["--raft-remove-after", "soon"])

    def test_warp(self) -> None:
        """
        --warp-container needs --docker; the probe must be http(s) or none.
        """
        self.assertError("--docker", ["--warp-container", "warp"])
        o = parse(
            ["--warp-container", "warp", "--docker", "unix:/var/run/docker.sock", "--warp-probe-url", "none"]
        )
        self.assertIsNone(o["warp-probe-url"])
        self.assertError("--warp-probe-url", ["--warp-probe-url", "ftp://x"])
        self.assertEqual(o["warp-probe-from"], "container")
        self.assertEqual(parse(CONSTELLATION_WARP_PROBE_FROM="host")["warp-probe-from"], "host")
        self.assertError(
            "--warp-probe-from (CONSTELLATION_WARP_PROBE_FROM): 'tunnel' is not container or host",
            ["--warp-probe-from", "tunnel"],
        )
