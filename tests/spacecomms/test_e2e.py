"""
Three real nodes on loopback with mTLS: a line (A-B-C) and a triangle.
"""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Any

from twisted.trial.unittest import TestCase

from suite.spacecomms.cdm import encode
from suite.spacecomms.cdm.sample import sampleCDM
from tests.spacecomms.support import (
    ADMIN,
    PEER_TOKEN,
    READONLY,
    NodeSpec,
    getJSON,
    makeCertificates,
    send,
    startNode,
)
from tests.support.process import DaemonProcess, sleep


async def _connected(spec: NodeSpec, proc: DaemonProcess, count: int) -> None:
    async def check() -> bool:
        code, body = await getJSON(spec.url("/health"))
        return code == 200 and body["peers"]["connected"] == count

    await proc.waitFor(check, f"{spec.name} to have {count} peer sessions", timeout=30)


async def _cdmState(spec: NodeSpec, proc: DaemonProcess, cdmId: str, status: str) -> dict:
    async def check() -> dict | None:
        code, body = await getJSON(spec.url(f"/cdms/{cdmId}"))
        return body if code == 200 and body["status"] == status else None

    return await proc.waitFor(check, f"CDM {cdmId} {status} at {spec.name}", timeout=30)


def _objectAt(spec: NodeSpec, objectId: str) -> Any:
    async def check() -> dict | None:
        code, body = await getJSON(spec.url(f"/objects/{objectId}"))
        return body if code == 200 else None

    return check


async def _post(spec: NodeSpec, cdmId: str, **kw: Any) -> None:
    code, body = await send(
        "POST", spec.url("/cdms"), encode(sampleCDM(cdmId, **kw), "kvn").encode(), contentType="text/plain"
    )
    assert code == 201, (code, body)


