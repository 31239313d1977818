"""
What an operator of the guide sees, with real processes on loopback: two
nodes whose operators chose different timings, the console script's SIGHUP
switch to debug logging, and the API's refusal of query parameters it does
not take.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from twisted.trial.unittest import TestCase

from tests.spacecomms.support import NodeSpec, env, getJSON, send
from tests.support.process import DaemonProcess, scriptArgs, sleep


class _Spec(NodeSpec):
    """
    A node without TLS whose logging level can be set.
    """

    level = "info"

    def document(self) -> dict[str, Any]:
        doc = super().document()
        doc["logging"]["level"] = self.level
        return doc


class GuideOperatorTests(TestCase):
    timeout = 90

    async def test_differingTimingsReloadAndQueryParameters(self) -> None:
        """
        A runs the guide's timings (30 s heartbeat, 120 s timeout) under
        `spacecomms start`, B a 0.5 s heartbeat and a 2 s timeout: the
        session stays up (A heartbeats every third of B's timeout). A's
        API refuses `?limt=` with 400 naming it. Writing `logging.level:
        debug` and sending SIGHUP switches A's API request lines on
        without a restart. A peer added with POST /peers is back after A
        restarts.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        a, b = _Spec(base, "A", None), _Spec(base, "B", None)
        a.addPeer(b)
        b.addPeer(a)
        a.protocol.update(heartbeat_interval_seconds=30, session_timeout_seconds=120)
        b.protocol.update(heartbeat_interval_seconds=0.5, session_timeout_seconds=2)
        a.write()
        b.write()
        pa = DaemonProcess(self, scriptArgs("spacecomms", "start", "--config", a.configPath), env(), name="A")
        pb = DaemonProcess(self, scriptArgs("spacecomms", "start", "--config", b.configPath), env(), name="B")
        pa.start()
        pb.start()

        async def connected(spec: NodeSpec, proc: DaemonProcess) -> None:
            async def check() -> bool:
                code, body = await getJSON(spec.url("/health"))
                return code == 200 and body["peers"]["connected"] == 1

            await proc.waitFor(check, f"{spec.name} to have its peer session", timeout=30)

        await connected(a, pa)
        await connected(b, pb)
        # Three of B's timeouts: without the HELLO's session_timeout_seconds
        # B would have closed the session (and both re-synced) twice.
        await sleep(6)
        for proc in (pa, pb):
            self.assertNotIn("peer session lost", proc.output())
        await connected(b, pb)

        code, body = await getJSON(a.url("/cdms?limt=1"))
        self.assertEqual(code, 400)
        self.assertIn("query parameter limt: unknown for GET", body["error"])

        self.assertNotIn("api GET", pa.output())
        a.level = "debug"
        a.write()
        pa.sendSignal(signal.SIGHUP)
        await pa.waitForLog("configuration reloaded from .*logging level debug")
        self.assertEqual((await getJSON(a.url("/cdms?limit=1")))[0], 200)
        await pa.waitForLog(r"api GET /cdms -> 200 \(token admin\)")

        # The guide's "Add peer via API", then a restart: the peer is back.
        new = {
            "peer_id": "peer-new-operator",
            "address": "https://127.0.0.1:9",
            "auth_token": "peer-token-new",
        }
        code, _ = await send("POST", a.url("/peers"), json.dumps(new).encode())
        self.assertEqual(code, 201)
        # twistd ends by re-raising the SIGTERM it handled (systemd counts that as a clean stop).
        self.assertIn(await pa.stop(), (0, -signal.SIGTERM))
        pa2 = DaemonProcess(
            self, scriptArgs("spacecomms", "start", "--config", a.configPath), env(), name="A2"
        )
        pa2.start()
        await pa2.waitForHTTP(a.url("/health"))
        code, body = await getJSON(a.url("/peers/peer-new-operator"))
        self.assertEqual((code, body["address"]), (200, "https://127.0.0.1:9"))
