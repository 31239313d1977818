"""
Load a bundle and check it (L{suite.pki.check}): from a bundle directory
(C{--cert-dir}), from the C{CERT_*} environment variables, from separate
identity files (a certificate, its key, a trust bundle), or a client's
directory as written by C{pki client}; and check at start-up that this
node's certificate carries the names the daemon is configured with.

Every problem is a L{suite.pki.bundle.BundleError} naming the file or
variable at fault.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping

from suite.pki.bundle import Bundle, BundleError
from suite.pki.check import assemble, checkKey, parseCertificates, parseKey, parseTrust
from suite.pki.keys import certificateToPEM
from suite.pki.layout import (
    CA_CERT,
    CA_KEY,
    CLIENT_CA_CERT,
    CLIENT_CA_KEY,
    CLIENT_CERT,
    CLIENT_KEY,
    ENV_CA,
    ENV_CLIENT_CA,
    ENV_CLIENT_CA_KEY,
    ENV_NODE,
    ENV_NODE_KEY,
    NODE_CERT,
    NODE_KEY,
    PEMInput,
    readPEMFile,
    readPEMVariable,
)
from suite.pki.validity import checkValidity, utcNow
from suite.pki.verify import PeerIdentity, PeerPolicy, VerificationError

__all__ = [
    "loadBundle",
    "loadBundleFromEnv",
    "loadIdentity",
    "loadClientIdentity",
    "checkNodeIdentity",
]


def loadBundle(directory: str | os.PathLike[str], *, now: datetime.datetime | None = None) -> Bundle:
    """
    Load and check the bundle in C{directory}: C{ca.crt}, C{node.crt},
    C{node.key}, C{client-ca.crt} are required; C{client-ca.key} and
    C{ca.key} are loaded when present.

    @param now: the time certificates must be valid at (default: now).
    @raise BundleError: naming the file and the reason.
    """
    path = os.fspath(directory)
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise BundleError(f"{path}: not a directory (expected a certificate bundle directory)")
        raise BundleError(f"{path}: no such certificate bundle directory")

    def item(name: str, required: bool = True) -> PEMInput:
        return readPEMFile(os.path.join(path, name), required=required)

    return assemble(
        ca=item(CA_CERT),
        node=item(NODE_CERT),
        nodeKey=item(NODE_KEY),
        clientCA=item(CLIENT_CA_CERT),
        clientCAKey=item(CLIENT_CA_KEY, required=False),
        caKey=item(CA_KEY, required=False),
        source=path,
        now=now,
    )


def loadBundleFromEnv(environ: Mapping[str, str], *, now: datetime.datetime | None = None) -> Bundle:
    """
    Load and check a bundle from base64-encoded PEM in C{CERT_CA},
    C{CERT_NODE}, C{CERT_NODE_KEY}, C{CERT_CLIENT_CA} and (optional)
    C{CERT_CLIENT_CA_KEY}.  A value that is already PEM text is accepted too.

    @raise BundleError: naming the variable and the reason.
    """
    return assemble(
        ca=readPEMVariable(environ, ENV_CA, True),
        node=readPEMVariable(environ, ENV_NODE, True),
        nodeKey=readPEMVariable(environ, ENV_NODE_KEY, True),
        clientCA=readPEMVariable(environ, ENV_CLIENT_CA, True),
        clientCAKey=readPEMVariable(environ, ENV_CLIENT_CA_KEY, False),
        caKey=None,
        source="environment",
        now=now,
    )


def loadIdentity(
    certPath: str | os.PathLike[str],
    keyPath: str | os.PathLike[str],
    trustBundlePath: str | os.PathLike[str] | None,
    *,
    certLabel: str | None = None,
    keyLabel: str | None = None,
    trustLabel: str | None = None,
    now: datetime.datetime | None = None,
) -> Bundle:
    """
    Load an identity from separate files: a certificate (optionally followed
    by intermediates), its key, and a trust bundle holding one or more CA
    certificates.  The returned bundle has no client CA.

    With C{trustBundlePath} None the trust anchor is the last certificate
    of the certificate file (a full-chain file: the node certificate, then
    its issuers); it must be a CA.

    @param certLabel: how to name the certificate in messages, e.g.
        C{"CEPTRA_TLS_IDENTITY_CERT"}; the path is always appended.
    @raise BundleError: naming the file (and label) and the reason.
    """

    def name(path: str, label: str | None) -> str:
        return path if label is None else f"{label} ({path})"

    cert, key = os.fspath(certPath), os.fspath(keyPath)
    node = readPEMFile(cert, name(cert, certLabel))
    if trustBundlePath is None:
        assert node.data is not None
        chain = parseCertificates(node.label, node.data)
        if len(chain) < 2:
            raise BundleError(
                f"{node.label}: no trust bundle given and no issuer certificate after the node's"
            )
        ca = PEMInput(f"{node.label} (issuer at the end of the chain)", certificateToPEM(chain[-1]))
    else:
        trust = os.fspath(trustBundlePath)
        ca = readPEMFile(trust, name(trust, trustLabel))
    return assemble(
        ca=ca,
        node=node,
        nodeKey=readPEMFile(key, name(key, keyLabel)),
        clientCA=None,
        clientCAKey=None,
        caKey=None,
        source=cert,
        now=now,
    )


def loadClientIdentity(directory: str | os.PathLike[str], *, now: datetime.datetime | None = None) -> Bundle:
    """
    Load a client's files as written by C{pki client}: C{client.crt},
    C{client.key} and the servers' C{ca.crt}.  The client certificate is
    issued by the client CA, which the client does not hold, so only the key
    match and validity are checked here; the server checks the chain.

    The result plugs into L{suite.pki.tls.clientContextFactory} like a node
    bundle.
    """
    path = os.fspath(directory)
    if not os.path.isdir(path):
        raise BundleError(f"{path}: no such client certificate directory")
    when = utcNow(now)
    ca = readPEMFile(os.path.join(path, CA_CERT))
    cert = readPEMFile(os.path.join(path, CLIENT_CERT))
    key = readPEMFile(os.path.join(path, CLIENT_KEY))
    assert cert.data is not None and key.data is not None
    trust = parseTrust(ca, when)
    certificates = parseCertificates(cert.label, cert.data)
    checkValidity(cert.label, certificates[0], when)
    privateKey = parseKey(key.label, key.data)
    checkKey(key.label, privateKey, cert.label, certificates[0])
    return Bundle(
        caCert=trust[0],
        nodeCert=certificates[0],
        nodeKey=privateKey,
        clientCACert=None,
        extraTrust=tuple(trust[1:]),
        nodeChain=tuple(certificates[1:]),
        source=path,
    )


def checkNodeIdentity(
    bundle: Bundle,
    *,
    hostname: str | None = None,
    ipAddress: str | None = None,
    spiffeId: str | None = None,
    label: str | None = None,
) -> PeerIdentity:
    """
    Fail fast at start-up when this node's own certificate does not carry the
    names the daemon is configured with (its advertised host, its SPIFFE ID).

    @param label: names the certificate in the message (default: the
        bundle's source).
    @raise BundleError: naming the certificate and the missing name.
    """
    try:
        policy = PeerPolicy(hostname=hostname, ipAddress=ipAddress, spiffeId=spiffeId)
    except ValueError as e:
        raise BundleError(f"{label or bundle.source or 'node certificate'}: {e}")
    try:
        return policy.verifyPeer(bundle.nodeCert)
    except VerificationError as e:
        text = str(e).replace("peer certificate", "node certificate", 1)
        raise BundleError(f"{label or bundle.source or 'node certificate'}: {text}")
