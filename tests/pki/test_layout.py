"""
Tests for L{suite.pki.layout}: reading bundle inputs from files and
variables, and writing bundle directories.
"""

from __future__ import annotations

import base64
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from suite.pki.bundle import BundleError
from suite.pki.keys import certificateToPEM
from suite.pki.layout import (
    BUNDLE_FILES,
    CA_CERT,
    CA_KEY,
    CLIENT_CA_CERT,
    CLIENT_CA_KEY,
    MAX_PEM_BYTES,
    NODE_CERT,
    NODE_KEY,
    PEMInput,
    bundleFiles,
    readPEMFile,
    readPEMVariable,
    writeFiles,
)
from suite.pki.mint import mintCertificate
from tests.pki import helpers


class ReadVariableTests(SynchronousTestCase):
    """
    L{readPEMVariable} decodes one C{CERT_*} variable.
    """

    def setUp(self) -> None:
        self.pem = certificateToPEM(helpers.nodeCA()[0])

    def test_base64AndPEM(self) -> None:
        """
        Wrapped base64 is decoded; PEM text is taken as it is.
        """
        wrapped = base64.encodebytes(self.pem).decode("ascii")
        self.assertEqual(readPEMVariable({"V": wrapped}, "V", True), PEMInput("V", self.pem))
        self.assertEqual(
            readPEMVariable({"V": self.pem.decode()}, "V", True), PEMInput("V", self.pem.strip())
        )

    def test_missing(self) -> None:
        """
        A missing or blank required variable names every variable needed;
        an optional one gives no data.
        """
        e = self.assertRaises(BundleError, readPEMVariable, {"V": "  "}, "V", True)
        self.assertTrue(str(e).startswith("V: not set (certificates from the environment need CERT_CA,"))
        self.assertEqual(readPEMVariable({}, "V", False), PEMInput("V", None))

    def test_refused(self) -> None:
        """
        Text that is not base64, or longer than any bundle, is refused.
        """
        e = self.assertRaises(BundleError, readPEMVariable, {"V": "not*base64"}, "V", True)
        self.assertEqual(str(e), "V: not valid base64")
        e = self.assertRaises(BundleError, readPEMVariable, {"V": "A" * (2 * MAX_PEM_BYTES + 4)}, "V", True)
        self.assertEqual(str(e), f"V: longer than {2 * MAX_PEM_BYTES} characters")


class ReadFileTests(SynchronousTestCase):
    """
    L{readPEMFile} reads one file with a size limit.
    """

    def test_read(self) -> None:
        """
        The file's bytes come labelled with the label, or else the path.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"pem")
        self.assertEqual(readPEMFile(path), PEMInput(path, b"pem"))
        self.assertEqual(readPEMFile(path, "LABEL"), PEMInput("LABEL", b"pem"))

    def test_missing(self) -> None:
        """
        A missing required file is an error; a missing optional one gives
        no data; a directory is an error.
        """
        path = self.mktemp()
        e = self.assertRaises(BundleError, readPEMFile, path)
        self.assertEqual(str(e), f"{path}: cannot read: no such file")
        self.assertEqual(readPEMFile(path, required=False), PEMInput(path, None))
        os.mkdir(path)
        e = self.assertRaises(BundleError, readPEMFile, path)
        self.assertEqual(str(e), f"{path}: cannot read: is a directory")

    def test_tooLarge(self) -> None:
        """
        A file larger than L{MAX_PEM_BYTES} is refused.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x" * (MAX_PEM_BYTES + 1))
        e = self.assertRaises(BundleError, readPEMFile, path)
        self.assertEqual(str(e), f"{path}: larger than {MAX_PEM_BYTES} bytes; not a PEM file")


class WriteTests(SynchronousTestCase):
    """
    L{bundleFiles} and L{writeFiles} write a bundle directory.
    """

    def setUp(self) -> None:
        self.caCert, self.caKey = helpers.nodeCA()
        self.nodeCert, self.nodeKey = mintCertificate(self.caCert, self.caKey, "n", dnsNames=["n.example"])

    def test_bundleFiles(self) -> None:
        """
        Keys are 0600, certificates 0644; absent optional parts are left
        out.
        """
        files = bundleFiles([self.caCert], None, None, None, self.nodeCert, self.nodeKey)
        self.assertEqual(
            {name: mode for name, (_, mode) in files.items()},
            {
                CA_CERT: 0o644,
                NODE_CERT: 0o644,
                NODE_KEY: 0o600,
            },
        )
        clientCert, clientKey = helpers.clientCA()
        files = bundleFiles([self.caCert], self.caKey, clientCert, clientKey, self.nodeCert, self.nodeKey)
        self.assertEqual(sorted(files), sorted(BUNDLE_FILES))
        self.assertEqual(files[CA_KEY][1], 0o600)
        self.assertEqual(files[CLIENT_CA_KEY][1], 0o600)
        self.assertEqual(files[CLIENT_CA_CERT][1], 0o644)

    def test_write(self) -> None:
        """
        A new directory is created 0700 and each file gets its mode.
        """
        directory = self.mktemp()
        writeFiles(directory, {"a": (b"A", 0o600), "b": (b"B", 0o644)}, False, ["a", "b"])
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, "a")).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, "b")).st_mode), 0o644)
        with open(os.path.join(directory, "b"), "rb") as f:
            self.assertEqual(f.read(), b"B")

    def test_guard(self) -> None:
        """
        An existing guarded file is kept unless C{force}; a target that is a
        file is refused.
        """
        directory = self.mktemp()
        writeFiles(directory, {"a": (b"old", 0o600)}, False, ["a"])
        e = self.assertRaises(BundleError, writeFiles, directory, {"a": (b"new", 0o600)}, False, ["a"])
        self.assertEqual(
            str(e), f"{directory}: already holds a; refusing to overwrite (use --force to replace it)"
        )
        writeFiles(directory, {"a": (b"new", 0o600)}, True, ["a"])
        with open(os.path.join(directory, "a"), "rb") as f:
            self.assertEqual(f.read(), b"new")
        target = os.path.join(directory, "a")
        e = self.assertRaises(BundleError, writeFiles, target, {"x": (b"", 0o600)}, False, [])
        self.assertEqual(str(e), f"{target}: exists and is not a directory")
