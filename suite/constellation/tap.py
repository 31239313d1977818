"""twistd plugin entry for constellation (placeholder until its Options land)."""

from twisted.application.service import MultiService
from twisted.python import usage

from suite.daemon import DaemonOptions, exitOnConfigError, notImplementedYet


class Options(DaemonOptions):
    """Options for twistd constellation."""


@exitOnConfigError("constellation")
def makeService(options: usage.Options) -> MultiService:
    raise notImplementedYet("constellation daemon")
