"""
One Raft for the suite: an automat role machine with PreVote and
CheckQuorum, pipelined replication, a durable WAL with snapshots,
single-server membership changes, leadership transfer, ReadIndex reads and
client sessions, over an mTLS transport.  See docs/raft.md.
"""

__all__: list[str] = []
