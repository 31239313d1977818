"""
C{make dev-validate} (C{python -m suite.specter.devvalidate}): start a
local three-process ring with the gateway and a tunnel on loopback, and
check it end to end; exit 0 when every check passes, 1 (with the failed
check named on stderr) otherwise.  Every process it starts is stopped.

Checks, in order: a fresh CA bundle; every node's certificate issued by
the ring's CA and naming its advertise address (CA consistency); every
node ready (C{/readyz}); all fifteen vnodes on one ring (every node's
C{/_internal/chord/stats} names the same owner for a key); a KV write on
one node read on the two others; C{specter client tunnel} to a local HTTP
target, reached through every node over HTTPS (the gateway that holds the
link and the two that forward over the overlay); the debug pages answer.

This is a developer tool, run by hand or from a test: plain blocking
Python, not a daemon.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

__all__ = ["main"]

APEX = "dev.test"
USER, PASSWORD = "dev", "dev-validate"


class CheckFailed(Exception):
    """
    One check did not pass.
    """


def _ready(helper: int) -> bool:
    return _get(f"http://127.0.0.1:{helper}/readyz")[0] == 200


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(text: str) -> None:
    sys.stdout.write(f"dev-validate: {text}\n")
    sys.stdout.flush()


def _until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # retried until the deadline
            last = e
        time.sleep(0.2)
    raise CheckFailed(f"{what} (not within {timeout:g} s{f': {last}' if last else ''})")


def _get(url: str, auth: bool = False) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:  # an answer with an error status
        return e.code, e.read()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from the dev target {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DevRing:
    """
    The processes of one validation run.
    """

    def __init__(self, base: str, binDir: str) -> None:
        self.base = base
        self.bin = binDir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.nodes: list[dict[str, Any]] = []

    def run(self, name: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.base, f"{name}.log"), "wb")
        proc = subprocess.Popen(
            [os.path.join(self.bin, "specter"), *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.procs.append((name, proc))
        return proc

    def tool(self, *argv: str) -> str:
        done = subprocess.run(
            [os.path.join(self.bin, "specter"), *argv], capture_output=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise CheckFailed(f"specter {' '.join(argv[:2])}: {done.stderr.decode().strip()}")
        return done.stdout.decode()

    def stop(self) -> None:
        """
        Stop the tunnel client gracefully (SIGTERM, it drains), then the
        ring nodes at once (SIGKILL: the dev ring is thrown away, and a
        whole ring leaving together would wait for its successors).
        """
        for name, proc in self.procs:
            if name == "tunnel" and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def logTail(self, name: str, lines: int = 5) -> str:
        try:
            with open(os.path.join(self.base, f"{name}.log"), "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""


def _checkCA(ring: DevRing, certs: str) -> None:
    from cryptography import x509

    from suite.pki.verify import PeerPolicy

    with open(os.path.join(certs, "ca.crt"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    for node in ring.nodes:
        pem = ssl.get_server_certificate(("127.0.0.1", node["port"]), timeout=10)
        leaf = x509.load_pem_x509_certificate(pem.encode())
        try:
            leaf.verify_directly_issued_by(ca)
        except Exception:  # any verification failure is a failed check
            raise CheckFailed(
                f"node {node['addr']} presents a certificate not issued by the ring's CA"
            ) from None
        PeerPolicy(ipAddress="127.0.0.1").verifyPeer(leaf)


def validate(base: str, binDir: str) -> None:
    """
    Run every check in C{base} (a fresh directory); raise L{CheckFailed}.
    """
    ring = DevRing(base, binDir)
    target: http.server.ThreadingHTTPServer | None = None
    try:
        certs = os.path.join(base, "tls")
        ring.tool("pki", "init", certs, "--node", "127.0.0.1")
        client = os.path.join(base, "client")
        ring.tool("pki", "client", certs, "--name", "dev", "--out", client)
        _say("CA bundle and client identity made")
        env = {"INTERNAL_USER": USER, "INTERNAL_PASS": PASSWORD}
        for i in range(3):
            port, rpc, helper = _freePort(), _freePort(), _freePort()
            addr = f"127.0.0.1:{port}"
            node: dict[str, Any] = {
                "name": f"n{i}",
                "port": port,
                "addr": addr,
                "rpc": rpc,
                "helper": helper,
                "data": os.path.join(base, f"n{i}"),
            }
            argv = [
                "server",
                "--data",
                node["data"],
                "--cert",
                certs,
                "--apex",
                APEX,
                "--listen-tcp",
                addr,
                "--advertise-addr",
                addr,
                "--listen-rpc",
                f"tcp://127.0.0.1:{rpc}",
                "--listen-internal",
                f"tcp://127.0.0.1:{helper}",
                "--stabilize-interval",
                "0.2",
            ]
            if ring.nodes:
                argv += ["--join", ring.nodes[0]["addr"]]
            ring.nodes.append(node)
            ring.run(node["name"], *argv, env=env)
            if i == 0:
                _until(
                    "seed n0 ready",
                    lambda: _ready(helper),  # noqa: B023 -- called before the loop goes on
                    60,
                )
        for node in ring.nodes:
            _until(f"node {node['name']} ready", lambda: _ready(node["helper"]), 60)  # noqa: B023
        _say("three nodes ready (" + ", ".join(n["addr"] for n in ring.nodes) + ")")
        _checkCA(ring, certs)
        _say("every node presents a certificate of the ring's CA naming its address")

        def oneRing() -> bool:
            owners = set()
            for node in ring.nodes:
                code, body = _get(
                    f"http://127.0.0.1:{node['helper']}/_internal/chord/stats?key=dev", auth=True
                )
                if code != 200:
                    return False
                owners.add(json.dumps(json.loads(body)["owner"], sort_keys=True))
            return len(owners) == 1

        _until("one ring: every node names the same owner of a key", oneRing, 30)
        first = ring.nodes[0]
        ring.tool(
            "kv",
            "--rpc",
            f"tcp://127.0.0.1:{first['rpc']}",
            "--data",
            first["data"],
            "put",
            "dev-validate",
            "ok",
        )
        for node in ring.nodes[1:]:
            value = ring.tool(
                "kv", "--rpc", f"tcp://127.0.0.1:{node['rpc']}", "--data", node["data"], "get", "dev-validate"
            ).strip()
            if value != "ok":
                raise CheckFailed(f"KV: {node['name']} read {value!r} instead of 'ok'")
        _say("one ring of 15 vnodes; a KV write on n0 is read on n1 and n2")
        target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
        threading.Thread(target=target.serve_forever, daemon=True).start()
        targetPort = target.server_address[1]
        tunnel = ring.run(
            "tunnel",
            "client",
            "--server",
            first["addr"],
            "--cert-dir",
            client,
            "tunnel",
            "--links",
            "1",
            "--target",
            f"http://127.0.0.1:{targetPort}",
        )

        def hostname() -> str | None:
            if tunnel.poll() is not None:
                raise CheckFailed(f"specter client tunnel exited: {ring.logTail('tunnel')}")
            for line in ring.logTail("tunnel", 50).splitlines():
                if line.endswith("." + APEX) and not line.startswith("{"):
                    return line.strip()
            return None

        host = _until("the tunnel registers a hostname", hostname, 30)
        for node in ring.nodes:
            # each gateway serves its own self-signed certificate for the apex names
            cafile = os.path.join(base, node["name"], "gateway", "selfsigned.crt")

            def through(node: dict[str, Any] = node, cafile: str = cafile) -> bool:
                done = subprocess.run(
                    [
                        "curl",
                        "-sS",
                        "--max-time",
                        "10",
                        "--cacert",
                        cafile,
                        "--resolve",
                        f"{host}:{node['port']}:127.0.0.1",
                        f"https://{host}:{node['port']}/validate",
                    ],
                    capture_output=True,
                    timeout=20,
                    check=False,
                )
                return done.stdout == b"hello from the dev target /validate\n"

            _until(f"the tunnel answers through {node['name']}", through, 30)
        _say(f"tunnel {host} answers over HTTPS through all three gateways")
        for path in ("migrator", "debug/vars", "debug/pprof/profile?seconds=0.2"):
            code, _ = _get(f"http://127.0.0.1:{first['helper']}/_internal/{path}", auth=True)
            if code != 200:
                raise CheckFailed(f"/_internal/{path} answered {code}")
        _say("debug pages answer behind the /_internal credentials")
    except CheckFailed:
        for name, _ in ring.procs:
            tail = ring.logTail(name, 3)
            if tail:
                sys.stderr.write(f"--- last lines of {name}:\n{tail}\n")
        raise
    finally:
        ring.stop()
        if target is not None:
            target.shutdown()


def main(argv: list[str] | None = None) -> int:
    """
    Run the checks in a temporary directory; the exit status.
    """
    args = sys.argv[1:] if argv is None else argv
    binDir = os.path.dirname(sys.executable)
    keep = "--keep" in args
    base = tempfile.mkdtemp(prefix="specter-dev-validate-")
    started = time.monotonic()
    try:
        validate(base, binDir)
    except CheckFailed as e:
        sys.stderr.write(f"dev-validate: FAILED: {e} (logs in {base})\n")
        return 1
    except Exception as e:  # command line: one line, exit 1
        sys.stderr.write(f"dev-validate: FAILED: {type(e).__name__}: {e} (logs in {base})\n")
        return 1
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    _say(f"OK in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
