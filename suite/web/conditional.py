"""
Conditional requests: C{If-None-Match} against an entity tag.
"""

from __future__ import annotations

import re

__all__ = ["etagMatches"]

_TAG = re.compile(rb'\s*(\*|(?:W/)?"[^"]*")\s*(?:,|$)')


def etagMatches(header: bytes | None, etag: bytes) -> bool:
    """
    Whether an C{If-None-Match} header value matches C{etag} (RFC 9110
    13.1.2: weak comparison, so C{W/"x"} matches C{"x"}; C{*} matches any
    current representation).  A malformed list matches nothing.

    @param header: the header's value, or L{None} when it is absent.
    @param etag: the representation's entity tag, quotes included.
    """
    if header is None:
        return False
    wanted = etag.removeprefix(b"W/")
    position = 0
    while position < len(header):
        match = _TAG.match(header, position)
        if match is None or match.end() == position:
            return False
        tag = match.group(1)
        if tag == b"*" or tag.removeprefix(b"W/") == wanted:
            return True
        position = match.end()
    return False
