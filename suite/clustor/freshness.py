"""
Freshness of one control-plane feed: a small machine that turns the
clock-driven staleness checks into exactly one warning when the feed goes
stale and one notice when it recovers.

  inputs:  refreshed() - a fetch succeeded;
           overdue(stalenessMs, thresholdMs, lastError) - a check found the
           feed older than its threshold.
  outputs: warnStale, noteRecovered (log lines).
  states:  Fresh (initial), Stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.logger import Logger

__all__ = ["FeedFreshness", "FreshnessCore", "FreshnessMachine"]


class FeedFreshness(Protocol):
    """
    Inputs of the freshness machine.
    """

    def refreshed(self) -> None:
        """
        The feed was fetched successfully (or confirmed unchanged).
        """

    def overdue(self, stalenessMs: float, thresholdMs: int, lastError: str | None) -> None:
        """
        A periodic check found the feed older than C{thresholdMs}.
        """


@dataclass
class FreshnessCore:
    """
    What the machine's outputs use: the feed's name and where to log.
    """

    feed: str
    log: Logger


def _build() -> TypeMachine[FeedFreshness, FreshnessCore]:
    builder = TypeMachineBuilder(FeedFreshness, FreshnessCore)
    fresh = builder.state("Fresh")
    stale = builder.state("Stale")

    fresh.upon(FeedFreshness.refreshed).loop().returns(None)
    stale.upon(FeedFreshness.overdue).loop().returns(None)

    @fresh.upon(FeedFreshness.overdue).to(stale)
    def warnStale(
        inputs: FeedFreshness,
        core: FreshnessCore,
        stalenessMs: float,
        thresholdMs: int,
        lastError: str | None,
    ) -> None:
        core.log.warn(
            "control-plane feed {feed} is stale: no refresh for {stalenessMs:.0f} ms "
            "(threshold {thresholdMs} ms; last error: {error})",
            feed=core.feed,
            stalenessMs=stalenessMs,
            thresholdMs=thresholdMs,
            error=lastError or "none",
        )

    @stale.upon(FeedFreshness.refreshed).to(fresh)
    def noteRecovered(inputs: FeedFreshness, core: FreshnessCore) -> None:
        core.log.info("control-plane feed {feed} is fresh again", feed=core.feed)

    return builder.build()


#: Build one per feed: C{FreshnessMachine(FreshnessCore(name, log))}.
FreshnessMachine = _build()
