"""
Tests for L{suite.pki.ca}: minting and writing bundles.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.trial.unittest import SynchronousTestCase

from suite.pki.bundle import BundleError
from suite.pki.ca import initBundle, mintClientCertificate, writeClientCertificate, writeNodeCertificate
from suite.pki.keys import generateKey, keyMatchesCertificate
from suite.pki.load import loadBundle
from suite.pki.mint import mintCA, mintCertificate, mintSelfSigned
from suite.pki.names import splitNames

from . import helpers

BUNDLE = ("ca.crt", "ca.key", "client-ca.crt", "client-ca.key", "node.crt", "node.key")


def _ext(cert: x509.Certificate, kind: type) -> object:
    return cert.extensions.get_extension_for_class(kind).value


class MintTests(SynchronousTestCase):
    """
    L{mintCA} and L{mintCertificate}.
    """

    def test_caIsSelfSignedCA(self) -> None:
        """
        A minted CA is self-signed, a CA (path length 0) that may sign
        certificates, and uses EC P-256 by default.
        """
        cert, key = mintCA("a CA", days=10)
        cert.verify_directly_issued_by(cert)
        constraints = _ext(cert, x509.BasicConstraints)
        assert isinstance(constraints, x509.BasicConstraints)
        self.assertTrue(constraints.ca)
        self.assertEqual(constraints.path_length, 0)
        usage = _ext(cert, x509.KeyUsage)
        assert isinstance(usage, x509.KeyUsage)
        self.assertTrue(usage.key_cert_sign)
        self.assertIsInstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.assertEqual(key.curve.name, "secp256r1")
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        self.assertTrue(datetime.timedelta(days=10) <= lifetime <= datetime.timedelta(days=10, minutes=6))

    def test_leafNamesAndUsages(self) -> None:
        """
        A leaf carries the DNS, IP and URI SANs asked for, serverAuth and
        clientAuth, is not a CA, and is signed by its issuer.
        """
        caCert, caKey = helpers.nodeCA()
        cert, key = mintCertificate(
            caCert,
            caKey,
            "node1",
            dnsNames=["node1.example", "*.svc.example"],
            ipAddresses=["10.0.0.1", ipaddress.ip_address("::1")],
            uris=["spiffe://example.org/node/1"],
        )
        cert.verify_directly_issued_by(caCert)
        self.assertTrue(keyMatchesCertificate(key, cert))
        san = _ext(cert, x509.SubjectAlternativeName)
        assert isinstance(san, x509.SubjectAlternativeName)
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["node1.example", "*.svc.example"])
        self.assertEqual(
            san.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("::1")],
        )
        self.assertEqual(
            san.get_values_for_type(x509.UniformResourceIdentifier), ["spiffe://example.org/node/1"]
        )
        eku = _ext(cert, x509.ExtendedKeyUsage)
        assert isinstance(eku, x509.ExtendedKeyUsage)
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        constraints = _ext(cert, x509.BasicConstraints)
        assert isinstance(constraints, x509.BasicConstraints)
        self.assertFalse(constraints.ca)

    def test_clientOnlyUsage(self) -> None:
        """
        C{serverAuth=False} leaves only clientAuth; asking for neither is an
        error.
        """
        caCert, caKey = helpers.nodeCA()
        cert, _ = mintCertificate(caCert, caKey, "c", serverAuth=False)
        eku = _ext(cert, x509.ExtendedKeyUsage)
        assert isinstance(eku, x509.ExtendedKeyUsage)
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.assertRaises(ValueError, mintCertificate, caCert, caKey, "c", serverAuth=False, clientAuth=False)

    def test_rsa(self) -> None:
        """
        C{keyType="rsa"} makes RSA keys; RSA leaves also allow key
        encipherment.
        """
        caCert, caKey = mintCA("rsa CA", keyType="rsa")
        self.assertIsInstance(caKey, rsa.RSAPrivateKey)
        cert, key = mintCertificate(caCert, caKey, "n", dnsNames=["n.example"], keyType="rsa")
        self.assertIsInstance(key, rsa.RSAPrivateKey)
        usage = _ext(cert, x509.KeyUsage)
        assert isinstance(usage, x509.KeyUsage)
        self.assertTrue(usage.key_encipherment)
        cert.verify_directly_issued_by(caCert)

    def test_unknownKeyType(self) -> None:
        """
        An unknown key type or a short RSA key is refused with a reason.
        """
        e = self.assertRaises(ValueError, generateKey, "dsa")
        self.assertIn("dsa", str(e))
        self.assertRaises(ValueError, generateKey, "rsa", 1024)

    def test_validityCappedByIssuer(self) -> None:
        """
        A leaf never outlives its issuer unless C{notAfter} says so.
        """
        caCert, caKey = mintCA("short CA", days=5)
        cert, _ = mintCertificate(caCert, caKey, "n", days=825)
        self.assertEqual(cert.not_valid_after_utc, caCert.not_valid_after_utc)

    def test_explicitValidity(self) -> None:
        """
        C{notBefore}/C{notAfter} set the validity (for expired test
        certificates); an empty period is refused.
        """
        caCert, caKey = helpers.nodeCA()
        cert, _ = mintCertificate(caCert, caKey, "n", notBefore=helpers.LONG_AGO, notAfter=helpers.YESTERDAY)
        self.assertEqual(cert.not_valid_after_utc, helpers.YESTERDAY.replace(microsecond=0))
        self.assertRaises(
            ValueError,
            mintCertificate,
            caCert,
            caKey,
            "n",
            notBefore=helpers.YESTERDAY,
            notAfter=helpers.LONG_AGO,
        )
        self.assertRaises(ValueError, mintCertificate, caCert, caKey, "n", days=0)

    def test_badNames(self) -> None:
        """
        Malformed DNS names and SPIFFE IDs are refused when minting.
        """
        caCert, caKey = helpers.nodeCA()
        self.assertRaises(ValueError, mintCertificate, caCert, caKey, "n", dnsNames=["bad name"])
        self.assertRaises(ValueError, mintCertificate, caCert, caKey, "n", uris=["spiffe://Upper/x"])
        self.assertRaises(ValueError, mintCertificate, caCert, caKey, "n", uris=["spiffe://example.org"])
        self.assertRaises(ValueError, mintCertificate, caCert, caKey, "n", uris=["no-scheme"])

    def test_splitNames(self) -> None:
        """
        L{splitNames} sorts DNS names from IP addresses, normalises and
        de-duplicates them, and refuses names that are neither.
        """
        self.assertEqual(
            splitNames(["Node1.Example.", "127.0.0.1", "[::1]", "node1.example", "0:0::1"]),
            (("node1.example",), ("127.0.0.1", "::1")),
        )
        e = self.assertRaises(ValueError, splitNames, ["under_score!"])
        self.assertIn("under_score!", str(e))


class BundleWritingTests(SynchronousTestCase):
    """
    L{initBundle}, L{writeNodeCertificate}, L{mintClientCertificate}.
    """

    def test_initBundleFiles(self) -> None:
        """
        L{initBundle} writes the six files (keys 0600, certificates 0644, in
        a 0700 directory it creates), which L{loadBundle} loads back.
        """
        directory = os.path.join(self.mktemp(), "bundle")
        bundle = initBundle(directory, ["node1.example", "10.0.0.1"], spiffeIds=["spiffe://ex.org/n/1"])
        self.assertEqual(sorted(os.listdir(directory)), sorted(BUNDLE))
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        for name in BUNDLE:
            mode = stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)
            self.assertEqual(mode, 0o600 if name.endswith(".key") else 0o644, name)
        loaded = loadBundle(directory)
        self.assertEqual(loaded.nodeCert, bundle.nodeCert)
        self.assertEqual(loaded.caCert, bundle.caCert)
        self.assertIsNotNone(loaded.caKey)
        self.assertIsNotNone(loaded.clientCAKey)
        self.assertNotEqual(loaded.caCert, loaded.clientCACert)
        identity = loaded.identity
        self.assertEqual(identity.commonName, "node1.example")
        self.assertEqual(identity.ipAddresses, ("10.0.0.1",))
        self.assertEqual(identity.spiffeId, "spiffe://ex.org/n/1")

    def test_refuseOverwrite(self) -> None:
        """
        L{initBundle} refuses a directory that already holds bundle files,
        naming them, and leaves them alone; C{force=True} replaces them.
        """
        directory = self.mktemp()
        first = initBundle(directory, ["a.example"])
        e = self.assertRaises(BundleError, initBundle, directory, ["b.example"])
        self.assertIn(directory, str(e))
        self.assertIn("node.key", str(e))
        self.assertEqual(loadBundle(directory).nodeCert, first.nodeCert)
        second = initBundle(directory, ["b.example"], force=True)
        self.assertEqual(loadBundle(directory).nodeCert, second.nodeCert)

    def test_partialBundleRefused(self) -> None:
        """
        Even one stray bundle file (a lone C{ca.key}) blocks L{initBundle}.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "ca.key"), "wb") as f:
            f.write(b"precious")
        self.assertRaises(BundleError, initBundle, directory, ["a.example"])

    def test_needsAName(self) -> None:
        """
        A node certificate needs a host name, IP address or SPIFFE ID.
        """
        self.assertRaises(ValueError, initBundle, self.mktemp(), [])

    def test_spiffeOnlyNode(self) -> None:
        """
        A node with only a SPIFFE ID gets the ID's last path segment as its
        common name.
        """
        bundle = initBundle(self.mktemp(), [], spiffeIds=["spiffe://ex.org/ns/db/node-7"])
        self.assertEqual(bundle.identity.commonName, "node-7")

    def test_writeNodeCertificate(self) -> None:
        """
        Another node's bundle shares C{ca.crt} and the client CA, has its own
        node certificate from the same CA, and gets C{ca.key} only when
        asked.
        """
        seed = self.mktemp()
        seedBundle = initBundle(seed, ["seed.example"])
        other = self.mktemp()
        bundle = writeNodeCertificate(seed, other, ["node2.example", "10.0.0.2"])
        self.assertNotIn("ca.key", os.listdir(other))
        self.assertIn("client-ca.key", os.listdir(other))
        loaded = loadBundle(other)
        self.assertEqual(loaded.caCert, seedBundle.caCert)
        self.assertEqual(loaded.clientCACert, seedBundle.clientCACert)
        self.assertEqual(loaded.nodeCert, bundle.nodeCert)
        self.assertEqual(loaded.identity.dnsNames, ("node2.example",))
        withKey = writeNodeCertificate(seedBundle, self.mktemp(), ["node3.example"], includeCAKey=True)
        self.assertIsNotNone(withKey.caKey)
        self.assertRaises(BundleError, writeNodeCertificate, seed, other, ["node2.example"])

    def test_writeNodeCertificateNeedsCAKey(self) -> None:
        """
        Without C{ca.key} no node certificate can be minted; the error names
        the bundle and the missing file.
        """
        seed = self.mktemp()
        initBundle(seed, ["seed.example"])
        other = self.mktemp()
        writeNodeCertificate(seed, other, ["node2.example"])
        e = self.assertRaises(BundleError, writeNodeCertificate, other, self.mktemp(), ["node3.example"])
        self.assertIn(other, str(e))
        self.assertIn("ca.key", str(e))

    def test_mintClientCertificate(self) -> None:
        """
        Client certificates are signed by the client CA, for clientAuth only.
        """
        bundle = initBundle(self.mktemp(), ["seed.example"])
        certPEM, keyPEM = mintClientCertificate(bundle, "alice", uris=["spiffe://ex.org/user/alice"])
        cert = x509.load_pem_x509_certificate(certPEM)
        assert bundle.clientCACert is not None
        cert.verify_directly_issued_by(bundle.clientCACert)
        self.assertRaises(ValueError, cert.verify_directly_issued_by, bundle.caCert)
        eku = _ext(cert, x509.ExtendedKeyUsage)
        assert isinstance(eku, x509.ExtendedKeyUsage)
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.assertIn(b"PRIVATE KEY", keyPEM)

    def test_mintClientNeedsClientCAKey(self) -> None:
        """
        A bundle without C{client-ca.key} cannot mint client certificates.
        """
        seed = self.mktemp()
        initBundle(seed, ["seed.example"])
        other = self.mktemp()
        bundle = writeNodeCertificate(seed, other, ["n2.example"], includeClientCAKey=False)
        e = self.assertRaises(BundleError, mintClientCertificate, bundle, "bob")
        self.assertIn("client-ca.key", str(e))

    def test_writeClientCertificate(self) -> None:
        """
        L{writeClientCertificate} writes C{client.crt}, C{client.key} (0600)
        and C{ca.crt}.
        """
        bundle = initBundle(self.mktemp(), ["seed.example"])
        out = self.mktemp()
        paths = writeClientCertificate(bundle, "carol", out)
        self.assertEqual(sorted(os.path.basename(p) for p in paths), ["ca.crt", "client.crt", "client.key"])
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(out, "client.key")).st_mode), 0o600)
        self.assertRaises(BundleError, writeClientCertificate, bundle, "carol", out)


class SelfSignedTests(SynchronousTestCase):
    """
    L{mintSelfSigned}.
    """

    def test_selfSigned(self) -> None:
        """
        A self-signed server certificate names its hosts, signs itself, is
        for serverAuth only and is not a CA.
        """
        cert, key = mintSelfSigned(["apex.example", "192.0.2.1"], days=30)
        cert.verify_directly_issued_by(cert)
        self.assertTrue(keyMatchesCertificate(key, cert))
        san = _ext(cert, x509.SubjectAlternativeName)
        assert isinstance(san, x509.SubjectAlternativeName)
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["apex.example"])
        eku = _ext(cert, x509.ExtendedKeyUsage)
        assert isinstance(eku, x509.ExtendedKeyUsage)
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.SERVER_AUTH])
        constraints = _ext(cert, x509.BasicConstraints)
        assert isinstance(constraints, x509.BasicConstraints)
        self.assertFalse(constraints.ca)
        self.assertRaises(ValueError, mintSelfSigned, [])
