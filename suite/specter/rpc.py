"""
The local RPC listener (C{--listen-rpc}) for tooling and C{specter dns}:
the same length-prefixed msgpack frames as the ring wire, without TLS and
without authentication (so it binds loopback or a unix socket).

    request   [0, id, nil, method, args]      methods: kv, lookup, holders, stats
    kv args   [op, key, [op args...]]         ops: get put delete list append
                                               contains remove acquire renew release
    response  [1, id, true, result] or [1, id, false, [code, message, nil]]
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.kv.versions import Version, describe
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.replication import OPS
from suite.specter.chord.wire import FrameProtocol
from suite.specter.interfaces import IRing

__all__ = ["RPCFactory", "RPCClient", "connectRPC", "versionsOut", "MAX_KEY", "MAX_VALUE", "MAX_TTL"]

log = Logger()
MAX_KEY = 4096
MAX_VALUE = 8 * 1024 * 1024
RPC_MAX_FRAME = 16 * 1024 * 1024
#: the longest lease an RPC may ask for, in seconds (one day)
MAX_TTL = 86400.0


KIND_NAMES = {"v": "value", "s": "set", "l": "lease"}


def versionsOut(versions: list[Any]) -> dict[str, Any]:
    """
    The versions of a key's records for people: per kind (C{value},
    C{set}, C{lease}), the stamp, its time, counter, origin and whether the
    record is a tombstone.
    """
    out: dict[str, Any] = {}
    for kind, hlc, origin, live in versions:
        out[KIND_NAMES.get(kind, kind)] = {**describe(Version(hlc, origin)), "deleted": not live}
    return out


def _ttl(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise RemoteError(E.BAD_REQUEST, "ttl must be a number of seconds")
    if not 0 < value <= MAX_TTL:
        raise RemoteError(E.BAD_REQUEST, f"ttl must be greater than 0 and at most {MAX_TTL:g} seconds")
    return float(value)


def _token(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise RemoteError(E.BAD_REQUEST, "token must be a non-negative integer")
    return value


def _bytes(value: Any, what: str, limit: int) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise RemoteError(E.BAD_REQUEST, f"{what} must be bytes or text")
    if len(value) > limit:
        raise RemoteError(E.BAD_REQUEST, f"{what} is longer than {limit} bytes")
    if not value and what in ("key", "holder"):
        raise RemoteError(E.BAD_REQUEST, f"{what} must not be empty")
    return value


class RPCFactory(Factory):
    """
    Serves the ring's KV to local tools.
    """

    def __init__(self, ring: Any, clock: Any = None) -> None:
        self.ring = IRing(ring)
        self.clock = clock
        self.requests = 0
        self.errors = 0

    def buildProtocol(self, addr: Any) -> FrameProtocol:
        p = FrameProtocol(self.dispatch, self.clock)
        p.MAX_LENGTH = RPC_MAX_FRAME
        return p

    def dispatch(self, _: Any, method: str, args: list[Any]) -> Deferred[Any]:
        self.requests += 1
        d = maybeDeferred(self._call, method, args)

        def bad(f: Failure) -> Failure:
            self.errors += 1
            if not f.check(RemoteError):
                log.failure("RPC {method} failed", f, method=method)
                raise RemoteError(E.INTERNAL, f"{method} failed")
            return f

        return d.addErrback(bad)

    def _call(self, method: str, args: list[Any]) -> Any:
        if method == "stats":
            return self.ring.stats()
        if method == "lookup":
            if len(args) != 1:
                raise RemoteError(E.BAD_REQUEST, "lookup takes [key]")
            key = _bytes(args[0], "key", MAX_KEY)
            return self.ring.lookupVersions(key).addCallback(
                lambda r: {
                    "owner": list(r[0]),
                    "replicas": [list(x) for x in r[1]],
                    "hops": r[2],
                    "versions": versionsOut(r[3]),
                }
            )
        if method == "holders":
            if len(args) != 1:
                raise RemoteError(E.BAD_REQUEST, "holders takes [key]")
            return self.ring.holders(_bytes(args[0], "key", MAX_KEY))
        if method == "kv":
            if len(args) != 3 or not isinstance(args[2], list):
                raise RemoteError(E.BAD_REQUEST, "kv takes [op, key, [args]]")
            op, key, opArgs = args
            if op not in OPS:
                raise RemoteError(E.BAD_REQUEST, f"unknown kv operation {op!r}")
            if len(opArgs) != OPS[op]:
                raise RemoteError(E.BAD_REQUEST, f"{op} takes {OPS[op]} argument(s)")
            key = _bytes(key, "key", MAX_KEY)
            if op in ("put", "append", "remove", "contains"):
                opArgs = [_bytes(opArgs[0], "value", MAX_VALUE)]
            elif op == "acquire":
                opArgs = [_bytes(opArgs[0], "holder", MAX_KEY), _ttl(opArgs[1])]
            elif op == "renew":
                opArgs = [_token(opArgs[0]), _ttl(opArgs[1])]
            elif op == "release":
                opArgs = [_token(opArgs[0])]
            return self.ring.kv(op, key, opArgs)
        raise RemoteError(E.BAD_REQUEST, f"unknown method {method!r}")


class RPCClient:
    """
    A connected RPC client.
    """

    def __init__(self, proto: FrameProtocol) -> None:
        self.proto = proto

    def call(self, method: str, *args: Any) -> Deferred[Any]:
        return self.proto.request(None, method, list(args))

    def kv(self, op: str, key: bytes, *args: Any) -> Deferred[Any]:
        return self.call("kv", op, key, list(args))

    def close(self) -> None:
        if self.proto.transport is not None:
            self.proto.transport.loseConnection()


def connectRPC(reactor: Any, description: str) -> Deferred[RPCClient]:
    """
    Connect to a server's --listen-rpc (client endpoint string).
    """
    endpoint = clientFromString(reactor, description)
    connected: Deferred[FrameProtocol] = endpoint.connect(Factory.forProtocol(FrameProtocol))
    return connected.addCallback(RPCClient)
