"""
The per-lease hold machine (L{newLeaseHold}): whether this node may act
under a lease, and until when.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.logger import Logger

from suite.constellation.leases.table import _LABEL

log = Logger(namespace="constellation.leases")


# -- the per-lease hold machine -------------------------------------------
#
# Inputs (L{HoldInputs}): confirmed (a grant or renewal for this node
# committed), expired (private: the expiry timer fired), moved (the lease
# changed hands or token), released (this node gives the lease up), plus
# the questions token and until, answered in every state.
# Outputs (through L{HoldCore}): log lines and C{notify} (the keeper's
# change callbacks).
# States: Free; Holding (data: L{_Held}, the fencing token, the end of
# acting and the expiry timer, armed on entry and re-armed by a renewal,
# cancelled by the transition that leaves).


class HoldInputs(Protocol):
    def confirmed(self, token: int, until: float) -> None:
        """
        A grant or renewal proposed by this node committed: it may act under
        C{token} until C{until} (its own monotonic clock).
        """

    def expired(self) -> None:
        """
        The expiry timer fired: the lease was not renewed in time.
        """

    def moved(self, why: str) -> None:
        """
        The replicated lease no longer names this node with its token, or
        this node stops holding it for C{why}.
        """

    def released(self) -> int | None:
        """
        This node hands the lease over: stop acting; the token to release,
        or None if nothing is held.
        """

    def token(self) -> int | None:
        """
        The fencing token held (acting or not), or None.
        """

    def until(self) -> float | None:
        """
        When acting ends on this node's clock, or None.
        """


@dataclass
class HoldCore:
    name: str
    clock: Any
    now: Callable[[], float]
    notify: Callable[[], None]


@dataclass
class _Held:
    token: int
    until: float
    timer: Any = None

    def arm(self, inputs: HoldInputs, core: HoldCore) -> None:
        self.cancel()

        def fire() -> None:
            # The reactor's clock and the monotonic one may differ a little:
            # a timer that fires early waits for the rest.
            self.timer = None
            if core.now() >= self.until:
                inputs.expired()
            else:
                self.arm(inputs, core)

        self.timer = core.clock.callLater(max(0.0, self.until - core.now()), fire)

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


def _buildHold() -> TypeMachine[HoldInputs, HoldCore]:
    b = TypeMachineBuilder(HoldInputs, HoldCore)
    free = b.state("Free")

    def holding_(inputs: HoldInputs, core: HoldCore, token: int, until: float) -> _Held:
        held = _Held(token, until)
        held.arm(inputs, core)
        return held

    holding = b.state("Holding", holding_)

    @free.upon(HoldInputs.confirmed).to(holding)
    def acquired(inputs: HoldInputs, core: HoldCore, token: int, until: float) -> None:
        log.info("acquired {label} lease (fencing token {fence})", label=_LABEL[core.name], fence=token)
        core.notify()

    @holding.upon(HoldInputs.confirmed).loop()
    def renewed(inputs: HoldInputs, core: HoldCore, held: _Held, token: int, until: float) -> None:
        held.token, held.until = token, until
        held.arm(inputs, core)

    @free.upon(HoldInputs.expired).loop()
    def stale(inputs: HoldInputs, core: HoldCore) -> None:
        pass

    @holding.upon(HoldInputs.expired).to(free)
    def ranOut(inputs: HoldInputs, core: HoldCore, held: _Held) -> None:
        lose(core, held, "not renewed in time")

    @free.upon(HoldInputs.moved).loop()
    def notHeld(inputs: HoldInputs, core: HoldCore, why: str) -> None:
        pass

    @holding.upon(HoldInputs.moved).to(free)
    def lost(inputs: HoldInputs, core: HoldCore, held: _Held, why: str) -> None:
        lose(core, held, why)

    def lose(core: HoldCore, held: _Held, why: str) -> None:
        held.cancel()
        log.warn(
            "lost {label} lease (fencing token {fence}): {why}",
            label=_LABEL[core.name],
            fence=held.token,
            why=why,
        )
        core.notify()

    @free.upon(HoldInputs.released).loop()
    def nothingToRelease(inputs: HoldInputs, core: HoldCore) -> int | None:
        return None

    @holding.upon(HoldInputs.released).to(free)
    def release(inputs: HoldInputs, core: HoldCore, held: _Held) -> int | None:
        held.cancel()
        log.info("releasing {label} lease (fencing token {fence})", label=_LABEL[core.name], fence=held.token)
        return held.token

    @free.upon(HoldInputs.token).loop()
    def noToken(inputs: HoldInputs, core: HoldCore) -> int | None:
        return None

    @holding.upon(HoldInputs.token).loop()
    def heldToken(inputs: HoldInputs, core: HoldCore, held: _Held) -> int | None:
        return held.token

    @free.upon(HoldInputs.until).loop()
    def noUntil(inputs: HoldInputs, core: HoldCore) -> float | None:
        return None

    @holding.upon(HoldInputs.until).loop()
    def heldUntil(inputs: HoldInputs, core: HoldCore, held: _Held) -> float | None:
        return held.until

    return b.build()


newLeaseHold = _buildHold()
