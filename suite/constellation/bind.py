"""
Where gossip and Raft listen.

Gossip is authenticated only with a gossip key (C{--gossip-key-file}), and
Raft's TLS identity is derived from it (or comes from C{--raft-cert-dir}).
Without a key anyone who can reach the ports can join the cluster, forge
members and their suspicion, or send Raft a high term or forged entries.
So the address is chosen by L{chooseBind}:

  - C{--bind-addr} given: that address, as asked.
  - a gossip key: all interfaces (C{0.0.0.0}); every packet is checked.
  - no key, IP addresses in C{--join}: the local address that routes
    towards the first of them (the operator named a network; the address
    other members are told anyway).
  - no key, a Tailscale address (discovery): only that address, so only
    tailnet peers, which Tailscale authenticates, reach the ports.
  - no key and nothing else: loopback only (the node runs alone).

L{bindNote} is the one line the agent logs about it at start-up.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADDRESS_WAIT",
    "ALL",
    "BindChoice",
    "LOOPBACK",
    "NETWORK",
    "TAILNET",
    "TAILSCALE_NETWORKS",
    "bindNote",
    "canBind",
    "canBindSoon",
    "chooseBind",
    "reachOf",
    "routeTowards",
]

#: The ranges Tailscale assigns its nodes' addresses from.
TAILSCALE_NETWORKS = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd7a:115c:a1e0::/48"))

#: Who can reach an address: this host only, tailnet peers, one network, every network.
LOOPBACK, TAILNET, NETWORK, ALL = "loopback", "tailnet", "network", "all"

_FLAG = "--bind-addr (CONSTELLATION_BIND_ADDR)"
_KEY = "--gossip-key-file (CONSTELLATION_GOSSIP_KEY_FILE)"


@dataclass(frozen=True)
class BindChoice:
    """
    The address gossip and Raft bind, who can reach it (L{LOOPBACK},
    L{TAILNET}, L{NETWORK} or L{ALL}), whether the operator gave it, and
    why the agent fell back to loopback (empty otherwise).
    """

    address: str
    reach: str
    explicit: bool
    why: str = ""


def canBind(address: str) -> bool:
    """
    Whether a UDP socket can bind C{address} now (the address is this
    host's: not so for a Tailscale address in userspace networking mode).
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
    except OSError:
        return False
    return True


#: How long start-up waits for a Tailscale address to appear on an interface.
ADDRESS_WAIT = 3.0


def canBindSoon(
    address: str,
    wait: float = ADDRESS_WAIT,
    probe: Callable[[str], bool] = canBind,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """
    Whether C{address} can be bound within C{wait} seconds, asked every
    quarter second (blocking; before the reactor runs): a tailscaled that
    has just come up may report its address before it is on the interface.
    """
    deadline = clock() + wait
    while not probe(address):
        if clock() >= deadline:
            return False
        sleep(0.25)
    return True


def routeTowards(peer: str) -> str:
    """
    The local address that routes towards C{peer}, found without sending
    anything.

    @raise OSError: when there is no route.
    """
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((peer, 9))
        return str(s.getsockname()[0])


def reachOf(address: str, tailnet: Sequence[str] = ()) -> str:
    """
    Who can reach C{address}: L{ALL} for an unspecified one, L{LOOPBACK},
    L{TAILNET} for this node's Tailscale addresses (C{tailnet}) and
    Tailscale's ranges, else L{NETWORK}.
    """
    ip = ipaddress.ip_address(address)
    if ip.is_unspecified:
        return ALL
    if ip.is_loopback:
        return LOOPBACK
    if ip.compressed in tailnet or any(ip in net for net in TAILSCALE_NETWORKS):
        return TAILNET
    return NETWORK


def chooseBind(
    explicit: str | None,
    keyed: bool,
    tailnet: Sequence[str],
    joinIPs: Sequence[str],
    *,
    version: int = 4,
    discovery: str = "",
    bindable: Callable[[str], bool] = canBind,
    route: Callable[[str], str] = routeTowards,
) -> BindChoice:
    """
    Choose the address gossip and Raft bind (see the module's docstring).

    @param explicit: C{--bind-addr}, or None when it is not set.
    @param keyed: whether a gossip key is configured.
    @param tailnet: this node's Tailscale addresses found by discovery.
    @param joinIPs: the IP addresses of C{--join}.
    @param version: the IP version of the loopback fallback.
    @param discovery: why discovery found no address, for the fallback's line.
    """
    if explicit is not None:
        return BindChoice(explicit, reachOf(explicit, tailnet), True)
    if keyed:
        return BindChoice("0.0.0.0", ALL, False)
    if joinIPs:
        try:
            local = route(joinIPs[0])
        except OSError:
            pass
        else:
            return BindChoice(local, reachOf(local, tailnet), False)
    why = discovery or "no Tailscale address"
    for address in tailnet:
        if bindable(address):
            return BindChoice(address, TAILNET, False)
        why = f"the Tailscale address {address} is not on an interface of this host"
    return BindChoice("::1" if version == 6 else "127.0.0.1", LOOPBACK, False, why)


def bindNote(
    choice: BindChoice, keyed: bool, raftTLS: bool, gossipPort: int, raftPort: int
) -> tuple[str, str, dict[str, Any]] | None:
    """
    The one line to log about C{choice}: (level, format, fields), or None.

    Without a key: a warning naming the exposure and the fix when the ports
    are open beyond this host and the tailnet; a note when they are on the
    tailnet only; a warning saying how to open them when the agent fell
    back to loopback.  An explicit loopback address, or a key: nothing.
    """
    if keyed:
        return None
    address = f"[{choice.address}]" if ":" in choice.address else choice.address
    if choice.reach in (ALL, NETWORK):
        whom = "every network of this host" if choice.reach == ALL else f"the network of {choice.address}"
        if raftTLS:  # --raft-cert-dir: Raft is mTLS, gossip is not
            what = f"gossip (UDP and TCP {address}:{gossipPort}) is"
            harm = "it can join the cluster and forge members"
        else:
            what = f"gossip (UDP and TCP {address}:{gossipPort}) and Raft (TCP port {raftPort}) are"
            harm = "them can join the cluster, forge members and disrupt Raft leadership"
        return (
            "warn",
            "{what} unauthenticated and open to {whom}: anyone who reaches {harm}; set {key} on every node",
            {"what": what, "whom": whom, "harm": harm, "key": _KEY},
        )
    if choice.reach == TAILNET:
        return (
            "info",
            "gossip and Raft bind the Tailscale address {address} only (no gossip key): only tailnet "
            "peers reach them; set {key} on every node to authenticate them as well",
            {"address": choice.address, "key": _KEY},
        )
    if not choice.explicit:
        return (
            "warn",
            "gossip and Raft bind {address} only ({why}, no gossip key, no --bind-addr): other nodes "
            "cannot reach this one; set {key} on every node, or {flag} to open them",
            {"address": choice.address, "why": choice.why, "key": _KEY, "flag": _FLAG},
        )
    return None
