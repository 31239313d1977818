"""
The local RPC listener (C{--listen-rpc}) for tooling and C{specter dns}:
the same length-prefixed msgpack frames as the ring wire, without TLS (so
it binds loopback or a unix socket).  A TCP connection authenticates first
with the node's token, a unix one by its peer's uid (L{suite.specter.rpcauth}).

    auth      [0, id, nil, "auth", [token]]   the first frame of a TCP client
    request   [0, id, nil, method, args]      methods: kv, lookup, holders, stats
    kv args   [op, key, [op args...]]         ops: get put delete list append
                                               contains remove acquire renew release
    response  [1, id, true, result] or [1, id, false, [code, message, nil]]
"""

from __future__ import annotations

import os
from collections.abc import Callable
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
from suite.specter.rpcauth import (
    AUTH_METHOD,
    HANDSHAKE_MAX,
    GateCore,
    GateMachine,
    RefusalLog,
    checkToken,
    peerUid,
    trustedUid,
)

__all__ = [
    "RPCFactory",
    "RPCClient",
    "RPCClientProtocol",
    "RPCServerProtocol",
    "connectRPC",
    "versionsOut",
    "MAX_KEY",
    "MAX_VALUE",
    "MAX_TTL",
]

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


def _describe(addr: Any) -> str:
    host, port = getattr(addr, "host", None), getattr(addr, "port", None)
    if host is not None:
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    name = getattr(addr, "name", None)
    return f"unix socket {name.decode(errors='replace') if isinstance(name, bytes) else name or ''}".rstrip()


class RPCServerProtocol(FrameProtocol):
    """
    One RPC connection, judged by its gate
    (L{suite.specter.rpcauth.GateMachine}): until the gate opens, frames
    are limited to L{HANDSHAKE_MAX} bytes and every request goes through
    the machine.  Opening (the gate's C{opened} output) lifts the limit and
    routes calls straight to dispatch, so authenticated calls cost what
    they did without authentication; only a repeated handshake and an
    oversized frame still reach the machine.
    """

    MAX_LENGTH = HANDSHAKE_MAX

    def __init__(self, factory: RPCFactory, peer: str) -> None:
        super().__init__(factory.dispatch, factory.clock)
        self.factory = factory
        self.core = GateCore(
            answer=self._answer,
            serve=super()._serve,
            close=self._closeNow,
            opened=self._opened,
            refusals=factory.refusals,
            peer=peer,
        )
        self.gate = GateMachine(self.core)
        self._route: Callable[[Any, Any, Any, Any], None] = self._gated

    def _opened(self) -> None:
        self.MAX_LENGTH = RPC_MAX_FRAME
        self._route = self._direct

    def connectionMade(self) -> None:
        super().connectionMade()
        uid = peerUid(self.transport)
        if uid is None:
            return
        self.core.peer = f"{self.core.peer} (uid {uid})"
        if trustedUid(uid, self.factory.uid):
            self.gate.peerTrusted()
        else:
            self.gate.peerRefused(uid)

    def lengthLimitExceeded(self, length: int) -> None:
        self.gate.oversized(length)

    def _serve(self, rid: Any, vid: Any, method: Any, args: Any) -> None:
        self._route(rid, vid, method, args)

    def _handshake(self, rid: Any, args: Any) -> None:
        why = checkToken(self.factory.token, args)
        if why is None:
            self.gate.tokenAccepted(rid)
        else:
            self.gate.tokenRefused(rid, why)

    def _gated(self, rid: Any, vid: Any, method: Any, args: Any) -> None:
        if method == AUTH_METHOD:
            self._handshake(rid, args)
        else:
            self.gate.call(rid, vid, method, args)

    def _direct(self, rid: Any, vid: Any, method: Any, args: Any) -> None:
        if method == AUTH_METHOD:
            self._handshake(rid, args)
        else:
            FrameProtocol._serve(self, rid, vid, method, args)

    def _closeNow(self) -> None:
        # the refusal frame goes out before the connection closes
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
            self._flush()
        self._close()


class RPCFactory(Factory):
    """
    Serves the ring's KV to local tools: TCP connections that present
    C{token}, unix socket connections of user C{uid} (default: this
    process's) or root.
    """

    def __init__(self, ring: Any, clock: Any = None, *, token: bytes, uid: int | None = None) -> None:
        self.ring = IRing(ring)
        self.clock = clock
        self.token = token
        self.uid = os.getuid() if uid is None else uid
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.refusals = RefusalLog(clock)
        self.requests = 0
        self.errors = 0

    def buildProtocol(self, addr: Any) -> FrameProtocol:
        return RPCServerProtocol(self, _describe(addr))

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


class RPCClientProtocol(FrameProtocol):
    """
    The client end: a refusal the server sends outside any call (response
    id 0: a unix peer of another user, an oversized first frame) fails
    every call of the connection with the server's reason.
    """

    def __init__(self) -> None:
        super().__init__()
        self.refusal: RemoteError | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        refusal: Deferred[Any] = Deferred()
        refusal.addErrback(self._refused)
        self.pending[0] = refusal

    def _refused(self, f: Failure) -> None:
        if isinstance(f.value, RemoteError):
            self.refusal = f.value

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        pending = self.pending
        refusal = pending.pop(0, None)
        if refusal is not None and not refusal.called:
            refusal.callback(None)
        if self.refusal is not None:
            self.pending = {}
            for d in pending.values():
                d.errback(self.refusal)
        super().connectionLost(reason)


class _ClientFactory(Factory):
    noisy = False
    protocol = RPCClientProtocol


class RPCClient:
    """
    A connected RPC client.
    """

    def __init__(self, proto: FrameProtocol) -> None:
        self.proto = proto

    def authenticate(self, token: bytes) -> Deferred[RPCClient]:
        """
        Send the handshake; fires with this client once the server accepted
        the token, fails with the server's refusal otherwise.
        """
        return self.proto.request(None, AUTH_METHOD, [token]).addCallback(lambda _: self)

    def call(self, method: str, *args: Any) -> Deferred[Any]:
        return self.proto.request(None, method, list(args))

    def kv(self, op: str, key: bytes, *args: Any) -> Deferred[Any]:
        return self.call("kv", op, key, list(args))

    def close(self) -> None:
        if self.proto.transport is not None:
            self.proto.transport.loseConnection()


def connectRPC(reactor: Any, description: str, token: bytes | None = None) -> Deferred[RPCClient]:
    """
    Connect to a server's --listen-rpc (client endpoint string) and, over
    TCP with a C{token}, authenticate (see L{suite.specter.rpcauth}); a unix
    socket connection is authenticated by its user.
    """
    endpoint = clientFromString(reactor, description)
    connected: Deferred[FrameProtocol] = endpoint.connect(_ClientFactory())

    def up(proto: FrameProtocol) -> Any:
        client = RPCClient(proto)
        if token is None or description.startswith("unix:"):
            return client
        d = client.authenticate(token)

        def refused(f: Failure) -> Failure:
            client.close()
            return f

        return d.addErrback(refused)

    return connected.addCallback(up)
