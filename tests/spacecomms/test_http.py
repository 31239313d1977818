"""
The REST API of a real node over HTTP: tokens, body limits, and
schemathesis fuzzing against /openapi.json finding no server error.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess

import yaml
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.spacecomms.support import ADMIN, READONLY, NodeSpec, env, getJSON, send
from tests.support.process import DaemonProcess, scriptArgs


class RealNodeAPITests(TestCase):
    """
    One node, no peers, file store.
    """

    timeout = 180

    async def test_tokensLimitsAndSchemathesis(self) -> None:
        """
        A bad token is 401 and a read-only token cannot write; an oversized
        body is 413; schemathesis finds no 500 anywhere in the API.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        spec = NodeSpec(base, "solo", None)
        logFile = os.path.join(base, "solo-json.log")
        doc = spec.document()
        doc["logging"] = {"level": "info", "format": "json", "output": logFile}
        with open(spec.configPath, "w") as f:
            yaml.safe_dump(doc, f)
        # The console script, with the file named by SPACECOMMS_CONFIG and
        # the level raised by SPACECOMMS_LOG_LEVEL.
        proc = DaemonProcess(
            self,
            scriptArgs("spacecomms", "start"),
            env={**env(), "SPACECOMMS_CONFIG": spec.configPath, "SPACECOMMS_LOG_LEVEL": "debug"},
            name="solo",
        ).start()
        await proc.waitForHTTP(spec.url("/health"))
        with open(logFile) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        self.assertTrue(any(e["msg"].startswith("API listening") for e in lines))
        self.assertIn("debug", {e["level"] for e in lines})

        code, _ = await getJSON(spec.url("/cdms"), token="not-a-token")
        self.assertEqual(code, 401)

        def authLogged() -> bool:
            with open(logFile) as f:
                return "authentication failed" in f.read()

        await proc.waitFor(authLogged, "authentication failed in the log file")
        code, _ = await getJSON(spec.url("/cdms"), token=READONLY)
        self.assertEqual(code, 200)
        code, _ = await send("POST", spec.url("/objects"), b'{"object_id": "X1"}', token=READONLY)
        self.assertEqual(code, 403)
        code, _ = await send("POST", spec.url("/objects"), b'{"object_id": "X1"}', token=ADMIN)
        self.assertEqual(code, 201)
        # A declared body over the limit is answered 413 before it is read
        # (sent by hand: a client still writing the body when the server
        # answers and closes may see the connection reset instead).
        self.assertEqual(await deferToThread(_declaredTooLarge, spec.apiPort), b"HTTP/1.1 413")
        # The guide's curl commands (http://localhost:PORT/...) are served;
        # a rebound Host and a cross-site POST on this loopback listener are
        # refused.
        self.assertEqual(await deferToThread(_curl, f"http://localhost:{spec.apiPort}/peers"), "200")
        self.assertEqual(
            await deferToThread(_curl, f"http://localhost:{spec.apiPort}/peers", "-H", "Host: evil.example"),
            "421",
        )
        self.assertEqual(
            await deferToThread(
                _curl,
                f"http://127.0.0.1:{spec.apiPort}/objects",
                "-H",
                "Origin: http://evil.example",
                "-H",
                "Content-Type: application/json",
                "--data",
                '{"object_id": "X2"}',
            ),
            "403",
        )

        fuzz = DaemonProcess(
            self,
            scriptArgs(
                "schemathesis",
                "run",
                spec.url("/openapi.json"),
                "--header",
                f"Authorization: Bearer {ADMIN}",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "15",
                "--seed",
                "7",
                "--workers",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
                "--no-color",
            ),
            name="schemathesis",
            cwd=base,
            stopTimeout=5,
        ).start()
        code = await fuzz.waitExit(150)
        self.assertEqual(code, 0, fuzz.output()[-3000:])
        self.assertNotIn("Traceback", proc.output())
        with open(logFile) as f:
            self.assertNotIn("Traceback", f.read())
        code, health = await getJSON(spec.url("/health"))
        self.assertEqual(code, 200)


def _curl(url: str, *args: str) -> str:
    """
    The status code curl gets for C{url} (with an admin token).
    """
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            f"Authorization: Bearer {ADMIN}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.stdout.strip() or out.stderr.strip()


def _declaredTooLarge(port: int) -> bytes:
    """
    POST headers declaring a 2 MiB body, no body; the status line's start.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /cdms HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + ADMIN.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n"
        )
        data = b""
        while len(data) < 12:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data[:12]
