"""
The one exception of the engine's public API.
"""

from __future__ import annotations

__all__ = ["EngineError"]


class EngineError(ValueError):
    """
    A rules document or an entry the engine cannot accept; the message is one
    line naming the offending field.
    """
