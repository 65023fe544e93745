"""Fault injection for one virtual cluster, settable at runtime (from tests or the admin endpoint)."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

# What to do with one request: ("ok", None), ("error", code), ("drop", None), ("down", None)
Decision = tuple[str, int | None]


@dataclass
class FaultSnapshot:
    latency: float
    error_rate: float
    error_codes: tuple[int, ...]
    drop_rate: float
    down: bool
    pending_failures: int
    pending_drops: int


class Faults:
    """Faults injected into every request to one cluster.

    - ``latency``: seconds added before each answer.
    - ``error_rate`` (0..1) with ``error_codes``: answer an error Status (500/503/429…) at random;
      ``seed(n)`` makes the sequence reproducible.
    - ``fail_next(n, code)``: the next n requests get ``code`` (deterministic).
    - ``drop_rate`` / ``drop_next(n)``: read the request, then close the connection without an answer.
    - ``down``: the cluster is unreachable: connections are reset (or refused when the cluster has its own
      port, see ``SandboxServer.add_cluster(own_port=True)``).
    """

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self.latency = 0.0
        self.error_rate = 0.0
        self.error_codes: tuple[int, ...] = (500, 503, 429)
        self.drop_rate = 0.0
        self._down = False
        self._fail_queue: list[int] = []
        self._drops = 0
        self.on_down_change: Any = None  # set by the server for clusters with their own port
        self.requests = 0  # requests seen (including faulted ones)

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        changed = bool(value) != self._down
        self._down = bool(value)
        if changed and self.on_down_change is not None:
            self.on_down_change(self._down)

    def seed(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)  # noqa: S311

    def fail_next(self, n: int = 1, code: int = 503) -> None:
        if code < 400 or code > 599:
            raise ValueError("code must be an HTTP error status (400-599)")
        with self._lock:
            self._fail_queue.extend([code] * int(n))

    def drop_next(self, n: int = 1) -> None:
        with self._lock:
            self._drops += int(n)

    def clear(self) -> None:
        with self._lock:
            self.latency = 0.0
            self.error_rate = 0.0
            self.drop_rate = 0.0
            self._fail_queue.clear()
            self._drops = 0
        self.down = False

    def configure(self, **values: Any) -> None:
        """Set several knobs at once (``latency``, ``error_rate``, ``error_codes``, ``drop_rate``, ``down``,
        ``seed``, ``fail_next`` (n or [n, code]), ``drop_next``); unknown names raise ValueError."""
        for key, value in values.items():
            if key == "latency":
                self.latency = max(0.0, float(value))
            elif key == "error_rate":
                self.error_rate = min(1.0, max(0.0, float(value)))
            elif key == "error_codes":
                self.error_codes = tuple(int(c) for c in value)
            elif key == "drop_rate":
                self.drop_rate = min(1.0, max(0.0, float(value)))
            elif key == "down":
                self.down = bool(value)
            elif key == "seed":
                self.seed(int(value))
            elif key == "fail_next":
                n, code = (value, 503) if isinstance(value, int) else (value[0], value[1])
                self.fail_next(int(n), int(code))
            elif key == "drop_next":
                self.drop_next(int(value))
            else:
                raise ValueError(f"unknown fault {key!r}")

    def snapshot(self) -> FaultSnapshot:
        with self._lock:
            return FaultSnapshot(
                self.latency,
                self.error_rate,
                self.error_codes,
                self.drop_rate,
                self._down,
                len(self._fail_queue),
                self._drops,
            )

    def decide(self) -> Decision:
        """The fate of the next request (consumes one deterministic failure or drop, if queued)."""
        with self._lock:
            self.requests += 1
            if self._down:
                return ("down", None)
            if self._fail_queue:
                return ("error", self._fail_queue.pop(0))
            if self._drops:
                self._drops -= 1
                return ("drop", None)
            if self.drop_rate and self._rng.random() < self.drop_rate:
                return ("drop", None)
            if self.error_rate and self.error_codes and self._rng.random() < self.error_rate:
                return ("error", self._rng.choice(self.error_codes))
            return ("ok", None)
