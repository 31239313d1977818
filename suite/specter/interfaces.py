"""
Interfaces of the Specter ring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from suite.specter.chord.ids import VnodeRef

__all__ = ["IChordTransport", "IRing", "IRingState", "IVnodePeers"]


class IChordTransport(Interface):
    """
    Carries vnode calls between processes (mTLS frames in production, an
    in-memory network in simulations).  The local L{ChordNode} calls it.
    """

    def call(addr, vnodeId, method, args, timeout):  # type: ignore[no-untyped-def]
        """
        Call C{method(*args)} on vnode C{vnodeId} (or the node itself when
        C{None}) of the process advertised at C{addr}; fire with the result
        or fail with L{suite.specter.chord.errors.RemoteError} (code
        C{timeout} after C{timeout} seconds).
        """


class IRing(Interface):
    """
    The ring as a key-value service (what the RPC listener, /_internal and
    C{specter dns} use).
    """

    def kv(op, key, args):  # type: ignore[no-untyped-def]
        """
        Route KV operation C{op} on C{key} to its owner (retrying on stale
        ownership) and fire with the result.
        """

    def lookup(key):  # type: ignore[no-untyped-def]
        """
        Fire with C{(owner, replicas, hops)} for C{key}.
        """

    def lookupVersions(key):  # type: ignore[no-untyped-def]
        """
        Fire with C{(owner, replicas, hops, versions)} for C{key}, where
        C{versions} lists C{[kind, hlc, origin, live]} for each record of
        the key the owner holds (tombstones with C{live} false).
        """

    def holders(key):  # type: ignore[no-untyped-def]
        """
        Fire with the indexes of local vnodes holding a value for C{key}.
        """

    def stats():  # type: ignore[no-untyped-def]
        """
        A dict describing this process's vnodes.
        """


class IRingState(Interface):
    """
    Where a ring process keeps its membership (the peers it knew, its
    vnodes' last predecessor and successor lists) across restarts.
    """

    def load():  # type: ignore[no-untyped-def]
        """
        The last saved state (a dict with at least C{peers}, a list of
        advertise addresses) or C{None} for a fresh data directory.
        """

    def save(state):  # type: ignore[no-untyped-def]
        """
        Replace the saved state durably; fire when it is on disk.
        """


class IVnodePeers(Interface):
    """
    How the parts of one vnode (maintenance, hand-off, replication,
    re-homing) reach the rest of the ring: through its process
    (L{suite.specter.chord.peers.Peers}), or a scripted fake in the tests
    of one part.  Failures are L{suite.specter.chord.errors.RemoteError}s.
    """

    def call(target: VnodeRef, method: str, *args: Any) -> Deferred[Any]:
        """
        Call C{method(*args)} on vnode C{target}.
        """

    async def findSuccessor(kid: int, start: VnodeRef | None = None) -> tuple[VnodeRef, int]:
        """
        The vnode responsible for ring position C{kid} (looked up from
        C{start}, else from any serving vnode), and the remote hops it took.
        """

    async def entryPoint(seed: str | None) -> VnodeRef:
        """
        A serving vnode to start a lookup from: another one of this
        process, else one learnt from the ring, else one found through
        C{seed}.
        """

    def suspected(addr: str) -> bool:
        """
        Whether calls to the process at C{addr} timed out lately (lookups
        route around it).
        """
