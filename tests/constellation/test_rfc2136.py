"""
The RFC 2136 provider against a real BIND 9: signed updates, minimal
reads, and the fence that refuses a deposed writer.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from suite.constellation.dns import Fenced
from suite.constellation.rfc2136 import DNSUpdateError, RFC2136Provider, readTSIGKey
from suite.daemon import ConfigError
from tests.support.bind9 import KEY_NAME, Bind9Server

ZONE = "example.test"


class KeyFileTests(TestCase):
    def test_readsBindKeyFile(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('key "k1" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0";\n};\n')
        self.assertEqual(readTSIGKey(path), ("k1", "hmac-sha256", "c2VjcmV0"))

    def test_badKeyFile(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("nonsense")
        e = self.assertRaises(ConfigError, readTSIGKey, path)
        self.assertIn("--tsig-key-file", str(e))
        e = self.assertRaises(ConfigError, readTSIGKey, os.path.join(path, "missing"))
        self.assertIn("cannot read", str(e))

    def test_algorithmAndSecret(self) -> None:
        """
        An algorithm tsig-keygen does not write, or a secret that is not
        base64, fails at start-up naming the flag, not at every update;
        hmac-md5 is given its DNS name.
        """
        path = self.mktemp()
        for alg, secret, why in (
            ("hmac-foo", "c2VjcmV0", "algorithm 'hmac-foo' is not one of hmac-md5, hmac-sha1"),
            ("hmac-sha256", "c2VjcmV", "the secret is not base64"),
        ):
            with open(path, "w") as f:
                f.write(f'key "k1" {{\n\talgorithm {alg};\n\tsecret "{secret}";\n}};\n')
            e = self.assertRaises(ConfigError, readTSIGKey, path)
            self.assertTrue(str(e).startswith("--tsig-key-file (CONSTELLATION_TSIG_KEY_FILE): "), str(e))
            self.assertIn(why, str(e))
        with open(path, "w") as f:
            f.write('key "k1" {\n\talgorithm HMAC-MD5;\n\tsecret "c2VjcmV0";\n};\n')
        key = readTSIGKey(path)
        self.assertEqual(key, ("k1", "hmac-md5.sig-alg.reg.int", "c2VjcmV0"))
        RFC2136Provider(None, ("127.0.0.1", 53), ZONE, key)


class Bind9Tests(TestCase):
    timeout = 60

    async def test_updateReadAndFence(self) -> None:
        server = Bind9Server(self, ZONE)
        await server.start()
        old = server.provider(reactor)
        new = server.provider(reactor)
        self.assertEqual(await old.records([ZONE]), {})
        await old.apply([(ZONE, ["192.0.2.1"]), (f"*.{ZONE}", ["192.0.2.1"])], 3)
        self.assertEqual(await server.query(ZONE, "A"), ["192.0.2.1"])
        self.assertEqual(
            await old.records([ZONE, f"*.{ZONE}", f"*.n1.{ZONE}"]),
            {ZONE: ["192.0.2.1"], f"*.{ZONE}": ["192.0.2.1"]},
        )
        self.assertEqual(await old.fenceValue(), 3)
        # A newer writer raises the fence; the deposed writer's late write is refused.
        await new.apply([(ZONE, ["192.0.2.2", "2001:db8::2"])], 4)
        self.assertEqual(await new.fenceValue(), 4)
        with self.assertRaises(Fenced):
            await old.apply([(ZONE, ["192.0.2.1"])], 3)
        self.assertEqual(await server.query(ZONE, "A"), ["192.0.2.2"])
        self.assertEqual(await server.query(ZONE, "AAAA"), ["2001:db8::2"])
        # A fresh writer with an older token reads the fence and refuses.
        stale = server.provider(reactor)
        with self.assertRaises(Fenced):
            await stale.apply([(ZONE, ["192.0.2.9"])], 2)
        # Deleting a name.
        await new.apply([(ZONE, [])], 4)
        self.assertEqual(await server.query(ZONE, "A"), [])

    async def test_wrongKeyRefused(self) -> None:
        server = Bind9Server(self, ZONE)
        await server.start()
        bad = RFC2136Provider(
            reactor, ("127.0.0.1", server.port), ZONE, (KEY_NAME, "hmac-sha256", "d3Jvbmc=")
        )
        with self.assertRaises(DNSUpdateError):
            await bad.apply([(ZONE, ["192.0.2.1"])], 1)
