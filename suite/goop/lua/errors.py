"""
What a Lua call's failure is, shared by the peer (L{suite.goop.lua.engine},
L{suite.goop.lua.pool}) and the worker's sandbox.

Kept apart from L{suite.goop.lua.sandbox} so that the peer, which only
starts workers and reads their answers, does not import the sandbox and
its SSRF-guarded HTTP client (C{http.client}, C{ssl} wrappers): those run
in the worker processes alone (docs/performance.md, resident memory).
"""

from __future__ import annotations

__all__ = ["LuaError", "MEMORY_LIMIT", "TIME_LIMIT"]

#: The error of a call stopped at its time limit (by the sandbox's hook or
#: by the parent killing its worker).
TIME_LIMIT = "time limit exceeded"
#: The error of a call whose Lua state reached its memory limit.
MEMORY_LIMIT = "memory limit exceeded"


class LuaError(Exception):
    """A Lua call was refused or failed; the message says why."""
