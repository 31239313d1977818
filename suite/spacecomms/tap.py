"""
twistd plugin entry for spacecomms: C{twistd spacecomms --config FILE}
(also C{spacecomms start --config FILE} through the console script).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from suite.daemon import ConfigError, DaemonOptions, attachCommon, exitOnConfigError

__all__ = ["Options", "makeService"]

_CONFIG = ["config", "c", None, "Path to the YAML configuration file (default: $SPACECOMMS_CONFIG)."]


class _ConfigOptions(usage.Options):
    optParameters = [_CONFIG]


class StartOptions(_ConfigOptions):
    """
    C{spacecomms start --config FILE}: run the node in the foreground.
    """

    synopsis = "[--config FILE]"


class ValidateOptions(_ConfigOptions):
    """
    C{spacecomms validate-config --config FILE}: check a file and exit.
    """

    synopsis = "[--config FILE]"


class Options(DaemonOptions):
    """
    Options for C{twistd spacecomms}.

    Environment: SPACECOMMS_CONFIG (config path), SPACECOMMS_LOG_LEVEL (overrides
    logging.level), SPACECOMMS_ADMIN_TOKEN / SPACECOMMS_READONLY_TOKEN (API tokens
    "admin" with read/write/admin and "readonly" with read).
    """

    synopsis = "[options] start|validate-config [--config FILE]"
    longdesc = (
        "SpaceComms node: exchanges CCSDS Conjunction Data Messages and object states with "
        "peer operators over mTLS sessions and serves a REST API. Environment: "
        "SPACECOMMS_CONFIG, SPACECOMMS_LOG_LEVEL, SPACECOMMS_ADMIN_TOKEN, SPACECOMMS_READONLY_TOKEN."
    )
    optParameters = [*DaemonOptions.optParameters, _CONFIG]
    subCommands = [
        ["start", None, StartOptions, "Run the node (the default)."],
        [
            "validate-config",
            None,
            ValidateOptions,
            "Check the configuration file and exit: 0 if valid, else 1 with every reason.",
        ],
    ]
    compData = usage.Completions(optActions={"config": usage.CompleteFiles("*.yaml")})

    def configPath(self) -> str:
        path = self.get("config")
        sub = getattr(self, "subOptions", None)
        subPath = sub.get("config") if sub is not None else None
        if path and subPath and path != subPath:
            raise ConfigError(f"--config: given twice, as {path} and {subPath}: name one file")
        path = path or subPath
        if not path:
            path = self.environ.get("SPACECOMMS_CONFIG")
        if not path:
            raise ConfigError("--config: required (or set SPACECOMMS_CONFIG)")
        return str(path)

    def postOptions(self) -> None:
        super().postOptions()
        self["config"] = self.configPath()


@exitOnConfigError("spacecomms")
def makeService(options: usage.Options, reactor: Any = None, installSignals: bool = True) -> MultiService:
    """
    Load the configuration and build the node's service tree.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    from suite.spacecomms.config import loadConfig
    from suite.spacecomms.logsetup import configure
    from suite.spacecomms.service import SpaceCommsService

    if getattr(options, "subCommand", None) == "validate-config":
        from suite.spacecomms.cli import validateConfig

        raise SystemExit(validateConfig(options))
    environ = getattr(options, "environ", None)
    config = loadConfig(options["config"], environ)
    verbose = bool(options.get("verbose"))
    configure("pretty" if verbose else config.log_format, config.log_level, config.log_output)
    service = SpaceCommsService(config, reactor, environ=environ, installSignals=installSignals)
    attachCommon(service, options, {"node": service.node, "service": service}, reactor)
    if verbose or config.log_format == "pretty":
        from suite import logging as suitelogging

        suitelogging.setVerbose(True)
    return service
