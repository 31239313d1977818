"""
Updates made on this node (through the REST API): storing and announcing
a CDM or an object state, and withdrawing one, under the originator rule
(only the node that originated a CDM changes it, unless an admin override
is asked for).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from suite.spacecomms.authority import ownerRefusal
from suite.spacecomms.cdm.jsonfmt import toDict
from suite.spacecomms.cdm.model import CDM, CDMError
from suite.spacecomms.core import NodeCore, log
from suite.spacecomms.forwarding import Forwarder
from suite.spacecomms.ledger import Ledger
from suite.spacecomms.store import Record

__all__ = ["LocalUpdates", "NotOriginator"]


class NotOriginator(Exception):
    """
    This node may not change a CDM another node originated (without an
    admin override).  C{owner} is the originator.
    """

    def __init__(self, key: str, owner: str, nodeId: str) -> None:
        super().__init__(ownerRefusal(key, owner, nodeId))
        self.key = key
        self.owner = owner


class LocalUpdates:
    """
    What the API calls to change this node's records.
    """

    def __init__(self, core: NodeCore, ledger: Ledger, forwarder: Forwarder) -> None:
        self.core = core
        self.ledger = ledger
        self.forwarder = forwarder

    def _checkOwner(self, key: str, old: Record | None, override: bool) -> bool:
        """
        Refuse (L{NotOriginator}) a change to another node's CDM unless
        C{override}; return whether an override is being used.
        """
        nodeId = self.core.nodeId
        if old is None or old.origin == nodeId:
            return False
        if not override:
            raise NotOriginator(key, old.origin, nodeId)
        log.warn(
            "authority: admin override of cdm {cdm_id} (originator {owner}) by this node {node}",
            cdm_id=key,
            owner=old.origin,
            node=nodeId,
        )
        return True

    def _payload(self, mtype: str, payload: dict[str, Any], override: bool = False) -> dict[str, Any]:
        """
        A payload this node originates: marked as an override if it is
        one, and signed when this node has a TLS identity.
        """
        if override:
            payload["override"] = True
        if self.core.signer is not None:
            self.core.signer.sign(mtype, self.core.nodeId, payload)
        return payload

    def ingestCDM(self, cdm: CDM, override: bool = False) -> tuple[Record, bool]:
        """
        Store a CDM submitted to this node and announce it.  Returns the
        record and whether it was new (False for an identical resubmission).

        @raise NotOriginator: the CDM id belongs to another node's CDM and
            C{override} is False.
        @raise CDMError: its TCA has already passed (field C{TCA}).
        """
        core = self.core
        body = toDict(cdm)
        key = cdm.messageId
        old = core.store.get("cdm", key)
        if old is not None and old.active and old.body == body and old.origin == core.nodeId:
            return old, False
        now = core.now()
        tca = cdm.tcaSeconds
        if tca < now:
            raise CDMError("TCA", "has passed: a CDM for a past conjunction is not stored or announced")
        overriding = self._checkOwner(key, old, override) or (old is not None and old.override)
        seq = self.ledger.nextSequence(old.sequence if old is not None else 0)
        payload = self._payload("CDM_ANNOUNCE", {"cdm_id": key, "sequence": seq, "cdm": body}, overriding)
        record = Record(
            "cdm",
            key,
            core.nodeId,
            seq,
            True,
            body,
            None,
            old.createdAt if old is not None else now,
            now,
            None,
            tca,
            list(cdm.objectDesignators()),
            overriding,
            payload.get("signature"),
            payload.get("cert"),
        )
        self.ledger.put(record)
        self.ledger.supersede(record)
        self.forwarder.originate("CDM_ANNOUNCE", payload)
        return record, True

    def withdrawCDM(self, key: str, reason: str = "FALSE_POSITIVE", override: bool = False) -> Record | None:
        """
        Withdraw a CDM everywhere (C{DELETE /cdms/{id}}).

        @raise NotOriginator: another node originated it and C{override} is
            False.
        """
        old = self.core.store.get("cdm", key)
        if old is None or not old.active:
            return None
        overriding = self._checkOwner(key, old, override) or old.override
        seq = self.ledger.nextSequence(old.sequence)
        payload = self._payload(
            "CDM_WITHDRAW", {"cdm_id": key, "sequence": seq, "reason": reason}, overriding
        )
        record = self.ledger.tombstone(old, reason, seq, self.core.nodeId, None, overriding, payload)
        self.forwarder.originate("CDM_WITHDRAW", payload)
        return record

    def announceObject(self, objectId: str, state: dict[str, Any]) -> Record:
        """
        Store and announce an object state.
        """
        now = self.core.now()
        seq = self.ledger.nextSequence()
        payload = self._payload(
            "OBJECT_STATE_ANNOUNCE", {"object_id": objectId, "sequence": seq, "state": state}
        )
        record = Record(
            "object",
            objectId,
            self.core.nodeId,
            seq,
            True,
            state,
            None,
            now,
            now,
            signature=payload.get("signature"),
            cert=payload.get("cert"),
        )
        self.ledger.put(record)
        self.forwarder.originate("OBJECT_STATE_ANNOUNCE", payload)
        return record

    def withdrawObject(self, objectId: str, reason: str = "NO_LONGER_TRACKED") -> Record | None:
        """
        Withdraw an object state everywhere.
        """
        old = self.core.store.get("object", objectId)
        if old is None or not old.active:
            return None
        seq = self.ledger.nextSequence()
        payload = self._payload(
            "OBJECT_STATE_WITHDRAW", {"object_id": objectId, "sequence": seq, "reason": reason}
        )
        record = self.ledger.tombstone(old, reason, seq, self.core.nodeId, None, None, payload)
        self.forwarder.originate("OBJECT_STATE_WITHDRAW", payload)
        return record

    def reassert(self, mine: Record, above: int) -> Record:
        """
        Announce again C{mine}, a version this node made since it started
        (L{Ledger.writtenHere}), numbered above C{above}: the sequence of
        an older copy a peer gave back, numbered higher because this
        node's clock was ahead before it lost its store.  Same content,
        a new sequence (and signature), sent to every peer routing allows,
        so that this version wins everywhere.
        """
        cdm = mine.kind == "cdm"
        seq = self.ledger.nextSequence(above)
        payload: dict[str, Any] = {"cdm_id" if cdm else "object_id": mine.key, "sequence": seq}
        if mine.active:
            mtype = "CDM_ANNOUNCE" if cdm else "OBJECT_STATE_ANNOUNCE"
            payload["cdm" if cdm else "state"] = mine.body
        else:
            mtype = "CDM_WITHDRAW" if cdm else "OBJECT_STATE_WITHDRAW"
            payload["reason"] = mine.reason or "ERROR"
        payload = self._payload(mtype, payload, mine.override)
        record = replace(
            mine,
            sequence=seq,
            updatedAt=self.core.now(),
            signature=payload.get("signature"),
            cert=payload.get("cert"),
        )
        self.ledger.put(record)
        self.forwarder.originate(mtype, payload)
        return record
