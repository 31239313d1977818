"""
Glue shared by every daemon: option base class, configuration errors,
the one-line error contract, and the console-script front door.

Every daemon's C{Options} subclasses L{DaemonOptions}; its C{makeService} is
wrapped with L{exitOnConfigError} so a bad flag, key or file ends the process
with one line on stderr naming it and exit code 2, never a traceback.
The start-up barrier listeners report to lives in L{suite.startup}; its
names are importable from here too.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from twisted.python import usage

from suite.startup import (
    BARRIER_ATTRIBUTE,
    GuardedEndpointService,
    StartupBarrier,
    barrierFor,
    listenFailureReason,
    watchListening,
)

__all__ = [
    "ConfigError",
    "DaemonOptions",
    "EnvTable",
    "envParameters",
    "notImplementedYet",
    "exitOnConfigError",
    "attachCommon",
    "runConsole",
    "errorLine",
    "StartupBarrier",
    "barrierFor",
    "watchListening",
    "GuardedEndpointService",
    "BARRIER_ATTRIBUTE",
    "listenFailureReason",
    "suiteVersion",
    "versionText",
    "withSuiteOptions",
]

log = Logger(namespace="suite.daemon")

_P = ParamSpec("_P")
_R = TypeVar("_R")
_O = TypeVar("_O", bound=usage.Options)

#: A daemon's environment table: option name -> (variable, default or
#: C{None}, help text).  See L{envParameters} and L{DaemonOptions.envDefaults}.
EnvTable = Mapping[str, tuple[str, str | None, str]]


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


def suiteVersion() -> str:
    """
    The installed suite's version (C{setup.cfg} C{version}).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("twisted-suite")
    except PackageNotFoundError:
        return "unknown"


def versionText(prog: str | None = None) -> str:
    """
    What C{--version} prints: the suite's version, then Twisted's.
    """
    import twisted

    name = prog or os.path.basename(sys.argv[0]) or "suite"
    return f"{name} (twisted-suite) {suiteVersion()}\nTwisted {twisted.__version__}\n"


def _printAndExit(text: str) -> None:
    """
    Write C{text} to stdout and exit 0.  A reader that went away (C{--help
    | head}) ends the output quietly instead of with a traceback.
    """
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's last flush of the
        # buffered rest does not fail again on the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    raise SystemExit(0)


def _printVersion(options: usage.Options) -> None:
    _printAndExit(versionText())


def _printHelp(options: usage.Options) -> None:
    _printAndExit(str(options) + "\n")


class _SuiteSubOptions(usage.Options):
    """
    Mixed into every subcommand's options (first among its bases): the
    suite's C{--version}, and the same argument normalisation as
    L{DaemonOptions}.
    """

    def opt_version(self) -> None:
        """
        Print the suite's and Twisted's versions and exit.
        """
        _printVersion(self)

    def opt_help(self) -> None:
        """
        Display this help and exit.
        """
        _printHelp(self)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        args = list(sys.argv[1:] if options is None else options)
        _wrapSubCommands(self)
        super().parseOptions(_normaliseArgs(self, args))


_WRAPPED: dict[type, type] = {}


def _suiteSubclass(cls: type) -> type:
    if issubclass(cls, (DaemonOptions, _SuiteSubOptions)):
        return cls
    wrapped = _WRAPPED.get(cls)
    if wrapped is None:
        wrapped = type(
            cls.__name__,
            (_SuiteSubOptions, cls),
            {
                "__doc__": cls.__doc__,
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "opt_version": _SuiteSubOptions.opt_version,
                "opt_help": _SuiteSubOptions.opt_help,
            },
        )
        _WRAPPED[cls] = wrapped
    return wrapped


def withSuiteOptions(cls: type[_O]) -> type[_O]:
    """
    C{cls} (a L{usage.Options} used as a subcommand or shown as one) with
    the suite's C{--version} and argument normalisation.
    """
    return _suiteSubclass(cls)


