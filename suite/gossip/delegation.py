"""
Calls into a daemon's L{IGossipDelegate} from the protocol: the delegate
is the daemon's code, so a failure in it is logged and contained (the
message or state is dropped), never let into the protocol's handling.
"""

from __future__ import annotations

from twisted.logger import Logger

from suite.gossip.interfaces import IGossipDelegate

__all__ = ["GuardedDelegate"]

log = Logger(namespace="suite.gossip.node")


class GuardedDelegate:
    """
    The node's side of an optional delegate (C{None}: user messages are
    counted and dropped, no user state is exchanged).
    """

    def __init__(self, delegate: IGossipDelegate | None) -> None:
        self.delegate = None if delegate is None else IGossipDelegate(delegate)

    def notifyMsg(self, data: bytes) -> None:
        """
        Hand a user message to the delegate.
        """
        if self.delegate is None:
            return
        try:
            self.delegate.notifyMsg(data)
        except Exception:  # user delegate boundary: logged
            log.failure("gossip delegate failed on a user message")

    def localState(self, join: bool) -> bytes:
        """
        The delegate's state for a push-pull (empty without one, or when it
        fails or answers something other than bytes).
        """
        if self.delegate is None:
            return b""
        try:
            state = self.delegate.localState(join)
        except Exception:  # user delegate boundary: logged
            log.failure("gossip delegate failed to give its local state")
            return b""
        if not isinstance(state, bytes):
            log.error("gossip delegate's local state is not bytes; sending none")
            return b""
        return state

    def mergeRemoteState(self, data: bytes, join: bool) -> None:
        """
        Hand a peer's push-pull user state to the delegate.
        """
        if self.delegate is None or not data:
            return
        try:
            self.delegate.mergeRemoteState(data, join)
        except Exception:  # user delegate boundary: logged
            log.failure("gossip delegate failed to merge a remote state")
