"""
Command lines of the private CA's C{pki init|node|client} commands
(L{suite.pki.command} carries them out): flags, their checks and defaults.
A bad flag is a L{usage.UsageError} naming the flag.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from twisted.python import usage

from suite.pki.keys import KEY_TYPES
from suite.pki.mint import DEFAULT_CA_DAYS, DEFAULT_CLIENT_DAYS, DEFAULT_NODE_DAYS
from suite.pki.names import splitNames
from suite.pki.verify import parseSpiffeId

__all__ = ["InitOptions", "NodeOptions", "MintClientOptions", "PKIOptions", "DEFAULT_NODES"]


DEFAULT_NODES = ("localhost", "127.0.0.1", "::1")
"""Names of the node certificate when no C{--node} is given (a local demo)."""


def _positiveInt(flag: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"{flag}: {value!r} is not a whole number of days")
    if number < 1:
        raise usage.UsageError(f"{flag}: must be at least 1, not {number}")
    return number


def _addSpiffeId(options: usage.Options, value: str) -> None:
    try:
        parseSpiffeId(value, allowTrustDomain=False)
    except ValueError as e:
        raise usage.UsageError(f"--spiffe: {e}")
    options["spiffe"].append(value)


def _checkKeyType(options: usage.Options) -> None:
    if options["key-type"] not in KEY_TYPES:
        raise usage.UsageError(f"--key-type: {options['key-type']!r} is not one of {', '.join(KEY_TYPES)}")


class _PositionalFirst(usage.Options):
    """
    Options taking one positional argument that may come before the flags
    (C{init DIR --node HOST}), which plain getopt parsing would stop at.
    """

    positionalName = "DIR"
    positionalKey = "directory"

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        args = list(sys.argv[1:] if options is None else options)
        self._leading: list[str] = []
        if args and not args[0].startswith("-"):
            self._leading.append(args.pop(0))
        super().parseOptions(args)

    def parseArgs(self, *args: str) -> None:
        positional = [*getattr(self, "_leading", []), *args]
        if len(positional) != 1:
            raise usage.UsageError(
                f"{self.positionalName}: exactly one {self.positionalName} argument is required"
                + (f", got {len(positional)}" if positional else "")
            )
        self[self.positionalKey] = positional[0]


class _NamesMixin(_PositionalFirst):
    """
    C{--node} and C{--spiffe}, both repeatable (or comma-separated).
    """

    def __init__(self) -> None:
        super().__init__()
        self["nodes"] = []
        self["spiffe"] = []

    def opt_node(self, value: str) -> None:
        """Host name or IP address of the node (a SAN); repeatable or comma-separated."""
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            try:
                splitNames([name])
            except ValueError as e:
                raise usage.UsageError(f"--node: {e}")
            self["nodes"].append(name)

    def opt_spiffe(self, value: str) -> None:
        """SPIFFE ID of the node (spiffe://trust-domain/path, a URI SAN); repeatable."""
        _addSpiffeId(self, value)

    def _checkKeyType(self) -> None:
        _checkKeyType(self)


class InitOptions(_NamesMixin):
    """
    C{pki init DIR [--node HOST]... [--spiffe URI]... [--days N] [--force]}.
    """

    synopsis = "[options] DIR"
    longdesc = (
        "Create a private CA bundle in DIR: ca.crt, ca.key, client-ca.crt, client-ca.key, "
        "node.crt, node.key (keys mode 0600). Without --node the node certificate names "
        "localhost, 127.0.0.1 and ::1."
    )
    optFlags = [["force", None, "Replace an existing bundle in DIR."]]
    optParameters = [
        ["days", None, DEFAULT_NODE_DAYS, "Validity of the node certificate in days."],
        ["ca-days", None, DEFAULT_CA_DAYS, "Validity of the two CA certificates in days."],
        ["key-type", None, "ec", "Key type: ec (P-256) or rsa (2048 bits)."],
        ["ca-name", None, "suite", "Prefix of the CAs' common names."],
        ["name", None, None, "Common name of the node certificate (default: the first --node)."],
    ]

    def postOptions(self) -> None:
        self["days"] = _positiveInt("--days", self["days"])
        self["ca-days"] = _positiveInt("--ca-days", self["ca-days"])
        self._checkKeyType()
        if not self["nodes"] and not self["spiffe"]:
            self["nodes"] = list(DEFAULT_NODES)


class NodeOptions(_NamesMixin):
    """
    C{pki node SRC --out DIR --node HOST... [--spiffe URI]...}.
    """

    positionalName = "SRC"
    positionalKey = "source"

    synopsis = "[options] SRC --out DIR --node HOST..."
    longdesc = (
        "Mint a certificate for another node from the CA in bundle directory SRC (which must "
        "hold ca.key) and write a complete bundle for it in DIR."
    )
    optFlags = [
        ["force", None, "Replace an existing bundle in the output directory."],
        ["with-ca-key", None, "Copy ca.key too, so the new node can mint node certificates."],
        ["without-client-ca-key", None, "Do not copy client-ca.key (the node cannot mint client certs)."],
    ]
    optParameters = [
        ["out", "o", None, "Directory to write the new node's bundle into (required)."],
        ["days", None, DEFAULT_NODE_DAYS, "Validity of the node certificate in days."],
        ["key-type", None, "ec", "Key type: ec (P-256) or rsa (2048 bits)."],
        ["name", None, None, "Common name of the node certificate (default: the first --node)."],
    ]

    def postOptions(self) -> None:
        self["days"] = _positiveInt("--days", self["days"])
        self._checkKeyType()
        if not self["out"]:
            raise usage.UsageError("--out: required (the directory for the new node's bundle)")
        if not self["nodes"] and not self["spiffe"]:
            raise usage.UsageError("--node: at least one --node or --spiffe is required")


class MintClientOptions(_PositionalFirst):
    """
    C{pki client SRC --name NAME --out DIR}.
    """

    positionalName = "SRC"
    positionalKey = "source"

    synopsis = "[options] SRC --name NAME --out DIR"
    longdesc = (
        "Mint a client certificate signed by the client CA of bundle directory SRC (which must "
        "hold client-ca.key) and write client.crt, client.key and ca.crt into DIR."
    )
    optFlags = [["force", None, "Replace existing client files in DIR."]]
    optParameters = [
        ["name", "n", None, "Common name of the client certificate (required)."],
        ["out", "o", None, "Directory to write client.crt, client.key and ca.crt into (required)."],
        ["days", None, DEFAULT_CLIENT_DAYS, "Validity in days."],
        ["key-type", None, "ec", "Key type: ec (P-256) or rsa (2048 bits)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["spiffe"] = []

    def opt_spiffe(self, value: str) -> None:
        """SPIFFE ID of the client (spiffe://trust-domain/path, a URI SAN); repeatable."""
        _addSpiffeId(self, value)

    def postOptions(self) -> None:
        self["days"] = _positiveInt("--days", self["days"])
        _checkKeyType(self)
        if not self["name"]:
            raise usage.UsageError("--name: required (the client certificate's common name)")
        from suite.pki.names import clientName

        try:
            clientName(self["name"])
        except ValueError as e:
            raise usage.UsageError(f"--name: {e}") from None
        if not self["out"]:
            raise usage.UsageError("--out: required (the directory for the client files)")


class PKIOptions(usage.Options):
    """
    C{pki init|node|client ...}: mount this as a subcommand of a console script.
    """

    subCommands = [
        ["init", None, InitOptions, "Create a new private CA bundle."],
        ["node", None, NodeOptions, "Write a bundle for another node from the same CA."],
        ["client", None, MintClientOptions, "Mint a client certificate from the client CA."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("pki: a subcommand is required (init, node or client)")
