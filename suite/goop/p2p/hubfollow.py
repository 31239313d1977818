"""
Following a rendezvous hub's C{/events} stream: one stream at a time,
retried a fixed 2 s after it ends, until stopped.

Inputs: start, streamOpened, streamEnded, retryDue, stop.
States: Idle -> Following(stream) <-> Waiting(retry timer); every state
goes to Stopped on stop, which cancels the stream or the timer.

Each stream the hub answers (C{streamOpened}) is counted; every one after
the first means the stream came back (a hub restart, a proxy timeout), and
the hub may have lost the peer, so the core republishes at once as well
as re-reading the peer list.  The retry stays a fixed 2 s (not a backoff):
the guide promises a restarted hub lists its peers again within 5 s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["FollowCore", "FollowInputs", "FollowMachine", "RETRY_SECONDS"]

#: Pause between the end of one stream and the request for the next.
RETRY_SECONDS = 2.0


class FollowInputs(Protocol):
    def start(self) -> None:
        "Begin following the hub."

    def streamOpened(self) -> None:
        "The hub answered the stream request (200); its events follow."

    def streamEnded(self) -> None:
        "The stream ended, failed, or could not be opened."

    def retryDue(self) -> None:
        "The pause after a stream is over."

    def stop(self) -> None:
        "Stop following for good."


@dataclass
class FollowCore:
    """
    What the machine follows with.

    C{openStream(opened)} requests C{/events}, calls C{opened()} once the
    hub answers 200 and reads the stream; its Deferred fires (or fails)
    when the stream is over and cancelling it drops the stream.
    C{connected(again)} runs on every answered stream, C{again} when one
    was answered before.
    """

    clock: IReactorTime
    openStream: Callable[[Callable[[], None]], Deferred[Any]]
    connected: Callable[[bool], None]
    retrySeconds: float = RETRY_SECONDS
    #: Streams the hub answered so far.
    streams: int = 0


@dataclass
class Following:
    """Following's data: the stream being read."""

    stream: Deferred[Any]


@dataclass
class Waiting:
    """Waiting's data: the timer for the next stream."""

    retry: IDelayedCall

    def cancel(self) -> None:
        if self.retry.active():
            self.retry.cancel()


def _build() -> TypeMachine[FollowInputs, FollowCore]:
    b = TypeMachineBuilder(FollowInputs, FollowCore)
    idle = b.state("Idle")

    def openStream(inputs: FollowInputs, core: FollowCore) -> Following:
        d = core.openStream(inputs.streamOpened)
        # However it ends (a failure is the hub's or the network's, already
        # as good as logged by the retry), the stream is over.
        d.addErrback(lambda f: None)
        d.addBoth(lambda _: inputs.streamEnded())
        return Following(d)

    def retryTimer(inputs: FollowInputs, core: FollowCore) -> Waiting:
        return Waiting(core.clock.callLater(core.retrySeconds, inputs.retryDue))

    following = b.state("Following", openStream)
    waiting = b.state("Waiting", retryTimer)
    stopped = b.state("Stopped")

    idle.upon(FollowInputs.start).to(following).returns(None)

    @following.upon(FollowInputs.streamOpened).loop()
    def countStream(inputs: FollowInputs, core: FollowCore, data: Following) -> None:
        core.streams += 1
        core.connected(core.streams > 1)

    following.upon(FollowInputs.streamEnded).to(waiting).returns(None)

    @waiting.upon(FollowInputs.retryDue).to(following)
    def reopen(inputs: FollowInputs, core: FollowCore, data: Waiting) -> None:
        data.cancel()

    @following.upon(FollowInputs.stop).to(stopped)
    def dropStream(inputs: FollowInputs, core: FollowCore, data: Following) -> None:
        # Its end (streamEnded) arrives in Stopped, which ignores it.
        data.stream.cancel()

    @waiting.upon(FollowInputs.stop).to(stopped)
    def cancelRetry(inputs: FollowInputs, core: FollowCore, data: Waiting) -> None:
        data.cancel()

    idle.upon(FollowInputs.stop).to(stopped).returns(None)

    # Already following (or waiting to), or stopped for good: a start
    # changes nothing.  A stream opens or ends only while Following, and
    # the retry timer fires only while Waiting (leaving Waiting cancels
    # it); elsewhere these are a cancelled stream's last word, ignored.
    following.upon(FollowInputs.start).loop().returns(None)
    following.upon(FollowInputs.retryDue).loop().returns(None)
    waiting.upon(FollowInputs.start).loop().returns(None)
    waiting.upon(FollowInputs.streamOpened).loop().returns(None)
    waiting.upon(FollowInputs.streamEnded).loop().returns(None)
    idle.upon(FollowInputs.streamOpened).loop().returns(None)
    idle.upon(FollowInputs.streamEnded).loop().returns(None)
    idle.upon(FollowInputs.retryDue).loop().returns(None)
    stopped.upon(FollowInputs.start).loop().returns(None)
    stopped.upon(FollowInputs.streamOpened).loop().returns(None)
    stopped.upon(FollowInputs.streamEnded).loop().returns(None)
    stopped.upon(FollowInputs.retryDue).loop().returns(None)
    stopped.upon(FollowInputs.stop).loop().returns(None)
    return b.build()


FollowMachine = _build()
