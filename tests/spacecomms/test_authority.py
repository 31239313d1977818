"""
Authority over CDMs in the routing simulation: a hostile peer cannot
withdraw, rewrite or freeze another operator's CDM; an admin override
works only where the overriding node is trusted; the local API refuses
what peers would ignore.
"""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.authority import sequenceLimit
from suite.spacecomms.cdm.model import CDMError
from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Policies
from suite.spacecomms.envelope import Envelope
from suite.spacecomms.local import NotOriginator
from suite.spacecomms.signing import Signer
from tests.spacecomms.sim import SimNet, stored

OPEN = Policies()


def _signers(base: str, names: list[str]) -> dict[str, Signer]:
    """
    One CA and a certificate (CN = node id) per node; their signers.
    """
    import os

    from suite.pki.load import loadIdentity
    from tests.spacecomms.support import makeCertificates

    os.makedirs(base)
    dirs = makeCertificates(base, names)
    return {
        n: Signer.fromBundle(loadIdentity(f"{dirs[n]}/node.crt", f"{dirs[n]}/node.key", f"{dirs[n]}/ca.crt"))
        for n in names
    }


def _net(seed: int, signers: dict[str, Signer] | None = None, **overrides: object) -> SimNet:
    """
    A - B - C in a line, and a hostile node H peered with B; with
    C{signers}, every node signs what it originates and checks signatures
    (the clock then starts at the real time, inside the certificates'
    validity).
    """
    net = SimNet(seed)
    if signers is not None:
        net.clock.advance(time.time() - net.clock.seconds())
    net.addNode("A", {"B": OPEN}, **overrides)
    net.addNode("B", {"A": OPEN, "C": OPEN, "H": OPEN}, **overrides)
    net.addNode("C", {"B": OPEN}, **overrides)
    net.addNode("H", {"B": OPEN}, **overrides)
    if signers is not None:
        for name, node in net.nodes.items():
            node.signer = signers[name]
    for a, b in (("A", "B"), ("B", "C"), ("B", "H")):
        net.connect(a, b)
    return net


