"""A push webhook answered by the web side is fetched by a real Celery worker process (tests/workers.py)
on the configured broker, against the test database shared with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from fleet.audit.models import AuditEvent
from fleet.sources.models import Commit
from fleet.sources.webhooks import sign_github
from tests.sources.test_sources_webhook_service import SECRET, push_payload
from tests.workers import Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_webhook_push_is_fetched_by_a_worker(tmp_path: Path, origin: Any, make_repository: Any,
                                               settings: Any) -> None:
    first = origin.commit("initial", {"apps/web/cm.yaml": "a: 1\n"})
    second = origin.commit("second", {"apps/web/cm.yaml": "a: 2\n"})
    repo = make_repository(origin, webhook_secret=SECRET)
    worker = Worker(tmp_path / "worker.log", FLEETGATE_GIT_CACHE=str(settings.FLEETGATE_GIT_CACHE))
    try:
        body = push_payload("github", origin.url, first, second)
        response = APIClient().post(f"/api/hooks/git/{repo.pk}/", data=body, content_type="application/json",
                                    HTTP_X_GITHUB_EVENT="push",
                                    HTTP_X_HUB_SIGNATURE_256=sign_github(body, SECRET))
        assert response.status_code == 202
        wait_for(lambda: Commit.objects.filter(repository=repo, sha=second).exists(), timeout=120,
                 what="the worker's fetch")
    finally:
        worker.stop()
    assert "fleet.sources.fetch_repository" in worker.log
    event = AuditEvent.objects.get(action="commit.seen", target_id=str(Commit.objects.get(sha=second).pk))
    assert event.change_context == "task"
    # the webhook's request id travelled with the task
    assert event.request_id == AuditEvent.objects.get(action="webhook.received").request_id
