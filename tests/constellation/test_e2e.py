"""
The real agent process on loopback.
"""

from __future__ import annotations

import json
import subprocess

import treq
from twisted.trial.unittest import TestCase

from tests.support.process import DaemonProcess, freePort, scriptArgs


class AgentProcessTests(TestCase):
    """
    What an operator and Traefik see.
    """

    async def test_provider(self) -> None:
        """
        /healthz, the empty Traefik configuration and the guide's success line.
        """
        port = freePort()
        proc = DaemonProcess(
            self,
            scriptArgs("constellation", "--http-provider", f"tcp:{port}:interface=127.0.0.1"),
            env={"TS_HOSTNAME": "cloudserver7", "DATA_DIR": self.mktemp()},
            name="constellation",
        )
        proc.start()
        base = f"http://127.0.0.1:{port}"
        await proc.waitForHTTP(base + "/healthz")
        await proc.waitForLog("Constellation Agent started successfully")
        r = await treq.get(base + "/api/http/routers", persistent=False)
        self.assertEqual((r.code, json.loads(await r.content())), (200, {}))
        r = await treq.get(base + "/", persistent=False)
        self.assertEqual(
            json.loads(await r.content()), {"http": {"routers": {}, "services": {}, "middlewares": {}}}
        )
        r = await treq.get(base + "/api/state", persistent=False)
        self.assertEqual(json.loads(await r.content())["nodes"][0]["priority"], 10)
        self.assertNotIn("Initializing gossip cluster", proc.output())

    def test_zoneWithoutToken(self) -> None:
        """
        CLOUDFLARE_ZONE_ID without a token file: one line naming the file, exit 2.
        """
        secrets = self.mktemp()
        result = subprocess.run(
            scriptArgs("constellation", "--http-provider", f"tcp:{freePort()}:interface=127.0.0.1"),
            capture_output=True,
            text=True,
            timeout=60,
            env={
                "CLOUDFLARE_ZONE_ID": "0123456789abcdef0123456789abcdef",
                "SECRETS_PATH": secrets,
                "PATH": "/usr/bin:/bin",
            },
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        self.assertEqual(len(errors), 1, result.stderr)
        self.assertIn("cf-api-token.txt", errors[0])
        self.assertNotIn("Traceback", result.stderr)
