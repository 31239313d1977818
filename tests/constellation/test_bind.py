"""
Where gossip and Raft listen (L{suite.constellation.bind}): the choice for
every combination of gossip key, C{--bind-addr}, Tailscale address and
C{--join}, and the one line logged about it.
"""

from __future__ import annotations

from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from suite.constellation.bind import (
    ALL,
    LOOPBACK,
    NETWORK,
    TAILNET,
    BindChoice,
    bindNote,
    canBind,
    canBindSoon,
    chooseBind,
    reachOf,
    routeTowards,
)

TS = "100.64.0.1"


def noRoute(peer: str) -> str:
    raise OSError("no route")


class ChooseBindTests(SynchronousTestCase):
    """
    L{chooseBind}: an explicit address as given; a key opens every
    interface; without one, a route towards --join, the Tailscale address,
    or loopback.
    """

    def choose(
        self,
        explicit: str | None,
        keyed: bool,
        tailnet: list[str],
        joinIPs: list[str] = [],  # noqa: B006 (never changed)
        bindable: bool = True,
    ) -> BindChoice:
        routes = {"10.0.0.5": "10.0.0.2", "100.64.0.9": TS, "127.0.0.1": "127.0.0.1"}
        return chooseBind(
            explicit,
            keyed,
            tailnet,
            joinIPs,
            discovery="--discover none",
            bindable=lambda address: bindable,
            route=routes.__getitem__,
        )

    def test_table(self) -> None:
        """
        Key or none × --bind-addr or none × Tailscale address or none.
        """
        loop = BindChoice("127.0.0.1", LOOPBACK, False, "--discover none")
        for keyed, explicit, tailnet, expected in (
            (True, "10.0.0.2", [TS], BindChoice("10.0.0.2", NETWORK, True)),
            (True, "10.0.0.2", [], BindChoice("10.0.0.2", NETWORK, True)),
            (True, None, [TS], BindChoice("0.0.0.0", ALL, False)),
            (True, None, [], BindChoice("0.0.0.0", ALL, False)),
            (False, "0.0.0.0", [TS], BindChoice("0.0.0.0", ALL, True)),
            (False, "10.0.0.2", [], BindChoice("10.0.0.2", NETWORK, True)),
            (False, TS, [TS], BindChoice(TS, TAILNET, True)),
            (False, "127.0.0.1", [], BindChoice("127.0.0.1", LOOPBACK, True)),
            (False, None, [TS], BindChoice(TS, TAILNET, False)),
            (False, None, [], loop),
        ):
            with self.subTest(keyed=keyed, explicit=explicit, tailnet=tailnet):
                self.assertEqual(self.choose(explicit, keyed, tailnet), expected)

    def test_join(self) -> None:
        """
        Without a key or --bind-addr, IP --join peers name the network: the
        local address routing towards the first is bound (it is also the
        one advertised), before the Tailscale address; no route: as if
        there were no peer.
        """
        self.assertEqual(self.choose(None, False, [TS], ["10.0.0.5"]), BindChoice("10.0.0.2", NETWORK, False))
        self.assertEqual(self.choose(None, False, [], ["100.64.0.9"]), BindChoice(TS, TAILNET, False))
        self.assertEqual(
            self.choose(None, False, [], ["127.0.0.1"]), BindChoice("127.0.0.1", LOOPBACK, False)
        )
        self.assertEqual(
            chooseBind(None, False, [TS], ["10.0.0.5"], bindable=lambda a: True, route=noRoute),
            BindChoice(TS, TAILNET, False),
        )
        self.assertEqual(self.choose(None, True, [TS], ["10.0.0.5"]), BindChoice("0.0.0.0", ALL, False))

    def test_tailscaleAddressNotLocal(self) -> None:
        """
        A Tailscale address that is on no interface of this host
        (tailscaled in userspace networking mode) is not bound: loopback,
        saying why; IPv6 falls back to ::1.
        """
        self.assertEqual(
            self.choose(None, False, [TS], bindable=False),
            BindChoice(
                "127.0.0.1",
                LOOPBACK,
                False,
                f"the Tailscale address {TS} is not on an interface of this host",
            ),
        )
        self.assertEqual(
            chooseBind(None, False, [], [], version=6, bindable=lambda a: True),
            BindChoice("::1", LOOPBACK, False, "no Tailscale address"),
        )

    def test_reach(self) -> None:
        """
        Unspecified addresses reach every network; Tailscale's ranges and
        this node's Tailscale addresses the tailnet.
        """
        for address, tailnet, reach in (
            ("0.0.0.0", [], ALL),
            ("::", [], ALL),
            ("127.0.0.2", [], LOOPBACK),
            ("::1", [], LOOPBACK),
            ("100.100.1.2", [], TAILNET),
            ("fd7a:115c:a1e0::1", [], TAILNET),
            ("192.0.2.7", ["192.0.2.7"], TAILNET),
            ("192.0.2.7", [], NETWORK),
            ("203.0.113.5", [], NETWORK),
        ):
            self.assertEqual(reachOf(address, tailnet), reach, address)

    def test_probes(self) -> None:
        """
        The real probes: loopback is bindable and routes to itself; an
        address of no interface is not bindable.
        """
        self.assertTrue(canBind("127.0.0.1"))
        self.assertFalse(canBind("192.0.2.1"))  # TEST-NET-1: on no interface
        self.assertEqual(routeTowards("127.0.0.1"), "127.0.0.1")

    def test_addressAppearing(self) -> None:
        """
        An address not on an interface yet is asked for again every quarter
        second for up to the wait; then it is not bindable.
        """
        now = [0.0]
        answers = [False, False, True]
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        found = canBindSoon(TS, 3.0, lambda a: answers.pop(0), sleep, lambda: now[0])
        self.assertEqual((found, slept), (True, [0.25, 0.25]))
        del slept[:]
        now[0] = 0.0
        self.assertFalse(canBindSoon(TS, 1.0, lambda a: False, sleep, lambda: now[0]))
        self.assertEqual(slept, [0.25] * 4)


