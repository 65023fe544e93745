"""Bounded exponential backoff with jitter for transient failures (timeouts, resets, 5xx, 429)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from clusters.connector.errors import is_retriable, retry_after

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the n-th wait is ``min(max_delay, base_delay * 2**n)`` scaled by a random
    factor in [0.5, 1] (jitter), or the server's Retry-After when it asks (capped at ``max_delay``); no
    wait makes the whole call exceed ``deadline`` seconds."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    deadline: float = 60.0

    def delay(self, attempt: int, exc: BaseException) -> float:
        asked = retry_after(exc)
        if asked is not None:
            return min(self.max_delay, asked)
        backoff = min(self.max_delay, self.base_delay * (2**attempt))
        return backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography


NO_RETRY = RetryPolicy(attempts=1)


def call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn``; retry it on transient failures within the policy; re-raise the last failure."""
    start = time.monotonic()
    attempt = 0
    waited = 0.0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            if attempt >= policy.attempts or not is_retriable(exc):
                raise
            wait = policy.delay(attempt - 1, exc)
            if max(time.monotonic() - start, waited) + wait > policy.deadline:
                raise
            waited += wait
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)
