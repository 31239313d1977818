"""
Leases on Raft: C{lb_leader} and C{dns_writer}.

The replicated part is L{LeaseStateMachine}: per lease a holder (or none)
and a fencing token.  Three commands change it, each a compare-and-set so
that a stale proposal changes nothing:

  - C{grant(name, holder, expectToken)}: succeeds only if the token is
    still C{expectToken} (the proposer judged that lease expired or free);
    the token becomes C{max token ever + 1}, so tokens strictly increase.
  - C{renew(name, holder, token)}: succeeds only if C{holder} holds C{token}.
  - C{release(name, holder, token)}: the same check; the lease becomes free.

Only the Raft leader proposes, and it proposes leases for itself only: the
holder of a lease is always a node that was leader when it proposed.
L{LeaseKeeper} does the time keeping, on monotonic clocks and with
durations only (clocks of different nodes are never compared):

  - The holder is I{acting} until C{sent + duration * (1 - drift)}, C{sent}
    being its own clock reading taken I{before} it proposed the grant or
    renewal that succeeded.  It checks this before every action
    (L{LeaseKeeper.acting}).
  - A leader grants a lease that another node holds only after
    C{duration * (1 + drift) + margin} has passed on its own clock since the
    later of its own election and the last grant or renewal it applied.

A renewal committed in an older term was proposed before the new leader's
election (a quorum moved to the new term in between), and one committed
later is applied later; either way the wait starts after C{sent}, so the
old holder stops acting before the lease can be granted elsewhere, as long
as clock rates differ by less than C{drift}.  A holder that cannot renew
(crashed leader, lost quorum, partition) simply runs out.  On shutdown, or
when a node of better priority is alive, the holder stops acting, releases
both leases and hands Raft leadership over; the next leader grants a free
lease at once.
"""

from suite.constellation.leases.hold import HoldCore, HoldInputs, newLeaseHold
from suite.constellation.leases.keeper import (
    KeeperCore,
    KeeperInputs,
    KeeperRounds,
    LeaseKeeper,
    newLeaseKeeper,
)
from suite.constellation.leases.table import (
    DNS_WRITER,
    LB_LEADER,
    LEASES,
    Lease,
    LeaseSettings,
    LeaseStateMachine,
    candidateOrder,
    encodeLeaseCommand,
)

__all__ = [
    "LB_LEADER",
    "DNS_WRITER",
    "LEASES",
    "Lease",
    "LeaseSettings",
    "LeaseStateMachine",
    "LeaseKeeper",
    "HoldInputs",
    "HoldCore",
    "newLeaseHold",
    "KeeperInputs",
    "KeeperCore",
    "KeeperRounds",
    "newLeaseKeeper",
    "encodeLeaseCommand",
    "candidateOrder",
]
