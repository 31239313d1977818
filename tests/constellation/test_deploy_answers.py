"""
C{constellation deploy} reads the agent's answers within a size limit: a
real local HTTP server answering more than L{MAX_ANSWER} makes one clear
error line, never an unbounded read.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from suite.constellation.deploy.cli import MAX_ANSWER, DeployOptions
from suite.constellation.deploy.cli import deploy as runDeploy
from tests.constellation.test_deploy_plan import FakeEngine

FILE = "name: st\nservices:\n  web: {image: img}\n"

STATE = {"node": "a", "nodes": [{"name": "a", "alive": True}], "domain": "example.org"}


class _Agent(Resource):
    """
    /api/state and /api/deploy, each answering C{sizes[path]} bytes (a
    chunked body, no length announced) or the real small answer.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[bytes, int] = {}

    def render(self, request: Request) -> Any:
        path = request.path
        size = self.sizes.get(path)
        if path == b"/api/deploy":
            request.setResponseCode(202)
        if size is None:
            return json.dumps(STATE if path == b"/api/state" else {"ok": True}).encode()
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            request.write(chunk)
            sent += len(chunk)
        request.finish()
        return NOT_DONE_YET


class AnswerLimitTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.agent = _Agent()
        port = reactor.listenTCP(0, Site(self.agent), interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.file = os.path.join(self.dir, "stack.yml")
        with open(self.file, "w") as f:
            f.write(FILE)

    async def deploy(self) -> tuple[int, str, str]:
        environ = {"SECRETS_PATH": self.dir, "CONFIG_PATH": self.dir, "DOMAIN": "example.org"}
        options = DeployOptions(environ)
        options.parseOptions(["--agent", self.url, self.file])
        options["environ"] = environ
        out, err = io.StringIO(), io.StringIO()
        saved, sys.stderr = sys.stderr, err
        try:
            code = await runDeploy(reactor, options, out, engine=FakeEngine())
        finally:
            sys.stderr = saved
        return code, out.getvalue(), err.getvalue()

    async def test_smallAnswersPass(self) -> None:
        """
        The agent's real answers are read: the deployment is handed over.
        """
        code, out, err = await self.deploy()
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("declaration handed to the agent", out)

    async def test_stateTooLarge(self) -> None:
        """
        A /api/state answer just over the limit is one error line naming the limit.
        """
        self.agent.sizes[b"/api/state"] = MAX_ANSWER + 65536
        code, out, err = await self.deploy()
        self.assertEqual(code, 1)
        self.assertEqual(
            err,
            f"constellation deploy: error: agent {self.url}: /api/state answer is larger than "
            f"{MAX_ANSWER} bytes (1 MiB); is this the agent?\n",
        )

    async def test_deployAnswerTooLarge(self) -> None:
        """
        A /api/deploy answer over the limit (however much more is sent)
        fails the hand-over with one line.
        """
        self.agent.sizes[b"/api/deploy"] = 8 * MAX_ANSWER
        code, out, err = await self.deploy()
        self.assertEqual(code, 1)
        self.assertIn(f"/api/deploy answer is larger than {MAX_ANSWER} bytes (1 MiB)", err)
        self.assertEqual(len(err.splitlines()), 1, err)
