"""A worker killed with SIGKILL in the middle of a rollout loses nothing: a new worker process finishes every
cluster, and every cluster is recorded synced exactly once.

Real parts only: a real Celery worker process (tests/workers.py) on the configured broker (filesystem by
default, Redis in CI's second pass), the test database shared with it, sandbox clusters over HTTP with
latency so that the kill lands while clusters are syncing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.audit.models import AuditEvent
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import (
    NAMESPACE,
    configmap,
    deployment,
    make_group,
    make_mapping,
    make_repository,
)
from tests.workers import Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {
    "FLEETGATE_SYNC_LEASE_SECONDS": "3",
    "FLEETGATE_KUBE_RETRIES": "2",
    "FLEETGATE_SYNC_RETRY_BASE": "0.5",
}


def test_killed_worker_mid_rollout_every_cluster_synced_once(
    tmp_path: Path, git_repo: Any, make_fleet: Any
) -> None:
    names = [f"c{i}" for i in range(8)]
    fleet = make_fleet({n: {"env": "kill"} for n in names})
    for box in fleet.sandboxes.values():
        box.faults.latency = 0.15  # every request is slow: a cluster takes seconds, the kill lands mid-batch
    group = make_group("kill", "kill", batch_size=4, max_parallel=4)
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    git_repo.commit(
        {
            "apps/web/ns.yaml": NAMESPACE,
            "apps/web/cm.yaml": configmap("web", {"v": "1"}),
            "apps/web/deploy.yaml": deployment("web", "nginx:1.27"),
        },
        "first",
    )
    first = Worker(tmp_path / "worker-1.log", concurrency=2, **WORKER_ENV)
    second = None
    try:
        assert fetch_repository(repo).ok  # the rollout is created and its prepare task queued on commit
        rollout = wait_for(
            lambda: Rollout.objects.filter(mapping=mapping).first(), timeout=30, what="rollout"
        )

        def mid_batch() -> bool:
            states = list(ClusterSync.objects.filter(rollout=rollout).values_list("state", flat=True))
            return "syncing" in states and states.count("synced") >= 1

        wait_for(mid_batch, timeout=120, interval=0.05, what="a cluster synced and another syncing")
        first.kill()  # SIGKILL to the worker and its pool children
        killed_states = dict(
            ClusterSync.objects.filter(rollout=rollout).values_list("cluster__name", "state")
        )
        assert "syncing" in killed_states.values()

        second = Worker(tmp_path / "worker-2.log", concurrency=2, **WORKER_ENV)
        wait_for(
            lambda: Rollout.objects.get(pk=rollout.pk).state in ("synced", "failed", "halted"),
            timeout=180,
            what="the rollout to finish on the new worker",
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()

    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    syncs = list(ClusterSync.objects.filter(rollout=rollout).select_related("cluster"))
    assert len(syncs) == len(names)
    assert {s.state for s in syncs} == {"synced"}
    for s in syncs:
        succeeded = AuditEvent.objects.filter(action="sync.succeeded", cluster_name=s.cluster.name).count()
        assert succeeded == 1, f"{s.cluster.name}: {succeeded} sync.succeeded events"
        live = fleet.server.cluster(s.cluster.name).get_object("v1", "ConfigMap", "web", "apps")
        assert live is not None and live["data"] == {"v": "1"}
    # A leg that was syncing when the worker died was taken over by the new worker after its lease expired.
    interrupted = [n for n, st in killed_states.items() if st == "syncing"]
    taken_over = AuditEvent.objects.filter(
        action="sync.started", cluster_name__in=interrupted, message__contains="taken over"
    ).count()
    assert taken_over >= 1
    assert AuditEvent.objects.filter(action="rollout.synced", target_id=str(rollout.pk)).count() == 1
