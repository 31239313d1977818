"""
REST resources for CDMs (/cdms) and object states (/objects).
"""

from __future__ import annotations

import json
import re
import time as _time
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from suite.spacecomms.apibase import ID, MAX_LIMIT, APIError, Base, arg, body, iso, jsonBody, log
from suite.spacecomms.cdm.jsonfmt import fromDict
from suite.spacecomms.cdm.model import CDMError, decode, encode, epochSeconds
from suite.spacecomms.envelope import OBJECT_WITHDRAW_REASONS, WITHDRAW_REASONS, stateProblem
from suite.spacecomms.local import NotOriginator
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.store import Record

__all__ = ["CDMs", "Objects", "MAX_STATE_BYTES"]

#: Largest object state (as JSON) accepted, well under the peer frame limit.
MAX_STATE_BYTES = 256 * 1024


def _cdmView(r: Record, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cdm_id": r.key,
        "status": "active" if r.active else "withdrawn",
        "origin": r.origin,
        "learned_from": r.learnedFrom,
        "created_at": iso(r.createdAt),
        "updated_at": iso(r.updatedAt),
        "tca": iso(r.tca),
        "objects": r.objects,
    }
    if not r.active:
        out["reason"] = r.reason
    if r.override:
        out["override"] = True
    if r.body is not None:
        rel = r.body.get("relative_metadata_data", {})
        out["miss_distance_m"] = rel.get("MISS_DISTANCE")
        if "COLLISION_PROBABILITY" in rel:
            out["collision_probability"] = rel["COLLISION_PROBABILITY"]
        if full:
            out["cdm"] = r.body
    return out


_FORMATS = {
    "application/json": "json",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/plain": "kvn",
    "text/x-kvn": "kvn",
    "application/x-kvn": "kvn",
}


def _timeArg(request: IRequest, name: str) -> float | None:
    value = arg(request, name)
    if value is None:
        return None
    if _DATE_ONLY.match(value):
        value += "T00:00:00"  # an ISO date alone: midnight UTC
    try:
        return epochSeconds(value, name)
    except CDMError:
        raise APIError(400, f"query parameter {name}: not a time (YYYY-MM-DD[Thh:mm:ss[.d][Z]])")


#: A calendar (YYYY-MM-DD) or day-of-year (YYYY-DDD) date without a time.
_DATE_ONLY = re.compile(r"^\d{4}-(?:\d{2}-\d{2}|\d{3})$")


def _limit(request: IRequest) -> int:
    raw = arg(request, "limit")
    if raw is None:
        return 100
    try:
        n = int(raw)
    except ValueError:
        raise APIError(400, "query parameter limit: not an integer")
    if not 1 <= n <= MAX_LIMIT:
        raise APIError(400, f"query parameter limit: must be between 1 and {MAX_LIMIT}")
    return n


def _status(request: IRequest) -> str:
    status = arg(request, "status") or "active"
    if status not in ("active", "withdrawn", "all"):
        raise APIError(400, "query parameter status: must be active, withdrawn or all")
    return status


def _override(request: IRequest) -> bool:
    value = arg(request, "override")
    if value is None:
        return False
    if value not in ("true", "false"):
        raise APIError(400, "query parameter override: must be true or false")
    return value == "true"


def _notOriginator(e: NotOriginator) -> APIError:
    return APIError(
        409,
        f"{e}: only {e.owner} can send new versions or withdraw it, and peers ignore changes from any other "
        "node (an admin can take it over with ?override=true; peers honour that only from nodes in their "
        "protocol.override_nodes)",
        origin=e.owner,
    )


