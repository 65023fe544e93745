"""An impact preview job that stops midway does not stay ``running`` forever (review of issue 21).

Real processes: a real Celery worker replays the preview over sandbox clusters whose answers are held back
(fault-injected latency), so the job is certainly in the middle of its live reads when the test SIGKILLs the
worker's whole process group (tests/workers.py). The beat task policies.reap_stalled_previews then fails the
preview ("the job stopped: worker lost"), audited; a job started again past FLEETGATE_PREVIEW_MAX_ATTEMPTS
fails instead of running; a job past its soft time limit fails saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import transaction

from clusters.models import ClusterGroup
from fleet.audit.models import AuditEvent
from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from policies import tasks as policy_tasks
from policies.models import PolicyPreview
from policies.services import preview as pv
from tests.policies.test_policy_preview import NO_LATEST, conftest_policy
from tests.rollouts import conftest as rollout_fixtures
from tests.rollouts.conftest import NAMESPACE, deployment, make_mapping, make_repository
from tests.workers import Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

git_repo = rollout_fixtures.git_repo
make_fleet = rollout_fixtures.make_fleet
sandbox_server = rollout_fixtures.sandbox_server

HELD = 3600.0  # seconds a sandbox holds each answer back: the job waits in its reads until it is killed


@pytest.fixture
def synced(git_repo: Any, make_fleet: Any) -> Iterator[dict[str, Any]]:
    """Two prod clusters, a group, a mapping of web and a policy denying its image (not rolled out yet)."""
    fleet = make_fleet({"p1": {"env": "prod"}, "p2": {"env": "prod"}})
    prod = ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}})
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", prod)
    policy = conftest_policy("no-latest", NO_LATEST)
    yield {"fleet": fleet, "prod": prod, "repo": repo, "mapping": mapping, "policy": policy}
    for box in fleet.sandboxes.values():
        box.faults.clear()


def roll_out(git_repo: Any, world: dict[str, Any]) -> None:
    files = {"apps/web/ns.yaml": NAMESPACE, "apps/web/web.yaml": deployment("web", "nginx:latest")}
    git_repo.commit(files, "web")
    assert fetch_repository(world["repo"]).ok
    wait_for(lambda: Rollout.objects.filter(mapping=world["mapping"], state="synced").first(), timeout=120,
             what="the rollout")


def hold_answers(world: dict[str, Any]) -> int:
    for box in world["fleet"].sandboxes.values():
        box.faults.latency = HELD
    return sum(box.faults.requests for box in world["fleet"].sandboxes.values())


def start_preview(world: dict[str, Any], user: Any, **update: Any) -> PolicyPreview:
    proposal = pv.binding_proposal(None, policy=world["policy"], cluster_group=world["prod"],
                                   enforcement="deny")
    with transaction.atomic():  # queued after commit: the update is there before any worker sees the job
        preview = pv.start(user, proposal)
        if update:
            PolicyPreview.objects.filter(pk=preview.pk).update(**update)
    return preview


def test_a_worker_killed_mid_preview_is_reaped_and_a_job_started_too_often_gives_up(
    tmp_path: Path, git_repo: Any, synced: dict[str, Any], admin_user: Any, settings: Any
) -> None:
    worker = Worker(tmp_path / "worker.log", FLEETGATE_KUBE_READ_TIMEOUT=str(int(HELD)))
    try:
        roll_out(git_repo, synced)
        seen = hold_answers(synced)
        preview = start_preview(synced, admin_user)
        # the job started (attempt 1, heartbeat written) and is waiting for the clusters' answers
        wait_for(lambda: PolicyPreview.objects.filter(pk=preview.pk, status="running", attempts=1,
                                                      heartbeat__isnull=False).first(), timeout=120,
                 what="the preview job to start")
        wait_for(lambda: sum(b.faults.requests for b in synced["fleet"].sandboxes.values()) > seen,
                 timeout=120, what="the job's live reads")
        worker.kill()  # SIGKILL, the whole process group: the job never says it stopped
    finally:
        worker.stop()
    preview.refresh_from_db()
    assert (preview.status, preview.attempts, preview.finished) == ("running", 1, None)
    assert "policies.run_preview" in worker.log

    # the heartbeat is recent: the reaper leaves it alone; once older than the threshold, it is failed
    assert django_settings.FLEETGATE_PREVIEW_STALE_SECONDS == 600
    assert policy_tasks.reap_stalled_previews() == []
    settings.FLEETGATE_PREVIEW_STALE_SECONDS = 0
    assert policy_tasks.reap_stalled_previews() == [preview.pk]
    preview.refresh_from_db()
    assert preview.status == "failed" and preview.finished is not None
    assert preview.error.startswith("the job stopped: worker lost (no sign of life since ")
    assert "0 of 2 targets replayed, attempt 1" in preview.error
    fail = AuditEvent.objects.get(action="policypreview.fail", target_id=str(preview.pk))
    assert fail.change_context == "task" and fail.message.startswith("the job stopped: worker lost")
    assert policy_tasks.reap_stalled_previews() == []  # once
    assert "policies-reap-previews" in django_settings.CELERY_BEAT_SCHEDULE
    reaper = django_settings.CELERY_BEAT_SCHEDULE["policies-reap-previews"]
    assert reaper["task"] == policy_tasks.REAP_PREVIEWS

    # a job already started 3 times (each killed) fails on its 4th start instead of running again
    for box in synced["fleet"].sandboxes.values():
        box.faults.clear()
    again = Worker(tmp_path / "worker-2.log")
    try:
        capped = start_preview(synced, admin_user, attempts=3)
        wait_for(lambda: PolicyPreview.objects.filter(pk=capped.pk, status__in=["done", "failed"]).first(),
                 timeout=120, what="the capped preview job")
    finally:
        again.stop()
    capped.refresh_from_db()
    assert (capped.status, capped.attempts, capped.report) == ("failed", 4, {})
    assert capped.error.startswith("the job was started 4 times and never finished")
    assert "given up after 3 attempts (FLEETGATE_PREVIEW_MAX_ATTEMPTS)" in capped.error
    assert AuditEvent.objects.filter(action="policypreview.fail", target_id=str(capped.pk)).exists()


def test_a_preview_job_past_its_soft_time_limit_fails_saying_so(
    tmp_path: Path, git_repo: Any, synced: dict[str, Any], admin_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the limit travels in the message (Celery's timelimit header, set by whoever queues the job: here this
    # process, which read FLEETGATE_PREVIEW_TIME_LIMIT when it imported the task); the worker's own reading
    # names it in the error. Celery caches a task's send options on its first send: forget them.
    monkeypatch.setattr(policy_tasks.run_preview, "soft_time_limit", 1)
    monkeypatch.setattr(policy_tasks.run_preview, "_exec_options", None)
    worker = Worker(tmp_path / "worker.log", FLEETGATE_PREVIEW_TIME_LIMIT="1",
                    FLEETGATE_KUBE_READ_TIMEOUT="3", FLEETGATE_KUBE_RETRIES="1")
    try:
        roll_out(git_repo, synced)
        hold_answers(synced)
        preview = start_preview(synced, admin_user)
        wait_for(lambda: PolicyPreview.objects.filter(pk=preview.pk, status__in=["done", "failed"]).first(),
                 timeout=120, what="the preview job")
    finally:
        worker.stop()
    preview.refresh_from_db()
    assert preview.status == "failed", preview.error
    assert preview.error.startswith(
        "the job ran longer than its time limit (1 s, FLEETGATE_PREVIEW_TIME_LIMIT) and was stopped"
    ), preview.error
    assert AuditEvent.objects.filter(action="policypreview.fail", target_id=str(preview.pk)).exists()
