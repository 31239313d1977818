"""
Tests for L{suite.pki.command}: the C{pki init|node|client} commands.
"""

from __future__ import annotations

import io
import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from suite.pki.command import runInit, runMintClient, runNode, runPKI
from suite.pki.load import loadBundle, loadClientIdentity
from suite.pki.options import InitOptions, MintClientOptions, NodeOptions, PKIOptions


class InitOptionsTests(SynchronousTestCase):
    """
    Parsing C{pki init}.
    """

    def test_positionalFirst(self) -> None:
        """
        C{init DIR --node HOST} (the documented order) parses, with
        repeatable and comma-separated C{--node} and repeatable C{--spiffe}.
        """
        options = InitOptions()
        options.parseOptions(
            [
                "dir",
                "--node",
                "a.example",
                "--node",
                "10.0.0.1,::1",
                "--spiffe",
                "spiffe://e.org/a",
                "--force",
            ]
        )
        self.assertEqual(options["directory"], "dir")
        self.assertEqual(options["nodes"], ["a.example", "10.0.0.1", "::1"])
        self.assertEqual(options["spiffe"], ["spiffe://e.org/a"])
        self.assertTrue(options["force"])

    def test_positionalLast(self) -> None:
        """
        Flags may also come before DIR; numbers are converted.
        """
        options = InitOptions()
        options.parseOptions(["--node", "a.example", "--days", "30", "dir"])
        self.assertEqual((options["directory"], options["days"]), ("dir", 30))

    def test_defaultNodes(self) -> None:
        """
        Without C{--node} the node certificate names the loopback host.
        """
        options = InitOptions()
        options.parseOptions(["dir"])
        self.assertEqual(options["nodes"], ["localhost", "127.0.0.1", "::1"])

    def test_errorsNameTheFlag(self) -> None:
        """
        Bad values are refused with the flag's name and the reason.
        """
        for argv, fragment in [
            (["dir", "--node", "bad name"], "--node:"),
            (["dir", "--spiffe", "http://x"], "--spiffe:"),
            (["dir", "--days", "zero"], "--days:"),
            (["dir", "--days", "0"], "--days:"),
            (["dir", "--key-type", "dsa"], "--key-type:"),
            ([], "DIR:"),
            (["a", "b"], "DIR:"),
        ]:
            e = self.assertRaises(usage.UsageError, InitOptions().parseOptions, argv)
            self.assertTrue(str(e).startswith(fragment), (argv, str(e)))


class RunTests(SynchronousTestCase):
    """
    Running the commands.
    """

    def run_(self, argv: list[str]) -> tuple[int, str, str]:
        options = PKIOptions()
        options.parseOptions(argv)
        out, err = io.StringIO(), io.StringIO()
        code = runPKI(options, out, err)
        return code, out.getvalue(), err.getvalue()

    def test_init(self) -> None:
        """
        C{pki init} writes the bundle and prints each file with its mode and
        the node's names; a second run is refused with one line and code 2.
        """
        directory = self.mktemp()
        code, out, err = self.run_(["init", directory, "--node", "n1.example", "--node", "127.0.0.1"])
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"wrote {os.path.join(directory, 'node.key')} (mode 0600)", out)
        self.assertIn("DNS:n1.example IP:127.0.0.1", out)
        self.assertEqual(loadBundle(directory).identity.dnsNames, ("n1.example",))
        code, out, err = self.run_(["init", directory, "--node", "n1.example"])
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("refusing to overwrite", err)

    def test_nodeAndClient(self) -> None:
        """
        C{pki node} writes another node's bundle from the seed's CA and
        C{pki client} writes a client certificate from its client CA.
        """
        seed, node, client = self.mktemp(), self.mktemp(), self.mktemp()
        self.assertEqual(self.run_(["init", seed, "--node", "seed.example"])[0], 0)
        code, out, err = self.run_(["node", seed, "--out", node, "--node", "n2.example"])
        self.assertEqual((code, err), (0, ""))
        self.assertNotIn(os.path.join(node, "ca.key"), out)
        self.assertEqual(loadBundle(node).caCert, loadBundle(seed).caCert)
        code, out, err = self.run_(["client", node, "--name", "alice", "--out", client])
        self.assertEqual((code, err), (0, ""))
        self.assertIn("client.crt", out)
        self.assertEqual(loadClientIdentity(client).identity.commonName, "alice")

    def test_nodeWithoutCAKey(self) -> None:
        """
        C{pki node} from a bundle without C{ca.key} fails with one line.
        """
        seed, node = self.mktemp(), self.mktemp()
        self.run_(["init", seed])
        self.run_(["node", seed, "--out", node, "--node", "n2.example"])
        code, out, err = self.run_(["node", node, "--out", self.mktemp(), "--node", "n3.example"])
        self.assertEqual(code, 2)
        self.assertIn("ca.key is missing", err)

    def test_clientFromMissingBundle(self) -> None:
        """
        C{pki client} naming a missing bundle fails with one line naming it.
        """
        missing = self.mktemp()
        code, out, err = self.run_(["client", missing, "--name", "a", "--out", self.mktemp()])
        self.assertEqual(code, 2)
        self.assertIn(missing, err)

    def test_requiredFlags(self) -> None:
        """
        C{node} needs C{--out} and a name; C{client} needs C{--name} and
        C{--out}; C{pki} needs a subcommand.
        """
        self.assertRaises(usage.UsageError, NodeOptions().parseOptions, ["src", "--node", "a.example"])
        self.assertRaises(usage.UsageError, NodeOptions().parseOptions, ["src", "--out", "o"])
        self.assertRaises(usage.UsageError, MintClientOptions().parseOptions, ["src", "--out", "o"])
        self.assertRaises(usage.UsageError, MintClientOptions().parseOptions, ["src", "--name", "n"])
        self.assertRaises(usage.UsageError, PKIOptions().parseOptions, [])

    def test_clientNameRule(self) -> None:
        """
        C{client --name} follows the rule the servers' enrollment page
        applies: 1-64 characters from A-Z a-z 0-9 . _ @ -, the first a
        letter or digit; anything else is a usage error naming --name.
        """
        for good in ("alice", "a", "ops@example.com", "team-1.eu_west", "x" * 64):
            o = MintClientOptions()
            o.parseOptions(["src", "--name", good, "--out", "o"])
            self.assertEqual(o["name"], good)
        for bad in ("bad name!", "alice\n", "-lead", ".dot", "x" * 65, "caf\u00e9", "a/b", "a\nb"):
            e = self.assertRaises(
                usage.UsageError, MintClientOptions().parseOptions, ["src", "--name", bad, "--out", "o"]
            )
            self.assertTrue(str(e).startswith("--name: must be 1-64 characters"), str(e))

    def test_directRunners(self) -> None:
        """
        L{runInit}, L{runNode} and L{runMintClient} take their own options.
        """
        seed = self.mktemp()
        options = InitOptions()
        options.parseOptions([seed, "--key-type", "rsa", "--days", "10"])
        self.assertEqual(runInit(options, io.StringIO(), io.StringIO()), 0)
        node = NodeOptions()
        node.parseOptions([seed, "--out", self.mktemp(), "--node", "n.example", "--with-ca-key"])
        out = io.StringIO()
        self.assertEqual(runNode(node, out, io.StringIO()), 0)
        self.assertIn("ca.key (mode 0600)", out.getvalue())
        client = MintClientOptions()
        client.parseOptions([seed, "--name", "c", "--out", self.mktemp()])
        self.assertEqual(runMintClient(client, io.StringIO(), io.StringIO()), 0)
