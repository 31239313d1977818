"""
Run one gossip node: C{python -m suite.gossip --bind HOST:PORT --join HOST[:PORT]}.

A small runner for trying the protocol on real UDP/TCP and for end-to-end
tests; it logs members joining, becoming suspect, dying and leaving, and
leaves gracefully on SIGTERM/SIGINT.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import sys
from typing import Any

from twisted.python import usage

from suite.gossip.security import readKeyFile
from suite.gossip.settings import DEFAULT_PORT


def parseAddress(value: str, default: int = DEFAULT_PORT) -> tuple[str, int]:
    """
    C{HOST[:PORT]}, C{[V6]:PORT} or a bare IPv6 address.

    @raise usage.UsageError: if it is not one.
    """
    host, port = value.strip(), str(default)
    if host.startswith("["):
        inner, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise usage.UsageError(f"{value!r} is not HOST[:PORT]")
        host, port = inner, rest[1:] or port
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
    if not host:
        raise usage.UsageError(f"{value!r} has no host")
    try:
        number = int(port)
    except ValueError:
        raise usage.UsageError(f"{value!r}: {port!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise usage.UsageError(f"{value!r}: port {number} is out of range")
    return host, number


class Options(usage.Options):
    """
    C{python -m suite.gossip [options]}.
    """

    synopsis = "[options]"
    optParameters: list[list[Any]] = [
        ["bind", "b", f"0.0.0.0:{DEFAULT_PORT}", "HOST[:PORT] to bind UDP and TCP on."],
        ["advertise", "a", None, "HOST[:PORT] other members reach this node at (default: --bind)."],
        ["name", "n", None, "Node name (default: the hostname)."],
        [
            "key-file",
            None,
            None,
            "File of base64 AES keys (as `serf keygen` prints), one a line, the primary first: encrypts everything.",
        ],
        ["profile", None, "lan", "Timer profile: lan (memberlist's LAN defaults) or local (fast, loopback)."],
        ["label", None, "", "memberlist cluster label: only members with the same label are heard."],
    ]
    optFlags: list[list[Any]] = [["verbose", "v", "Human-readable log lines."]]

    def __init__(self) -> None:
        super().__init__()
        self["join"] = []
        self["meta"] = {}

    def opt_join(self, value: str) -> None:
        """
        HOST[:PORT] of a member to join through (repeatable, or comma-separated).
        """
        self["join"].extend(parseAddress(v) for v in value.split(",") if v.strip())

    def opt_meta(self, value: str) -> None:
        """
        KEY=VALUE metadata to announce (repeatable).
        """
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise usage.UsageError(f"--meta {value!r} is not KEY=VALUE")
        self["meta"][key] = item

    def postOptions(self) -> None:
        self["bindAddress"] = parseAddress(self["bind"])
        self["advertiseAddress"] = (
            parseAddress(self["advertise"], self["bindAddress"][1]) if self["advertise"] else None
        )
        if self["profile"] not in ("lan", "local"):
            raise usage.UsageError("--profile must be lan or local")
        if len(self["label"].encode("utf-8")) > 255:
            raise usage.UsageError("--label is at most 255 bytes")
        self["key"] = None
        if self["key-file"]:
            try:
                self["key"] = readKeyFile(self["key-file"])
            except ValueError as e:
                raise usage.UsageError(f"--key-file: {e}") from None
        if not self["name"]:
            self["name"] = os.uname().nodename
        self["advertiseAddress"] = advertisable(
            self["advertiseAddress"] or self["bindAddress"], self["join"][0] if self["join"] else None
        )


def advertisable(address: tuple[str, int], toward: tuple[str, int] | None) -> tuple[str, int]:
    """
    The address other members should use: host names resolved to an IP
    literal (UDP needs one), and an unspecified bind address (0.0.0.0, ::)
    replaced by the local address that routes towards the first seed (or a
    private address), found without sending anything.

    @raise usage.UsageError: if the host does not resolve.
    """
    host, port = address
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as e:
        raise usage.UsageError(f"cannot resolve {host!r}: {e}") from None
    family, _, _, _, sockaddr = info[0]
    ip = str(sockaddr[0])
    if ipaddress.ip_address(ip).is_unspecified:
        target = toward[0] if toward else ("10.255.255.255" if family == socket.AF_INET else "fd00::1")
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((target, toward[1] if toward else 9))
                ip = str(s.getsockname()[0])
        except OSError as e:
            raise usage.UsageError(f"cannot find an address to advertise; pass --advertise ({e})") from None
    return ip, port


def main(argv: list[str] | None = None) -> int:
    from twisted.internet import reactor
    from twisted.logger import Logger, globalLogBeginner

    from suite.gossip.node import GossipNode
    from suite.gossip.settings import GossipSettings
    from suite.gossip.udp import NetworkTransport
    from suite.logging import observer, setVerbose

    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.stderr.write(f"suite.gossip: {e}\n")
        return 2
    setVerbose(bool(options["verbose"]))
    globalLogBeginner.beginLoggingTo([observer()], redirectStandardIO=False)
    log = Logger(namespace="suite.gossip")
    settings = GossipSettings.local() if options["profile"] == "local" else GossipSettings()
    if options["label"]:
        settings = dataclasses.replace(settings, label=options["label"])
    host, port = options["bindAddress"]
    transport = NetworkTransport(
        reactor, host, port, settings.maxPacketBytes, settings.maxStateBytes, settings.pushPullTimeout
    )
    node = GossipNode(
        options["name"],
        options["advertiseAddress"],
        transport,
        reactor,
        settings,
        key=options["key"],
        meta=options["meta"],
    )
    status = [0]

    def start() -> None:
        try:
            d = node.start(options["join"])
        except Exception as e:  # command line: one line, exit 1
            log.critical("cannot start gossip on {host}:{port}: {error}", host=host, port=port, error=str(e))
            status[0] = 1
            reactor.stop()
            return
        d.addCallback(
            lambda n: log.info("joined through {count} of {total} seeds", count=n, total=len(options["join"]))
        )

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", node.leave)
    reactor.run()
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
