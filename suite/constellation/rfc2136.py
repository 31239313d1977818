"""
RFC 2136 dynamic updates signed with TSIG (RFC 8945), over TCP, built with
dnspython and sent on the reactor.

Reads are TSIG-signed zone transfers (the key needs C{allow-transfer} as
well as the update grant).

Fencing: the zone holds a TXT record C{_constellation-fence.ZONE} with the
highest token that has written.  A writer first raises it to its own token
with a compare-and-set update (prerequisite: the value it read, or absence),
refusing when it reads a higher one; every later update carries the
prerequisite "the fence TXT is exactly my token".  The server applies an
update and checks its prerequisites atomically, so once a newer writer has
raised the fence, every update of the deposed writer fails (NXRRSET): the
fence is exact for this provider.
"""

from __future__ import annotations

import binascii
import re
import struct
from collections.abc import Sequence
from typing import Any

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.constellation.dns import FENCE_LABEL, Fenced, addressType
from suite.constellation.interfaces import IDNSProvider
from suite.daemon import ConfigError

__all__ = ["RFC2136Provider", "readTSIGKey", "DNSUpdateError"]

log = Logger(namespace="constellation.dns")

_KEY = re.compile(
    r'key\s+"?(?P<name>[A-Za-z0-9._-]+)"?\s*\{\s*algorithm\s+"?(?P<alg>[A-Za-z0-9-]+)"?\s*;'
    r'\s*secret\s+"(?P<secret>[A-Za-z0-9+/=]+)"\s*;\s*\}\s*;',
    re.S,
)
_MAX_KEY_FILE = 4096
TTL = 60


class DNSUpdateError(Exception):
    """
    The server refused or did not answer; the message says how.
    """


#: The algorithms C{tsig-keygen} writes, as dnspython names them.
TSIG_ALGORITHMS = {
    "hmac-md5": "hmac-md5.sig-alg.reg.int",
    "hmac-sha1": "hmac-sha1",
    "hmac-sha224": "hmac-sha224",
    "hmac-sha256": "hmac-sha256",
    "hmac-sha384": "hmac-sha384",
    "hmac-sha512": "hmac-sha512",
}
_TSIG_FLAG = "--tsig-key-file (CONSTELLATION_TSIG_KEY_FILE)"