class HostilePeerSimulationTests(SynchronousTestCase):
    """
    H is an authenticated peer of B that sends whatever it likes.
    """

    signed = False

    def setUp(self) -> None:
        signers = _signers(self.mktemp(), ["A", "B", "C", "H"]) if self.signed else None
        self.signers = signers
        self.net = _net(21, signers, override_nodes=("C",))
        self.addCleanup(self.net.stop)
        self.net.nodes["A"].ingestCDM(sampleCDM("X-1", object2="41001"))
        self.net.run(1)
        self.assertEqual(self.net.state("C")["X-1"], (True, None))

    def _send(self, mtype: str, source: str, payload: dict, path: tuple[str, ...]) -> None:
        net = self.net
        env = Envelope(
            mtype, source, payload, timestamp=net.clock.seconds(), hop_count=len(path) - 1, path=path
        )
        net.links[("H", "B")].sendEnvelope(env)
        net.run(0.5)

    def _dropped(self, reason: str) -> list[dict]:
        return [e for e in self.net.logged("routing decision: dropped") if reason in e["reason"]]

    def test_hostileWithdrawals(self) -> None:
        """
        A withdrawal of A's CDM from H is refused whether H speaks for
        itself, forges A as the originator at hop 0, or claims to relay A's
        message with a huge sequence; every refusal is logged with the CDM
        id and the reason; A's next version still reaches every node.
        """
        now = self.net.clock.seconds()
        seq = int(now * 1_000_000) + 10
        withdraw = {"cdm_id": "X-1", "reason": "FALSE_POSITIVE"}
        self._send("CDM_WITHDRAW", "H", {**withdraw, "sequence": 2**62}, ("H",))
        self._send("CDM_WITHDRAW", "H", {**withdraw, "sequence": seq}, ("H",))
        self._send("CDM_WITHDRAW", "A", {**withdraw, "sequence": seq}, ("A",))
        self._send("CDM_WITHDRAW", "A", {**withdraw, "sequence": 2**62}, ("A", "H"))
        self._send("CDM_WITHDRAW", "H", {**withdraw, "sequence": seq, "override": True}, ("H",))
        for reason, times in (
            ("sequence: 4611686018427387904 is more than max_clock_skew_seconds", 2),
            ("authority: cdm X-1 belongs to originator A, not H", 1),
            ("authority: path does not end at the sending peer H", 1),
            ("authority: override by H not honoured", 1),
        ):
            lines = self._dropped(reason)
            self.assertEqual(len(lines), times, reason)
            for line in lines:
                self.assertEqual((line["kind"], line["key"], line["node"]), ("cdm", "X-1", "B"))
        for n in "ABC":
            self.assertEqual(self.net.state(n)["X-1"], (True, None), n)
        self.assertLess(stored(self.net.stores["B"], "cdm", "X-1").sequence, sequenceLimit(now, 300))

        # A's own update is still accepted everywhere.
        newer = sampleCDM("X-1", object2="41001", missDistance=99.0)
        record, created = self.net.nodes["A"].ingestCDM(newer)
        self.assertTrue(created)
        self.net.run(1)
        for n in "BC":
            got = stored(self.net.stores[n], "cdm", "X-1")
            assert got.body is not None
            self.assertEqual(
                (got.sequence, got.body["relative_metadata_data"]["MISS_DISTANCE"]), (record.sequence, 99.0)
            )

    def test_hostileAnnounces(self) -> None:
        """
        H cannot rewrite A's CDM (announce as itself, or a forged relay
        that does not start at its source) but can announce its own CDMs.
        """
        body = stored(self.net.stores["A"], "cdm", "X-1").body
        assert body is not None
        seq = int(self.net.clock.seconds() * 1_000_000) + 10
        self._send("CDM_ANNOUNCE", "H", {"cdm_id": "X-1", "sequence": seq, "cdm": body}, ("H",))
        self._send("CDM_ANNOUNCE", "A", {"cdm_id": "X-1", "sequence": seq, "cdm": body}, ("C", "H"))
        self.assertTrue(self._dropped("belongs to originator A, not H"))
        self.assertTrue(self._dropped("path does not start at source_node A"))
        self.assertEqual(stored(self.net.stores["C"], "cdm", "X-1").origin, "A")
        self.net.nodes["H"].ingestCDM(sampleCDM("H-1", object2="41002"))
        self.net.run(1)
        self.assertEqual(stored(self.net.stores["C"], "cdm", "H-1").origin, "H")

    def test_localRefusalAndOverride(self) -> None:
        """
        C's API layer may not withdraw or re-post A's CDM (NotOriginator,
        nothing sent); with an admin override it may, and nodes that list C
        in protocol.override_nodes apply it and log it.
        """
        c = self.net.nodes["C"]
        sentBefore = len(self.net.links[("C", "B")].sent)
        with self.assertRaises(NotOriginator) as e:
            c.withdrawCDM("X-1")
        self.assertEqual(e.exception.owner, "A")
        with self.assertRaises(NotOriginator):
            c.ingestCDM(sampleCDM("X-1", object2="41001"))
        self.assertEqual(len(self.net.links[("C", "B")].sent), sentBefore)

        record = c.withdrawCDM("X-1", "ERROR", override=True)
        assert record is not None
        self.assertTrue(record.override)
        self.net.run(1)
        for n in "ABC":
            got = stored(self.net.stores[n], "cdm", "X-1")
            self.assertEqual(
                (got.active, got.reason, got.origin, got.override), (False, "ERROR", "C", True), n
            )
        self.assertTrue(self.net.logged("authority: admin override of cdm"))
        # A no longer owns it: its re-post is refused locally too.
        with self.assertRaises(NotOriginator):
            self.net.nodes["A"].ingestCDM(sampleCDM("X-1", object2="41001", missDistance=5.0))

    def test_forgedRelay(self) -> None:
        """
        Without signatures (no TLS) a relay forged by H in A's name with a
        plausible sequence is taken: the documented limit of the path
        rules.  With signatures it is dropped whether unsigned, signed by H
        or signed by H under A's certificate.
        """
        net = self.net
        seq = int(net.clock.seconds() * 1_000_000) + 10
        payload = {"cdm_id": "X-1", "reason": "FALSE_POSITIVE", "sequence": seq}
        if not self.signed:
            self._send("CDM_WITHDRAW", "A", payload, ("A", "H"))
            self.assertEqual(net.state("C")["X-1"], (False, "FALSE_POSITIVE"))
            return
        assert self.signers is not None
        self._send("CDM_WITHDRAW", "A", dict(payload), ("A", "H"))
        byH = dict(payload)
        self.signers["H"].sign("CDM_WITHDRAW", "A", byH)
        self._send("CDM_WITHDRAW", "A", byH, ("A", "H"))
        underA = dict(byH, cert=self.signers["A"].certDER)
        self._send("CDM_WITHDRAW", "A", underA, ("A", "H"))
        for reason in (
            "authority: signature: the message is not signed",
            "authority: signature: the certificate does not name A",
            "authority: signature: does not verify for A",
        ):
            self.assertEqual(len(self._dropped(reason)), 1, reason)
        for n in "ABC":
            self.assertEqual(net.state(n)["X-1"], (True, None), n)
        record = stored(net.stores["C"], "cdm", "X-1")
        self.assertEqual(record.cert, self.signers["A"].certDER)

    def test_overrideNotHonouredWithoutTrust(self) -> None:
        """
        Without C in override_nodes, B refuses C's override and logs why.
        """
        net = _net(22)
        self.addCleanup(net.stop)
        net.nodes["A"].ingestCDM(sampleCDM("X-2", object2="41003"))
        net.run(1)
        net.nodes["C"].withdrawCDM("X-2", override=True)
        net.run(1)
        self.assertEqual(net.state("A")["X-2"], (True, None))
        self.assertTrue(
            [
                e
                for e in net.logged("routing decision: dropped")
                if "override by C not honoured" in e["reason"]
            ]
        )

    def test_pastTCARefused(self) -> None:
        """
        A CDM whose TCA has passed is refused (not stored, not announced).
        """
        a = self.net.nodes["A"]
        now = self.net.clock.seconds()
        with self.assertRaises(CDMError) as e:
            a.ingestCDM(sampleCDM("OLD-1", tca=now - 1, created=now - 3600, object2="41004"))
        self.assertEqual(e.exception.field, "TCA")
        self.assertIsNone(self.net.stores["A"].get("cdm", "OLD-1"))


