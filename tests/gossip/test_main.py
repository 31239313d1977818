"""
Tests for the C{python -m suite.gossip} runner's options.
"""

from __future__ import annotations

import base64

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from suite.gossip.__main__ import Options, advertisable, main, parseAddress


class OptionsTests(SynchronousTestCase):
    """
    Addresses, seeds, metadata and the key file.
    """

    def test_parseAddress(self) -> None:
        """
        HOST, HOST:PORT, [V6]:PORT and bare IPv6 parse; the default port is 7946.
        """
        self.assertEqual(parseAddress("10.0.0.1"), ("10.0.0.1", 7946))
        self.assertEqual(parseAddress("node-a:8000"), ("node-a", 8000))
        self.assertEqual(parseAddress("[::1]:9000"), ("::1", 9000))
        self.assertEqual(parseAddress("[::1]"), ("::1", 7946))
        self.assertEqual(parseAddress("fe80::1"), ("fe80::1", 7946))
        for bad in (":80", "h:x", "h:70000", "[::1", "[::1]x"):
            self.assertRaises(usage.UsageError, parseAddress, bad)

    def test_options(self) -> None:
        """
        --join is repeatable and comma-separated; --meta is KEY=VALUE.
        """
        o = Options()
        o.parseOptions(
            [
                "--bind",
                "127.0.0.1:7000",
                "--join",
                "a,b:1",
                "--join",
                "c",
                "--meta",
                "role=web",
                "--name",
                "x",
            ]
        )
        self.assertEqual(o["bindAddress"], ("127.0.0.1", 7000))
        self.assertEqual(o["join"], [("a", 7946), ("b", 1), ("c", 7946)])
        self.assertEqual(o["meta"], {"role": "web"})
        self.assertIsNone(o["key"])
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--meta", "novalue"])
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--profile", "wan"])
        self.assertEqual(o["label"], "")
        labelled = Options()
        labelled.parseOptions(["--label", "prod"])
        self.assertEqual(labelled["label"], "prod")
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--label", "x" * 256])

    def test_keyFile(self) -> None:
        """
        The key file must exist and hold base64 AES keys, the primary first.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("short\n")
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--key-file", path])
        with open(path, "w") as f:
            f.write("k" * 20 + "\n")  # base64 of 15 bytes: no AES key size
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--key-file", path])
        with open(path, "w") as f:
            f.write(
                base64.b64encode(b"k" * 32).decode() + "\n# old key\n" + base64.b64encode(b"j" * 16).decode()
            )
        o = Options()
        o.parseOptions(["--key-file", path])
        self.assertEqual(o["key"].keys, [b"k" * 32, b"j" * 16])
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--key-file", path + ".missing"])

    def test_advertise(self) -> None:
        """
        The advertised address is an IP literal: host names are resolved and
        an unspecified bind address is replaced by a routable one.
        """
        self.assertEqual(advertisable(("localhost", 7000), None)[1], 7000)
        self.assertEqual(advertisable(("127.0.0.1", 7000), None), ("127.0.0.1", 7000))
        self.assertEqual(advertisable(("0.0.0.0", 7000), ("127.0.0.1", 7946)), ("127.0.0.1", 7000))
        o = Options()
        o.parseOptions(["--bind", "0.0.0.0:7000", "--join", "127.0.0.1"])
        self.assertEqual(o["advertiseAddress"], ("127.0.0.1", 7000))
        self.assertRaises(usage.UsageError, advertisable, ("no-such-host.invalid", 1), None)

    def test_mainUsageError(self) -> None:
        """
        A bad argument exits 2 before anything starts.
        """
        self.assertEqual(main(["--bind", "h:x"]), 2)
