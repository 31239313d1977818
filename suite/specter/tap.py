"""twistd plugin entry for specter (placeholder until its Options land)."""

from twisted.application.service import MultiService
from twisted.python import usage

from suite.daemon import DaemonOptions, exitOnConfigError, notImplementedYet


class Options(DaemonOptions):
    """Options for twistd specter."""


@exitOnConfigError("specter")
def makeService(options: usage.Options) -> MultiService:
    raise notImplementedYet("specter daemon")
