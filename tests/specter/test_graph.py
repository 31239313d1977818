"""
The ring graph page (C{/_internal/chord/graph}): every vnode labelled with
its address, index and id prefix; successors and fingers on hover and in a
table; checked in-process and, in headless Chromium, on a real ring node
with a screenshot.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from suite.specter.chord.ids import VnodeRef, vnodeId
from suite.specter.web import _Graph
from tests.goop import webdriver
from tests.specter.ring import RingProcess, makeBundles


def _ref(addr: str, index: int) -> VnodeRef:
    return VnodeRef(vnodeId(addr, index), addr, index)


class _Vnode:
    def __init__(self, ref: VnodeRef, succs: list[VnodeRef], fingers: list[Any], pred: Any) -> None:
        self.ref, self.succs, self.fingers, self.pred = ref, succs, fingers, pred


class _Node:
    addr = "10.0.0.1:7440"

    def __init__(self) -> None:
        a = [_ref(self.addr, i) for i in range(2)]
        b = [_ref("10.0.0.2:7440", i) for i in range(2)]
        self.vnodes = [
            _Vnode(a[0], [b[0], b[1]], [b[0], b[0], None, a[1]], b[1]),
            _Vnode(a[1], [b[1]], [b[1], None], a[0]),
        ]
        self.remote = b


class GraphPageTests(SynchronousTestCase):
    """
    The page's labels, hover titles and table.
    """

    def test_labelsAndTable(self) -> None:
        node = _Node()
        request = DummyRequest([b""])
        page = _Graph(node).render_GET(request).decode()
        for ref in [v.ref for v in node.vnodes] + node.remote:
            label = f"{ref.addr}#{ref.index} {ref.id >> 32:08x}"
            self.assertIn(f">{label}</text>", page)
        titles = re.findall(r"<title>([^<]*)</title>", page)
        mine = [t for t in titles if t.startswith(node.vnodes[0].ref.short())]
        self.assertEqual(len(mine), 1)
        self.assertIn("successors: 10.0.0.2:7440#0", mine[0])
        # fingers are listed once each, in finger order
        self.assertIn("fingers: 10.0.0.2:7440#0 ", mine[0])
        self.assertEqual(mine[0].count("10.0.0.2:7440#0"), 2)
        rows = re.findall(r"<tr><td>", page)
        self.assertEqual(len(rows), 2)
        self.assertIn(f"<code>{node.vnodes[1].ref.id:016x}</code>", page)


class GraphInBrowserTests(TestCase):
    """
    A real ring node's graph page in headless Chromium.
    """

    timeout = 120

    def setUp(self) -> None:
        if not webdriver.available():
            raise self.skipTest("chromium and chromium-driver are not installed")

    async def test_screenshot(self) -> None:
        """
        Chromium renders the labels and the table, hover titles name the
        successors and fingers, and a screenshot is taken.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        cert = makeBundles(base, 1)[0]
        ring = RingProcess(self, base, "graph", cert, "--virtual", "5")
        ring.proc.env.update(INTERNAL_USER="ops", INTERNAL_PASS="s3cret")
        ring.start()
        await ring.ready()
        browser = webdriver.Browser(self)
        await browser.start()
        await browser.call("POST", f"/session/{browser.session}/window/rect", {"width": 1100, "height": 1000})
        await browser.get(f"http://ops:s3cret@127.0.0.1:{ring.httpPort}/_internal/chord/graph")
        labels = await browser.script(
            "return Array.from(document.querySelectorAll('svg g.vnode text')).map(t => t.textContent)"
        )
        self.assertEqual(len(labels), 5, labels)
        for label in labels:
            self.assertRegex(label, rf"^{re.escape(ring.addr)}#[0-4] [0-9a-f]{{8}}$")
        titles = await browser.script(
            "return Array.from(document.querySelectorAll('svg g.vnode title')).map(t => t.textContent)"
        )
        self.assertTrue(all("successors: " in t and "fingers: " in t for t in titles), titles)
        rows = await browser.script("return document.querySelectorAll('#vnodes tr').length")
        self.assertEqual(rows, 6)
        box = await browser.script(
            "const b = document.querySelector('svg').getBoundingClientRect(); return [b.width, b.height]"
        )
        self.assertGreater(box[0], 500)
        shot = base64.b64decode(await browser.call("GET", f"/session/{browser.session}/screenshot"))
        self.assertEqual(shot[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(shot), 5000)
        with open(os.path.join(base, "ring-graph.png"), "wb") as f:
            f.write(shot)
