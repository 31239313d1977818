"""
Peer discovery through Tailscale: the guide's "start agent - it will
automatically discover peers via Tailscale".

At start-up the agent reads the local C{tailscaled}'s status from its
LocalAPI (C{GET /localapi/v0/status} over the unix socket
C{--tailscale-socket}, as the C{tailscale status} command does; reading it
needs no privileges).  It yields this node's own Tailscale addresses (the
address the agent advertises when C{--bind-addr} is unspecified) and the
addresses of the online peers of the tailnet, which become gossip seeds on
C{--bind-port} when no C{--join} is given.  Peers that run no agent simply
do not answer.

The status is read once, before the reactor runs (the gossip address must
be known when the node is built), within L{TIMEOUT} seconds and
L{MAX_STATUS_BYTES}.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_SOCKET",
    "MAX_STATUS_BYTES",
    "NoTailscale",
    "STARTING_STATES",
    "STARTING_WAIT",
    "TIMEOUT",
    "TailnetView",
    "TailscaleError",
    "discover",
    "parseStatus",
    "readStatus",
]

DEFAULT_SOCKET = "/var/run/tailscale/tailscaled.sock"
MAX_STATUS_BYTES = 4 * 1024 * 1024
TIMEOUT = 2.0


class TailscaleError(Exception):
    """
    The status could not be read or was not a status (the message says why).
    """


class NoTailscale(TailscaleError):
    """
    There is no C{tailscaled} socket at the path: no Tailscale on this host.
    """


@dataclass
class TailnetView:
    """
    What discovery learned: the backend state, this node's Tailscale
    addresses and the online peers' addresses (one per peer, of the family
    asked for), each peer's host name beside it.
    """

    backendState: str
    selfAddresses: list[str] = field(default_factory=list)
    peers: list[tuple[str, str]] = field(default_factory=list)


def readStatus(path: str, timeout: float = TIMEOUT) -> Any:
    """
    The decoded JSON of C{tailscaled}'s C{/localapi/v0/status} on the unix
    socket C{path} (blocking; call before the reactor runs or in a thread).

    @raise TailscaleError: naming what failed.
    """
    request = (
        b"GET /localapi/v0/status HTTP/1.0\r\n"
        b"Host: local-tailscaled.sock\r\n"
        b"Sec-Tailscale: localapi\r\n"
        b"Accept: application/json\r\n\r\n"
    )
    chunks: list[bytes] = []
    size = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(request)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_STATUS_BYTES + 65536:
                    raise TailscaleError(f"the status answer is larger than {MAX_STATUS_BYTES} bytes")
    except TimeoutError:
        raise TailscaleError(f"no answer within {timeout:g} s") from None
    except FileNotFoundError:
        raise NoTailscale(f"no tailscaled socket at {path}") from None
    except OSError as e:
        raise TailscaleError(e.strerror or str(e)) from None
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not sep:
        raise TailscaleError("the answer is not HTTP")
    statusLine = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = statusLine.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise TailscaleError("the answer is not HTTP")
    if parts[1] != "200":
        detail = body[:200].decode("utf-8", "replace").strip()
        raise TailscaleError(f"HTTP {' '.join(parts[1:])}" + (f": {detail}" if detail else ""))
    if len(body) > MAX_STATUS_BYTES:
        raise TailscaleError(f"the status answer is larger than {MAX_STATUS_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as e:
        raise TailscaleError(f"the status is not JSON ({e})") from None


def _addressOf(ips: Any, version: int) -> str | None:
    if not isinstance(ips, list):
        return None
    for raw in ips:
        try:
            ip = ipaddress.ip_address(str(raw))
        except ValueError:
            continue
        if ip.version == version:
            return ip.compressed
    return None


def parseStatus(status: Any, version: int = 4) -> TailnetView:
    """
    The backend state, this node's addresses and the online peers (those
    with an address of IP C{version}) of a status, peers in host-name
    order.

    @raise TailscaleError: when C{status} is not a status object.
    """
    if not isinstance(status, Mapping):
        raise TailscaleError("the status is not a JSON object")
    view = TailnetView(str(status.get("BackendState") or "unknown"))
    me = status.get("Self")
    own = me.get("TailscaleIPs") if isinstance(me, Mapping) else None
    for ips in (own, status.get("TailscaleIPs")):
        mine = _addressOf(ips, version)
        if mine is not None:
            view.selfAddresses.append(mine)
            break
    peers = status.get("Peer")
    found: list[tuple[str, str]] = []
    if isinstance(peers, Mapping):
        for peer in peers.values():
            if not isinstance(peer, Mapping) or peer.get("Online") is not True:
                continue
            address = _addressOf(peer.get("TailscaleIPs"), version)
            if address is not None and address not in view.selfAddresses:
                found.append((str(peer.get("HostName") or address), address))
    view.peers = sorted(set(found))
    return view


#: Backend states of a tailscaled that is still coming up (at boot).
STARTING_STATES = frozenset({"NoState", "Starting"})
#: How long start-up waits for such a tailscaled to be Running.
STARTING_WAIT = 10.0


def discover(
    path: str,
    version: int = 4,
    reader: Callable[[str], Any] = readStatus,
    wait: float = STARTING_WAIT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> TailnetView | None:
    """
    The tailnet seen from C{tailscaled} on C{path}; None when there is no
    such socket (no Tailscale on this host).  A tailscaled still starting
    (the agent started with the host) is asked again every half second for
    up to C{wait} seconds, so the node does not advertise another address
    or miss its peers for being early.

    @raise TailscaleError: when the socket is there but the status cannot
        be read.
    """
    deadline = clock() + wait
    while True:
        try:
            status = reader(path)
        except NoTailscale:
            return None
        view = parseStatus(status, version)
        if view.backendState not in STARTING_STATES or clock() >= deadline:
            return view
        sleep(0.5)