class CDMs(Base):
    methods = ("GET", "POST")
    queryParameters = {
        "GET": ("limit", "sort", "status", "object", "origin", "tca_from", "tca_to"),
        "POST": ("format", "override"),
    }

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return CDMItem(self.node, path.decode("utf-8", "replace"))

    def do_POST(self, request: IRequest) -> Any:
        started = _time.perf_counter()
        raw = body(request)
        fmt = arg(request, "format")
        if fmt is None:
            ctype = (
                (request.getHeader(b"content-type") or b"")
                .split(b";")[0]
                .strip()
                .lower()
                .decode("ascii", "replace")
            )
            fmt = _FORMATS.get(ctype)
        if fmt is not None and fmt not in ("kvn", "xml", "json"):
            raise APIError(400, "query parameter format: must be kvn, xml or json")
        try:
            cdm = decode(raw, fmt)
        except CDMError as e:
            self.node.metrics.invalidCDM()
            log.warn("cdm validation failed: {field}: {reason}", field=e.field, reason=e.reason)
            raise APIError(400, f"cdm validation failed: {e}", field=e.field)
        override = _override(request)
        try:
            record, created = self.node.ingestCDM(cdm, override=override)
        except CDMError as e:
            log.warn("cdm refused: {field}: {reason}", field=e.field, reason=e.reason, cdm_id=cdm.messageId)
            raise APIError(422, f"cdm refused: {e}", field=e.field)
        except NotOriginator as e:
            raise _notOriginator(e)
        if created:
            self.node.metrics.cdmProcessed(_time.perf_counter() - started)
        out: dict[str, Any] = {"cdm_id": record.key, "status": "accepted" if created else "unchanged"}
        if record.override:
            out["override"] = True
        return (201 if created else 200), out

    def do_GET(self, request: IRequest) -> Any:
        limit = _limit(request)
        sort = arg(request, "sort") or "created_at"
        if sort.removeprefix("-") not in ("created_at", "tca", "updated_at"):
            raise APIError(
                400, "query parameter sort: must be created_at, updated_at or tca (prefix - for descending)"
            )
        status = _status(request)
        obj = arg(request, "object")
        origin = arg(request, "origin")
        tcaFrom, tcaTo = _timeArg(request, "tca_from"), _timeArg(request, "tca_to")
        rows: list[Record] = []
        for rec in self.node.store.records("cdm"):
            r: Record = rec
            if status != "all" and r.active != (status == "active"):
                continue
            if obj is not None and obj not in r.objects:
                continue
            if origin is not None and r.origin != origin:
                continue
            if tcaFrom is not None and (r.tca is None or r.tca < tcaFrom):
                continue
            if tcaTo is not None and (r.tca is None or r.tca > tcaTo):
                continue
            rows.append(r)
        field = sort.removeprefix("-")
        attr = {"created_at": "createdAt", "updated_at": "updatedAt", "tca": "tca"}[field]
        rows.sort(key=lambda r: (getattr(r, attr) or 0.0, r.key), reverse=sort.startswith("-"))
        return 200, {
            "cdms": [_cdmView(r) for r in rows[:limit]],
            "count": min(limit, len(rows)),
            "total": len(rows),
        }


