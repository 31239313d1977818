"""
The private CA: issue bundles.

A bundle directory holds two self-signed CAs: C{ca.crt}/C{ca.key} issues
node certificates (inter-node mTLS), C{client-ca.crt}/C{client-ca.key}
issues client certificates (tunnel clients).  C{node.crt}/C{node.key} is this
node's identity.  L{initBundle} creates one, L{writeNodeCertificate} writes
one for another node from the same CA, L{mintClientCertificate} and
L{writeClientCertificate} issue client certificates.  The certificates are
made by L{suite.pki.mint}; the files are written by L{suite.pki.layout}.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence

from cryptography import x509

from suite.pki.bundle import Bundle, BundleError
from suite.pki.keys import PrivateKey, certificateToPEM, keyToPEM
from suite.pki.layout import (
    BUNDLE_FILES,
    CA_CERT,
    CA_KEY,
    CLIENT_CA_KEY,
    CLIENT_CERT,
    CLIENT_KEY,
    bundleFiles,
    writeFiles,
)
from suite.pki.load import loadBundle
from suite.pki.mint import DEFAULT_CA_DAYS, DEFAULT_CLIENT_DAYS, DEFAULT_NODE_DAYS, mintCA, mintCertificate
from suite.pki.names import splitNames
from suite.pki.verify import parseSpiffeId

__all__ = [
    "initBundle",
    "writeNodeCertificate",
    "mintClientCertificate",
    "writeClientCertificate",
]


def _nodeLeaf(
    caCert: x509.Certificate,
    caKey: PrivateKey,
    nodeNames: Sequence[str],
    spiffeIds: Sequence[str],
    days: int,
    keyType: str,
    commonName: str | None,
    now: datetime.datetime | None,
) -> tuple[x509.Certificate, PrivateKey]:
    dnsNames, ips = splitNames(nodeNames)
    if not (dnsNames or ips or spiffeIds):
        raise ValueError("a node certificate needs at least one host name, IP address or SPIFFE ID")
    if commonName is None:
        if dnsNames or ips:
            commonName = (dnsNames + ips)[0]
        else:
            commonName = parseSpiffeId(spiffeIds[0], allowTrustDomain=False).path.rsplit("/", 1)[-1]
    return mintCertificate(
        caCert,
        caKey,
        commonName,
        dnsNames=dnsNames,
        ipAddresses=ips,
        uris=tuple(spiffeIds),
        days=days,
        keyType=keyType,
        now=now,
    )


def initBundle(
    directory: str | os.PathLike[str],
    nodeNames: Sequence[str],
    *,
    spiffeIds: Sequence[str] = (),
    days: int = DEFAULT_NODE_DAYS,
    caDays: int = DEFAULT_CA_DAYS,
    keyType: str = "ec",
    caName: str = "suite",
    commonName: str | None = None,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> Bundle:
    """
    Create a new private CA bundle in C{directory}: C{ca.crt}, C{ca.key},
    C{client-ca.crt}, C{client-ca.key}, C{node.crt}, C{node.key} (keys 0600,
    the directory created 0700 if missing).

    @param nodeNames: host names and IP addresses of this node (its SANs).
    @param spiffeIds: SPIFFE IDs of this node (URI SANs).
    @param caName: prefix of the CAs' common names (C{"<caName> node CA"}).
    @param force: replace an existing bundle instead of refusing.
    @raise BundleError: if a bundle already exists there or cannot be written.
    @raise ValueError: for a malformed node name or SPIFFE ID.
    """
    path = os.fspath(directory)
    caCert, caKey = mintCA(f"{caName} node CA", caDays, keyType=keyType, now=now)
    clientCACert, clientCAKey = mintCA(f"{caName} client CA", caDays, keyType=keyType, now=now)
    nodeCert, nodeKey = _nodeLeaf(caCert, caKey, nodeNames, spiffeIds, days, keyType, commonName, now)
    files = bundleFiles([caCert], caKey, clientCACert, clientCAKey, nodeCert, nodeKey)
    writeFiles(path, files, force, BUNDLE_FILES)
    return Bundle(
        caCert=caCert,
        nodeCert=nodeCert,
        nodeKey=nodeKey,
        clientCACert=clientCACert,
        clientCAKey=clientCAKey,
        caKey=caKey,
        source=path,
    )


def writeNodeCertificate(
    source: Bundle | str | os.PathLike[str],
    directory: str | os.PathLike[str],
    nodeNames: Sequence[str],
    *,
    spiffeIds: Sequence[str] = (),
    days: int = DEFAULT_NODE_DAYS,
    keyType: str = "ec",
    commonName: str | None = None,
    includeCAKey: bool = False,
    includeClientCAKey: bool = True,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> Bundle:
    """
    Mint a certificate for another node from the CA of C{source} (a bundle or
    a bundle directory holding C{ca.key}) and write a complete bundle for it
    in C{directory}: the same C{ca.crt}, C{client-ca.crt} (and
    C{client-ca.key} unless C{includeClientCAKey} is false), a new C{node.crt}
    and C{node.key}, and C{ca.key} only with C{includeCAKey}.

    @raise BundleError: if the source has no CA key, or the target already
        holds a bundle (unless C{force}).
    """
    bundle = source if isinstance(source, Bundle) else loadBundle(source, now=now)
    if bundle.caKey is None:
        raise BundleError(f"{bundle.source or 'bundle'}: {CA_KEY} is missing; cannot mint node certificates")
    path = os.fspath(directory)
    nodeCert, nodeKey = _nodeLeaf(
        bundle.caCert, bundle.caKey, nodeNames, spiffeIds, days, keyType, commonName, now
    )
    caKey = bundle.caKey if includeCAKey else None
    clientCAKey = bundle.clientCAKey if includeClientCAKey else None
    files = bundleFiles(bundle.trustRoots, caKey, bundle.clientCACert, clientCAKey, nodeCert, nodeKey)
    writeFiles(path, files, force, BUNDLE_FILES)
    return Bundle(
        caCert=bundle.caCert,
        nodeCert=nodeCert,
        nodeKey=nodeKey,
        clientCACert=bundle.clientCACert,
        clientCAKey=clientCAKey,
        caKey=caKey,
        extraTrust=bundle.extraTrust,
        source=path,
    )


def _mintClient(
    bundle: Bundle,
    commonName: str,
    dnsNames: Sequence[str],
    uris: Sequence[str],
    days: int,
    keyType: str,
    now: datetime.datetime | None,
    notAfter: datetime.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    if bundle.clientCACert is None or bundle.clientCAKey is None:
        raise BundleError(
            f"{bundle.source or 'bundle'}: {CLIENT_CA_KEY} is missing; cannot mint client certificates"
        )
    return mintCertificate(
        bundle.clientCACert,
        bundle.clientCAKey,
        commonName,
        dnsNames=dnsNames,
        uris=uris,
        days=days,
        serverAuth=False,
        clientAuth=True,
        keyType=keyType,
        now=now,
        notAfter=notAfter,
    )


def mintClientCertificate(
    bundle: Bundle,
    commonName: str,
    *,
    dnsNames: Sequence[str] = (),
    uris: Sequence[str] = (),
    days: int = DEFAULT_CLIENT_DAYS,
    keyType: str = "ec",
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """
    Mint a client certificate (clientAuth only) signed by the bundle's client
    CA.

    @return: C{(certificatePEM, keyPEM)}.
    @raise BundleError: if the bundle has no client CA key.
    """
    certificate, key = _mintClient(bundle, commonName, dnsNames, uris, days, keyType, now)
    return certificateToPEM(certificate), keyToPEM(key)


def writeClientCertificate(
    bundle: Bundle,
    commonName: str,
    directory: str | os.PathLike[str],
    *,
    dnsNames: Sequence[str] = (),
    uris: Sequence[str] = (),
    days: int = DEFAULT_CLIENT_DAYS,
    keyType: str = "ec",
    force: bool = False,
    now: datetime.datetime | None = None,
) -> tuple[str, ...]:
    """
    Mint a client certificate and write C{client.crt}, C{client.key} (0600)
    and the servers' C{ca.crt} into C{directory}.

    @return: the paths written.
    """
    certificate, key = _mintClient(bundle, commonName, dnsNames, uris, days, keyType, now)
    path = os.fspath(directory)
    files = {
        CLIENT_CERT: (certificateToPEM(certificate), 0o644),
        CLIENT_KEY: (keyToPEM(key), 0o600),
        CA_CERT: (certificateToPEM(*bundle.trustRoots), 0o644),
    }
    writeFiles(path, files, force, files)
    return tuple(os.path.join(path, name) for name in files)
