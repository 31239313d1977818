"""
Errors of the peer's settings surface.
"""

from __future__ import annotations

__all__ = ["SettingsError"]


class SettingsError(Exception):
    """
    A settings change could not be applied because of the peer directory
    (its goop.json does not read or cannot be written), not because of the
    request; the message says why.
    """
