"""
A local stand-in for the documented Cloudflare v4 DNS records API
(C{GET/POST /zones/{zone}/dns_records}, C{PUT/PATCH/DELETE
/zones/{zone}/dns_records/{id}}): bearer token check, the C{success /
errors / messages / result / result_info} envelope, C{name}, C{type},
C{page} and C{per_page} filters.  Records live in memory; C{calls} logs
every request as C{(method, path)}.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from twisted.web.resource import Resource

__all__ = ["CloudflareStandIn"]


class CloudflareStandIn(Resource):
    isLeaf = True

    def __init__(self, zoneId: str, token: str) -> None:
        super().__init__()
        self.zoneId, self.token = zoneId, token
        self.records: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.calls: list[tuple[str, str]] = []

    def _answer(self, request: Any, code: int, result: Any = None, errors: list[Any] | None = None) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        doc: dict[str, Any] = {
            "success": not errors,
            "errors": errors or [],
            "messages": [],
            "result": result,
        }
        if isinstance(result, list):
            doc["result_info"] = {
                "page": 1,
                "per_page": len(result),
                "count": len(result),
                "total_count": len(result),
            }
        return json.dumps(doc).encode()

    def render(self, request: Any) -> bytes:
        method = request.method.decode()
        path = request.path.decode()
        self.calls.append((method, path))
        if request.getHeader(b"authorization") != f"Bearer {self.token}".encode():
            return self._answer(request, 403, errors=[{"code": 10000, "message": "Authentication error"}])
        parts = path.strip("/").split("/")
        if parts[-4:-2] != ["zones", self.zoneId] and parts[-3:-1] != ["zones", self.zoneId]:
            return self._answer(request, 404, errors=[{"code": 7003, "message": "Could not route"}])
        base = parts.index("dns_records") if "dns_records" in parts else -1
        if base < 0:
            return self._answer(request, 404, errors=[{"code": 7000, "message": "No route"}])
        recordId = parts[base + 1] if len(parts) > base + 1 else None
        body: dict[str, Any] = {}
        if method in ("POST", "PUT", "PATCH"):
            try:
                body = json.loads(request.content.read())
            except ValueError:
                return self._answer(
                    request, 400, errors=[{"code": 9207, "message": "Request body is invalid"}]
                )
        if recordId is None and method == "GET":
            args = {k.decode(): v[0].decode() for k, v in request.args.items()}
            out = [
                r
                for r in self.records.values()
                if r["name"] == args.get("name", r["name"]) and r["type"] == args.get("type", r["type"])
            ]
            page, per = int(args.get("page", 1)), int(args.get("per_page", 100))
            return self._answer(request, 200, out[(page - 1) * per : page * per])
        if recordId is None and method == "POST":
            for key in ("type", "name", "content"):
                if key not in body:
                    return self._answer(request, 400, errors=[{"code": 9000, "message": f"{key} required"}])
            record = {"id": f"{next(self.ids):032x}", "ttl": 1, "proxied": False, **body}
            self.records[record["id"]] = record
            return self._answer(request, 200, record)
        if recordId is None or recordId not in self.records:
            return self._answer(request, 404, errors=[{"code": 81044, "message": "Record does not exist."}])
        if method == "DELETE":
            del self.records[recordId]
            return self._answer(request, 200, {"id": recordId})
        if method == "PUT":
            self.records[recordId] = {"id": recordId, "ttl": 1, "proxied": False, **body}
            return self._answer(request, 200, self.records[recordId])
        if method == "PATCH":
            self.records[recordId].update(body)
            return self._answer(request, 200, self.records[recordId])
        if method == "GET":
            return self._answer(request, 200, self.records[recordId])
        return self._answer(request, 405, errors=[{"code": 10405, "message": "Method not allowed"}])

    def addresses(self, name: str) -> list[str]:
        return sorted(
            r["content"] for r in self.records.values() if r["name"] == name and r["type"] in ("A", "AAAA")
        )
