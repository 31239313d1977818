"""
Interfaces of the admin web pieces.

A daemon hands the admin site one L{IHealth} provider per component whose
readiness matters; C{/readyz} asks each of them on every request.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IHealth"]


class IHealth(Interface):
    """
    Something that can say whether it is ready to serve.

    The admin site's C{/readyz} resource calls L{check} on each provider for
    every request, so C{check} must be cheap and must not block.
    """

    name = Attribute("A short stable name (C{str}) shown in C{/readyz} output.")

    def check() -> object:
        """
        Report readiness now.

        @return: a L{suite.web.health.HealthReport}, or a L{Deferred} firing
            with one.  Raising (or failing) counts as not ready, with the
            exception text as the reason.
        """