def _wrapSubCommands(options: usage.Options) -> None:
    """
    Give every subcommand class of C{options} the suite's C{--version} and
    argument normalisation (factories that are not classes are left as
    they are: they build L{DaemonOptions}).
    """
    subs = getattr(options, "subCommands", None)
    if not subs:
        return
    wrapped = []
    for name, short, parser, doc in subs:
        if isinstance(parser, type) and issubclass(parser, usage.Options):
            parser = _suiteSubclass(parser)
        wrapped.append([name, short, parser, doc])
    # subCommands is declared by the Options classes that have subcommands.
    options.subCommands = wrapped  # type: ignore[attr-defined]


def _known(options: usage.Options) -> tuple[set[str], set[str]]:
    """
    The long options of C{options}: all of them, and those taking a value.
    """
    names = {o.rstrip("=") for o in options.longOpt}
    values = {o[:-1] for o in options.longOpt if o.endswith("=")}
    return names, values


def _canonical(name: str, names: set[str]) -> str:
    """
    C{--auth-user} for an option declared C{auth_user} (and the reverse).
    """
    if name in names:
        return name
    for other in (name.replace("-", "_"), name.replace("_", "-")):
        if other in names:
            return other
    return name


def _subCommandAt(options: usage.Options, args: list[str]) -> int | None:
    """
    The index of the subcommand in C{args}, if C{options} has subcommands
    and one is there.
    """
    subs = getattr(options, "subCommands", None)
    if not subs:
        return None
    names, values = _known(options)
    shortValues = {options.shortOpt[i - 1] for i, c in enumerate(options.shortOpt) if c == ":"}
    commands = {n for sub in subs for n in (sub[0], sub[1]) if n}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return None
        if a.startswith("--"):
            name = _canonical(a[2:].split("=", 1)[0], names)
            i += 2 if "=" not in a and name in values else 1
        elif a.startswith("-") and len(a) > 1:
            i += 2 if len(a) == 2 and a[1] in shortValues else 1
        else:
            return i if a in commands else None
    return None


def _normaliseArgs(options: usage.Options, args: list[str]) -> list[str]:
    """
    Accept what operators type: C{--auth-user} for C{--auth_user} (and the
    reverse), and C{options}' own flags after the subcommand
    (C{spacecomms start --verbose}), moved before it when the subcommand
    does not have a flag of that name.
    """
    names, values = _known(options)
    out: list[str] = []
    at = _subCommandAt(options, args)
    head = args if at is None else args[:at]
    for a in head:
        if a.startswith("--") and len(a) > 2:
            name, sep, value = a[2:].partition("=")
            a = f"--{_canonical(name, names)}{sep}{value}"
        out.append(a)
    if at is None:
        return out
    command = args[at]
    tail = args[at + 1 :]
    subCommands: list[Any] = getattr(options, "subCommands", [])
    parser = next(p for n, s, p, d in subCommands if command in (n, s))
    # parseOptions builds the same parser next: an error building it is
    # raised here instead, not hidden by skipping the normalisation.
    sub = parser()
    subNames, subValues = _known(sub)
    moved: list[str] = []
    kept: list[str] = []
    i = 0
    while i < len(tail):
        a = tail[i]
        if a == "--":
            kept.extend(tail[i:])
            break
        if a.startswith("--") and len(a) > 2:
            name, sep, value = a[2:].partition("=")
            mine = _canonical(name, names)
            theirs = _canonical(name, subNames)
            if theirs not in subNames and mine in names:
                moved.append(f"--{mine}{sep}{value}")
                if not sep and mine in values and i + 1 < len(tail):
                    moved.append(tail[i + 1])
                    i += 1
                i += 1
                continue
            if not sep and theirs in subValues and i + 1 < len(tail):
                kept.extend([a, tail[i + 1]])
                i += 2
                continue
        kept.append(a)
        i += 1
    return out + moved + [command, *kept]