class LineTests(TestCase):
    """
    A-B-C in a line over mTLS, file stores.
    """

    timeout = 120

    async def test_lineWithdrawCrashAndResync(self) -> None:
        """
        A CDM ingested at A reaches C; its withdrawal does too; after B is
        killed with SIGKILL and restarted it keeps its stored CDMs, its
        sessions come back and a CDM ingested at A while B was down
        reaches B and C; SIGHUP with an invalid file keeps the old
        configuration; SIGHUP with forward_cdm false stops forwarding.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        certs = makeCertificates(base, ["A", "B", "C"])
        a, b, c = (NodeSpec(base, n, certs[n]) for n in "ABC")
        a.addPeer(b)
        b.addPeer(a)
        b.addPeer(c)
        c.addPeer(b)
        b.logLevel = "debug"
        pa, pb, pc = startNode(self, a), startNode(self, b), startNode(self, c)
        await _connected(b, pb, 2)
        await _connected(a, pa, 1)
        await _connected(c, pc, 1)
        await pb.waitForLog("peer session established")

        await _post(a, "LINE-1", object2="40001")
        seen = await _cdmState(c, pc, "LINE-1", "active")
        self.assertEqual(seen["origin"], "A")
        self.assertEqual(seen["learned_from"], "B")
        self.assertEqual(seen["cdm"]["header"]["MESSAGE_ID"], "LINE-1")

        code, _ = await send("DELETE", a.url("/cdms/LINE-1?reason=FALSE_POSITIVE"))
        self.assertEqual(code, 200)
        gone = await _cdmState(c, pc, "LINE-1", "withdrawn")
        self.assertEqual(gone["reason"], "FALSE_POSITIVE")
        await _post(a, "LINE-2", object2="40002")
        await _cdmState(b, pb, "LINE-2", "active")

        pb.kill9()
        await pb.waitExit(10)
        await pa.waitForLog("peer session lost")
        await _post(a, "LINE-3", object2="40003")
        pb2 = startNode(self, b)
        # B's file store brings back both CDMs it had (LINE-1 withdrawn,
        # LINE-2 active) before any peer re-syncs it.
        replayed = await pb2.waitForLog(r"B\.db: replayed (\d+) entries")
        self.assertGreaterEqual(int(replayed.group(1)), 2)
        await _connected(b, pb2, 2)
        # Nothing lost from B's file store, and the re-sync brought LINE-3.
        await _cdmState(b, pb2, "LINE-2", "active")
        await _cdmState(b, pb2, "LINE-1", "withdrawn")
        await _cdmState(b, pb2, "LINE-3", "active")
        await _cdmState(c, pc, "LINE-3", "active")
        await pb2.waitForLog("END_OF_SYNC")

        # An invalid file on SIGHUP keeps the running configuration.
        with open(b.configPath, "w") as f:
            f.write("peers: [\n")
        pb2.sendSignal(signal.SIGHUP)
        await pb2.waitForLog("config reload failed, keeping the old configuration")
        await _connected(b, pb2, 2)

        # A valid file with forward_cdm false towards C stops forwarding.
        b.peers = []
        b.addPeer(a)
        b.addPeer(c, forward_cdm=False)
        b.write()
        pb2.sendSignal(signal.SIGHUP)
        await pb2.waitForLog("configuration reloaded")
        await _post(a, "LINE-4", object2="40004")
        await _cdmState(b, pb2, "LINE-4", "active")
        await pb2.waitForLog(r"applied CDM_ANNOUNCE \w+ from A .*not forwarded")
        code, _ = await getJSON(c.url("/cdms/LINE-4"))
        self.assertEqual(code, 404)
        # No token (API, peer, or a wrong guess) is logged, even at debug level.
        code, _ = await getJSON(b.url("/cdms"), token="wrong-guess-0123456789")
        self.assertEqual(code, 401)
        code, _ = await getJSON(b.url("/cdms"), token=READONLY)
        self.assertEqual(code, 200)
        for proc in (pa, pb, pb2, pc):
            for secret in (ADMIN, READONLY, PEER_TOKEN, "wrong-guess-0123456789"):
                self.assertNotIn(secret, proc.output(), proc.name)


class TriangleTests(TestCase):
    """
    A, B and C all peered with each other over mTLS.
    """

    timeout = 120

    async def test_triangleNoLoopNoDuplicateDenyPolicy(self) -> None:
        """
        In a triangle a CDM from A is applied exactly once at B and at C,
        copies coming around the triangle are dropped, and an object state
        withdrawal propagates; C's accept_cdm false towards B and A stops
        a CDM from reaching C at all.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        certs = makeCertificates(base, ["A", "B", "C"])
        a, b, c = (NodeSpec(base, n, certs[n]) for n in "ABC")
        a.addPeer(b)
        a.addPeer(c)
        b.addPeer(a)
        b.addPeer(c)
        c.addPeer(a)
        c.addPeer(b)
        procs = {s.name: startNode(self, s) for s in (a, b, c)}
        for s in (a, b, c):
            await _connected(s, procs[s.name], 2)

        await _post(a, "TRI-1", object2="50001")
        await _cdmState(b, procs["B"], "TRI-1", "active")
        await _cdmState(c, procs["C"], "TRI-1", "active")
        # The copy going round the triangle (A->B->C or A->C->B) reaches a
        # node that already has the CDM and is dropped there.
        dup = re.compile(r"dropped CDM_ANNOUNCE .* (duplicate message id|loop)")
        await procs["B"].waitFor(
            lambda: dup.search(procs["B"].output() + procs["C"].output()), "the duplicate copy to be dropped"
        )
        await sleep(0.5)
        for name in "BC":
            applied = re.findall(r"applied CDM_ANNOUNCE", procs[name].output())
            self.assertEqual(len(applied), 1, f"{name} applied the CDM {len(applied)} times")
        self.assertEqual(re.findall(r"applied CDM_ANNOUNCE", procs["A"].output()), [])

        code, _ = await send("POST", a.url("/objects"), b'{"object_id": "SAT-9", "name": "SAT 9"}')
        self.assertEqual(code, 201)
        for s in (b, c):

            async def present(s: NodeSpec = s) -> bool:
                code, body = await getJSON(s.url("/objects/SAT-9"))
                return code == 200 and body["status"] == "active"

            await procs[s.name].waitFor(present, "object SAT-9")
        code, _ = await send("DELETE", a.url("/objects/SAT-9?reason=DECAYED"))
        self.assertEqual(code, 200)
        for s in (b, c):

            async def withdrawn(s: NodeSpec = s) -> bool:
                code, body = await getJSON(s.url("/objects/SAT-9"))
                return code == 200 and body["status"] == "withdrawn" and body["reason"] == "DECAYED"

            await procs[s.name].waitFor(withdrawn, "object SAT-9 withdrawn")

        # C stops accepting CDMs from anyone.
        c.peers = []
        c.addPeer(a, accept_cdm=False)
        c.addPeer(b, accept_cdm=False)
        c.write()
        procs["C"].sendSignal(signal.SIGHUP)
        await procs["C"].waitForLog("configuration reloaded")
        await _post(a, "TRI-2", object2="50002")
        await _cdmState(b, procs["B"], "TRI-2", "active")
        await procs["C"].waitForLog(r"dropped CDM_ANNOUNCE .*policy: accept_cdm is false")
        code, _ = await getJSON(c.url("/cdms/TRI-2"))
        self.assertEqual(code, 404)


