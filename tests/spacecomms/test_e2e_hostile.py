"""
Real processes A and B over mTLS, and a hostile authenticated peer H of B
(an in-process node whose session sends forged messages).
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from suite.spacecomms.cdm import encode
from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import parseConfig
from suite.spacecomms.envelope import Envelope
from suite.spacecomms.service import SpaceCommsService
from tests.spacecomms.sim import stored
from tests.spacecomms.support import NodeSpec, env, getJSON, makeCertificates, send, startNode
from tests.support.process import DaemonProcess


class HostilePeerTests(TestCase):
    """
    B refuses H's attempts to withdraw, rewrite or freeze A's CDM; A keeps
    authority over it; B's API refuses to change it.
    """

    timeout = 120

    async def test_hostilePeerSession(self) -> None:
        """
        H sends CDM_WITHDRAW {"cdm_id": X, "sequence": 2**62} as itself and
        as a forged relay of A, a plausible withdrawal as itself, plausible
        forged relays of A unsigned and signed with H's own key, and a
        rewrite as itself: B logs each as dropped with the CDM id and the
        reason, X stays active everywhere, A's next version (201 accepted)
        reaches B, and DELETE of X on B is 409 naming A.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        certs = makeCertificates(base, ["A", "B", "H"])
        a, b, h = (NodeSpec(base, n, certs[n]) for n in "ABH")
        a.addPeer(b)
        b.addPeer(a)
        b.addPeer(h)
        h.addPeer(b)
        startNode(self, a)
        pb = startNode(self, b)
        doc = h.document()
        doc["storage"] = {"type": "memory"}
        hostile = SpaceCommsService(parseConfig(doc, env(), h.configPath), reactor)
        hostile.startService()
        self.addCleanup(hostile.stopService)

        async def connected() -> bool:
            code, body = await getJSON(b.url("/health"))
            return code == 200 and body["peers"]["connected"] == 2 and "B" in hostile.node.links

        await pb.waitFor(connected, "B to have sessions with A and H")
        code, body = await send(
            "POST", a.url("/cdms"), encode(sampleCDM("HX-1", object2="43001"), "json").encode()
        )
        self.assertEqual(code, 201, body)
        await pb.waitFor(lambda: hostile.node.store.get("cdm", "HX-1") is not None, "HX-1 to reach H")

        link: Any = hostile.node.links["B"]
        seq = int(time.time() * 1_000_000) + 1000

        def forge(mtype: str, source: str, payload: dict, path: tuple[str, ...]) -> None:
            link.sendEnvelope(
                Envelope(mtype, source, payload, timestamp=time.time(), hop_count=len(path) - 1, path=path)
            )

        withdraw = {"cdm_id": "HX-1", "reason": "FALSE_POSITIVE"}
        forge("CDM_WITHDRAW", "H", {**withdraw, "sequence": 2**62}, ("H",))
        forge("CDM_WITHDRAW", "A", {**withdraw, "sequence": 2**62}, ("A", "H"))
        forge("CDM_WITHDRAW", "H", {**withdraw, "sequence": seq}, ("H",))
        forge("CDM_WITHDRAW", "A", {**withdraw, "sequence": seq}, ("A", "H"))
        signedByH = {**withdraw, "sequence": seq}
        assert hostile.node.signer is not None
        hostile.node.signer.sign("CDM_WITHDRAW", "A", signedByH)
        forge("CDM_WITHDRAW", "A", signedByH, ("A", "H"))
        body0 = stored(hostile.node.store, "cdm", "HX-1").body
        forge("CDM_ANNOUNCE", "H", {"cdm_id": "HX-1", "sequence": seq + 1, "cdm": body0}, ("H",))
        for reason in (
            r"dropped CDM_WITHDRAW \w+ from H for cdm HX-1: sequence: 4611686018427387904 is more than",
            r"dropped CDM_WITHDRAW \w+ from H for cdm HX-1: authority: cdm HX-1 belongs to originator A, not H",
            r"dropped CDM_ANNOUNCE \w+ from H for cdm HX-1: authority: cdm HX-1 belongs to originator A, not H",
            r"dropped CDM_WITHDRAW \w+ from H for cdm HX-1: authority: signature: the message is not signed",
            r"dropped CDM_WITHDRAW \w+ from H for cdm HX-1: authority: signature: the certificate does not name A",
        ):
            await pb.waitForLog(reason)
        self.assertEqual(len(_matches(pb, "for cdm HX-1: sequence: 4611686018427387904")), 2)
        for spec in (a, b):
            code, view = await getJSON(spec.url("/cdms/HX-1"))
            self.assertEqual((code, view["status"], view["origin"]), (200, "active", "A"), spec.name)

        newer = encode(sampleCDM("HX-1", object2="43001", missDistance=123.0), "json").encode()
        code, body = await send("POST", a.url("/cdms"), newer)
        self.assertEqual((code, body["status"]), (201, "accepted"))

        async def updated() -> bool:
            code, view = await getJSON(b.url("/cdms/HX-1"))
            return code == 200 and view["miss_distance_m"] == 123.0

        await pb.waitFor(updated, "A's new version of HX-1 at B")
        code, body = await send("DELETE", b.url("/cdms/HX-1"))
        self.assertEqual(code, 409)
        self.assertIn("belongs to originator A", body["error"])


def _matches(proc: DaemonProcess, text: str) -> list[str]:
    return [line for line in proc.output().splitlines() if text in line]