class SignedHostilePeerSimulationTests(HostilePeerSimulationTests):
    """
    The same with TLS identities: every routed message is signed by its
    originator and checked by every node.
    """

    signed = True


class LegacyEntriesTests(SynchronousTestCase):
    """
    Entries a node stored before it signed its messages still travel.
    """

    def test_unsignedOwnEntrySignedOnResync(self) -> None:
        """
        A's own CDM stored without a signature is signed when A re-syncs it
        to B, so B's relay to C verifies.
        """
        from suite.spacecomms.cdm.jsonfmt import toDict
        from suite.spacecomms.store import Record

        signers = _signers(self.mktemp(), ["A", "B", "C"])
        net = SimNet(31)
        self.addCleanup(net.stop)
        net.clock.advance(time.time() - net.clock.seconds())
        for name, peers in (("A", ["B"]), ("B", ["A", "C"]), ("C", ["B"])):
            net.addNode(name, {p: OPEN for p in peers}).signer = signers[name]
        now = net.clock.seconds()
        cdm = sampleCDM("OLD-SIG", object2="45001")
        net.stores["A"].put(
            Record(
                "cdm",
                "OLD-SIG",
                "A",
                int(now * 1e6),
                True,
                toDict(cdm),
                None,
                now,
                now,
                None,
                cdm.tcaSeconds,
                list(cdm.objectDesignators()),
            )
        )
        net.connect("B", "C")
        net.connect("A", "B")
        net.run(1)
        self.assertEqual(net.state("C").get("OLD-SIG"), (True, None))
        self.assertEqual(stored(net.stores["C"], "cdm", "OLD-SIG").cert, signers["A"].certDER)


