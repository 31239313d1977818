"""
Who may change what: the authority rules a node applies to every routed
announce or withdrawal before the ordering rule (see
docs/spacecomms-protocol.md, "Authority").

- Provenance: a message's C{path} starts at its C{source_node} and ends at
  the peer that delivered it, whose node id is bound to its auth token and
  to its mTLS certificate; a peer so speaks for itself at hop 0 and can
  only relay what it states came from elsewhere.
- Sequence window: a sequence may run at most C{max_clock_skew_seconds}
  ahead of this node's clock (sequences are microseconds of the
  originator's clock), so no one can freeze an entry with a huge sequence.
- Ownership: a CDM belongs to the node that first announced it; versions
  and withdrawals from any other node are refused, unless they carry an
  explicit admin C{override} from a node listed in
  C{protocol.override_nodes} (logged on every node that applies it).

- Signature (with TLS): checked by L{suite.spacecomms.signing.Signer}
  after these, so only messages that pass them cost a verification.

Pure functions: each returns None to let the message through or the
reason it is refused (prefixed with the rule's name).
"""

from __future__ import annotations

from suite.spacecomms.envelope import Envelope
from suite.spacecomms.store import Record

__all__ = ["provenance", "sequenceWindow", "ownership", "sequenceLimit", "ownerRefusal"]


def provenance(env: Envelope, peer: str) -> str | None:
    """
    The path must start at the originator and end at the delivering peer.
    """
    path = env.path
    if not path or path[0] != env.source_node:
        return f"authority: path does not start at source_node {env.source_node}"
    if path[-1] != peer:
        return f"authority: path does not end at the sending peer {peer}"
    return None


def sequenceLimit(now: float, maxSkew: float) -> int:
    """
    The largest sequence accepted at time C{now}.
    """
    return int((now + maxSkew) * 1_000_000)


def sequenceWindow(sequence: int, now: float, maxSkew: float) -> str | None:
    """
    Refuse sequences further ahead of this node's clock than C{maxSkew}.
    """
    if sequence > sequenceLimit(now, maxSkew):
        return (
            f"sequence: {sequence} is more than max_clock_skew_seconds ({maxSkew:g}) "
            "ahead of this node's clock"
        )
    return None


def ownerRefusal(key: str, owner: str, claimant: str) -> str:
    """
    The reason given when C{claimant} tries to change C{owner}'s CDM.
    """
    return f"authority: cdm {key} belongs to originator {owner}, not {claimant}"


def ownership(
    env: Envelope, kind: str, key: str, old: Record | None, overrideNodes: tuple[str, ...]
) -> tuple[str | None, bool]:
    """
    Whether C{env.source_node} may change the CDM C{key} held as C{old}.
    Returns (refusal reason or None, whether this is an honoured override).
    Object states are not owned (several operators track one object).
    """
    if kind != "cdm" or old is None or old.origin == env.source_node:
        return None, False
    if env.payload.get("override") is True:
        if env.source_node in overrideNodes:
            return None, True
        return (
            f"authority: override by {env.source_node} not honoured (not in protocol.override_nodes); "
            f"cdm {key} belongs to originator {old.origin}",
            False,
        )
    return ownerRefusal(key, old.origin, env.source_node), False
