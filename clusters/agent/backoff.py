"""Exponential backoff with jitter, for calls to Fleetgate that may fail while it restarts or is away."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """The n-th wait (n from 0) is ``min(cap, base * factor**n)`` scaled by a random factor in
    ``[1 - jitter, 1]``, so many agents that lost Fleetgate at the same moment do not come back in step.
    :meth:`reset` after a success starts again from ``base``."""

    base: float = 1.0
    cap: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)
    failures: int = 0

    def peek(self) -> float:
        """The un-jittered wait the next failure gets."""
        return min(self.cap, self.base * (self.factor**self.failures))

    def next(self) -> float:
        """Count one more failure and return how long to wait before trying again."""
        ceiling = self.peek()
        self.failures += 1
        return ceiling * self.rng.uniform(1.0 - self.jitter, 1.0)

    def reset(self) -> None:
        self.failures = 0