class SignedRestoreTests(SynchronousTestCase):
    """
    With TLS, a node takes its own entries back only under its own
    signature: what a peer restores keeps the originator's signature and
    certificate, and a peer cannot slip in a version the node never made.
    """

    def test_restoreKeepsTheOriginatorsSignature(self) -> None:
        from suite.spacecomms.store import MemoryStore

        signers = _signers(self.mktemp(), ["A", "B"])
        net = SimNet(32)
        self.addCleanup(net.stop)
        net.clock.advance(time.time() - net.clock.seconds())
        net.addNode("A", {"B": OPEN}).signer = signers["A"]
        net.addNode("B", {"A": OPEN}).signer = signers["B"]
        net.connect("A", "B")
        net.nodes["A"].ingestCDM(sampleCDM("SIG-R", object2="45101"))
        net.run(1)
        original = stored(net.stores["B"], "cdm", "SIG-R")
        self.assertIsNotNone(original.signature)

        def restart() -> None:
            net.crash("A")
            net.stores["A"] = MemoryStore()
            net.restart("A").signer = signers["A"]

        # B alters A's CDM and offers it as a restore: A's signature does
        # not verify, so A refuses it.
        restart()
        net.connect("A", "B")
        assert original.body is not None
        forged = {**original.body, "relative_metadata_data": {**original.body["relative_metadata_data"]}}
        forged["relative_metadata_data"]["MISS_DISTANCE"] = 1.0
        env = Envelope(
            "CDM_ANNOUNCE",
            "A",
            {
                "cdm_id": "SIG-R",
                "sequence": original.sequence + 1,
                "cdm": forged,
                "sync": True,
                "restore": True,
                "signature": original.signature,
                "cert": original.cert,
            },
            timestamp=net.clock.seconds(),
            hop_count=1,
            path=("A", "B"),
        )
        net.nodes["A"].envelopeReceived(net.links[("A", "B")], env)
        refused = [
            e
            for e in net.logged("routing decision: dropped")
            if e["node"] == "A" and e["reason"].startswith("authority: signature")
        ]
        self.assertEqual(len(refused), 1)
        # B's own re-sync then gives back the version A signed.
        net.run(1)
        got = stored(net.stores["A"], "cdm", "SIG-R")
        self.assertEqual(
            (got.sequence, got.body, got.signature, got.cert),
            (original.sequence, original.body, original.signature, signers["A"].certDER),
        )

    def _signedNet(self, seed: int) -> tuple[SimNet, dict[str, Signer]]:
        """
        B - A - C - D, every node signing; A originates SIG-1 and SIG-2,
        which reach all; A then updates SIG-2 while B is cut off (B keeps
        the older version) and loses its store.
        """
        signers = _signers(self.mktemp(), ["A", "B", "C", "D"])
        net = SimNet(seed)
        self.addCleanup(net.stop)
        net.clock.advance(time.time() - net.clock.seconds())
        settings = {"anti_entropy_interval_seconds": 0}
        for name, peers in (("A", "BC"), ("B", "A"), ("C", "AD"), ("D", "C")):
            net.addNode(name, {p: OPEN for p in peers}, **settings).signer = signers[name]
        for x, y in (("A", "B"), ("A", "C"), ("C", "D")):
            net.connect(x, y)
        a = net.nodes["A"]
        a.ingestCDM(sampleCDM("SIG-1", object2="45201"))
        a.ingestCDM(sampleCDM("SIG-2", object2="45202"))
        net.run(1)
        net.disconnect("A", "B")
        a.ingestCDM(sampleCDM("SIG-2", object2="45202", missDistance=150.0))
        net.run(1)
        self.assertEqual(len(net.state("D")), 2)
        net.crash("A")
        return net, signers

    def test_restoredEntrySentOnKeepsItsSignature(self) -> None:
        """
        C and D lost A's CDMs; A restarts empty, its session to C comes
        up first, then B gives back what it holds: A sends each on to C
        as its own, with the signature B gave back, and C relays it to D,
        which checks that signature: D ends holding what B held.
        """
        from suite.spacecomms.store import MemoryStore

        net, signers = self._signedNet(33)
        net.stores["A"] = MemoryStore()
        net.restart("A").signer = signers["A"]
        for n in "CD":
            for key in ("SIG-1", "SIG-2"):
                net.stores[n].remove("cdm", key)
        del net.events[:]
        net.connect("A", "C")
        net.run(1)
        net.connect("A", "B")
        net.run(1)
        for key in ("SIG-1", "SIG-2"):
            atB = stored(net.stores["B"], "cdm", key)
            for n in "ACD":
                got = stored(net.stores[n], "cdm", key)
                self.assertEqual(
                    (got.sequence, got.body, got.signature), (atB.sequence, atB.body, atB.signature)
                )
        atD = [e for e in net.logged("routing decision: applied") if e["node"] == "D"]
        self.assertEqual(sorted((e["peer"], e["key"]) for e in atD), [("C", "SIG-1"), ("C", "SIG-2")])
        self.assertEqual([e for e in net.logged("routing decision: dropped") if e["node"] == "D"], [])

    def test_versionAnnouncedAgainIsSigned(self) -> None:
        """
        A restarts empty with its clock behind; B gives back the older
        SIG-2, and A withdraws it through its API, numbered below the
        newer SIG-2 C holds.  C gives that back: A keeps its withdrawal
        and announces it again above it, signed anew, and D, which gets
        it relayed by C, checks the new signature and takes it.
        """
        from suite.spacecomms.store import MemoryStore
        from tests.spacecomms.sim import SkewedClock

        net, signers = self._signedNet(34)
        newer = stored(net.stores["C"], "cdm", "SIG-2")
        net.stores["A"] = MemoryStore()
        a = net.restart("A", SkewedClock(net.clock, -100.0))
        a.signer = signers["A"]
        net.connect("A", "B")
        net.run(1)
        gone = a.withdrawCDM("SIG-2", "ERROR")
        assert gone is not None
        self.assertLess(gone.sequence, newer.sequence)
        net.connect("A", "C")
        net.run(1)
        for n in "ABCD":
            got = stored(net.stores[n], "cdm", "SIG-2")
            self.assertEqual((got.active, got.reason), (False, "ERROR"), n)
            self.assertGreater(got.sequence, newer.sequence, n)
            self.assertIsNotNone(got.signature, n)
        self.assertEqual([e for e in net.logged("routing decision: dropped") if e["node"] == "D"], [])


