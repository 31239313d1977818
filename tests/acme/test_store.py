"""
Tests for the certificate stores and keys of suite.acme.
"""

from __future__ import annotations

import os
import stat

from cryptography import x509
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from suite.acme.interfaces import ICertificateStore
from suite.acme.keys import accountJWK, generatePrivateKeyPEM, makeCSR, signatureAlgorithm
from suite.acme.store import FileCertificateStore, MemoryCertificateStore, StoredCertificate, fileNameFor
from suite.pki.keys import certificateToPEM, keyToPEM
from suite.pki.mint import mintCA, mintCertificate


def sampleCertificate(names: list[str]) -> StoredCertificate:
    """
    A leaf for C{names} from a throwaway CA, with its key.
    """
    caCert, caKey = mintCA("store test CA", days=5)
    cert, key = mintCertificate(caCert, caKey, names[0], dnsNames=names, days=3)
    return StoredCertificate(certificateToPEM(cert, caCert), keyToPEM(key))


class StoredCertificateTests(SynchronousTestCase):
    """
    The certificate value object.
    """

    def test_properties(self) -> None:
        """
        names, notAfter and chain come from the PEM; toPEM/fromPEM round-trip.
        """
        stored = sampleCertificate(["a.example.test", "*.example.test"])
        self.assertEqual(stored.names, ["a.example.test", "*.example.test"])
        self.assertEqual(len(stored.chain), 2)
        self.assertEqual(stored.notAfter, stored.leaf.not_valid_after_utc.timestamp())
        self.assertEqual(StoredCertificate.fromPEM(stored.toPEM()), stored)

    def test_fromPEMNeedsBoth(self) -> None:
        """
        A file without a key or without a certificate is rejected.
        """
        stored = sampleCertificate(["a.example.test"])
        self.assertRaises(ValueError, StoredCertificate.fromPEM, stored.chainPEM)
        self.assertRaises(ValueError, StoredCertificate.fromPEM, stored.keyPEM)

    def test_fileNames(self) -> None:
        """
        Wildcards get a file-system friendly name; anything that is not a
        DNS name (a path, upper case, empty) is refused.
        """
        self.assertEqual(fileNameFor("a.example.test"), "a.example.test.pem")
        self.assertEqual(fileNameFor("*.example.test"), "_wildcard.example.test.pem")
        for bad in ("../etc/passwd", "A.example.test", "", "a/b", "a..b"):
            self.assertRaises(ValueError, fileNameFor, bad)


class KeyTests(SynchronousTestCase):
    """
    Account keys and CSRs.
    """

    def test_accountKeys(self) -> None:
        """
        EC P-256 keys sign with ES256, RSA keys with RS256; other curves
        are refused.
        """
        self.assertEqual(signatureAlgorithm(accountJWK(generatePrivateKeyPEM("ec"))).name, "ES256")
        self.assertEqual(signatureAlgorithm(accountJWK(generatePrivateKeyPEM("rsa"))).name, "RS256")
        self.assertRaises(ValueError, generatePrivateKeyPEM, "dsa")

    def test_csr(self) -> None:
        """
        The CSR names every domain as a SAN and is signed by the key.
        """
        csr = x509.load_der_x509_csr(makeCSR(generatePrivateKeyPEM(), ["a.example.test", "*.example.test"]))
        self.assertTrue(csr.is_signature_valid)
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(sans.get_values_for_type(x509.DNSName), ["a.example.test", "*.example.test"])
        self.assertRaises(ValueError, makeCSR, generatePrivateKeyPEM(), [])


class MemoryStoreTests(SynchronousTestCase):
    """
    The in-memory store.
    """

    def test_roundTrip(self) -> None:
        """
        What is saved is loaded; nothing saved loads as None.
        """
        store = MemoryCertificateStore()
        verifyObject(ICertificateStore, store)
        self.assertIsNone(self.successResultOf(store.loadAccountKey()))
        self.assertIsNone(self.successResultOf(store.loadCertificate("a.example.test")))
        stored = sampleCertificate(["a.example.test"])
        self.successResultOf(store.saveAccountKey(b"KEY"))
        self.successResultOf(store.saveCertificate("a.example.test", stored))
        self.assertEqual(self.successResultOf(store.loadAccountKey()), b"KEY")
        self.assertEqual(self.successResultOf(store.loadCertificate("a.example.test")), stored)


class FileStoreTests(TestCase):
    """
    The directory store (file work in the reactor's thread pool).
    """

    async def test_roundTrip(self) -> None:
        """
        Keys and certificates survive a new store on the same directory;
        files are 0600 in a 0700 directory, and no temporary file is left.
        """
        directory = os.path.join(os.path.abspath(self.mktemp()), "acme")
        store = FileCertificateStore(directory, reactor)
        verifyObject(ICertificateStore, store)
        self.assertIsNone(await store.loadAccountKey())
        self.assertIsNone(await store.loadCertificate("*.example.test"))
        account = generatePrivateKeyPEM()
        stored = sampleCertificate(["*.example.test", "example.test"])
        await store.saveAccountKey(account)
        await store.saveCertificate("*.example.test", stored)
        again = FileCertificateStore(directory, reactor)
        self.assertEqual(await again.loadAccountKey(), account)
        self.assertEqual(await again.loadCertificate("*.example.test"), stored)
        self.assertEqual(sorted(os.listdir(directory)), ["_wildcard.example.test.pem", "account.key"])
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        for name in os.listdir(directory):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode), 0o600)
