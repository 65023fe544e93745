from celery import shared_task

from fleet.audit.services import record


@shared_task(name="fleet.core.ping")
def ping(note: str = "") -> str:
    """A trivial task that proves a worker is consuming and can write to the database."""
    record("system.ping", message=note or "pong", target_type="system", target_repr="worker")
    return "pong"
