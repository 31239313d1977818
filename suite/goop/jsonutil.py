"""
JSON from the network or from files: one parser whose every refusal is a
C{ValueError}.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parseJSON"]


def parseJSON(data: bytes | str) -> Any:
    """
    C{json.loads}, with a document nested deeper than the decoder can
    follow (C{[[[[...]]]]}, which raises C{RecursionError}) refused as a
    C{ValueError} like any other malformed input.
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
