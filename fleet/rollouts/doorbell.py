"""Pull mode: the doorbell a waiting agent poll listens to (Django cache key ``agent-work:<cluster_id>``).

A service that hands a pull-mode cluster new work (a leg queued, a retry due) rings it after its transaction
commits; a long poll of the cluster's agent reads the key while it waits and looks for work again when the
value changes. The cache is shared by every Fleetgate process (Redis in production), so a leg queued by a
worker wakes a poll held by a web process.

Waiting polls do not each read the cache: one watcher thread per process reads the doorbells of every poll
waiting in that process with one ``get_many`` (a Redis MGET) every ``WATCH_INTERVAL`` seconds and wakes the
polls whose doorbell changed; a waiting poll sleeps on its own event. A thousand agents waiting cost four
cache reads a second per web process, not four thousand (bench/bench_agents.py)."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from django.core.cache import cache
from django.db import transaction

WATCH_INTERVAL = 0.25  # seconds between the watcher's reads: how late a rung doorbell wakes its poll

log = logging.getLogger(__name__)


def key(cluster_id: int) -> str:
    return f"agent-work:{cluster_id}"


def ring_now(cluster_id: int) -> None:
    cache.set(key(cluster_id), uuid.uuid4().hex, timeout=3600)


def ring(cluster_id: int) -> None:
    """Ring the cluster's doorbell once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: ring_now(cluster_id))


def current(cluster_id: int) -> str | None:
    value = cache.get(key(cluster_id))
    return None if value is None else str(value)


class _Waiter:
    def __init__(self, seen: str | None) -> None:
        self.seen = seen
        self.now = seen
        self.event = threading.Event()


class _Watcher:
    """The process's one reader of waiting polls' doorbells (started on the first wait)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, list[_Waiter]] = {}
        self._thread: threading.Thread | None = None
        self.reads = 0  # get_many calls so far (tests look at it)

    def wait(self, cluster_id: int, seen: str | None, timeout: float) -> tuple[bool, str | None]:
        waiter = _Waiter(seen)
        with self._lock:
            self._waiters.setdefault(cluster_id, []).append(waiter)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="agent-doorbells")
                self._thread.start()
        try:
            rang = waiter.event.wait(max(0.0, timeout))
        finally:
            with self._lock:
                left = [w for w in self._waiters.get(cluster_id, []) if w is not waiter]
                if left:
                    self._waiters[cluster_id] = left
                else:
                    self._waiters.pop(cluster_id, None)
        return rang, waiter.now

    def _run(self) -> None:
        while True:
            time.sleep(WATCH_INTERVAL)
            with self._lock:
                waiting = {cluster_id: list(ws) for cluster_id, ws in self._waiters.items()}
            if not waiting:
                continue
            try:
                values = cache.get_many([key(cluster_id) for cluster_id in waiting])
                self.reads += 1
            except Exception:  # the cache is down: the polls time out and their agents poll again
                log.warning("cannot read the agents' doorbells", exc_info=True)
                continue
            for cluster_id, waiters in waiting.items():
                value = values.get(key(cluster_id))
                now = None if value is None else str(value)
                for waiter in waiters:
                    if now != waiter.seen:
                        waiter.now = now
                        waiter.event.set()


_watcher = _Watcher()


def wait(cluster_id: int, seen: str | None, timeout: float) -> tuple[bool, str | None]:
    """Wait up to ``timeout`` seconds for the cluster's doorbell to differ from ``seen``; returns whether it
    rang and its value. The waiting thread sleeps; the process's watcher reads the cache for all."""
    return _watcher.wait(cluster_id, seen, timeout)
