"""
Where a bundle's PEM lives and how it is read and written: the file names of
a bundle directory and of a client's directory, the C{CERT_*} environment
variables, size-limited reading of either, and atomic writing of a
directory (keys mode 0600, the directory 0700 if created).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Mapping, Sequence

import attrs
from cryptography import x509

from suite.fileutil import syncDirectory, writeAtomically
from suite.pki.bundle import BundleError
from suite.pki.keys import PrivateKey, certificateToPEM, keyToPEM

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CLIENT_CA_CERT",
    "CLIENT_CA_KEY",
    "NODE_CERT",
    "NODE_KEY",
    "CLIENT_CERT",
    "CLIENT_KEY",
    "BUNDLE_FILES",
    "ENV_CA",
    "ENV_NODE",
    "ENV_NODE_KEY",
    "ENV_CLIENT_CA",
    "ENV_CLIENT_CA_KEY",
    "MAX_PEM_BYTES",
    "PEMInput",
    "readPEMFile",
    "readPEMVariable",
    "bundleFiles",
    "writeFiles",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CLIENT_CA_CERT = "client-ca.crt"
CLIENT_CA_KEY = "client-ca.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"
CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"
BUNDLE_FILES = (CA_CERT, CA_KEY, CLIENT_CA_CERT, CLIENT_CA_KEY, NODE_CERT, NODE_KEY)
"""Every file a bundle directory may hold; C{ca.key} and C{client-ca.key} are optional."""

ENV_CA = "CERT_CA"
ENV_NODE = "CERT_NODE"
ENV_NODE_KEY = "CERT_NODE_KEY"
ENV_CLIENT_CA = "CERT_CLIENT_CA"
ENV_CLIENT_CA_KEY = "CERT_CLIENT_CA_KEY"

MAX_PEM_BYTES = 1024 * 1024
"""The largest PEM file (or decoded variable) read."""


@attrs.frozen
class PEMInput:
    """
    One input of a bundle: its label for messages (a path or a variable
    name) and its bytes (L{None} when an optional input is absent).
    """

    label: str
    data: bytes | None


def readPEMFile(path: str, label: str | None = None, *, required: bool = True) -> PEMInput:
    """
    Read at most L{MAX_PEM_BYTES} of C{path}.

    @param label: names the file in messages (default: the path).
    @param required: when false, a missing file gives C{data=None}.
    @raise BundleError: naming the file, if it cannot be read or is too large.
    """
    name = label or path
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        if not required:
            return PEMInput(name, None)
        raise BundleError(f"{name}: cannot read: no such file")
    except IsADirectoryError:
        raise BundleError(f"{name}: cannot read: is a directory")
    except OSError as e:
        raise BundleError(f"{name}: cannot read: {e.strerror or e}")
    if len(data) > MAX_PEM_BYTES:
        raise BundleError(f"{name}: larger than {MAX_PEM_BYTES} bytes; not a PEM file")
    return PEMInput(name, data)


def readPEMVariable(environ: Mapping[str, str], name: str, required: bool) -> PEMInput:
    """
    Decode the environment variable C{name}: base64-encoded PEM, or PEM text
    as it is.

    @param required: when false, an unset or empty variable gives
        C{data=None}.
    @raise BundleError: naming the variable, if it is missing, too long or
        not base64.
    """
    value = environ.get(name)
    if value is None or not value.strip():
        if required:
            raise BundleError(
                f"{name}: not set (certificates from the environment need "
                f"{ENV_CA}, {ENV_NODE}, {ENV_NODE_KEY} and {ENV_CLIENT_CA}, base64-encoded PEM)"
            )
        return PEMInput(name, None)
    text = value.strip()
    if len(text) > 2 * MAX_PEM_BYTES:
        raise BundleError(f"{name}: longer than {2 * MAX_PEM_BYTES} characters")
    if text.startswith("-----BEGIN"):
        return PEMInput(name, text.encode("ascii", "replace"))
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{name}: not valid base64")
    return PEMInput(name, data)


def bundleFiles(
    caCerts: Sequence[x509.Certificate],
    caKey: PrivateKey | None,
    clientCACert: x509.Certificate | None,
    clientCAKey: PrivateKey | None,
    nodeCert: x509.Certificate,
    nodeKey: PrivateKey,
) -> dict[str, tuple[bytes, int]]:
    """
    The files of a bundle directory, C{name -> (PEM, mode)}; optional parts
    that are L{None} are left out.
    """
    files: dict[str, tuple[bytes, int]] = {
        CA_CERT: (certificateToPEM(*caCerts), 0o644),
        NODE_CERT: (certificateToPEM(nodeCert), 0o644),
        NODE_KEY: (keyToPEM(nodeKey), 0o600),
    }
    if caKey is not None:
        files[CA_KEY] = (keyToPEM(caKey), 0o600)
    if clientCACert is not None:
        files[CLIENT_CA_CERT] = (certificateToPEM(clientCACert), 0o644)
    if clientCAKey is not None:
        files[CLIENT_CA_KEY] = (keyToPEM(clientCAKey), 0o600)
    return files


def writeFiles(
    directory: str, files: Mapping[str, tuple[bytes, int]], force: bool, guard: Iterable[str]
) -> None:
    """
    Write C{files} (name -> (data, mode)) into C{directory}, each atomically,
    then sync the directory.  Refuse when any name in C{guard} exists there
    already, unless C{force}.

    @raise BundleError: naming the directory or file, if it exists (without
        C{force}) or cannot be written.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise BundleError(f"{directory}: exists and is not a directory")
    existing = [name for name in guard if os.path.exists(os.path.join(directory, name))]
    if existing and not force:
        raise BundleError(
            f"{directory}: already holds {', '.join(existing)}; refusing to overwrite "
            "(use --force to replace it)"
        )
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for name, (data, mode) in files.items():
            writeAtomically(os.path.join(directory, name), data, mode, syncDir=False)
        syncDirectory(directory)
    except OSError as e:
        raise BundleError(f"{e.filename or directory}: cannot write: {e.strerror or e}")
