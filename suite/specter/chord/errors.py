"""
Errors a vnode call can fail with, carried over the wire as C{[code, message, hint]}.
"""

from __future__ import annotations

from typing import Any

from suite.specter.chord.ids import VnodeRef, ref

__all__ = [
    "RemoteError",
    "NOT_OWNER",
    "BUSY",
    "GONE",
    "BAD_REQUEST",
    "LEASE_HELD",
    "LEASE_LOST",
    "INTERNAL",
    "STORE_FAILED",
    "TIMEOUT",
    "LEAVING",
    "NOT_IN_RING",
    "FORBIDDEN",
    "NOT_SERVING",
    "UNAUTHORIZED",
    "notServing",
]

NOT_OWNER = "not-owner"
BUSY = "busy"
GONE = "gone"
BAD_REQUEST = "bad-request"
LEASE_HELD = "lease-held"
LEASE_LOST = "lease-lost"
INTERNAL = "internal"
#: the vnode's store could not write (or fsync) the change: not acknowledged
STORE_FAILED = "store-failed"
TIMEOUT = "timeout"
LEAVING = "leaving"
#: this process has ring history but cannot reach its ring (not retried)
NOT_IN_RING = "not-in-ring"
#: the caller's certificate does not name the address it claims
FORBIDDEN = "forbidden"
#: a local RPC connection that did not authenticate (see L{suite.specter.rpcauth})
UNAUTHORIZED = "unauthorized"
RETRYABLE = frozenset({NOT_OWNER, BUSY, GONE, TIMEOUT, LEAVING})
#: the message of L{notServing}
NOT_SERVING = "not serving yet"


class RemoteError(Exception):
    """
    A call failed with C{code}; C{hint} may name the vnode to try instead.
    """

    def __init__(self, code: str, message: str = "", hint: VnodeRef | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.hint = hint

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    def toWire(self) -> list[Any]:
        return [self.code, self.message, list(self.hint) if self.hint else None]

    @property
    def around(self) -> VnodeRef | None:
        """
        For a L{notServing} refusal, the vnode to go on to at once.
        """
        return self.hint if self.code == BUSY else None

    @classmethod
    def fromWire(cls, value: Any) -> RemoteError:
        try:
            code, message, hint = value
            return cls(str(code), str(message), ref(hint))
        except (TypeError, ValueError):
            return cls(INTERNAL, "malformed error from peer")


def notServing(around: VnodeRef | None) -> RemoteError:
    """
    The refusal of a vnode that does not serve (still joining, leaving,
    withdrawn) to a call that should go to the vnode holding its position:
    L{BUSY}, so it is retried, with the successor it knows (if any) as the
    hint.  A L{BUSY} error with a hint is always this refusal: the caller
    goes on to the hint at once instead of waiting for the join (a peer of
    an earlier release, ignoring the hint, retries after a pause).
    """
    return RemoteError(BUSY, NOT_SERVING, around)
