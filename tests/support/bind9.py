"""
A real BIND 9 C{named} for tests: one primary zone on a loopback port that
accepts RFC 2136 updates signed with a TSIG key; always killed in cleanup.

    server = Bind9Server(self, "example.test")
    await server.start()
    server.port, server.keyFile     # where, and the key file for the agent
    await server.query("example.test", "A")   # ["192.0.2.1"]

When running as root, named runs as C{nobody} (C{-u}) and its directory
is handed to that user (updates write a journal next to the zone).  L{skipUnlessNamed} raises L{SkipTest} when C{named} is absent.
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import tempfile
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.process import DaemonProcess, freePort

__all__ = ["Bind9Server", "findNamed", "skipUnlessNamed"]

_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
KEY_NAME = "constellation-key"


def findNamed() -> str | None:
    return shutil.which("named", path=_SEARCH)


def skipUnlessNamed() -> str:
    path = findNamed()
    if path is None:
        raise SkipTest("named (Debian package bind9) is not installed")
    return path


class Bind9Server:
    def __init__(self, testCase: TestCase, zone: str = "example.test") -> None:
        self.testCase = testCase
        self.zone = zone
        self.named = skipUnlessNamed()
        self.port = freePort()
        # Outside the test's directory: named drops privileges before it
        # reads its configuration, and a worktree path may not be readable.
        self.dir = tempfile.mkdtemp(prefix="named-")
        os.chmod(self.dir, 0o755)
        testCase.addCleanup(shutil.rmtree, self.dir, True)
        self.secret = base64.b64encode(os.urandom(32)).decode()
        self.keyFile = os.path.join(self.dir, "update.key")
        self.process: DaemonProcess | None = None

    def _write(self) -> None:
        key = f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{self.secret}";\n}};\n'
        with open(self.keyFile, "w") as f:
            f.write(key)
        zoneFile = os.path.join(self.dir, f"{self.zone}.db")
        with open(zoneFile, "w") as f:
            f.write(
                f"$TTL 60\n@ IN SOA ns1.{self.zone}. admin.{self.zone}. 1 60 60 600 60\n"
                f"@ IN NS ns1.{self.zone}.\nns1 IN A 127.0.0.1\n"
            )
        conf = os.path.join(self.dir, "named.conf")
        with open(conf, "w") as f:
            f.write(
                key + "options {\n"
                f'\tdirectory "{self.dir}";\n'
                f'\tpid-file "{self.dir}/named.pid";\n'
                f'\tsession-keyfile "{self.dir}/session.key";\n'
                f"\tlisten-on port {self.port} {{ 127.0.0.1; }};\n"
                "\tlisten-on-v6 { none; };\n"
                "\trecursion no;\n\tnotify no;\n\tdnssec-validation no;\n"
                "};\n"
                f'zone "{self.zone}" {{\n\ttype primary;\n\tfile "{zoneFile}";\n'
                f"\tupdate-policy {{ grant {KEY_NAME} zonesub ANY; }};\n"
                f"\tallow-transfer {{ key {KEY_NAME}; }};\n}};\n"
            )
        self.conf = conf
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            for name in os.listdir(self.dir):
                os.chown(os.path.join(self.dir, name), nobody.pw_uid, nobody.pw_gid)

    async def start(self) -> None:
        self._write()
        argv = [self.named, "-g", "-c", self.conf, "-n", "1"]
        if os.getuid() == 0:
            argv += ["-u", "nobody"]
        self.process = DaemonProcess(self.testCase, argv, name="named").start()
        await self.process.waitForLog(r"all zones loaded|running", timeout=30)
        await self.process.waitForPort(self.port)

    async def query(self, name: str, rdtype: str = "A") -> list[str]:
        """
        The answer's records (text) for C{name}, asked over TCP.
        """
        from twisted.internet import reactor

        from suite.constellation.rfc2136 import RFC2136Provider

        provider = RFC2136Provider(
            reactor, ("127.0.0.1", self.port), self.zone, (KEY_NAME, "hmac-sha256", self.secret)
        )
        return await provider._query(name.rstrip(".") + ".", rdtype)

    def provider(self, reactor: Any) -> Any:
        from suite.constellation.rfc2136 import RFC2136Provider

        return RFC2136Provider(
            reactor, ("127.0.0.1", self.port), self.zone, (KEY_NAME, "hmac-sha256", self.secret)
        )