class CDMItem(Base):
    methods = ("GET", "DELETE")
    queryParameters = {"GET": ("format",), "DELETE": ("reason", "override")}

    def __init__(self, node: SpaceNode, key: str) -> None:
        super().__init__(node)
        self.key = key

    def _record(self) -> Record:
        r = self.node.store.get("cdm", self.key)
        if r is None:
            raise APIError(404, f"no CDM {self.key[:80]!r}")
        return r

    def do_GET(self, request: IRequest) -> Any:
        r = self._record()
        fmt = arg(request, "format") or "json"
        if fmt not in ("kvn", "xml", "json"):
            raise APIError(400, "query parameter format: must be kvn, xml or json")
        if fmt != "json" and r.body is None:
            # A withdrawn CDM keeps no document: say so rather than answer
            # JSON to a client that asked for KVN or XML.
            view = {k: v for k, v in _cdmView(r).items() if k != "reason"}
            raise APIError(
                410,
                f"CDM {self.key[:80]!r} is withdrawn ({r.reason}): no {fmt.upper()} document",
                withdraw_reason=r.reason,
                **view,
            )
        if fmt == "json" or r.body is None:
            return 200, _cdmView(r, full=True)
        text = encode(fromDict(r.body), fmt)
        request.setHeader(
            b"Content-Type",
            b"application/xml; charset=utf-8" if fmt == "xml" else b"text/plain; charset=utf-8",
        )
        return text.encode("utf-8")

    def do_DELETE(self, request: IRequest) -> Any:
        reason = arg(request, "reason") or "FALSE_POSITIVE"
        if reason not in WITHDRAW_REASONS:
            raise APIError(400, f"query parameter reason: must be one of {', '.join(WITHDRAW_REASONS)}")
        self._record()
        try:
            r = self.node.withdrawCDM(self.key, reason, override=_override(request))
        except NotOriginator as e:
            raise _notOriginator(e)
        if r is None:
            raise APIError(409, f"CDM {self.key[:80]!r} is already withdrawn")
        return 200, _cdmView(r)


def _objectView(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {
        "object_id": r.key,
        "status": "active" if r.active else "withdrawn",
        "origin": r.origin,
        "learned_from": r.learnedFrom,
        "updated_at": iso(r.updatedAt),
        "state": r.body,
    }
    if not r.active:
        out["reason"] = r.reason
    return out


class Objects(Base):
    methods = ("GET", "POST")
    queryParameters = {"GET": ("limit", "status")}

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return ObjectItem(self.node, path.decode("utf-8", "replace"))

    def do_POST(self, request: IRequest) -> Any:
        doc = jsonBody(request)
        if not isinstance(doc, dict):
            raise APIError(400, "request body: must be a JSON object")
        oid = doc.get("object_id")
        if not isinstance(oid, str) or not ID.match(oid):
            raise APIError(400, "body.object_id: required, 1-128 letters, digits, '.', '_', ':' or '-'")
        state = {k: v for k, v in doc.items() if k != "object_id"}
        problem = stateProblem(state, "body")
        if problem is not None:
            raise APIError(400, f"{problem[0]}: {problem[1]}")
        if len(json.dumps(state)) > MAX_STATE_BYTES:
            raise APIError(413, f"request body: an object state is limited to {MAX_STATE_BYTES} bytes")
        r = self.node.announceObject(oid, state)
        return 201, _objectView(r)

    def do_GET(self, request: IRequest) -> Any:
        limit = _limit(request)
        status = _status(request)
        rows = [
            r
            for r in self.node.store.records("object")
            if status == "all" or r.active == (status == "active")
        ]
        rows.sort(key=lambda r: r.key)
        return 200, {
            "objects": [_objectView(r) for r in rows[:limit]],
            "count": min(limit, len(rows)),
            "total": len(rows),
        }


class ObjectItem(Base):
    methods = ("GET", "DELETE")
    queryParameters = {"DELETE": ("reason",)}

    def __init__(self, node: SpaceNode, key: str) -> None:
        super().__init__(node)
        self.key = key

    def do_GET(self, request: IRequest) -> Any:
        r = self.node.store.get("object", self.key)
        if r is None:
            raise APIError(404, f"no object {self.key[:80]!r}")
        return 200, _objectView(r)

    def do_DELETE(self, request: IRequest) -> Any:
        reason = arg(request, "reason") or "NO_LONGER_TRACKED"
        if reason not in OBJECT_WITHDRAW_REASONS:
            raise APIError(
                400, f"query parameter reason: must be one of {', '.join(OBJECT_WITHDRAW_REASONS)}"
            )
        if self.node.store.get("object", self.key) is None:
            raise APIError(404, f"no object {self.key[:80]!r}")
        r = self.node.withdrawObject(self.key, reason)
        if r is None:
            raise APIError(409, f"object {self.key[:80]!r} is already withdrawn")
        return 200, _objectView(r)
