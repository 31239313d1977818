"""
Where a daemon's bundle comes from, as L{ICertificateSource} providers a
daemon asks for the current bundle (at start-up and on reload): a bundle
directory, the C{CERT_*} environment variables, or a bundle in memory.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from zope.interface import implementer

from suite.pki.bundle import Bundle
from suite.pki.interfaces import ICertificateSource
from suite.pki.load import loadBundle, loadBundleFromEnv

__all__ = ["DirectorySource", "EnvironmentSource", "StaticSource"]


@implementer(ICertificateSource)
@attrs.frozen
class DirectorySource:
    """
    A bundle directory (C{--cert-dir}); read anew on every C{loadBundle}.
    """

    directory: str

    @property
    def description(self) -> str:
        return self.directory

    def loadBundle(self) -> Bundle:
        """Read and check the directory now."""
        return loadBundle(self.directory)


@implementer(ICertificateSource)
@attrs.frozen
class EnvironmentSource:
    """
    The C{CERT_*} environment variables (C{--cert-env}).
    """

    environ: Mapping[str, str] = attrs.field(repr=False)

    @property
    def description(self) -> str:
        return "environment"

    def loadBundle(self) -> Bundle:
        """Decode and check the variables now."""
        return loadBundleFromEnv(self.environ)


@implementer(ICertificateSource)
@attrs.frozen
class StaticSource:
    """
    A bundle already in memory (tests, embedded demos).
    """

    bundle: Bundle

    @property
    def description(self) -> str:
        return self.bundle.source or "memory"

    def loadBundle(self) -> Bundle:
        """Return the bundle."""
        return self.bundle
