"""A real Celery worker process (the one `make run` starts) consumes a task of the project end to end:
on the embedded defaults through the filesystem broker, in CI's second pass through Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from fleet.audit.models import AuditEvent
from fleet.core.context import acting
from fleet.core.tasks import ping
from tests.workers import Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_worker_process_runs_a_project_task(tmp_path: Path, make_user: Any) -> None:
    user = make_user("operator", role="admin")
    worker = Worker(tmp_path / "worker.log")
    try:
        with acting(user=user, request_id="req-integration-0001"):
            ping.delay("hello from the test")
        event = wait_for(
            lambda: AuditEvent.objects.filter(action="system.ping").first(), timeout=90, what="the ping task"
        )
    finally:
        worker.stop()
    assert event.message == "hello from the test"
    # The request id and the actor travelled in the task headers.
    assert event.request_id == "req-integration-0001"
    assert event.actor_name == "operator"
    assert event.change_context == "task"
    assert "fleet.core.ping" in worker.log
    transport = settings.CELERY_BROKER_URL.split("://")[0]
    assert transport in ("filesystem", "redis", "sqla+sqlite", "amqp")
