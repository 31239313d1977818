"""
The C{specter} console script: C{server} and C{dns} run under twistd in
the foreground; C{kv}, C{pki} and C{client} are client commands.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.python import usage

from suite.daemon import errorLine, notImplementedYet, runConsole
from suite.specter.options import ConsoleOptions

__all__ = ["main", "runKV"]


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return "\n".join(_show(v) for v in value)
    if isinstance(value, (dict,)):
        return json.dumps(
            value,
            indent=2,
            default=lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b),
        )
    return json.dumps(value)


def runKV(options: usage.Options) -> int:
    """
    C{specter kv ACTION ...}: one call through --listen-rpc, result on stdout.
    """
    from twisted.internet.task import react

    from suite.specter.chord import errors as E
    from suite.specter.chord.errors import RemoteError
    from suite.specter.rpc import connectRPC
    from suite.specter.rpcauth import listenerToken

    kvOptions = options.subOptions
    action, args = kvOptions["action"], kvOptions["args"]
    code = [0]

    token = _revealed(kvOptions["rpc-token"])
    if token is None and not kvOptions["rpc-client"].startswith("unix:"):
        # no --data or token file: the loopback node's own, when this user may read it
        token = listenerToken(kvOptions["rpc"])

    async def run(reactor: Any) -> None:
        from twisted.internet.defer import Deferred

        try:
            client = await Deferred.fromCoroutine(
                _withTimeout(
                    reactor,
                    connectRPC(reactor, kvOptions["rpc-client"], token),
                    kvOptions["timeout"],
                )
            )
        except RemoteError as e:  # refused: the server's reason names the flag to give
            sys.stderr.write(errorLine("specter kv", Exception(f"--rpc: {kvOptions['rpc']} refused: {e}")))
            code[0] = 1
            return
        except Exception as e:  # command line: one line, exit 1
            sys.stderr.write(
                errorLine("specter kv", Exception(f"--rpc: cannot connect to {kvOptions['rpc']}: {e}"))
            )
            code[0] = 1
            return
        try:
            if action == "stats":
                result = await client.call("stats")
            elif action == "lookup":
                result = await client.call("lookup", args[0].encode())
            else:
                op = {"list": "list"}.get(action, action)
                result = await _withTimeout(
                    reactor,
                    client.kv(op, args[0].encode(), *[a.encode() for a in args[1:]]),
                    kvOptions["timeout"],
                )
            if action == "get" and result is None:
                sys.stderr.write(f"specter kv: {args[0]}: not found\n")
                code[0] = 1
            elif result is not None:
                sys.stdout.write(_show(result) + "\n")
        except RemoteError as e:
            if e.code == E.UNAUTHORIZED:
                e = RemoteError(e.code, f"--rpc: {kvOptions['rpc']} refused the call: {e.message}")
            sys.stderr.write(errorLine("specter kv", e))
            code[0] = 1
        finally:
            client.close()

    try:
        react(
            lambda reactor: __import__(
                "twisted.internet.defer", fromlist=["Deferred"]
            ).Deferred.fromCoroutine(run(reactor))
        )
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return code[0]


def _revealed(token: Any) -> bytes | None:
    return None if token is None else str(token.reveal()).encode()


async def _withTimeout(reactor: Any, d: Any, timeout: float) -> Any:
    from suite.specter.chord import errors as E
    from suite.specter.chord.errors import RemoteError

    timer = reactor.callLater(timeout, d.cancel)
    try:
        return await d
    except Exception as e:  # re-raised (as a timeout when the timer fired)
        if not timer.active():
            raise RemoteError(E.TIMEOUT, f"no answer within {timeout}s") from None
        raise e
    finally:
        if timer.active():
            timer.cancel()


def runPKI(options: usage.Options) -> int:
    from suite.pki.command import runPKI as run

    return run(options.subOptions)


def runClient(options: usage.Options) -> int:
    try:
        from suite.specter.client.commands import runClient as run
    except ImportError:
        sys.stderr.write(errorLine("specter", notImplementedYet("specter client (gateway tunnels)")))
        return 2
    return run(options.subOptions)


_QUIC_FLAGS = ("--listen-udp", "--listen-addr")


def wantsQUIC(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """
    Whether C{specter server ARGS} runs the gateway (an C{--apex}) with UDP
    binds (C{--listen-udp}, C{--listen-addr}, or their environment
    variables), so the console script must run on the asyncio reactor that
    aioquic needs.
    """
    args = list(args)
    if "server" not in args:
        return False
    rest = args[args.index("server") + 1 :]
    if not any(a == "--apex" or a.startswith("--apex=") for a in rest):
        return False  # no gateway, no QUIC: a ring node keeps the default reactor
    if any(a == f or a.startswith(f + "=") for a in rest for f in _QUIC_FLAGS):
        return True
    return bool(environ.get("LISTEN_UDP") or environ.get("LISTEN_ADDR"))


def installReactorFor(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """
    Install Twisted's asyncio reactor when the command serves QUIC.  This
    runs before anything imports C{twisted.internet.reactor}; the flags
    are checked properly by the options parser afterwards.

    @return: whether the asyncio reactor was installed here.
    """
    if not wantsQUIC(args, environ) or "twisted.internet.reactor" in sys.modules:
        return False
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """
    Entry point of the C{specter} console script.
    """
    installReactorFor(sys.argv[1:] if argv is None else argv, os.environ)
    runConsole(
        "specter",
        "specter",
        ConsoleOptions,
        argv,
        clientCommands={"kv": runKV, "pki": runPKI, "client": runClient},
        daemonSubCommands=("server", "dns"),
    )
