"""
The OpenAPI 3.0 description of the REST API, served at /openapi.json.
"""

from __future__ import annotations

from typing import Any

__all__ = ["spec"]

_ERR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_AUTH = {"401": _ERR, "403": _ERR}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _ok(ref: str, code: str = "200", desc: str = "ok") -> dict[str, Any]:
    return {code: {"description": desc, "content": _json(ref)}}


def _q(name: str, schema: dict[str, Any], desc: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_TIME = {"type": "string", "example": "2026-11-26T12:00:00.000"}
_SECURE: list[dict[str, list[str]]] = [{"bearer": []}]
_OVERRIDE = _q(
    "override",
    {"type": "string", "enum": ["true", "false"]},
    "true: change another node's CDM as an admin override (admin permission)",
)


def spec(nodeId: str = "") -> dict[str, Any]:
    """
    The OpenAPI document.
    """
    peerPolicies = {
        "type": "object",
        "properties": {
            "accept_cdm": {"type": "boolean"},
            "accept_object_state": {"type": "boolean"},
            "forward_cdm": {"type": "boolean"},
            "forward_object_state": {"type": "boolean"},
            "rate_limit_per_second": {"type": "number", "minimum": 0.001},
            "rate_limit_burst": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": False,
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "SpaceComms node API",
            "version": "1.0",
            "description": f"CCSDS CDM exchange node {nodeId}".strip(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
                },
                "Health": {
                    "type": "object",
                    "required": [
                        "status",
                        "node_id",
                        "uptime_seconds",
                        "peers",
                        "objects_tracked",
                        "cdms_active",
                    ],
                    "properties": {
                        "status": {"type": "string", "enum": ["healthy", "degraded"]},
                        "node_id": {"type": "string"},
                        "uptime_seconds": {"type": "integer"},
                        "peers": {
                            "type": "object",
                            "properties": {"connected": {"type": "integer"}, "total": {"type": "integer"}},
                        },
                        "objects_tracked": {"type": "integer"},
                        "cdms_active": {"type": "integer"},
                    },
                },
                "NewPeer": {
                    "type": "object",
                    "required": ["peer_id", "address"],
                    "properties": {
                        "peer_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                        "address": {"type": "string", "example": "https://peer.example.com:8443"},
                        "auth_token": {"type": "string"},
                        "policies": peerPolicies,
                    },
                    "additionalProperties": False,
                },
                "Peer": {
                    "type": "object",
                    "properties": {
                        "peer_id": {"type": "string"},
                        "address": {"type": "string"},
                        "status": {
                            "type": "string",
                            "enum": ["connected", "connecting", "disconnected", "unknown"],
                        },
                        "policies": peerPolicies,
                        "heartbeat_latency_ms": {"type": "number"},
                    },
                },
                "PeerList": {
                    "type": "object",
                    "properties": {
                        "peers": {"type": "array", "items": {"$ref": "#/components/schemas/Peer"}}
                    },
                },
                "CDMSummary": {
                    "type": "object",
                    "properties": {
                        "cdm_id": {"type": "string"},
                        "status": {"type": "string", "enum": ["active", "withdrawn"]},
                        "origin": {"type": "string"},
                        "learned_from": {"type": "string", "nullable": True},
                        "created_at": {"type": "string"},
                        "updated_at": {"type": "string"},
                        "tca": {"type": "string", "nullable": True},
                        "objects": {"type": "array", "items": {"type": "string"}},
                        "reason": {"type": "string", "nullable": True},
                        "override": {
                            "type": "boolean",
                            "description": "origin took it over by an admin override",
                        },
                        "miss_distance_m": {"type": "number"},
                        "collision_probability": {"type": "number"},
                        "cdm": {"type": "object", "description": "the CDM in the JSON encoding"},
                    },
                },
                "CDMList": {
                    "type": "object",
                    "properties": {
                        "cdms": {"type": "array", "items": {"$ref": "#/components/schemas/CDMSummary"}},
                        "count": {"type": "integer"},
                        "total": {"type": "integer"},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "properties": {"cdm_id": {"type": "string"}, "status": {"type": "string"}},
                },
                "ObjectState": {
                    "type": "object",
                    "required": ["object_id"],
                    "properties": {
                        "object_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"}
                    },
                    "additionalProperties": True,
                },
                "ObjectView": {
                    "type": "object",
                    "properties": {
                        "object_id": {"type": "string"},
                        "status": {"type": "string"},
                        "origin": {"type": "string"},
                        "learned_from": {"type": "string", "nullable": True},
                        "updated_at": {"type": "string"},
                        "state": {"type": "object", "nullable": True},
                        "reason": {"type": "string"},
                    },
                },
                "ObjectList": {
                    "type": "object",
                    "properties": {
                        "objects": {"type": "array", "items": {"$ref": "#/components/schemas/ObjectView"}},
                        "count": {"type": "integer"},
                        "total": {"type": "integer"},
                    },
                },
            },
        },
        "paths": {
            "/health": {"get": {"summary": "Node health", "responses": _ok("Health")}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/peers": {
                "get": {
                    "summary": "List peers",
                    "security": _SECURE,
                    "responses": {**_ok("PeerList"), "400": _ERR, **_AUTH},
                },
                "post": {
                    "summary": "Add a peer (admin)",
                    "security": _SECURE,
                    "requestBody": {"required": True, "content": _json("NewPeer")},
                    "responses": {
                        **_ok("Peer", "201", "added"),
                        "400": _ERR,
                        "409": _ERR,
                        "413": _ERR,
                        "503": _ERR,
                        **_AUTH,
                    },
                },
            },
            "/peers/{peer_id}": {
                "parameters": [_p("peer_id")],
                "get": {
                    "summary": "One peer",
                    "security": _SECURE,
                    "responses": {**_ok("Peer"), "400": _ERR, "404": _ERR, **_AUTH},
                },
                "delete": {
                    "summary": "Remove a peer (admin)",
                    "security": _SECURE,
                    "responses": {
                        "200": {"description": "removed"},
                        "400": _ERR,
                        "404": _ERR,
                        "503": _ERR,
                        **_AUTH,
                    },
                },
            },
            "/cdms": {
                "get": {
                    "summary": "List CDMs",
                    "security": _SECURE,
                    "parameters": [
                        _q(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                            "most rows returned",
                        ),
                        _q(
                            "sort",
                            {
                                "type": "string",
                                "enum": [
                                    "created_at",
                                    "-created_at",
                                    "updated_at",
                                    "-updated_at",
                                    "tca",
                                    "-tca",
                                ],
                            },
                            "order",
                        ),
                        _q("object", {"type": "string"}, "only CDMs naming this object designator"),
                        _q("origin", {"type": "string"}, "only CDMs from this originating node"),
                        _q("tca_from", _TIME, "TCA at or after"),
                        _q("tca_to", _TIME, "TCA at or before"),
                        _q(
                            "status",
                            {"type": "string", "enum": ["active", "withdrawn", "all"]},
                            "default active",
                        ),
                    ],
                    "responses": {**_ok("CDMList"), "400": _ERR, **_AUTH},
                },
                "post": {
                    "summary": "Submit a CDM (KVN, XML or JSON)",
                    "security": _SECURE,
                    "parameters": [
                        _q(
                            "format",
                            {"type": "string", "enum": ["kvn", "xml", "json"]},
                            "encoding (else Content-Type, else sniffed)",
                        ),
                        _OVERRIDE,
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "application/xml": {"schema": {"type": "string"}},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        **_ok("Accepted", "201", "stored and announced"),
                        **_ok("Accepted", "200", "identical resubmission"),
                        "400": _ERR,
                        "409": _ERR,
                        "413": _ERR,
                        "422": _ERR,
                        "503": _ERR,
                        **_AUTH,
                    },
                },
            },
            "/cdms/{cdm_id}": {
                "parameters": [_p("cdm_id")],
                "get": {
                    "summary": "One CDM",
                    "security": _SECURE,
                    "parameters": [
                        _q("format", {"type": "string", "enum": ["kvn", "xml", "json"]}, "default json")
                    ],
                    "responses": {
                        "200": {
                            "description": "the CDM",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/CDMSummary"}},
                                "application/xml": {"schema": {"type": "string"}},
                                "text/plain": {"schema": {"type": "string"}},
                            },
                        },
                        "400": _ERR,
                        "404": _ERR,
                        "410": _ERR,
                        **_AUTH,
                    },
                },
                "delete": {
                    "summary": "Withdraw a CDM",
                    "security": _SECURE,
                    "parameters": [
                        _q(
                            "reason",
                            {
                                "type": "string",
                                "enum": ["SUPERSEDED", "TCA_PASSED", "FALSE_POSITIVE", "ERROR"],
                            },
                            "default FALSE_POSITIVE",
                        ),
                        _OVERRIDE,
                    ],
                    "responses": {
                        **_ok("CDMSummary"),
                        "400": _ERR,
                        "404": _ERR,
                        "409": _ERR,
                        "503": _ERR,
                        **_AUTH,
                    },
                },
            },
            "/objects": {
                "get": {
                    "summary": "List object states",
                    "security": _SECURE,
                    "parameters": [
                        _q(
                            "limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "most rows returned"
                        ),
                        _q(
                            "status",
                            {"type": "string", "enum": ["active", "withdrawn", "all"]},
                            "default active",
                        ),
                    ],
                    "responses": {**_ok("ObjectList"), "400": _ERR, **_AUTH},
                },
                "post": {
                    "summary": "Announce an object state",
                    "security": _SECURE,
                    "requestBody": {"required": True, "content": _json("ObjectState")},
                    "responses": {
                        **_ok("ObjectView", "201", "announced"),
                        "400": _ERR,
                        "413": _ERR,
                        "503": _ERR,
                        **_AUTH,
                    },
                },
            },
            "/objects/{object_id}": {
                "parameters": [_p("object_id")],
                "get": {
                    "summary": "One object state",
                    "security": _SECURE,
                    "responses": {**_ok("ObjectView"), "400": _ERR, "404": _ERR, **_AUTH},
                },
                "delete": {
                    "summary": "Withdraw an object state",
                    "security": _SECURE,
                    "parameters": [
                        _q(
                            "reason",
                            {
                                "type": "string",
                                "enum": ["DECAYED", "NO_LONGER_TRACKED", "ERROR", "OPERATOR_REQUEST"],
                            },
                            "default NO_LONGER_TRACKED",
                        )
                    ],
                    "responses": {
                        **_ok("ObjectView"),
                        "400": _ERR,
                        "404": _ERR,
                        "409": _ERR,
                        "503": _ERR,
                        **_AUTH,
                    },
                },
            },
        },
    }
