"""Pull mode: the doorbell a waiting agent poll listens to (Django cache key ``agent-work:<cluster_id>``).

A service that hands a pull-mode cluster new work (a leg queued, a retry due) rings it after its transaction
commits; a long poll of the cluster's agent reads the key while it waits and looks for work again when the
value changes. The cache is shared by every Fleetgate process (Redis in production), so a leg queued by a
worker wakes a poll held by a web process."""

from __future__ import annotations

import uuid

from django.core.cache import cache
from django.db import transaction


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
