"""How rollout services hand work to Celery: always after the transaction commits, so a worker never sees
a row that was rolled back. One seam (``set_sender``) lets in-process tests run the queued tasks themselves;
the real worker path is exercised by the integration tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction

Sender = Callable[[str, list[Any], float | None, str | None], None]


def _celery_send(name: str, args: list[Any], countdown: float | None, task_id: str | None) -> None:
    from fleet.celery import app

    options: dict[str, Any] = {}
    if countdown:
        options["countdown"] = max(0.0, countdown)
    if task_id:
        options["task_id"] = task_id
    app.send_task(name, args=args, **options)


_sender: Sender = _celery_send


def set_sender(sender: Sender | None) -> None:
    global _sender
    _sender = sender or _celery_send


def send(name: str, *args: Any, countdown: float | None = None, task_id: str | None = None) -> None:
    """Queue task ``name`` once the current transaction commits (at once outside a transaction)."""
    sender = _sender
    transaction.on_commit(lambda: sender(name, list(args), countdown, task_id))


PREPARE = "fleet.rollouts.prepare"
ADVANCE = "fleet.rollouts.advance"
SYNC_CLUSTER = "fleet.rollouts.sync_cluster"
RECONCILE = "fleet.rollouts.reconcile"
CHECK_DRIFT = "fleet.rollouts.check_drift"
CHECK_DRIFT_ONE = "fleet.rollouts.check_drift_one"