class DisasterRecoveryTests(TestCase):
    """
    A node that loses its store comes back under the same node id and gets
    the entries it originated back from every peer that holds them
    (docs/spacecomms.md, Disaster Recovery).
    """

    timeout = 120

    async def test_lostStoreRestoredFromEveryPeer(self) -> None:
        """
        B - A - C.  A originates an object state, which only C is sent (A
        forwards no object states to B), then two CDMs, which both learn.
        C is stopped; A is killed, its storage file deleted, and A
        restarted: once its session to B is back, A's C{GET /cdms} lists
        both CDMs again (origin A, learned from B), though B held none of
        the older object state.  C comes back: its re-sync gives A the
        object state and nothing else (A's summary listed the CDMs B gave
        back), which A does not send on to B (its policy).  A can then
        update a CDM and withdraw the other, and B takes both changes.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        certs = makeCertificates(base, ["A", "B", "C"])
        a, b, c = (NodeSpec(base, n, certs[n]) for n in "ABC")
        a.addPeer(b, forward_object_state=False)
        a.addPeer(c)
        b.addPeer(a)
        c.addPeer(a)
        pa, pb, pc = startNode(self, a), startNode(self, b), startNode(self, c)
        await _connected(a, pa, 2)
        await _connected(b, pb, 1)
        await _connected(c, pc, 1)
        code, body = await send(
            "POST", a.url("/objects"), json.dumps({"object_id": "SAT-DR", "v": 1}).encode()
        )
        self.assertEqual(code, 201, body)
        await _post(a, "DR-1", object2="42001")
        await _post(a, "DR-2", object2="42002")
        for spec, proc in ((b, pb), (c, pc)):
            await _cdmState(spec, proc, "DR-1", "active")
            await _cdmState(spec, proc, "DR-2", "active")
        await pc.waitFor(_objectAt(c, "SAT-DR"), "C to hold SAT-DR", timeout=30)
        code, _ = await getJSON(b.url("/objects/SAT-DR"))
        self.assertEqual(code, 404)
        await pc.stop()

        pa.kill9()
        await pa.waitExit(10)
        for name in os.listdir(base):
            if name.startswith("A.db"):
                os.remove(os.path.join(base, name))
        pa2 = startNode(self, a)
        await pa2.waitForLog(r"re-sync from B restored 2 entries this node originated")
        code, listing = await getJSON(a.url("/cdms"))
        self.assertEqual(code, 200)
        self.assertEqual(
            sorted((c["cdm_id"], c["origin"], c["learned_from"]) for c in listing["cdms"]),
            [("DR-1", "A", "B"), ("DR-2", "A", "B")],
        )
        code, _ = await getJSON(a.url("/objects/SAT-DR"))
        self.assertEqual(code, 404)

        pc2 = startNode(self, c)
        await pa2.waitForLog(r"re-sync from C restored 1 entries this node originated")
        await pc2.waitForLog(r"re-sync to A: sent 1 entries and END_OF_SYNC \(1 of them its own, restored\)")
        got = await pa2.waitFor(_objectAt(a, "SAT-DR"), "A to hold SAT-DR again", timeout=30)
        self.assertEqual((got["origin"], got["learned_from"]), ("A", "C"))
        # What a peer gives back goes on like anything A learns: here A's
        # policy keeps object states from B.
        await pa2.waitForLog(
            r"applied OBJECT_STATE_ANNOUNCE \S+ from C for object SAT-DR .*"
            r"not forwarded \(policy: forwarding disabled towards the other peers\)"
        )

        # A's next version and withdrawal follow the restored ones.
        code, body = await send(
            "POST",
            a.url("/cdms"),
            encode(sampleCDM("DR-1", object2="42001", missDistance=77.0), "kvn").encode(),
            contentType="text/plain",
        )
        self.assertEqual(code, 201, body)
        code, _ = await send("DELETE", a.url("/cdms/DR-2?reason=FALSE_POSITIVE"))
        self.assertEqual(code, 200)

        async def updated() -> bool:
            code, body = await getJSON(b.url("/cdms/DR-1"))
            return code == 200 and body["miss_distance_m"] == 77.0

        await pb.waitFor(updated, "B to hold A's new version of DR-1", timeout=30)
        gone = await _cdmState(b, pb, "DR-2", "withdrawn")
        self.assertEqual(gone["reason"], "FALSE_POSITIVE")
