"""
Exponential backoff with jitter, for anything that retries on a clock
(tunnel links reconnecting, ACME orders after a failure, ...).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """
    The n-th delay after consecutive failures is uniform in [c/2, c] with
    c = min(maximum, initial * 2**n) (exactly c without C{jitter});
    L{reset} after a success.
    """

    initial: float = 0.5
    maximum: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    jitter: bool = True

    def next(self) -> float:
        """
        The next delay; each call doubles the ceiling.
        """
        ceiling = min(self.maximum, self.initial * (2.0**self.failures))
        self.failures += 1
        if not self.jitter:
            return ceiling
        return ceiling / 2 + self.rng.random() * ceiling / 2

    def reset(self) -> None:
        """
        Start small again.
        """
        self.failures = 0
