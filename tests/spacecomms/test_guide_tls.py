"""
The guide's TLS settings: its example (certificate and key, no CA) loads
with the trust source stated; C{server.tls.min_version: "1.3"} refuses
TLS 1.2 on the node's contexts.
"""

from __future__ import annotations

import os

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.config import ConfigInvalid, parseConfig
from suite.spacecomms.service import TLSContexts
from tests.spacecomms.support import makeCertificates


def _doc(d: str, **tls: object) -> dict[str, object]:
    return {
        "node": {"id": "A"},
        "api": {"auth": {"enabled": False}},
        "server": {
            "tls": {
                "enabled": True,
                "cert_path": os.path.join(d, "node.crt"),
                "key_path": os.path.join(d, "node.key"),
                **tls,
            }
        },
    }


class GuideTLSTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        self.dir = makeCertificates(base, ["A"])["A"]

    def test_caSources(self) -> None:
        """
        ca_path when given; else ca.crt beside the certificate; else the
        issuer at the end of a full-chain certificate file; else an error
        naming the key and what to do.
        """
        ca = os.path.join(self.dir, "ca.crt")
        given = parseConfig(_doc(self.dir, ca_path=ca))
        self.assertEqual(given.ca_source, "server.tls.ca_path")
        beside = parseConfig(_doc(self.dir))
        self.assertEqual(
            (beside.ca_path, beside.ca_source), (ca, f"ca.crt next to server.tls.cert_path ({ca})")
        )

        with open(ca, "rb") as f:
            caPEM = f.read()
        os.remove(ca)
        e = self.assertRaises(ConfigInvalid, parseConfig, _doc(self.dir))
        self.assertEqual(len(e.reasons), 1)
        self.assertIn("server.tls.ca_path: not set", e.reasons[0])
        self.assertIn("name the CA that signs every peer's certificate", e.reasons[0])

        with open(os.path.join(self.dir, "node.crt"), "ab") as f:
            f.write(caPEM)
        chained = parseConfig(_doc(self.dir))
        self.assertIsNone(chained.ca_path)
        self.assertIn("the last issuer certificate in server.tls.cert_path", chained.ca_source)
        contexts = TLSContexts(chained)
        self.assertEqual(contexts.bundle.caCert.subject, contexts.bundle.nodeCert.issuer)

    def test_minVersion(self) -> None:
        """
        min_version "1.3" (or "TLSv1.3") excludes TLS 1.2 from the peer
        server and client contexts; the default keeps it; anything else is
        refused naming the key.
        """
        default = TLSContexts(parseConfig(_doc(self.dir)))
        self.assertFalse(default.server().options._options & SSL.OP_NO_TLSv1_2)
        for value in ("1.3", "TLSv1.3"):
            cfg = parseConfig(_doc(self.dir, min_version=value))
            self.assertEqual(cfg.tls_min_version, "1.3")
            strict = TLSContexts(cfg)
            self.assertTrue(strict.server().options._options & SSL.OP_NO_TLSv1_2)
            self.assertTrue(strict.server(requireClientCert=False).options._options & SSL.OP_NO_TLSv1_2)
            self.assertTrue(strict.client("127.0.0.1").options._options & SSL.OP_NO_TLSv1_2)
        e = self.assertRaises(ConfigInvalid, parseConfig, _doc(self.dir, min_version="1.1"))
        self.assertEqual(e.reasons, ['server.tls.min_version: must be "1.2" or "1.3", got \'1.1\''])
