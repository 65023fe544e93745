"""The Celery tasks: thin wrappers run here as a worker would run them (eagerly, in this process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fleet.celery import app as celery_app
from fleet.sources.models import Commit, Repository
from fleet.sources.tasks import fetch_repository_task, poll_repositories
from tests.audit.audit_support import task_callbacks


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    old = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


def test_poll_queues_one_fetch_per_due_repository(origin: Any, make_repository: Any, make_origin: Any,
                                                  eager_tasks: None,
                                                  django_capture_on_commit_callbacks: Any) -> None:
    first = origin.commit("initial")
    polled = make_repository(origin, poll_interval=60)
    other = make_origin("other")
    other.commit("initial")
    webhook_only = make_repository(other, name="hooked", poll_interval=0)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        ids = poll_repositories()
    assert ids == [polled.pk] and len(task_callbacks(callbacks)) == 1
    assert list(Commit.objects.filter(repository=polled).values_list("sha", flat=True)) == [first]
    assert not Commit.objects.filter(repository=webhook_only).exists()
    polled.refresh_from_db()
    assert polled.poll_queued_at is not None and polled.last_fetched is not None

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert poll_repositories() == []  # fetched just now: not due for another 60 s
    assert task_callbacks(callbacks) == []


def test_fetch_task_skips_missing_and_disabled_repositories(origin: Any, make_repository: Any) -> None:
    origin.commit("initial")
    repo = make_repository(origin, enabled=False)
    assert fetch_repository_task.run(repo.pk)["skipped"] == "missing or disabled"
    assert fetch_repository_task.run(999999)["skipped"] == "missing or disabled"
    Repository.objects.filter(pk=repo.pk).update(enabled=True)
    result = fetch_repository_task.run(repo.pk, trigger="task")
    assert result["ok"] and result["new_head"] == origin.head()