def envParameters(table: EnvTable) -> list[list[Any]]:
    """
    C{optParameters} rows for the options of C{table}, each help text naming
    its variable and default.
    """
    return [
        [flag, None, None, f"{text} [env {env}{', default ' + default if default else ''}]"]
        for flag, (env, default, text) in table.items()
    ]


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

    def opt_version(self) -> None:
        """
        Print the suite's and Twisted's versions and exit.
        """
        _printVersion(self)

    def opt_help(self) -> None:
        """
        Display this help and exit.
        """
        _printHelp(self)

    def getSynopsis(self) -> str:
        """
        C{Usage: PROG [options] SYNOPSIS}; asked by a subcommand, only this
        level's C{[options]} precede the subcommand's own synopsis.
        """
        own = getattr(type(self), "synopsis", None) or "[options]"
        if self.subCommand is not None:
            own = "[options]"
        parent = getattr(self, "parent", None)
        if parent is None:
            return f"Usage: {os.path.basename(sys.argv[0]) or 'suite'} {own}"
        return " ".join((parent.getSynopsis(), parent.subCommand or "", own))

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse as usual; when running under twistd (the parent is twistd's
        own options), a usage error is one line on stderr and exit code 2
        instead of twistd's full help text and exit code 1.

        Also accepted: C{--a-b} for an option declared C{a_b} (and the
        reverse), and this level's options after the subcommand.
        """
        args = list(sys.argv[1:] if options is None else options)
        _wrapSubCommands(self)
        try:
            super().parseOptions(_normaliseArgs(self, args))
        except usage.UsageError as e:
            parent = getattr(self, "parent", None)
            if parent is None or not _isTwistdOptions(parent):
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

    def envDefaults(self, table: EnvTable) -> None:
        """
        Fill each option of C{table} not given on the command line from its
        variable (L{envFallback}), else from its default.
        """
        for flag, (env, default, _) in table.items():
            self.envFallback(flag, env)
            if self[flag] in (None, "") and default is not None:
                self[flag] = default

    def postOptions(self) -> None:
        manhole = self.get("manhole")
        if manhole:
            from suite.manhole import validateManholeEndpoint

            try:
                validateManholeEndpoint(manhole, self.get("manhole-keys"))
            except ValueError as e:
                raise ConfigError(f"--manhole: {e}") from None


def exitOnConfigError(prog: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """
    Decorate a C{makeService}: a L{usage.UsageError} (including
    L{ConfigError}) or an C{OSError} raised while building the service is
    printed as one line naming its cause and the process exits with code 2.
    """

    def decorate(f: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(f)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return f(*args, **kwargs)
            except (usage.UsageError, OSError) as e:
                sys.stderr.write(errorLine(prog, e))
                sys.stderr.flush()
                raise SystemExit(2) from None

        return wrapper

    return decorate


def _isTwistdOptions(options: Any) -> bool:
    """
    Whether C{options} are twistd's own (its C{ServerOptions}, or the
    subclass L{onlySuitePlugin} makes for a console script).
    """
    if type(options).__module__.startswith("twisted."):
        return True
    # Not imported at all: not under twistd (and no reason to import it).
    app = sys.modules.get("twisted.application.app")
    return app is not None and isinstance(options, app.ServerOptions)


def _underTwistd(options: Any) -> tuple[bool, str | None]:
    node = options
    while node is not None:
        parent = getattr(node, "parent", None)
        if parent is not None and _isTwistdOptions(parent):
            try:
                pidfile = parent["pidfile"]
            except KeyError:
                pidfile = None
            return True, (os.path.abspath(pidfile) if pidfile else None)
        node = parent
    return False, None


def _twistdOptions(options: Any) -> Any:
    node = options
    while node is not None:
        parent = getattr(node, "parent", None)
        if parent is not None and _isTwistdOptions(parent):
            return parent
        node = parent
    return None


def _installLogObserver(root: IService, options: Any) -> None:
    """
    Under plain C{twistd -n PLUGIN} (no C{--logger}, no log file), log the
    suite's way: JSON lines on stderr (text with C{--verbose}).  twistd
    takes an application's L{ILogObserver} component when no C{--logger}
    was given; the component is set when twistd parents the root service
    to its application.
    """
    twistd = _twistdOptions(options)
    if twistd is None:
        return
    try:
        logger, logfile, nodaemon = twistd["logger"], twistd["logfile"], twistd["nodaemon"]
    except KeyError:
        return
    if logger or not nodaemon or logfile not in (None, "", "-"):
        return
    original = root.setServiceParent

    def setServiceParent(parent: Any) -> Any:
        from twisted.logger import ILogObserver
        from twisted.python.components import Componentized

        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver, None) is None:
            from suite import logging as suitelogging

            parent.setComponent(ILogObserver, suitelogging.observer())
        return original(parent)

    # Shadows the method on this one instance, on purpose.
    root.setServiceParent = setServiceParent  # type: ignore[method-assign]


def attachCommon(
    root: MultiService,
    options: Mapping[str, Any],
    namespace: dict[str, object],
    reactor: Any = None,
    prog: str | None = None,
) -> StartupBarrier:
    """
    Apply what every daemon shares to its root service: log verbosity, the
    L{StartupBarrier} every listener reports to and, when asked for, the
    manhole child service (with C{root} and C{namespace} reachable from its
    prompt).  Returns the barrier.
    """
    from suite import logging as suitelogging

    suitelogging.setVerbose(bool(options.get("verbose")))
    _installLogObserver(root, options)
    barrier = barrierFor(root)
    if barrier is None:
        fatal, pidfile = _underTwistd(options)
        name = prog or getattr(getattr(options, "parent", None), "subCommand", None) or "daemon"
        barrier = StartupBarrier(name, reactor, fatal=fatal, pidfile=pidfile).attach(root)
    description = options.get("manhole")
    if description:
        from suite.manhole import makeManholeService

        ns = dict(namespace)
        ns.setdefault("root", root)
        manhole: IService = makeManholeService(
            description, ns, authorizedKeys=options.get("manhole-keys"), reactor=reactor
        )
        manhole.setServiceParent(root)
    return barrier


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
    from twisted.application import app
    from twisted.scripts.twistd import ServerOptions, runApp

    from suite.proctitle import setProcessName

    setProcessName(prog, args)
    sys.argv = [
        "twistd",
        "--nodaemon",
        "--pidfile=",
        "--logger=suite.logging.observer",
        pluginName,
        *args,
    ]
    app.run(runApp, onlySuitePlugin(ServerOptions, pluginName))


def onlySuitePlugin(serverOptions: type[_O], pluginName: str) -> type[_O]:
    """
    twistd's C{ServerOptions} knowing only the suite's plugin C{pluginName}.

    twistd finds its subcommands by importing every module in
    C{twisted.plugins} (trial, words, conch, mail ... with what they import:
    about 1 MB of resident memory and 30 modules, docs/performance.md); a
    console script runs one known daemon, so it names that plugin directly.
    """
    from twisted.application.service import IServiceMaker

    from twisted.plugins import suite_plugins

    makers = [
        m
        for m in vars(suite_plugins).values()
        if IServiceMaker.providedBy(m) and getattr(m, "tapname", None) == pluginName
    ]
    if not makers:
        raise ConfigError(f"no twistd plugin named {pluginName!r} in twisted.plugins.suite_plugins")

    # mypy takes no class held in a variable as a base.
    class Options(serverOptions):  # type: ignore[valid-type,misc]
        @staticmethod
        def _getPlugins(interface: Any) -> list[Any]:
            return makers if interface is IServiceMaker else []

    return Options
