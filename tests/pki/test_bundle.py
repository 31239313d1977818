"""
Tests for L{suite.pki.bundle}: loading bundles and the messages of every
way they can be wrong.
"""

from __future__ import annotations

import base64
import datetime
import os

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from suite.daemon import ConfigError
from suite.pki.bundle import Bundle, BundleError
from suite.pki.ca import initBundle, writeClientCertificate
from suite.pki.keys import certificateToPEM, keyToPEM
from suite.pki.load import checkNodeIdentity, loadBundle, loadBundleFromEnv, loadClientIdentity, loadIdentity
from suite.pki.mint import mintCA, mintCertificate

from . import helpers


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class LoadBundleTests(SynchronousTestCase):
    """
    L{loadBundle} checks everything at load time and names the file at fault.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.bundle = initBundle(self.directory, ["node1.example", "127.0.0.1"])

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def assertBundleError(self, *fragments: str, **kwargs: object) -> BundleError:
        """
        Loading fails with a one-line L{BundleError} (a L{ConfigError})
        containing every fragment.
        """
        e = self.assertRaises(BundleError, loadBundle, self.directory, **kwargs)
        self.assertIsInstance(e, ConfigError)
        message = str(e)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return e

    def test_loads(self) -> None:
        """
        A bundle written by L{initBundle} loads with every part, and its PEM
        accessors give back the files' contents.
        """
        bundle = loadBundle(self.directory)
        self.assertEqual(bundle.caCertPEM, _read(self.path("ca.crt")))
        self.assertEqual(bundle.nodeCertPEM, _read(self.path("node.crt")))
        self.assertEqual(bundle.nodeKeyPEM, _read(self.path("node.key")))
        self.assertEqual(bundle.clientCACertPEM, _read(self.path("client-ca.crt")))
        self.assertEqual(bundle.clientCAKeyPEM, _read(self.path("client-ca.key")))
        self.assertEqual(bundle.caKeyPEM, _read(self.path("ca.key")))
        self.assertEqual(bundle.source, self.directory)
        self.assertEqual(
            repr(bundle), f"<Bundle from {self.directory}: CN=node1.example DNS:node1.example IP:127.0.0.1>"
        )

    def test_optionalKeys(self) -> None:
        """
        C{ca.key} and C{client-ca.key} are optional.
        """
        os.remove(self.path("ca.key"))
        os.remove(self.path("client-ca.key"))
        bundle = loadBundle(self.directory)
        self.assertIsNone(bundle.caKey)
        self.assertIsNone(bundle.clientCAKey)
        self.assertIsNone(bundle.caKeyPEM)

    def test_noDirectory(self) -> None:
        """
        A missing directory is named.
        """
        missing = self.mktemp()
        e = self.assertRaises(BundleError, loadBundle, missing)
        self.assertIn(missing, str(e))
        self.assertIn("no such", str(e))

    def test_missingFile(self) -> None:
        """
        Each required file, when missing, is named.
        """
        for name in ("ca.crt", "node.crt", "node.key", "client-ca.crt"):
            data = _read(self.path(name))
            os.remove(self.path(name))
            self.assertBundleError(self.path(name), "no such file")
            _write(self.path(name), data)

    def test_unreadable(self) -> None:
        """
        A file that cannot be read is named with the reason.
        """
        os.remove(self.path("node.key"))
        os.mkdir(self.path("node.key"))
        self.assertBundleError(self.path("node.key"), "cannot read")
        os.rmdir(self.path("node.key"))
        if os.geteuid() != 0:
            _write(self.path("node.key"), keyToPEM(self.bundle.nodeKey))
            os.chmod(self.path("node.key"), 0)
            self.assertBundleError(self.path("node.key"), "cannot read", "ermission denied")

    def test_notPEM(self) -> None:
        """
        Garbage, or a key where a certificate belongs (and the reverse), is
        named as not PEM.
        """
        _write(self.path("ca.crt"), b"hello\n")
        self.assertBundleError(self.path("ca.crt"), "not a PEM certificate")
        _write(self.path("ca.crt"), keyToPEM(self.bundle.nodeKey))
        self.assertBundleError(self.path("ca.crt"), "private key, not a PEM certificate")
        _write(self.path("ca.crt"), certificateToPEM(self.bundle.caCert))
        _write(self.path("node.key"), certificateToPEM(self.bundle.nodeCert))
        self.assertBundleError(self.path("node.key"), "not a PEM private key")

    def test_corruptPEM(self) -> None:
        """
        A PEM block with a broken body is named.
        """
        lines = certificateToPEM(self.bundle.nodeCert).splitlines(keepends=True)
        _write(self.path("node.crt"), b"".join(lines[:2] + lines[4:]))
        self.assertBundleError(self.path("node.crt"), "not a valid PEM certificate")

    def test_keyMismatch(self) -> None:
        """
        A node key that is not the node certificate's is named, with the
        certificate.
        """
        _write(self.path("node.key"), keyToPEM(helpers.clientBundle().nodeKey))
        self.assertBundleError(self.path("node.key"), "does not match", self.path("node.crt"))

    def test_clientCAKeyMismatch(self) -> None:
        """
        A client CA key that is not the client CA's is named.
        """
        _write(self.path("client-ca.key"), keyToPEM(helpers.clientCA()[1]))
        self.assertBundleError(self.path("client-ca.key"), "does not match", self.path("client-ca.crt"))

    def test_caKeyMismatch(self) -> None:
        """
        A CA key that is not the CA's is named.
        """
        _write(self.path("ca.key"), keyToPEM(helpers.nodeCA()[1]))
        self.assertBundleError(self.path("ca.key"), "does not match", self.path("ca.crt"))

    def test_nodeNotSignedByCA(self) -> None:
        """
        A node certificate (with its matching key) from another CA is named.
        """
        foreign = helpers.foreignBundle()
        _write(self.path("node.crt"), certificateToPEM(foreign.nodeCert))
        _write(self.path("node.key"), keyToPEM(foreign.nodeKey))
        self.assertBundleError(self.path("node.crt"), "not signed by", self.path("ca.crt"))

    def test_expiredNode(self) -> None:
        """
        An expired node certificate is named with its expiry date.
        """
        assert self.bundle.caKey is not None
        cert, key = mintCertificate(
            self.bundle.caCert,
            self.bundle.caKey,
            "old",
            dnsNames=["old.example"],
            notBefore=helpers.LONG_AGO,
            notAfter=helpers.YESTERDAY,
        )
        _write(self.path("node.crt"), certificateToPEM(cert))
        _write(self.path("node.key"), keyToPEM(key))
        self.assertBundleError(self.path("node.crt"), "expired on", helpers.YESTERDAY.strftime("%Y-%m-%d"))

    def test_expiryMeasuredAtNow(self) -> None:
        """
        The C{now} argument sets the time of the check: far in the future
        every certificate has expired, in the past none is valid yet.
        """
        future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=5000)
        self.assertBundleError(self.path("ca.crt"), "expired", now=future)
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
        self.assertBundleError(self.path("ca.crt"), "not valid until", now=past)

    def test_caNotACA(self) -> None:
        """
        A leaf certificate in C{ca.crt} is refused as not a CA.
        """
        _write(self.path("ca.crt"), certificateToPEM(self.bundle.nodeCert))
        self.assertBundleError(self.path("ca.crt"), "not a CA certificate")

    def test_chainInNodeCert(self) -> None:
        """
        Extra blocks in C{ca.crt} become extra trust roots, and C{node.crt}
        may hold intermediates after the leaf; both round-trip.
        """
        other = helpers.foreignCA()[0]
        _write(self.path("ca.crt"), certificateToPEM(other, self.bundle.caCert))
        os.remove(self.path("ca.key"))
        bundle = loadBundle(self.directory)
        self.assertEqual(bundle.caCert, self.bundle.caCert)
        self.assertEqual(bundle.extraTrust, (other,))
        self.assertEqual(bundle.trustRoots, (self.bundle.caCert, other))


class EnvironmentTests(SynchronousTestCase):
    """
    L{loadBundleFromEnv} reads base64 PEM from C{CERT_*} and names the
    variable at fault.
    """

    def setUp(self) -> None:
        self.bundle = initBundle(self.mktemp(), ["node1.example"])
        assert self.bundle.clientCACertPEM is not None and self.bundle.clientCAKeyPEM is not None
        self.environ = {
            "CERT_CA": base64.b64encode(self.bundle.caCertPEM).decode(),
            "CERT_NODE": base64.b64encode(self.bundle.nodeCertPEM).decode(),
            "CERT_NODE_KEY": base64.b64encode(self.bundle.nodeKeyPEM).decode(),
            "CERT_CLIENT_CA": base64.b64encode(self.bundle.clientCACertPEM).decode(),
            "CERT_CLIENT_CA_KEY": base64.b64encode(self.bundle.clientCAKeyPEM).decode(),
        }

    def test_loads(self) -> None:
        """
        All five variables give the same bundle as the files; no CA key comes
        from the environment.
        """
        bundle = loadBundleFromEnv(self.environ)
        self.assertEqual(bundle.nodeCert, self.bundle.nodeCert)
        self.assertEqual(bundle.clientCAKeyPEM, self.bundle.clientCAKeyPEM)
        self.assertIsNone(bundle.caKey)
        self.assertEqual(bundle.source, "environment")

    def test_rawPEMAndWrappedBase64(self) -> None:
        """
        A value that is already PEM, or base64 wrapped over lines, is
        accepted; the client CA key is optional.
        """
        self.environ["CERT_CA"] = self.bundle.caCertPEM.decode()
        encoded = self.environ["CERT_NODE"]
        self.environ["CERT_NODE"] = "\n".join(encoded[i : i + 64] for i in range(0, len(encoded), 64))
        del self.environ["CERT_CLIENT_CA_KEY"]
        bundle = loadBundleFromEnv(self.environ)
        self.assertIsNone(bundle.clientCAKey)

    def test_missingVariable(self) -> None:
        """
        A missing required variable is named, with the list of required ones.
        """
        for name in ("CERT_CA", "CERT_NODE", "CERT_NODE_KEY", "CERT_CLIENT_CA"):
            environ = dict(self.environ)
            del environ[name]
            e = self.assertRaises(BundleError, loadBundleFromEnv, environ)
            self.assertTrue(str(e).startswith(f"{name}: not set"), str(e))

    def test_badBase64(self) -> None:
        """
        A value that is not base64 is named.
        """
        self.environ["CERT_NODE_KEY"] = "%%% not base64 %%%"
        e = self.assertRaises(BundleError, loadBundleFromEnv, self.environ)
        self.assertEqual(str(e), "CERT_NODE_KEY: not valid base64")

    def test_mismatchNamesVariables(self) -> None:
        """
        A key that does not match names both variables; a wrong CA names
        C{CERT_CA}.
        """
        self.environ["CERT_NODE_KEY"] = base64.b64encode(keyToPEM(helpers.clientBundle().nodeKey)).decode()
        e = self.assertRaises(BundleError, loadBundleFromEnv, self.environ)
        self.assertEqual(str(e), "CERT_NODE_KEY: private key does not match CERT_NODE")
        self.setUp()
        self.environ["CERT_CA"] = base64.b64encode(certificateToPEM(helpers.foreignCA()[0])).decode()
        e = self.assertRaises(BundleError, loadBundleFromEnv, self.environ)
        self.assertEqual(str(e), "CERT_NODE: not signed by CERT_CA")

    def test_notPEM(self) -> None:
        """
        Base64 of something that is not PEM is named.
        """
        self.environ["CERT_CLIENT_CA"] = base64.b64encode(b"just text").decode()
        e = self.assertRaises(BundleError, loadBundleFromEnv, self.environ)
        self.assertEqual(str(e), "CERT_CLIENT_CA: not a PEM certificate")


class IdentityTests(SynchronousTestCase):
    """
    L{loadIdentity}: a certificate, a key and a trust bundle in separate
    files (the C{CEPTRA_TLS_IDENTITY_*} style).
    """

    def setUp(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        self.cert = os.path.join(base, "id.crt")
        self.key = os.path.join(base, "id.key")
        self.trust = os.path.join(base, "trust.pem")
        bundle = helpers.serverBundle()
        _write(self.cert, bundle.nodeCertPEM)
        _write(self.key, bundle.nodeKeyPEM)
        _write(self.trust, certificateToPEM(helpers.foreignCA()[0], helpers.nodeCA()[0]))

    def test_loadsWithSeveralCAs(self) -> None:
        """
        The trust bundle may hold several CAs; the issuing one becomes
        C{caCert}, the others extra trust, and there is no client CA.
        """
        bundle = loadIdentity(self.cert, self.key, self.trust)
        self.assertEqual(bundle.caCert, helpers.nodeCA()[0])
        self.assertEqual(bundle.extraTrust, (helpers.foreignCA()[0],))
        self.assertIsNone(bundle.clientCACert)

    def test_labelsInMessages(self) -> None:
        """
        Labels (the environment variable names) and paths both appear in
        messages.
        """
        _write(self.key, keyToPEM(helpers.clientBundle().nodeKey))
        e = self.assertRaises(
            BundleError,
            loadIdentity,
            self.cert,
            self.key,
            self.trust,
            certLabel="CEPTRA_TLS_IDENTITY_CERT",
            keyLabel="CEPTRA_TLS_IDENTITY_KEY",
        )
        self.assertEqual(
            str(e),
            f"CEPTRA_TLS_IDENTITY_KEY ({self.key}): private key does not match "
            f"CEPTRA_TLS_IDENTITY_CERT ({self.cert})",
        )

    def test_untrusted(self) -> None:
        """
        A certificate not issued by any CA of the trust bundle is refused,
        naming both files.
        """
        _write(self.trust, certificateToPEM(helpers.foreignCA()[0]))
        e = self.assertRaises(BundleError, loadIdentity, self.cert, self.key, self.trust)
        self.assertEqual(str(e), f"{self.cert}: not signed by {self.trust}")

    def test_missing(self) -> None:
        """
        A missing trust bundle is named.
        """
        os.remove(self.trust)
        e = self.assertRaises(BundleError, loadIdentity, self.cert, self.key, self.trust, trustLabel="T")
        self.assertEqual(str(e), f"T ({self.trust}): cannot read: no such file")

    def test_intermediate(self) -> None:
        """
        A certificate file holding leaf then intermediate chains through it to
        the trust bundle; out-of-order blocks are refused.
        """
        rootCert, rootKey = mintCA("root", days=100)
        # An intermediate CA: a CA certificate issued by the root.
        interKey = mintCA("tmp")[1]
        from cryptography import x509

        interCert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "inter")]))
            .issuer_name(rootCert.subject)
            .public_key(interKey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(helpers.YESTERDAY)
            .not_valid_after(helpers.NOW + datetime.timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(rootKey, __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256())
        )
        leaf, leafKey = mintCertificate(interCert, interKey, "leaf", dnsNames=["leaf.example"])
        _write(self.cert, certificateToPEM(leaf, interCert))
        _write(self.key, keyToPEM(leafKey))
        _write(self.trust, certificateToPEM(rootCert))
        bundle = loadIdentity(self.cert, self.key, self.trust)
        self.assertEqual(bundle.nodeChain, (interCert,))
        self.assertEqual(bundle.caCert, rootCert)
        _write(self.cert, certificateToPEM(leaf, rootCert, interCert))
        e = self.assertRaises(BundleError, loadIdentity, self.cert, self.key, self.trust)
        self.assertIn("out of order", str(e))

    def test_checkNodeIdentity(self) -> None:
        """
        L{checkNodeIdentity} passes when the node's own certificate carries
        the configured names and fails fast, naming the label, when not.
        """
        bundle = loadIdentity(self.cert, self.key, self.trust)
        identity = checkNodeIdentity(bundle, hostname="server.example", spiffeId=helpers.SPIFFE_SERVER)
        self.assertEqual(identity.commonName, "server.example")
        e = self.assertRaises(
            BundleError,
            checkNodeIdentity,
            bundle,
            spiffeId="spiffe://example.org/other",
            label="CEPTRA_TLS_IDENTITY_CERT",
        )
        self.assertTrue(
            str(e).startswith("CEPTRA_TLS_IDENTITY_CERT: node certificate does not match"), str(e)
        )
        e = self.assertRaises(BundleError, checkNodeIdentity, bundle, spiffeId="http://x")
        self.assertIn("not a SPIFFE ID", str(e))


class ClientIdentityTests(SynchronousTestCase):
    """
    L{loadClientIdentity} reads what C{pki client} writes.
    """

    def test_roundTrip(self) -> None:
        """
        A client directory loads into a bundle presenting the client
        certificate and trusting the servers' CA.
        """
        bundle = initBundle(self.mktemp(), ["seed.example"])
        out = self.mktemp()
        writeClientCertificate(bundle, "dave", out)
        client = loadClientIdentity(out)
        self.assertEqual(client.identity.commonName, "dave")
        self.assertEqual(client.caCert, bundle.caCert)

    def test_mismatch(self) -> None:
        """
        A client key that does not match is named.
        """
        bundle = initBundle(self.mktemp(), ["seed.example"])
        out = self.mktemp()
        writeClientCertificate(bundle, "dave", out)
        _write(os.path.join(out, "client.key"), keyToPEM(helpers.clientBundle().nodeKey))
        e = self.assertRaises(BundleError, loadClientIdentity, out)
        self.assertIn(os.path.join(out, "client.key"), str(e))
        self.assertIn("does not match", str(e))


class DirectoryAndEnvironmentTests(SynchronousTestCase):
    """
    A bundle directory and the C{CERT_*} variables made from it load the same
    bundle.
    """

    def test_sameBundle(self) -> None:
        """
        L{loadBundle} and L{loadBundleFromEnv} give the same certificates.
        """
        directory = self.mktemp()
        bundle = initBundle(directory, ["a.example"])
        assert bundle.clientCACertPEM is not None
        environ = {
            "CERT_CA": base64.b64encode(bundle.caCertPEM).decode(),
            "CERT_NODE": base64.b64encode(bundle.nodeCertPEM).decode(),
            "CERT_NODE_KEY": base64.b64encode(bundle.nodeKeyPEM).decode(),
            "CERT_CLIENT_CA": base64.b64encode(bundle.clientCACertPEM).decode(),
        }
        for loaded in [loadBundle(directory), loadBundleFromEnv(environ)]:
            self.assertIsInstance(loaded, Bundle)
            self.assertEqual(loaded.nodeCert, bundle.nodeCert)
            self.assertEqual(loaded.caCert, bundle.caCert)


class KeyFormatTests(SynchronousTestCase):
    """
    Private key encodings the loader accepts or refuses.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.bundle = initBundle(self.directory, ["node1.example"])
        self.keyPath = os.path.join(self.directory, "node.key")

    def test_traditionalFormat(self) -> None:
        """
        A key in the traditional C{EC PRIVATE KEY} format loads.
        """
        _write(
            self.keyPath,
            self.bundle.nodeKey.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        )
        self.assertEqual(loadBundle(self.directory).nodeKeyPEM, self.bundle.nodeKeyPEM)

    def test_encrypted(self) -> None:
        """
        An encrypted key is refused with the reason, naming the file.
        """
        _write(
            self.keyPath,
            self.bundle.nodeKey.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            ),
        )
        e = self.assertRaises(BundleError, loadBundle, self.directory)
        self.assertEqual(str(e), f"{self.keyPath}: private key is encrypted; provide it unencrypted")

    def test_tooLarge(self) -> None:
        """
        A file larger than any PEM bundle is refused without parsing it.
        """
        _write(self.keyPath, b"x" * (1024 * 1024 + 10))
        e = self.assertRaises(BundleError, loadBundle, self.directory)
        self.assertIn("larger than", str(e))


class ClientCATests(SynchronousTestCase):
    """
    The client CA file holds exactly one CA.
    """

    def test_oneClientCA(self) -> None:
        """
        Two blocks in C{client-ca.crt} are refused, naming the file.
        """
        directory = self.mktemp()
        bundle = initBundle(directory, ["a.example"])
        assert bundle.clientCACert is not None
        path = os.path.join(directory, "client-ca.crt")
        _write(path, certificateToPEM(bundle.clientCACert, helpers.clientCA()[0]))
        e = self.assertRaises(BundleError, loadBundle, directory)
        self.assertEqual(str(e), f"{path}: holds 2 certificates; expected one client CA")