class AntiEntropySimulationTests(SynchronousTestCase):
    """
    Lost relays are repaired by the digest exchange, without reconnecting.
    """

    def test_burstWithDropsConverges(self) -> None:
        """
        A burst of 600 CDMs from A through B (rate limit 50/s, burst 50)
        to C, with 5% of all messages lost on the wire, leaves B and C
        missing entries; within 6 anti-entropy intervals (30 s) every node
        holds every CDM in the same version, no session was re-established,
        and the rate-limit warnings are one line per interval.
        """
        for seed in (1, 2, 3):
            net = SimNet(seed, dropRate=0.05)
            self.addCleanup(net.stop)
            slow = Policies(rate_limit_per_second=50, rate_limit_burst=50)
            net.addNode("A", {"B": OPEN}, anti_entropy_interval_seconds=5)
            net.addNode("B", {"A": slow, "C": OPEN}, anti_entropy_interval_seconds=5)
            net.addNode("C", {"B": slow}, anti_entropy_interval_seconds=5)
            net.connect("A", "B")
            net.connect("B", "C")
            net.run(0.2)  # the (empty) re-syncs are over
            links = dict(net.nodes["B"].links)
            now = net.clock.seconds()
            for i in range(600):
                net.nodes["A"].ingestCDM(sampleCDM(f"BURST-{i}", tca=now + 86400 + i, object2=str(50000 + i)))
            net.run(1)
            self.assertLess(len(net.state("C")), 600)
            missing = 600 - len(net.state("B"))
            self.assertGreater(missing, 400)
            net.run(29)
            versions = {n: {r.key: r.version() for r in net.stores[n].records("cdm")} for n in "ABC"}
            self.assertEqual(len(versions["A"]), 600)
            self.assertEqual(versions["B"], versions["A"], f"seed {seed}")
            self.assertEqual(versions["C"], versions["A"], f"seed {seed}")
            self.assertEqual(net.nodes["B"].links, links)
            warnings = net.logged("rate limit exceeded")
            self.assertLessEqual(len(warnings), 8)
            self.assertGreaterEqual(sum(w["count"] for w in warnings if w["node"] == "B"), missing - 50)
            self.assertTrue(net.logged("anti-entropy with"))

    def test_inSyncNodesExchangeDigestsOnly(self) -> None:
        """
        Nodes that agree send DIGESTs and nothing else.
        """
        net = SimNet(5)
        self.addCleanup(net.stop)
        net.addNode("A", {"B": OPEN}, anti_entropy_interval_seconds=2)
        net.addNode("B", {"A": OPEN}, anti_entropy_interval_seconds=2)
        net.connect("A", "B")
        for i in range(20):
            net.nodes["A"].ingestCDM(sampleCDM(f"SYNC-{i}", object2=str(51000 + i)))
        net.run(1)
        before = len(net.links[("A", "B")].sent)
        net.run(10)
        after = net.links[("A", "B")].sent[before:]
        types = {e.message_type for e in after}
        self.assertEqual(types - {"HEARTBEAT"}, {"DIGEST"})