def readTSIGKey(path: str) -> tuple[str, str, str]:
    """
    C{(name, algorithm, base64 secret)} from a BIND key file as
    C{tsig-keygen} writes it; the algorithm as dnspython names it.

    @raise ConfigError: naming the flag, the file and what is wrong with it.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise ConfigError(f"{_TSIG_FLAG}: cannot read {path}: {e.strerror or e}") from None
    m = _KEY.search(text)
    if len(text) > _MAX_KEY_FILE or m is None:
        raise ConfigError(
            f'{_TSIG_FLAG}: {path} is not a key file (key "NAME" {{ algorithm ...; secret "..."; }};)'
        )
    algorithm = m.group("alg").lower().removesuffix(".sig-alg.reg.int")
    if algorithm not in TSIG_ALGORITHMS:
        raise ConfigError(
            f"{_TSIG_FLAG}: {path}: algorithm {m.group('alg')!r} is not one of {', '.join(TSIG_ALGORITHMS)}"
        )
    try:
        binascii.a2b_base64(m.group("secret").encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{_TSIG_FLAG}: {path}: the secret is not base64") from None
    return m.group("name"), TSIG_ALGORITHMS[algorithm], m.group("secret")


class _Exchange(Protocol):
    def __init__(self, wire: bytes, done: Deferred[bytes]) -> None:
        self.wire, self.done, self.buf = wire, done, b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(struct.pack(">H", len(self.wire)) + self.wire)

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= 2:
            (length,) = struct.unpack(">H", self.buf[:2])
            if len(self.buf) >= 2 + length:
                if not self.done.called:
                    self.done.callback(self.buf[2 : 2 + length])
                assert self.transport is not None
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.errback(DNSUpdateError("connection closed before an answer"))


@implementer(IDNSProvider)
class RFC2136Provider:
    """
    Dynamic updates to C{server} (host, port) for C{zone}.
    """

    name = "rfc2136"
    fencing = (
        "exact: every update carries the prerequisite that the zone's fence TXT record equals the "
        "writer's token, checked atomically by the server; a deposed writer's update is refused"
    )

    def __init__(
        self,
        reactor: Any,
        server: tuple[str, int],
        zone: str,
        key: tuple[str, str, str],
        timeout: float = 5.0,
    ) -> None:
        self.reactor, self.server, self.timeout = reactor, server, timeout
        self.zone = dns.name.from_text(zone)
        keyName, algorithm, secret = key
        self.keyring = dns.tsigkeyring.from_text({keyName: (algorithm, secret)})
        self.keyName = dns.name.from_text(keyName)
        self.fenceName = dns.name.from_text(FENCE_LABEL, self.zone)
        self.fencedAt: int | None = None

    async def _exchange(self, message: Any) -> Any:
        wire = message.to_wire()
        done: Deferred[bytes] = Deferred()
        host, port = self.server
        endpoint: Any = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(
            self.reactor, host, port, timeout=int(self.timeout)
        )

        def timedOut() -> None:
            if not done.called:
                done.errback(DNSUpdateError("timed out"))

        timer = self.reactor.callLater(self.timeout, timedOut)
        try:
            proto = await endpoint.connect(Factory.forProtocol(lambda: _Exchange(wire, done)))
            try:
                data = await done
            finally:
                if proto.transport is not None:
                    proto.transport.loseConnection()
        except ConnectionError as e:
            raise DNSUpdateError(f"{host}:{port}: {e}") from None
        finally:
            if timer.active():
                timer.cancel()
        kwargs: dict[str, Any] = {}
        if message.keyring is not None:
            kwargs = {"keyring": self.keyring, "request_mac": message.mac}
        try:
            return dns.message.from_wire(data, **kwargs)
        except Exception as e:  # untrusted input: one DNSUpdateError
            raise DNSUpdateError(f"bad answer from {host}:{port}: {e}") from None

    async def _query(self, name: str | dns.name.Name, rdtype: str) -> list[str]:
        q = dns.message.make_query(name, rdtype)
        q.flags &= ~dns.flags.RD
        answer = await self._exchange(q)
        out: list[str] = []
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.from_text(rdtype):
                out.extend(r.to_text() for r in rrset)
        return out

    async def records(self, names: Sequence[str]) -> dict[str, list[str]]:
        """
        The zone's address records at C{names}, read with a TSIG-signed
        zone transfer (exact owners: a query could not tell a record at
        C{*.node.DOMAIN} from one synthesised by C{*.DOMAIN}).
        """
        wanted = {dns.name.from_text(n + ".") for n in names}
        host, port = self.server

        def transfer() -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for message in dns.query.xfr(
                host,
                self.zone,
                port=port,
                keyring=self.keyring,
                keyname=self.keyName,
                lifetime=self.timeout,
                timeout=self.timeout,
                relativize=False,
            ):
                if message.rcode() != dns.rcode.NOERROR:
                    raise DNSUpdateError(f"zone transfer refused: {dns.rcode.to_text(message.rcode())}")
                for rrset in message.answer:
                    if rrset.name in wanted and rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                        out.setdefault(rrset.name.to_text(omit_final_dot=True), []).extend(
                            r.to_text() for r in rrset
                        )
            return {k: sorted(set(v)) for k, v in out.items()}

        try:
            return await deferToThreadPool(self.reactor, self.reactor.getThreadPool(), transfer)
        except DNSUpdateError:
            raise
        except Exception as e:  # one DNSUpdateError with the reason
            raise DNSUpdateError(f"zone transfer from {host}:{port} failed: {e}") from None

    async def fenceValue(self) -> int | None:
        values = await self._query(self.fenceName, "TXT")
        tokens = [int(v.strip('"')) for v in values if v.strip('"').isdigit()]
        return max(tokens) if tokens else None

    def _update(self) -> Any:
        return dns.update.UpdateMessage(self.zone, keyring=self.keyring, keyname=self.keyName)

    async def _send(self, update: Any, what: str) -> None:
        answer = await self._exchange(update)
        rcode = answer.rcode()
        if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN):
            raise Fenced(f"{what}: prerequisite failed ({dns.rcode.to_text(rcode)})")
        if rcode != dns.rcode.NOERROR:
            raise DNSUpdateError(f"{what}: server answered {dns.rcode.to_text(rcode)}")

    async def _raiseFence(self, token: int) -> None:
        current = await self.fenceValue()
        if current is not None and current > token:
            raise Fenced(f"the zone's fence is at token {current}, above ours ({token})")
        if current == token:
            self.fencedAt = token
            return
        update = self._update()
        if current is None:
            update.absent(self.fenceName, "TXT")
        else:
            update.present(self.fenceName, "TXT", f'"{current}"')
        update.replace(self.fenceName, TTL, "TXT", f'"{token}"')
        await self._send(update, f"raising the fence to {token}")
        self.fencedAt = token

    async def apply(self, changes: Sequence[tuple[str, Sequence[str]]], token: int) -> None:
        if self.fencedAt != token:
            await self._raiseFence(token)
        update = self._update()
        update.present(self.fenceName, "TXT", f'"{token}"')
        for name, addrs in changes:
            owner = dns.name.from_text(name + ".")
            for rdtype in ("A", "AAAA"):
                wanted = [a for a in addrs if addressType(a) == rdtype]
                if wanted:
                    update.replace(owner, TTL, rdtype, *wanted)
                else:
                    update.delete(owner, rdtype)
        try:
            await self._send(update, f"update under token {token}")
        except Fenced:
            self.fencedAt = None
            raise
