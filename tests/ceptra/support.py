"""
Options for a CEPtra node with real test PKI material.
"""

from __future__ import annotations

import os

from suite.ceptra.options import Options
from tests.clustor.certs import CertAuthority, Identity

SPIFFE = "spiffe://example.org/ceptra/node-1"


def nodeEnv(base: str, identity: Identity, url: str = "http://127.0.0.1:1", **extra: str) -> dict[str, str]:
    """
    The environment of a node using C{identity}, storing under C{base}.
    """
    env = {
        "CEPTRA_CONTROL_PLANE_URL": url,
        "CEPTRA_TLS_IDENTITY_CERT": identity.cert,
        "CEPTRA_TLS_IDENTITY_KEY": identity.key,
        "CEPTRA_TLS_TRUST_BUNDLE": identity.trust,
        "CEPTRA_NODE_SPIFFE": SPIFFE,
        "CEPTRA_DATA_DIR": os.path.join(base, "data"),
    }
    env.update(extra)
    return env


def nodeOptions(base: str, identity: Identity, argv: list[str] | None = None, **extra: str) -> Options:
    """
    Parsed options of a node (see L{nodeEnv}).
    """
    options = Options(environ=nodeEnv(base, identity, **extra))
    options.parseOptions(argv or [])
    return options


def makePKI(directory: str) -> tuple[CertAuthority, Identity]:
    """
    A CA and the node's identity (SPIFFE ID, localhost and 127.0.0.1).
    """
    ca = CertAuthority(directory)
    return ca, ca.identity("node-1", SPIFFE)
