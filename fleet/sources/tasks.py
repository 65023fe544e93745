"""Thin Celery tasks: each calls one service.  Safe to run twice (acks_late): a fetch is idempotent."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import transaction

from fleet.core import dispatch
from fleet.sources.choices import FetchTrigger


@shared_task(name="fleet.sources.fetch_repository", acks_late=True, ignore_result=True)
def fetch_repository_task(repository_id: int, trigger: str = FetchTrigger.TASK) -> dict[str, Any]:
    """Fetch one repository, record its new commits and render what they affect."""
    from fleet.sources.models import Repository
    from fleet.sources.services import fetch_repository

    repo = Repository.objects.filter(pk=repository_id).first()
    if repo is None or not repo.enabled:
        return {"repository": repository_id, "ok": False, "skipped": "missing or disabled"}
    return fetch_repository(repo, trigger=trigger).to_dict()


@shared_task(name="fleet.sources.poll_repositories", acks_late=True, ignore_result=True)
def poll_repositories() -> list[int]:
    """Queue one fetch task per enabled repository whose poll interval has elapsed."""
    from fleet.sources.services import due_for_poll, mark_queued

    with transaction.atomic():
        ids = due_for_poll()
        mark_queued(ids)
        for pk in ids:
            dispatch.send(fetch_repository_task, pk, str(FetchTrigger.POLL))
    return ids
