"""
The real C{clustor-cp} process on loopback.
"""

from __future__ import annotations

import json
import signal
import subprocess

import treq
from twisted.trial.unittest import TestCase

from tests.clustor.helpers import STATE_YAML, writeState
from tests.support.process import DaemonProcess, freePort, scriptArgs, twistdArgs


class ControlPlaneProcessTests(TestCase):
    """
    Serving, reloading on SIGHUP and refusing bad input, as a real process.
    """

    async def test_serveAndReload(self) -> None:
        """
        The console script serves /healthz and /routing; after the file
        changes, SIGHUP publishes revision 2.
        """
        directory = self.mktemp()
        path = writeState(directory)
        port = freePort()
        proc = DaemonProcess(
            self,
            scriptArgs(
                "clustor-cp",
                "--state",
                path,
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--reload-interval",
                "0",
            ),
            name="clustor-cp",
        )
        proc.start()
        base = f"http://127.0.0.1:{port}"
        await proc.waitForHTTP(base + "/healthz")
        response = await treq.get(base + "/routing", persistent=False)
        self.assertEqual(response.code, 200)
        routing = json.loads(await response.content())
        self.assertEqual(routing["revision"], 1)
        self.assertEqual([p["id"] for p in routing["partitions"]], ["p0", "p1"])

        writeState(
            directory,
            STATE_YAML.replace("replicas: [ceptra-b]", "replicas: [ceptra-a, ceptra-b]\n    epoch: 2"),
        )
        proc.sendSignal(signal.SIGHUP)

        async def revised() -> bool:
            r = await treq.get(base + "/routing", persistent=False)
            return bool(json.loads(await r.content())["revision"] == 2)

        await proc.waitFor(revised, "revision 2 after SIGHUP", timeout=20)
        # twistd ends by re-raising the signal that stopped it.
        self.assertEqual(await proc.stop(), -signal.SIGTERM)

    def test_badStateFile(self) -> None:
        """
        An invalid state file ends twistd with one line naming file and key, exit 2.
        """
        path = writeState(self.mktemp(), "partitions: [{id: p0, replicas: []}]\n")
        result = subprocess.run(
            twistdArgs("clustor-cp", "--state", path, "--listen", f"tcp:{freePort()}:interface=127.0.0.1"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        lines = [line for line in result.stderr.splitlines() if "error" in line]
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(f"{path}: partitions[0].replicas", lines[0])
        self.assertNotIn("Traceback", result.stderr)

    def test_ambiguousStateFile(self) -> None:
        """
        A key given twice, or two nodes sharing a SPIFFE ID, ends the
        console script with one line naming file and key, exit 2.
        """
        for text, where in (
            (
                "partitions:\n  - id: p0\n    replicas: [a]\n    replicas: [b]\n",
                "line 4: key 'replicas' given twice in one mapping",
            ),
            (
                "nodes:\n  a: {raft: 'h:1', spiffe: 'spiffe://x/n'}\n  b: {raft: 'h:2', spiffe: 'spiffe://x/n'}\n"
                "partitions: [{id: p0, replicas: [a, b]}]\n",
                "nodes.b.spiffe: 'spiffe://x/n' is already used by node 'a'",
            ),
        ):
            path = writeState(self.mktemp(), text)
            result = subprocess.run(
                scriptArgs(
                    "clustor-cp", "--state", path, "--listen", f"tcp:{freePort()}:interface=127.0.0.1"
                ),
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertEqual(result.stderr.splitlines(), [f"clustor-cp: error: {path}: {where}"])
