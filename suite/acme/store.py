"""
Certificate stores: L{MemoryCertificateStore} (tests, short-lived tools) and
L{FileCertificateStore} (one directory, files written atomically off the
reactor thread).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from cryptography import x509
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from zope.interface import implementer

from suite.acme.interfaces import ICertificateStore
from suite.fileutil import writeAtomically

__all__ = ["StoredCertificate", "MemoryCertificateStore", "FileCertificateStore", "fileNameFor"]

_T = TypeVar("_T")

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\r?\n?", re.S)
_PEM_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----\r?\n?", re.S)
_NAME = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


@attrs.define(frozen=True)
class StoredCertificate:
    """
    A certificate chain (leaf first, PEM) and the leaf's private key (PEM).
    """

    chainPEM: bytes
    keyPEM: bytes

    @property
    def chain(self) -> list[x509.Certificate]:
        """
        The parsed chain, leaf first.
        """
        return x509.load_pem_x509_certificates(self.chainPEM)

    @property
    def leaf(self) -> x509.Certificate:
        """
        The end-entity certificate.
        """
        return x509.load_pem_x509_certificate(self.chainPEM)

    @property
    def notAfter(self) -> float:
        """
        When the leaf expires, in seconds since the epoch.
        """
        return self.leaf.not_valid_after_utc.timestamp()

    @property
    def names(self) -> list[str]:
        """
        The leaf's DNS subject alternative names.
        """
        try:
            ext = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        return list(ext.value.get_values_for_type(x509.DNSName))

    def toPEM(self) -> bytes:
        """
        The key followed by the chain, the on-disk form.
        """
        return self.keyPEM + self.chainPEM

    @classmethod
    def fromPEM(cls, data: bytes) -> StoredCertificate:
        """
        Split the on-disk form back into key and chain.

        @raise ValueError: if either is missing.
        """
        key = _PEM_KEY.search(data)
        certs = _PEM_CERT.findall(data)
        if key is None or not certs:
            raise ValueError("expected a PEM private key and at least one certificate")
        return cls(b"".join(c if c.endswith(b"\n") else c + b"\n" for c in certs), key.group(0))


def fileNameFor(name: str) -> str:
    """
    The file name a certificate whose first domain is C{name} is kept under
    (C{*.} becomes C{_wildcard.}).

    @raise ValueError: if C{name} is not a lower-case DNS name.
    """
    if not _NAME.match(name) or len(name) > 253:
        raise ValueError(f"not a DNS name: {name!r}")
    return name.replace("*.", "_wildcard.", 1) + ".pem"


@implementer(ICertificateStore)
class MemoryCertificateStore:
    """
    A store that keeps everything in memory.
    """

    def __init__(self) -> None:
        self.accountKey: bytes | None = None
        self.certificates: dict[str, StoredCertificate] = {}

    def loadAccountKey(self) -> Deferred[bytes | None]:
        return defer.succeed(self.accountKey)

    def saveAccountKey(self, pem: bytes) -> Deferred[None]:
        self.accountKey = pem
        return defer.succeed(None)

    def loadCertificate(self, name: str) -> Deferred[StoredCertificate | None]:
        return defer.succeed(self.certificates.get(name))

    def saveCertificate(self, name: str, certificate: StoredCertificate) -> Deferred[None]:
        self.certificates[name] = certificate
        return defer.succeed(None)


@implementer(ICertificateStore)
class FileCertificateStore:
    """
    A directory holding C{account.key} and one C{<name>.pem} per
    certificate (private key, then the chain), all mode 0600, each replaced
    atomically (write a temporary file, fsync, rename).

    @param reactor: runs the file work in its thread pool.
    """

    ACCOUNT_KEY = "account.key"

    def __init__(self, directory: str, reactor: Any) -> None:
        self.directory = directory
        self._reactor = reactor

    def _run(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    def _read(self, fileName: str) -> bytes | None:
        try:
            with open(os.path.join(self.directory, fileName), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write(self, fileName: str, data: bytes) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        writeAtomically(os.path.join(self.directory, fileName), data)

    def loadAccountKey(self) -> Deferred[bytes | None]:
        return self._run(self._read, self.ACCOUNT_KEY)

    def saveAccountKey(self, pem: bytes) -> Deferred[None]:
        return self._run(self._write, self.ACCOUNT_KEY, pem)

    def loadCertificate(self, name: str) -> Deferred[StoredCertificate | None]:
        def load() -> StoredCertificate | None:
            data = self._read(fileNameFor(name))
            return None if data is None else StoredCertificate.fromPEM(data)

        return self._run(load)

    def saveCertificate(self, name: str, certificate: StoredCertificate) -> Deferred[None]:
        return self._run(self._write, fileNameFor(name), certificate.toPEM())