class EnvelopeBoundsTests(SynchronousTestCase):
    """
    Envelope ttl, timestamp and sequence are bounded; anti-entropy payloads
    are checked like every other.
    """

    def _frame(self, **kw: object) -> bytes:
        import msgpack

        env = Envelope(
            "CDM_WITHDRAW",
            "A",
            {"cdm_id": "X", "sequence": 1, "reason": "ERROR"},
            timestamp=1.7e9,
            path=("A",),
        ).toJSON()
        payload = kw.pop("payload", None)
        env.update(kw)
        if payload is not None:
            env["payload"] = payload
        return msgpack.packb(env, use_bin_type=True)

    def test_bounds(self) -> None:
        """
        ttl 1e12, timestamp 1e10, a sequence of 2**63 and a HELLO's
        own_sequence outside [0, 2**63) or session_timeout_seconds outside
        (0, 7 days] are refused naming the field; the bounds themselves are
        accepted.
        """
        from suite.spacecomms.envelope import EnvelopeError, decodeEnvelope

        decodeEnvelope(self._frame(ttl=86400, timestamp=4102444799.0))
        hello = {"node_id": "A", "versions": ["1.0"], "capabilities": ["restore"]}
        # A HELLO from an older node states no own_sequence.
        decodeEnvelope(self._frame(message_type="HELLO", payload=hello))
        decodeEnvelope(self._frame(message_type="HELLO", payload={**hello, "own_sequence": 2**63 - 1}))
        decodeEnvelope(self._frame(message_type="HELLO", payload={**hello, "session_timeout_seconds": 0.1}))
        decodeEnvelope(self._frame(message_type="HEARTBEAT", payload={"sequence": 1, "echo": [3, 12.5]}))
        for badEcho in ([1], [-1, 0], [1, -0.5], [1, float("nan")], [True, 1], "1,2", [1, 1e12]):
            with self.assertRaises(EnvelopeError) as e:
                decodeEnvelope(
                    self._frame(message_type="HEARTBEAT", payload={"sequence": 1, "echo": badEcho})
                )
            self.assertEqual(e.exception.field, "payload.echo", badEcho)
        for bad in (0, -1, float("nan"), float("inf"), True, "120", 7 * 86400 + 1):
            payload = {**hello, "session_timeout_seconds": bad}
            with self.assertRaises(EnvelopeError) as e:
                decodeEnvelope(self._frame(message_type="HELLO", payload=payload))
            self.assertEqual(e.exception.field, "payload.session_timeout_seconds", bad)
        for kw, field in (
            ({"ttl": 1e12}, "ttl"),
            ({"timestamp": 1e10}, "timestamp"),
            ({"timestamp": -1.0}, "timestamp"),
            ({"payload": {"cdm_id": "X", "sequence": 2**63, "reason": "ERROR"}}, "payload.sequence"),
            (
                {"payload": {"cdm_id": "X", "sequence": 1, "reason": "ERROR", "override": 1}},
                "payload.override",
            ),
            (
                {"message_type": "DIGEST", "payload": {"kinds": ["cdm"], "buckets": [0] * 3}},
                "payload.buckets",
            ),
            ({"message_type": "DIGEST", "payload": {"kinds": ["x"], "buckets": [0] * 256}}, "payload.kinds"),
            (
                {"message_type": "DIGEST_SUMMARY", "payload": {"entries": [["cdm", "X", "A", -1, True]]}},
                "payload.entries",
            ),
            ({"message_type": "PULL", "payload": {"items": [["cdm", "X"]] * 501}}, "payload.items"),
            ({"message_type": "HELLO", "payload": {**hello, "own_sequence": -1}}, "payload.own_sequence"),
            ({"message_type": "HELLO", "payload": {**hello, "own_sequence": 2**63}}, "payload.own_sequence"),
            ({"message_type": "HELLO", "payload": {**hello, "own_sequence": "1"}}, "payload.own_sequence"),
        ):
            with self.assertRaises(EnvelopeError) as e:
                decodeEnvelope(self._frame(**kw))
            self.assertEqual(e.exception.field, field, kw)
        decodeEnvelope(
            self._frame(
                message_type="DIGEST", payload={"kinds": ["cdm", "object"], "buckets": [2**64 - 1] * 256}
            )
        )
        decodeEnvelope(self._frame(message_type="PULL", payload={"items": [["object", "S"]]}))


