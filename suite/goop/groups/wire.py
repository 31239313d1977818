"""
The group protocol's signatures: what a member signs for each C{msg} and
C{state} (L{signedBytes}), the signature fields a host relays
(L{relayedSignature}), and a member's checks of what its host relays: a
relayed message (L{verifyRelayed}) and the state snapshot of a welcome
(L{verifyWelcome}).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger

from suite.goop.identity import verifySignature

__all__ = ["SIGNED_WINDOW_SECONDS", "relayedSignature", "signedBytes", "verifyRelayed", "verifyWelcome"]

log = Logger(namespace="suite.goop.groups")
#: How far a signed message's C{seq} (microseconds) may lie from the
#: receiver's clock: older ones are refused as replays.
SIGNED_WINDOW_SECONDS = 300.0


def signedBytes(host: str, group: str, kind: str, seq: int, data: Any) -> bytes:
    """
    What a member signs for one C{msg} or C{state}: the group (by host and
    name), the kind, the sequence and the data, as canonical JSON.  Binding
    the host and group keeps a signature from being replayed elsewhere.
    """
    doc = {"data": data, "group": group, "host": host, "seq": seq, "type": kind}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def relayedSignature(msg: dict[str, Any]) -> dict[str, Any]:
    """The signature fields of a member's message that a host relays."""
    out: dict[str, Any] = {}
    seq, key, sig = msg.get("seq"), msg.get("key"), msg.get("sig")
    if (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and isinstance(key, str)
        and len(key) <= 64
        and isinstance(sig, str)
        and len(sig) <= 128
    ):
        out = {"seq": seq, "key": key, "sig": sig}
    return out


def verifyRelayed(clock: Any, hostId: str, name: str, event: dict[str, Any], seen: dict[str, int]) -> bool:
    """
    Mark a relayed msg/state C{verified} when its sender signed it (for
    this host and group, recently, not seen before); drop it, logged,
    when it carries a signature that does not hold (a host forging or
    replaying a member's words).  Unsigned messages pass unverified.
    """
    sender = event.get("from")
    if "sig" not in event:
        event["verified"] = False
        return True
    seq = event.get("seq")
    reason = None
    try:
        signer = verifySignature(
            str(event.get("key")),
            str(event.get("sig")),
            signedBytes(hostId, name, str(event.get("type")), int(seq or 0), event.get("data")),
        )
    except (ValueError, TypeError) as e:
        reason = str(e)
    else:
        if signer != sender:
            reason = "signed by another peer than its sender"
        elif not isinstance(seq, int) or abs(seq / 1e6 - clock.seconds()) > SIGNED_WINDOW_SECONDS:
            reason = "seq outside the replay window"
        elif seq <= seen.get(signer, 0):
            reason = "replayed (seq not above the last one)"
    if reason is not None:
        log.warn(
            "group {group} at {host}: dropped a {kind} relayed as from {sender}: {reason}",
            group=name,
            host=hostId[:16],
            kind=event.get("type"),
            sender=str(sender)[:16],
            reason=reason,
        )
        return False
    assert isinstance(signer, str) and isinstance(seq, int)
    seen[signer] = seq
    for k in ("key", "sig"):
        event.pop(k, None)
    event["verified"] = True
    return True


def verifyWelcome(clock: Any, hostId: str, name: str, event: dict[str, Any], seen: dict[str, int]) -> bool:
    """
    Check the group state snapshot of a welcome against the signature of
    the member who set it (C{stateSignature}: C{from}, C{seq}, C{key},
    C{sig} over L{signedBytes} of this host, group, C{"state"}, C{seq}
    and the state): mark the welcome C{verified}, or refuse it, logged,
    when the signature does not hold (a host forging or altering the
    snapshot).  A snapshot may be old, so no replay window applies, but
    a C{seq} from the future is refused.  A welcome without a signature
    (no state, or one set unsigned) passes unverified.
    """
    proof = event.get("stateSignature")
    if proof is None:
        event["verified"] = False
        return True
    reason = None
    signer = None
    seq = proof.get("seq") if isinstance(proof, dict) else None
    if not isinstance(proof, dict) or not isinstance(seq, int) or isinstance(seq, bool):
        reason = "malformed state signature"
    else:
        try:
            signer = verifySignature(
                str(proof.get("key")),
                str(proof.get("sig")),
                signedBytes(hostId, name, "state", seq, event.get("state")),
            )
        except (ValueError, TypeError) as e:
            reason = f"state signature: {e}"
        else:
            if signer != proof.get("from"):
                reason = "state signed by another peer than the one named"
            elif seq / 1e6 - clock.seconds() > SIGNED_WINDOW_SECONDS:
                reason = "state seq from the future"
    if reason is not None:
        log.warn(
            "group {group} at {host}: refused the welcome: {reason}",
            group=name,
            host=hostId[:16],
            reason=reason,
        )
        return False
    assert isinstance(signer, str) and isinstance(seq, int)
    seen[signer] = max(seen.get(signer, 0), seq)
    event.pop("stateSignature", None)
    event["stateFrom"] = signer
    event["verified"] = True
    return True
