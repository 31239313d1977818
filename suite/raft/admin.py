"""
Membership changes for operators:

    python -m suite.raft member add-voter n4 10.0.0.4:7001 \\
        --server n1=10.0.0.1:7101 --server n2=10.0.0.2:7101 --cert-dir certs/admin

Actions: C{add-learner ID ADDRESS}, C{add-voter ID ADDRESS} (a learner
first, promoted once caught up), C{promote ID}, C{remove ID}.  The request
goes to the client API of the listed servers, following leader hints, and
prints the resulting configuration as one JSON line.  A change that is
already in effect succeeds, so running the command again is harmless.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.python import usage

ACTIONS = {"add-learner": "addLearner", "add-voter": "addVoter", "promote": "promote", "remove": "remove"}


class MemberOptions(usage.Options):
    synopsis = "python -m suite.raft member {add-learner|add-voter|promote|remove} ID [ADDRESS] [options]"
    optParameters = [
        ["cert-dir", None, None, "Client bundle directory (ca.crt, node.crt, node.key)."],
        [
            "timeout-ms",
            None,
            "30000",
            "How long one attempt may wait (adding a voter waits for its catch-up).",
        ],
    ]
    optFlags = [["insecure", None, "Plain TCP (development only)."]]

    def __init__(self) -> None:
        super().__init__()
        self["server"] = {}

    def parseOptions(self, options: list[str] | None = None) -> None:
        # Flags may come after the action and its arguments.
        args = list(sys.argv[1:] if options is None else options)
        flags, positional = [], []
        takesValue = {"--server", "--cert-dir", "--timeout-ms"}
        while args:
            a = args.pop(0)
            if a.startswith("-"):
                flags.append(a)
                if a in takesValue and args:
                    flags.append(args.pop(0))
            else:
                positional.append(a)
        super().parseOptions(flags + positional)

    def opt_server(self, value: str) -> None:
        """
        A node's client API as ID=HOST:PORT (repeat).
        """
        name, sep, address = value.partition("=")
        if not sep or ":" not in address:
            raise usage.UsageError(f"--server {value!r}: expected ID=HOST:PORT")
        self["server"][name] = address

    def parseArgs(self, action: str, nodeId: str, address: str = "") -> None:  # type: ignore[override]
        if action not in ACTIONS:
            raise usage.UsageError(f"unknown action {action!r}: expected one of {', '.join(sorted(ACTIONS))}")
        if action in ("add-learner", "add-voter") and ":" not in address:
            raise usage.UsageError(f"{action} needs the new node's Raft address as HOST:PORT")
        self["action"], self["id"], self["address"] = ACTIONS[action], nodeId, address

    def postOptions(self) -> None:
        if not self["server"]:
            raise usage.UsageError("--server is required")
        if not self["insecure"] and not self["cert-dir"]:
            raise usage.UsageError("--cert-dir is required (or --insecure for development)")
        try:
            self["timeout-ms"] = int(self["timeout-ms"])
            if self["timeout-ms"] <= 0:
                raise ValueError
        except ValueError:
            raise usage.UsageError(f"--timeout-ms must be a positive integer, not {self['timeout-ms']!r}")


async def changeMembership(reactor: Any, options: MemberOptions) -> dict[str, Any]:
    """
    Ask the leader (found through the listed servers) for one change;
    returns the resulting configuration.
    """
    from twisted.internet.endpoints import clientFromString, wrapClientTLS

    from suite.raft.client import ClientSettings, RaftClient

    if not options["insecure"]:
        from suite.pki.load import loadBundle
        from suite.pki.tls import clientContextFactory

        bundle = loadBundle(options["cert-dir"])

    def connect(address: str, factory: Any) -> Any:
        host, port = address.rsplit(":", 1)
        endpoint: Any = clientFromString(reactor, f"tcp:host={host}:port={port}:timeout=2")
        if not options["insecure"]:
            endpoint = wrapClientTLS(clientContextFactory(bundle, ipAddress=host), endpoint)
        return endpoint.connect(factory)

    client = RaftClient(
        reactor, connect, options["server"], ClientSettings(timeoutMs=options["timeout-ms"], retryAttempts=10)
    )
    try:
        result: dict[str, Any] = await client.call(
            options["action"], options["id"], options["address"] or None
        )
        return result
    finally:
        client.close()


def main(argv: list[str]) -> int:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from suite.daemon import ConfigError
    from suite.raft.client import RaftClientError

    options = MemberOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"suite.raft member: {e}\n")
        return 2
    outcome: list[int] = []

    async def run() -> None:
        try:
            config = await changeMembership(reactor, options)
        except (RaftClientError, ConfigError, OSError) as e:
            sys.stderr.write(f"suite.raft member: {options['action']} {options['id']} failed: {e}\n")
            outcome.append(1)
        else:
            sys.stdout.write(json.dumps(config, sort_keys=True) + "\n")
            outcome.append(0)

    def go() -> None:
        Deferred.fromCoroutine(run()).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    return outcome[0] if outcome else 1
