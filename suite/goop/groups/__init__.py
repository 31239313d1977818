"""
Groups: a host peer relays messages among its members over
C{/goop/group/1.0.0}.

Member -> host: C{join}, C{msg}, C{state}, C{leave}, C{ping}.
Host -> member: C{welcome}, C{members}, C{msg}, C{state}, C{leave},
C{close}, C{pong}, C{error}.  The host stamps C{from} itself (a member
cannot speak for another), relays the sender's signature of each C{msg} and
C{state} (L{signedBytes}), and hands a joining member the group state with
the signature of the member who set it (C{stateSignature} in the
C{welcome}), so the member can check that the host did not forge the
snapshot; a welcome whose snapshot signature does not hold is refused
(logged, never joined: the welcome timer runs out and the member retries).
It keeps a bounded queue per member that is filled
only while that member's connection pushes back, and drops a member whose
queue overflows, so a slow member never delays the others.

One module per concern:

  - L{suite.goop.groups.wire}: what members sign, and the checks of what a
    host relays;
  - L{suite.goop.groups.member}: one membership's machine (connect, join,
    heartbeat, reconnect with backoff, leave);
  - L{suite.goop.groups.hostlink}: the host's flow-controlled link to one
    member (its machine and bounded backlog);
  - L{suite.goop.groups.host}: hosted groups and the host's end of a member
    stream;
  - L{suite.goop.groups.service}: L{GroupService}, a peer's hosted groups
    and memberships.
"""

from __future__ import annotations

from suite.goop.groups.host import MAX_MEMBERS, HostGroup, HostSession
from suite.goop.groups.hostlink import MAX_QUEUE, HostLinkCore, HostLinkInputs, HostLinkMachine, HostMember
from suite.goop.groups.member import PING_SECONDS, SILENCE_SECONDS, MemberCore, MemberInputs, memberMachine
from suite.goop.groups.service import INBOX, MAX_GROUPS, GroupService
from suite.goop.groups.wire import SIGNED_WINDOW_SECONDS, signedBytes

__all__ = [
    "GroupService",
    "HostGroup",
    "HostLinkCore",
    "HostLinkInputs",
    "HostLinkMachine",
    "HostMember",
    "HostSession",
    "MemberCore",
    "memberMachine",
    "MemberInputs",
    "signedBytes",
    "INBOX",
    "MAX_GROUPS",
    "MAX_MEMBERS",
    "MAX_QUEUE",
    "PING_SECONDS",
    "SIGNED_WINDOW_SECONDS",
    "SILENCE_SECONDS",
]