class BindNoteTests(SynchronousTestCase):
    """
    L{bindNote}: one line, naming the exposure and the fix.
    """

    def line(self, choice: BindChoice, keyed: bool = False, raftTLS: bool = False) -> tuple[str, str] | None:
        note = bindNote(choice, keyed, raftTLS, 7946, 8300)
        if note is None:
            return None
        level, text, fields = note
        return level, formatEvent({"log_format": text, **fields})

    def test_exposed(self) -> None:
        """
        Without a key, every interface or a non-tailnet address is a
        warning naming both ports, who can reach them, and --gossip-key-file.
        """
        self.assertEqual(
            self.line(BindChoice("0.0.0.0", ALL, True)),
            (
                "warn",
                "gossip (UDP and TCP 0.0.0.0:7946) and Raft (TCP port 8300) are unauthenticated and open "
                "to every network of this host: anyone who reaches them can join the cluster, forge "
                "members and disrupt Raft leadership; set --gossip-key-file (CONSTELLATION_GOSSIP_KEY_FILE) "
                "on every node",
            ),
        )
        self.assertEqual(
            self.line(BindChoice("2001:db8::1", NETWORK, False), raftTLS=True),
            (
                "warn",
                "gossip (UDP and TCP [2001:db8::1]:7946) is unauthenticated and open to the network of "
                "2001:db8::1: anyone who reaches it can join the cluster and forge members; set "
                "--gossip-key-file (CONSTELLATION_GOSSIP_KEY_FILE) on every node",
            ),
        )

    def test_quiet(self) -> None:
        """
        A key, or an explicit loopback address: no line.
        """
        self.assertIsNone(self.line(BindChoice("0.0.0.0", ALL, False), keyed=True))
        self.assertIsNone(self.line(BindChoice("127.0.0.1", LOOPBACK, True)))

    def test_tailnetAndLoopback(self) -> None:
        """
        The tailnet only is a note; the loopback fallback a warning saying
        why and how to open the ports.
        """
        tailnet = self.line(BindChoice(TS, TAILNET, False))
        assert tailnet is not None
        self.assertEqual(tailnet[0], "info")
        self.assertIn(f"Tailscale address {TS} only", tailnet[1])
        self.assertEqual(
            self.line(BindChoice("127.0.0.1", LOOPBACK, False, "--discover none")),
            (
                "warn",
                "gossip and Raft bind 127.0.0.1 only (--discover none, no gossip key, no --bind-addr): "
                "other nodes cannot reach this one; set --gossip-key-file (CONSTELLATION_GOSSIP_KEY_FILE) "
                "on every node, or --bind-addr (CONSTELLATION_BIND_ADDR) to open them",
            ),
        )
