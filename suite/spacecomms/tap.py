"""twistd plugin entry for spacecomms (placeholder until its Options land)."""

from twisted.application.service import MultiService
from twisted.python import usage

from suite.daemon import DaemonOptions, exitOnConfigError, notImplementedYet


class Options(DaemonOptions):
    """Options for twistd spacecomms."""


@exitOnConfigError("spacecomms")
def makeService(options: usage.Options) -> MultiService:
    raise notImplementedYet("spacecomms daemon")
