"""
Glue shared by every daemon: option base class, configuration errors,
the one-line error contract, and the console-script front door.

Every daemon's C{Options} subclasses L{DaemonOptions}; its C{makeService} is
wrapped with L{exitOnConfigError} so a bad flag, key or file ends the process
with one line on stderr naming it and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.application.service import IService, MultiService
from twisted.python import usage

__all__ = [
    "ConfigError",
    "DaemonOptions",
    "notImplementedYet",
    "exitOnConfigError",
    "attachCommon",
    "runConsole",
    "errorLine",
]

_F = TypeVar("_F", bound=Callable[..., Any])


class ConfigError(usage.UsageError):
    """
    A configuration value is wrong.  The message names the flag, key or file
    and the reason, and fits on one line.
    """


def notImplementedYet(what: str) -> ConfigError:
    """
    Build the error a daemon raises when asked for a documented feature that
    is not built yet, so it is never silently ignored.
    """
    return ConfigError(f"not implemented yet: {what}")


def errorLine(prog: str, error: BaseException) -> str:
    """
    Render C{error} as the single line printed to stderr.
    """
    text = " ".join(str(error).split()) or error.__class__.__name__
    return f"{prog}: error: {text}\n"


class DaemonOptions(usage.Options):
    """
    Options every daemon accepts: C{--verbose} and the opt-in manhole.

    @ivar environ: the environment used for fallbacks; tests pass their own.
    """

    optFlags: list[list[Any]] = [
        ["verbose", None, "Human-readable coloured logs instead of JSON lines on stderr."],
    ]
    optParameters: list[list[Any]] = [
        [
            "manhole",
            None,
            None,
            "Open a manhole for live debugging on this endpoint: "
            "tcp:PORT[:interface=127.0.0.1] (SSH, needs --manhole-keys) or "
            "unix:PATH (socket created 0600). Loopback/unix only. Off by default.",
        ],
        [
            "manhole-keys",
            None,
            None,
            "authorized_keys file allowed to log in to an SSH manhole.",
        ],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.environ: Mapping[str, str] = os.environ if environ is None else environ

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse as usual; when running under twistd (the parent is twistd's
        own options), a usage error is one line on stderr and exit code 2
        instead of twistd's full help text and exit code 1.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            parent = getattr(self, "parent", None)
            if parent is None or not type(parent).__module__.startswith("twisted."):
                raise
            prog = f"twistd {getattr(parent, 'subCommand', None) or ''}".strip()
            sys.stderr.write(errorLine(prog, e))
            sys.stderr.write(f"{prog}: run 'twistd {getattr(parent, 'subCommand', '')} --help' for usage\n")
            sys.stderr.flush()
            raise SystemExit(2) from None

    def envFallback(self, key: str, *names: str) -> None:
        """
        Fill option C{key} from the first set environment variable in
        C{names} when the flag was not given on the command line.
        """
        if self.get(key) not in (None, "", [], ()):
            return
        for name in names:
            value = self.environ.get(name)
            if value not in (None, ""):
                self[key] = value
                return

    def postOptions(self) -> None:
        manhole = self.get("manhole")
        if manhole:
            from suite.manhole import validateManholeEndpoint

            try:
                validateManholeEndpoint(manhole, self.get("manhole-keys"))
            except ValueError as e:
                raise ConfigError(f"--manhole: {e}") from None


def exitOnConfigError(prog: str) -> Callable[[_F], _F]:
    """
    Decorate a C{makeService}: a L{usage.UsageError} (including
    L{ConfigError}) or an C{OSError} raised while building the service is
    printed as one line naming its cause and the process exits with code 2.
    """

    def decorate(f: _F) -> _F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            except (usage.UsageError, OSError) as e:
                sys.stderr.write(errorLine(prog, e))
                sys.stderr.flush()
                raise SystemExit(2) from None

        return wrapper  # type: ignore[return-value]

    return decorate


def attachCommon(
    root: MultiService,
    options: Mapping[str, Any],
    namespace: dict[str, object],
    reactor: Any = None,
) -> None:
    """
    Apply what every daemon shares to its root service: log verbosity and,
    when asked for, the manhole child service (with C{root} and C{namespace}
    reachable from its prompt).
    """
    from suite import logging as suitelogging

    suitelogging.setVerbose(bool(options.get("verbose")))
    description = options.get("manhole")
    if description:
        from suite.manhole import makeManholeService

        ns = dict(namespace)
        ns.setdefault("root", root)
        manhole: IService = makeManholeService(
            description, ns, authorizedKeys=options.get("manhole-keys"), reactor=reactor
        )
        manhole.setServiceParent(root)


def runConsole(
    prog: str,
    pluginName: str,
    optionsFactory: Callable[[], usage.Options],
    argv: Sequence[str] | None = None,
    clientCommands: Mapping[str, Callable[[usage.Options], int | None]] | None = None,
    daemonSubCommands: Iterable[str] | None = None,
) -> None:
    """
    The console-script front door (C{specter}, C{spacecomms}, C{goop2}, ...).

    Parse C{argv} with the same C{Options} the twistd plugin uses; a usage
    error is one line on stderr and exit code 2.  A subcommand named in
    C{clientCommands} runs its function (which may use
    L{twisted.internet.task.react}); anything else runs the daemon in the
    foreground under twistd with JSON logging on stderr.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    options = optionsFactory()
    try:
        options.parseOptions(args)
    except usage.UsageError as e:
        sys.stderr.write(errorLine(prog, e))
        sys.stderr.write(f"{prog}: run '{prog} --help' for usage\n")
        raise SystemExit(2) from None
    sub: str | None = getattr(options, "subCommand", None)
    if clientCommands and sub is not None and sub in clientCommands:
        code = clientCommands[sub](options)
        raise SystemExit(code or 0)
    if daemonSubCommands is not None and sub not in set(daemonSubCommands):
        sys.stderr.write(f"{prog}: error: a subcommand is required\n")
        raise SystemExit(2)
    from twisted.scripts.twistd import run

    sys.argv = [
        "twistd",
        "--nodaemon",
        "--pidfile=",
        "--logger=suite.logging.observer",
        pluginName,
        *args,
    ]
    run()
