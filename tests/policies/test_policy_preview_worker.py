"""The impact preview as a background job in real processes: a commit fetched here is rolled out by a real
Celery worker to sandbox clusters over HTTP; a preview started through the API is queued on the broker, the
worker replays it (live reads, stored renders), and the API shows it done with its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clusters.models import ClusterGroup
from fleet.audit.models import AuditEvent
from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from policies.models import PolicyPreview
from tests.policies.test_policy_preview import NO_LATEST, conftest_policy
from tests.rollouts import conftest as rollout_fixtures
from tests.rollouts.conftest import NAMESPACE, deployment, make_mapping, make_repository
from tests.workers import Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

git_repo = rollout_fixtures.git_repo
make_fleet = rollout_fixtures.make_fleet
sandbox_server = rollout_fixtures.sandbox_server


def test_a_worker_runs_the_preview_job_and_the_api_follows_it(
    tmp_path: Path, git_repo: Any, make_fleet: Any, admin_client: Any
) -> None:
    make_fleet({"p1": {"env": "prod"}, "p2": {"env": "prod"}})
    prod = ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}})
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", prod)
    policy = conftest_policy("no-latest", NO_LATEST)
    worker = Worker(tmp_path / "worker.log")
    try:
        git_repo.commit(
            {"apps/web/ns.yaml": NAMESPACE, "apps/web/web.yaml": deployment("web", "nginx:latest")}, "web"
        )
        assert fetch_repository(repo).ok
        wait_for(
            lambda: Rollout.objects.filter(mapping=mapping, state="synced").first(),
            timeout=120,
            what="the rollout",
        )
        started = admin_client.post(
            "/api/policy-previews/",
            {"policy": policy.pk, "cluster_group": prod.pk, "enforcement": "deny"},
            format="json",
        )
        assert started.status_code == 201, started.content
        pk = started.json()["id"]
        wait_for(
            lambda: PolicyPreview.objects.filter(pk=pk, status__in=["done", "failed"]).first(),
            timeout=120,
            what="the preview job",
        )
    finally:
        worker.stop()
    body = admin_client.get(f"/api/policy-previews/{pk}/").json()
    assert (body["status"], body["done"], body["total"], body["progress"]) == ("done", 2, 2, 100.0), body
    counts = body["report"]["counts"]
    assert (counts["newly_blocked"], counts["new_blocks"], counts["unreachable"]) == (2, 2, 0)
    assert {t["review"] for t in body["report"]["targets"]} == {"live"}
    assert "policies.run_preview" in worker.log
    finish = AuditEvent.objects.get(action="policypreview.finish", target_id=str(pk))
    assert finish.change_context == "task"
