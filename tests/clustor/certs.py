"""
Test PKI material for CEPtra and the control plane: one CA, node
identities with SPIFFE URI SANs, written as separate PEM files the way
C{CEPTRA_TLS_*} expects them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from suite.pki.keys import certificateToPEM, keyToPEM
from suite.pki.mint import mintCA, mintCertificate

__all__ = ["CertAuthority", "Identity"]


@dataclass(frozen=True)
class Identity:
    """
    Paths of one identity: certificate, key and the trust bundle.
    """

    cert: str
    key: str
    trust: str


class CertAuthority:
    """
    A CA living in C{directory} that mints identities.
    """

    def __init__(self, directory: str, name: str = "test CA") -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.cert, self.key = mintCA(name)
        self.trustPath = os.path.join(directory, "trust.pem")
        with open(self.trustPath, "wb") as f:
            f.write(certificateToPEM(self.cert))

    def identity(
        self,
        name: str,
        spiffe: str | None = None,
        dnsNames: Sequence[str] = ("localhost",),
        ipAddresses: Sequence[str] = ("127.0.0.1",),
        **kw: Any,
    ) -> Identity:
        """
        Mint and write C{NAME.crt}/C{NAME.key}.
        """
        cert, key = mintCertificate(
            self.cert,
            self.key,
            name,
            dnsNames=tuple(dnsNames),
            ipAddresses=tuple(ipAddresses),
            uris=(spiffe,) if spiffe else (),
            **kw,
        )
        certPath = os.path.join(self.directory, f"{name}.crt")
        keyPath = os.path.join(self.directory, f"{name}.key")
        with open(certPath, "wb") as f:
            f.write(certificateToPEM(cert))
        with open(keyPath, "wb") as f:
            f.write(keyToPEM(key))
        os.chmod(keyPath, 0o600)
        return Identity(certPath, keyPath, self.trustPath)
