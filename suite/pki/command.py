"""
Command-line front ends for the private CA, mounted by daemons' console
scripts (e.g. C{specter pki init DIR --node HOST}):

  - C{pki init DIR --node HOST ... [--spiffe URI ...]}: create a new bundle;
  - C{pki node SRC --out DIR --node HOST ...}: a bundle for another node
    from the CA in SRC (which must hold C{ca.key});
  - C{pki client SRC --name NAME --out DIR}: a client certificate signed by
    the client CA.

Their flags are parsed by L{suite.pki.options}.  These are CLIs, so they
print what they wrote; errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from suite.daemon import errorLine
from suite.pki.bundle import BundleError
from suite.pki.ca import initBundle, writeClientCertificate, writeNodeCertificate
from suite.pki.layout import BUNDLE_FILES, CA_KEY, CLIENT_CA_KEY
from suite.pki.load import loadBundle
from suite.pki.options import InitOptions, MintClientOptions, NodeOptions, PKIOptions
from suite.pki.validity import formatTime

__all__ = ["runInit", "runNode", "runMintClient", "runPKI"]


def _prog(sub: str) -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not name or name.endswith(".py") or name.startswith("-"):
        return f"pki {sub}"
    return f"{name} pki {sub}"


def _fail(sub: str, error: BaseException, err: TextIO) -> int:
    err.write(errorLine(_prog(sub), error))
    err.flush()
    return 2


def _report(out: TextIO, paths: list[str]) -> None:
    for path in paths:
        mode = os.stat(path).st_mode & 0o777
        out.write(f"wrote {path} (mode {mode:04o})\n")
    out.flush()


def runInit(options: InitOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """
    Create the bundle described by parsed L{InitOptions}; print the files
    written.  Returns the exit code.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    directory = options["directory"]
    try:
        bundle = initBundle(
            directory,
            options["nodes"],
            spiffeIds=options["spiffe"],
            days=options["days"],
            caDays=options["ca-days"],
            keyType=options["key-type"],
            caName=options["ca-name"],
            commonName=options["name"],
            force=options["force"],
        )
    except (BundleError, ValueError) as e:
        return _fail("init", e, err)
    _report(out, [os.path.join(directory, name) for name in BUNDLE_FILES])
    out.write(f"node certificate: {bundle.identity.describe()}\n")
    out.write(f"expires: {formatTime(bundle.nodeCert.not_valid_after_utc)}\n")
    return 0


def runNode(options: NodeOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """
    Write a bundle for another node as described by parsed L{NodeOptions}.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        bundle = writeNodeCertificate(
            options["source"],
            options["out"],
            options["nodes"],
            spiffeIds=options["spiffe"],
            days=options["days"],
            keyType=options["key-type"],
            commonName=options["name"],
            includeCAKey=bool(options["with-ca-key"]),
            includeClientCAKey=not options["without-client-ca-key"],
            force=bool(options["force"]),
        )
    except (BundleError, ValueError) as e:
        return _fail("node", e, err)
    written = [
        name
        for name in BUNDLE_FILES
        if (name != CA_KEY or bundle.caKey is not None)
        and (name != CLIENT_CA_KEY or bundle.clientCAKey is not None)
    ]
    _report(out, [os.path.join(options["out"], name) for name in written])
    out.write(f"node certificate: {bundle.identity.describe()}\n")
    return 0


def runMintClient(options: MintClientOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """
    Mint a client certificate as described by parsed L{MintClientOptions}.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        bundle = loadBundle(options["source"])
        paths = writeClientCertificate(
            bundle,
            options["name"],
            options["out"],
            uris=options["spiffe"],
            days=options["days"],
            keyType=options["key-type"],
            force=bool(options["force"]),
        )
    except (BundleError, ValueError) as e:
        return _fail("client", e, err)
    _report(out, list(paths))
    return 0


def runPKI(options: PKIOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """
    Dispatch parsed L{PKIOptions} to L{runInit}, L{runNode} or L{runMintClient}.
    """
    sub = options.subOptions
    if options.subCommand == "init":
        return runInit(sub, out, err)
    if options.subCommand == "node":
        return runNode(sub, out, err)
    return runMintClient(sub, out, err)
