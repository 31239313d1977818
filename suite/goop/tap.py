"""twistd plugin entry for goop (placeholder until its Options land)."""

from twisted.application.service import MultiService
from twisted.python import usage

from suite.daemon import DaemonOptions, exitOnConfigError, notImplementedYet


class Options(DaemonOptions):
    """Options for twistd goop."""


@exitOnConfigError("goop")
def makeService(options: usage.Options) -> MultiService:
    raise notImplementedYet("goop daemon")
