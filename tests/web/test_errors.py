"""
Tests for JSON error bodies.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from suite.web.errors import JSONErrorResource, JSONNoResource, jsonError, jsonResponse, notFound
from suite.web.limits import LimitedSite

from .support import Connection, parseResponse


class JSONErrorTests(SynchronousTestCase):
    """
    L{jsonError} and friends.
    """

    def test_body(self) -> None:
        """
        The body is C{{"error": reason}} plus the extra fields; the status
        and content type are set on the request.
        """
        request: Any = DummyRequest([b""])
        body = jsonError(request, 400, "--data: not a directory", key="data", limit=3)
        self.assertEqual(json.loads(body), {"error": "--data: not a directory", "key": "data", "limit": 3})
        self.assertEqual(request.responseCode, 400)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"]
        )

    def test_oneLine(self) -> None:
        """
        A multi-line reason is folded into one line; C{error} in the extras
        cannot replace the reason.
        """
        request: Any = DummyRequest([b""])
        body = jsonError(request, 500, "first\n  second", error="sneaky")
        self.assertEqual(json.loads(body), {"error": "first second"})

    def test_phrases(self) -> None:
        """
        Codes Twisted has no phrase for (429, 431) get the standard one.
        """
        request: Any = DummyRequest([b""])
        jsonError(request, 429, "slow down")
        self.assertEqual((request.responseCode, request.responseMessage), (429, b"Too Many Requests"))

    def test_jsonResponse(self) -> None:
        """
        L{jsonResponse} encodes any JSON-able body with the given code.
        """
        request: Any = DummyRequest([b""])
        self.assertEqual(json.loads(jsonResponse(request, {"a": [1]}, 201)), {"a": [1]})
        self.assertEqual(request.responseCode, 201)

    def test_notFound(self) -> None:
        """
        L{notFound} is a JSON 404 naming the path.
        """
        request: Any = DummyRequest([b"x"])
        request.path = b"/x/y"
        self.assertEqual(json.loads(notFound(request)), {"error": "not found", "path": "/x/y"})
        self.assertEqual(request.responseCode, 404)

    def test_resources(self) -> None:
        """
        L{JSONNoResource} answers 404 and L{JSONErrorResource} its code, for
        any method, over a real site.
        """
        root = Resource()
        root.putChild(b"gone", JSONNoResource("that page is gone"))
        root.putChild(b"busy", JSONErrorResource(503, "busy", retry=5))
        conn = Connection(LimitedSite(root, reactor=Clock()))
        conn.send(b"DELETE /gone HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        code, headers, body = parseResponse(conn.take())
        self.assertEqual((code, json.loads(body)), (404, {"error": "that page is gone"}))
        conn.get(b"/busy")
        code, headers, body = parseResponse(conn.take())
        self.assertEqual((code, json.loads(body)), (503, {"error": "busy", "retry": 5}))


class Boom(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        raise RuntimeError("secret internals")


class SiteErrorTests(SynchronousTestCase):
    """
    Errors raised by the framework come out as JSON too.
    """

    def test_methodNotAllowed(self) -> None:
        """
        An unsupported method on an admin resource is a JSON 405 with Allow.
        """
        from suite.web.admin import makeAdminResource

        conn = Connection(LimitedSite(makeAdminResource([]), reactor=Clock()))
        conn.send(b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        code, headers, body = parseResponse(conn.take())
        self.assertEqual(code, 405)
        self.assertIn(b"GET", headers[b"allow"])
        self.assertEqual(json.loads(body)["error"], "method POST not allowed")

    def test_internalError(self) -> None:
        """
        A resource that raises gives a JSON 500 without the traceback; the
        error is logged.
        """
        conn = Connection(LimitedSite(Boom(), reactor=Clock()))
        conn.get(b"/")
        code, _, body = parseResponse(conn.take())
        self.assertEqual((code, json.loads(body)), (500, {"error": "internal error"}))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
