"""
Certificates shared by the PKI tests, minted once per process.
"""

from __future__ import annotations

import datetime
import functools

from cryptography import x509

from suite.pki.bundle import Bundle
from suite.pki.keys import PrivateKey
from suite.pki.mint import mintCA, mintCertificate

SPIFFE_SERVER = "spiffe://example.org/ns/prod/server"
SPIFFE_CLIENT = "spiffe://example.org/ns/prod/client"
NOW = datetime.datetime.now(datetime.UTC)
LONG_AGO = NOW - datetime.timedelta(days=30)
YESTERDAY = NOW - datetime.timedelta(days=1)


@functools.cache
def nodeCA() -> tuple[x509.Certificate, PrivateKey]:
    """The node CA every test bundle trusts."""
    return mintCA("test node CA")


@functools.cache
def clientCA() -> tuple[x509.Certificate, PrivateKey]:
    """The client CA of the test bundles."""
    return mintCA("test client CA")


@functools.cache
def foreignCA() -> tuple[x509.Certificate, PrivateKey]:
    """A CA nobody trusts."""
    return mintCA("foreign CA")


def bundleWith(
    cert: x509.Certificate,
    key: PrivateKey,
    *,
    ca: tuple[x509.Certificate, PrivateKey] | None = None,
) -> Bundle:
    """
    An in-memory bundle presenting C{cert}/C{key} and trusting C{ca} (the node
    CA by default), with the test client CA.
    """
    caCert, caKey = ca if ca is not None else nodeCA()
    clientCACert, clientCAKey = clientCA()
    return Bundle(
        caCert=caCert,
        nodeCert=cert,
        nodeKey=key,
        clientCACert=clientCACert,
        clientCAKey=clientCAKey,
        caKey=caKey,
        source="test",
    )


@functools.cache
def serverBundle() -> Bundle:
    """A server: DNS server.example, IP 127.0.0.1, SPIFFE_SERVER."""
    caCert, caKey = nodeCA()
    cert, key = mintCertificate(
        caCert,
        caKey,
        "server.example",
        dnsNames=["server.example", "*.wild.example"],
        ipAddresses=["127.0.0.1"],
        uris=[SPIFFE_SERVER],
    )
    return bundleWith(cert, key)


@functools.cache
def clientBundle() -> Bundle:
    """A peer node acting as client: DNS client.example, SPIFFE_CLIENT."""
    caCert, caKey = nodeCA()
    cert, key = mintCertificate(
        caCert, caKey, "client.example", dnsNames=["client.example"], uris=[SPIFFE_CLIENT]
    )
    return bundleWith(cert, key)


@functools.cache
def foreignBundle() -> Bundle:
    """A node whose certificate comes from the foreign CA (and trusts only it)."""
    ca = foreignCA()
    cert, key = mintCertificate(
        ca[0], ca[1], "server.example", dnsNames=["server.example"], ipAddresses=["127.0.0.1"]
    )
    return bundleWith(cert, key, ca=ca)


@functools.cache
def expiredBundle() -> Bundle:
    """A node whose certificate from the right CA expired yesterday."""
    caCert, caKey = nodeCA()
    cert, key = mintCertificate(
        caCert,
        caKey,
        "server.example",
        dnsNames=["server.example", "client.example"],
        ipAddresses=["127.0.0.1"],
        notBefore=LONG_AGO,
        notAfter=YESTERDAY,
    )
    return bundleWith(cert, key)