class CertificateBindingTests(SynchronousTestCase):
    """
    A peer's HELLO node id must be named by its TLS certificate.
    """

    def test_certificateMustNameNode(self) -> None:
        """
        With a TLS transport whose peer certificate has CN B, a HELLO from B
        passes and one claiming C is refused UNAUTHORIZED; without TLS the
        check does not apply.
        """
        import os

        from OpenSSL import crypto
        from twisted.internet.task import Clock

        from suite.spacecomms.session import PeerProtocol
        from tests.spacecomms.support import makeCertificates

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        dirs = makeCertificates(base, ["A", "B"])
        with open(os.path.join(dirs["B"], "node.crt"), "rb") as f:
            cert = crypto.load_certificate(crypto.FILETYPE_PEM, f.read())

        class TLSTransport:
            def getPeerCertificate(self) -> object:
                return cert

        p = PeerProtocol(None, "A", Clock(), None, 1, 5, 1 << 20, lambda peer: {})  # type: ignore[arg-type]
        p.transport = None
        self.assertIsNone(p.checkCertificate("C"))
        p.transport = TLSTransport()  # type: ignore[assignment]
        self.assertIn("B", p.certificateNames() or set())
        self.assertIsNone(p.checkCertificate("B"))
        verdict = p.checkCertificate("C")
        assert verdict is not None
        self.assertEqual(verdict[0], "UNAUTHORIZED")
        self.assertIn("does not name node C", verdict[1])


class AntiEntropyBoundsTests(SynchronousTestCase):
    """
    The repair rate is bounded per round, and DIGESTs are answered at most
    every MIN_ANSWER_INTERVAL.
    """

    def _pair(self) -> SimNet:
        net = SimNet(9)
        self.addCleanup(net.stop)
        net.addNode("A", {"B": OPEN}, anti_entropy_interval_seconds=1)
        net.addNode("B", {"A": OPEN}, anti_entropy_interval_seconds=1)
        net.connect("A", "B")
        net.run(0.5)
        return net

    def test_largeDifferenceRepairedAtBoundedRate(self) -> None:
        """
        3,000 object states that only B holds (put straight into its store,
        so routing never carried them) reach A at most 500 per round: not
        all after 5 rounds, all after 8.
        """
        from suite.spacecomms.store import Record

        net = self._pair()
        now = net.clock.seconds()
        for i in range(3000):
            seq = int(now * 1_000_000) + i
            net.stores["B"].put(Record("object", f"O-{i}", "B", seq, True, {"i": i}, None, now, now))
        net.run(5.2)
        got = len(net.state("A", "object"))
        self.assertGreater(got, 0)
        self.assertLessEqual(got, 5 * 500)
        net.run(3)
        self.assertEqual(len(net.state("A", "object")), 3000)
        self.assertEqual(net.stores["A"].digest("object"), net.stores["B"].digest("object"))

    def test_digestAnswerThrottled(self) -> None:
        """
        Two DIGESTs from A within half a second get one DIGEST_SUMMARY.
        """
        net = self._pair()
        net.nodes["B"].antiEntropy.stop()
        net.nodes["A"].antiEntropy.stop()
        net.nodes["B"].announceObject("O-1", {"x": 1})
        net.stores["A"].remove("object", "O-1")
        before = len(net.links[("B", "A")].sent)
        net.nodes["A"].antiEntropy.round()
        net.nodes["A"].antiEntropy.round()
        net.run(0.3)
        summaries = [e for e in net.links[("B", "A")].sent[before:] if e.message_type == "DIGEST_SUMMARY"]
        self.assertEqual(len(summaries), 1)
        self.assertEqual(summaries[0].payload["entries"][0][:2], ["object", "O-1"])
        net.run(0.5)
        self.assertIn("O-1", net.state("A", "object"))
