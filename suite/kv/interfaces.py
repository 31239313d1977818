"""
Interfaces of the key-value layer.

A store is local to one Chord vnode: the ring routes each request to the
owning vnode, which calls its store; replicas receive the resulting records
through L{IKeyValueStore.importRecords}.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IKeyValueStore"]


class IKeyValueStore(Interface):
    """
    One vnode's keys.  Every method returns a L{Deferred}; blocking work
    (disk writes, fsync, SQLite) happens off the reactor thread.

    Three kinds of record live under a key: a plain value (C{"v"}), a
    prefix set of children (C{"s"}) and a lease (C{"l"}).  Each key sits at
    ring position L{suite.kv.records.ringId}C{(key)}; the range methods
    select records by that position, the half-open ring interval
    C{(low, high]} (wrapping past zero when C{low >= high}).

    Every record carries the L{suite.kv.versions.Version} of the write that
    made it, stamped by this store's L{suite.kv.versions.HybridClock}; a
    deletion leaves a tombstone (a C{None} payload with its version) that is
    purged once older than the store's C{horizon}.  Records are exchanged as
    C{(kind, key, payload-or-None, hlc, origin)} (L{suite.kv.records.Record}:
    the version kept flat, as records move in bulk).
    """

    name = Attribute("Backend name: 'memory', 'aof' or 'sqlite'.")
    hlc = Attribute("The L{suite.kv.versions.HybridClock} stamping this store's writes.")
    horizon = Attribute("Seconds a tombstone is kept before it is purged.")

    def get(key):  # type: ignore[no-untyped-def]
        """
        Fire with the value stored under C{key} (bytes) or C{None}.
        """

    def put(key, value):  # type: ignore[no-untyped-def]
        """
        Store C{value} under C{key}; fire with C{None}.
        """

    def delete(key):  # type: ignore[no-untyped-def]
        """
        Remove the value of C{key}; fire with whether it existed.
        """

    def prefixAppend(prefix, child):  # type: ignore[no-untyped-def]
        """
        Add C{child} to the set under C{prefix}; fire with whether it was new.
        """

    def prefixList(prefix):  # type: ignore[no-untyped-def]
        """
        Fire with the sorted list of children under C{prefix}.
        """

    def prefixContains(prefix, child):  # type: ignore[no-untyped-def]
        """
        Fire with whether C{child} is in the set under C{prefix}.
        """

    def prefixRemove(prefix, child):  # type: ignore[no-untyped-def]
        """
        Remove C{child} from the set under C{prefix}; fire with whether it was there.
        """

    def acquireLease(name, holder, ttl):  # type: ignore[no-untyped-def]
        """
        Take lease C{name} for C{holder} for C{ttl} seconds; fire with a
        L{suite.kv.records.Lease} whose fencing C{token} grows with every
        new grant, or fail with L{suite.kv.records.LeaseHeld}.  The current
        holder acquiring again extends it and keeps its token.
        """

    def renewLease(name, token, ttl):  # type: ignore[no-untyped-def]
        """
        Extend the lease granted with C{token}; fail with
        L{suite.kv.records.LeaseLost} if it was taken by someone else.
        """

    def releaseLease(name, token):  # type: ignore[no-untyped-def]
        """
        Release the lease granted with C{token}; fire with whether it was held.
        """

    def exportKey(key):  # type: ignore[no-untyped-def]
        """
        Fire with every record of C{key} this store holds, tombstones
        included (so importing them elsewhere carries deletions too).
        """

    def exportRange(low, high):  # type: ignore[no-untyped-def]
        """
        Fire with the list of C{(kind, key, payload, hlc, origin)} records in
        C{(low, high]}, tombstones included.
        """

    def importRecords(records):  # type: ignore[no-untyped-def]
        """
        Merge C{(kind, key, payload, hlc, origin)} records from elsewhere: each
        replaces the record held only if it is newer (see
        L{suite.kv.versions.newer}), so an import never loses a newer write
        and importing the same records twice, or in another order, ends the
        same.  A tombstone older than C{horizon} is ignored (it may have
        been purged here already).  A record whose C{hlc} is C{None} (sent
        by a peer from before versions) is written as a new write.  Fire
        with how many were installed.
        """

    def removeRange(low, high):  # type: ignore[no-untyped-def]
        """
        Forget every record and tombstone in C{(low, high]} (local clean-up,
        not a deletion: nothing of it travels); fire with how many.
        """

    def purge():  # type: ignore[no-untyped-def]
        """
        Forget the tombstones older than C{horizon} now (writes also do this
        about once a minute); fire with how many.
        """

    def digestRange(low, high, buckets=1):  # type: ignore[no-untyped-def]
        """
        Fire with a list of C{(count, digest)}, one per bucket of
        C{(low, high]} split by L{suite.kv.records.bucketBounds}; equal on
        two stores exactly when they hold the same records (versions and
        tombstones included) there.
        """

    def stats():  # type: ignore[no-untyped-def]
        """
        Return a dict of counters (records, bytes, backend specifics).
        """

    def close():  # type: ignore[no-untyped-def]
        """
        Flush and release files; fire when done.
        """
