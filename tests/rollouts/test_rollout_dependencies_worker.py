"""Dependencies between mappings on a real Celery worker (tests/workers.py, two processes in its pool) with
sandbox clusters whose workloads take a second to become ready: on every cluster, nothing of the app is
created before the infra mapping it depends on (Namespace, CRD, an operator Deployment) is ready there.
Without the wait, the pool would sync both mappings at once (and the app's Widget would find no CRD). Then the
operator breaks in the commit that changes the app: the app's legs wait with the failure as their reason and
its change is applied nowhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import configmap, make_group, make_mapping, make_repository
from tests.rollouts.test_rollout_dependencies import APP_FILES, first_event_rv, infra_files
from tests.workers import Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_on_a_worker_the_app_is_applied_only_after_infra_is_healthy_on_each_cluster(
    tmp_path: Path, git_repo: Any, make_fleet: Any
) -> None:
    fleet = make_fleet({"c1": {"env": "depw"}, "c2": {"env": "depw"}})
    for box in fleet.sandboxes.values():
        box.settings.rollout_delay = 1.0  # the operator Deployment is ready a second after it is applied
    group = make_group("depw", "depw", max_parallel=4)
    repo = make_repository(git_repo)
    app = make_mapping(repo, "app", "app", group)
    infra = make_mapping(repo, "infra", "infra", group)
    git_repo.commit({**infra_files(), **APP_FILES}, "infra and app")
    worker = Worker(tmp_path / "worker.log", concurrency=2)
    try:
        assert fetch_repository(repo).ok  # both rollouts are created; their prepare tasks go to the worker
        wait_for(
            lambda: Rollout.objects.filter(mapping__in=[app, infra], state__in=("synced", "failed", "halted"))
            .count() == 2,
            timeout=180,
            what="both rollouts to finish on the worker",
        )
        for rollout in Rollout.objects.filter(mapping__in=[app, infra]):
            assert rollout.state == "synced", (rollout.mapping.name, rollout.reason)
        synced = set(ClusterSync.objects.filter(rollout__mapping=app).values_list("state", flat=True))
        assert synced == {"synced"}
        for box in fleet.sandboxes.values():
            operator_ready = first_event_rv(box, "Deployment", "operator", ready=True)
            assert first_event_rv(box, "Widget", "w1") > operator_ready
            assert first_event_rv(box, "ConfigMap", "web") > operator_ready

        # The operator breaks in the same commit that changes the app: the app waits, with the reason.
        group.health_timeout_seconds = 5
        group.save(update_fields=["health_timeout_seconds"])
        git_repo.commit({**infra_files(failing=True), "app/cm.yaml": configmap("web", {"v": "2"})}, "break")
        assert fetch_repository(repo).ok
        def waiting_for_failed_infra() -> list[ClusterSync]:
            legs = list(ClusterSync.objects.filter(rollout__mapping=app, state="waiting"))
            failed = [cs for cs in legs if any(w["reason"].startswith("failed") for w in cs.waiting_for)]
            return failed if len(failed) == len(fleet.sandboxes) else []

        waiting = wait_for(waiting_for_failed_infra, timeout=120, what="the app's legs to wait for infra")
    finally:
        worker.stop()
    assert "fleet.rollouts.sync_cluster" in worker.log
    assert Rollout.objects.filter(mapping=infra).order_by("-id").first().state == "halted"
    for leg in waiting:
        assert [w["mapping"] for w in leg.waiting_for] == ["apps/infra"]
        assert leg.waiting_for[0]["reason"].startswith("failed: not healthy")
    for box in fleet.sandboxes.values():  # the app's change was not applied anywhere
        assert box.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"v": "1"}
