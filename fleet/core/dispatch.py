"""The one way to queue a Celery task: ``send(task, *args)`` with the task object itself, always after the
current transaction commits, so a worker never sees a row that was rolled back (at once outside a
transaction).  Sources and rollouts both queue through it.

One seam (``set_sender``) lets in-process tests run the queued tasks themselves (they receive the task's
name, its arguments, the countdown and the task id); the real worker path is exercised by the integration
tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from django.db import transaction


class Task(Protocol):
    """What ``send`` needs of a task: a Celery task object (``@shared_task``)."""

    name: str

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any: ...


Sender = Callable[[str, list[Any], float | None, str | None], None]

_sender: Sender | None = None


def set_sender(sender: Sender | None) -> None:
    """Hand queued tasks to ``sender`` instead of Celery (None: Celery again)."""
    global _sender
    _sender = sender


def _celery_send(task: Task, args: list[Any], countdown: float | None, task_id: str | None) -> None:
    options: dict[str, Any] = {}
    if countdown:
        options["countdown"] = max(0.0, countdown)
    if task_id:
        options["task_id"] = task_id
    task.apply_async(args=args, **options)


def send(task: Task, *args: Any, countdown: float | None = None, task_id: str | None = None) -> None:
    """Queue ``task(*args)`` once the current transaction commits (at once outside a transaction)."""
    sender = _sender
    values = list(args)
    if sender is None:
        transaction.on_commit(lambda: _celery_send(task, values, countdown, task_id))
    else:
        transaction.on_commit(lambda: sender(task.name, values, countdown, task_id))
