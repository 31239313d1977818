"""
A tiny W3C WebDriver client over treq for headless Chromium tests.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import treq
from twisted.trial.unittest import TestCase

from tests.support.http import httpHeaders
from tests.support.process import DaemonProcess, freePort

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"


def available() -> bool:
    return bool(shutil.which(CHROMEDRIVER) and shutil.which(CHROMIUM))


class Browser:
    def __init__(self, case: TestCase) -> None:
        self.case = case
        self.port = freePort()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = DaemonProcess(case, [CHROMEDRIVER, f"--port={self.port}"], name="chromedriver")
        self.session = ""

    async def start(self) -> None:
        self.proc.start()
        await self.proc.waitForHTTP(self.base + "/status")
        profile = os.path.abspath(self.case.mktemp())
        os.makedirs(profile)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--no-first-run",
                            "--disable-dev-shm-usage",
                            f"--user-data-dir={profile}",
                        ],
                    },
                }
            }
        }
        value = await self.call("POST", "/session", caps)
        self.session = value["sessionId"]
        self.case.addCleanup(self.quit)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        r = await treq.request(
            method,
            self.base + path,
            data=json.dumps(body or {}).encode() if method == "POST" else None,
            headers=httpHeaders({"content-type": "application/json"}),
            persistent=False,
            timeout=60,
        )
        doc = json.loads(await r.content())
        if r.code != 200:
            raise AssertionError(f"webdriver {path}: {doc}")
        return doc.get("value")

    async def get(self, url: str) -> None:
        await self.call("POST", f"/session/{self.session}/url", {"url": url})

    async def script(self, source: str) -> Any:
        return await self.call(
            "POST", f"/session/{self.session}/execute/sync", {"script": source, "args": []}
        )

    async def quit(self) -> None:
        if self.session:
            try:
                await self.call("DELETE", f"/session/{self.session}")
            except Exception:
                pass
            self.session = ""
