"""
Helpers every part of a vnode uses: checks of versions and records received
from the wire, running a procedure in the background with its failure
logged, and sleeping on the injected clock.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from suite.kv.records import KINDS, Incoming
from suite.kv.versions import Version
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef

__all__ = ["records", "sleep", "spawn", "version"]

T = TypeVar("T")
log = Logger()


_U64 = 1 << 64


def version(value: Any) -> Version:
    """
    Check a version received from the wire: C{[hlc, origin]}, each an
    unsigned 64-bit integer.
    """
    hlc, origin = value
    if type(hlc) is not int or type(origin) is not int or not (0 <= hlc < _U64 and 0 <= origin < _U64):
        raise RemoteError(E.BAD_REQUEST, "malformed version")
    return Version(hlc, origin)


def records(value: Any) -> list[Incoming]:
    """
    Check records received from the wire: C{[kind, key, payload-or-nil, hlc,
    origin]} (L{suite.kv.records.Record}, flat: one array per record), or
    C{[kind, key, payload-or-nil]} from a peer without versions (imported
    as a new write, see L{suite.kv.interfaces}).
    """
    out: list[Incoming] = []
    append = out.append
    for item in value:
        if len(item) == 5:
            kind, key, payload, hlc, origin = item
            # (msgpack integers are below 2**64 already)
            if type(hlc) is not int or type(origin) is not int or hlc < 0 or origin < 0:
                raise RemoteError(E.BAD_REQUEST, "malformed version")
        else:
            kind, key, payload = item
            hlc, origin = None, 0
        if kind not in KINDS or type(key) is not bytes or not (payload is None or type(payload) is bytes):
            raise RemoteError(E.BAD_REQUEST, "malformed record")
        append((kind, key, payload, hlc, origin))
    return out


def spawn(coro: Coroutine[Any, Any, T], what: str, vnode: VnodeRef) -> Deferred[T]:
    """
    Run C{coro} (procedure C{what} of C{vnode}) in the background; a failure
    is logged, never left unhandled.
    """
    d: Deferred[T] = Deferred.fromCoroutine(coro)

    def failed(f: Any) -> None:
        log.failure("vnode {vnode}: {what} failed", f, vnode=vnode.short(), what=what)

    d.addErrback(failed)
    return d


async def sleep(clock: IReactorTime, seconds: float) -> None:
    d: Deferred[None] = Deferred()
    clock.callLater(seconds, d.callback, None)
    await d
