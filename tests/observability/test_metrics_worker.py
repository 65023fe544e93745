"""/metrics scraped while a rollout runs on a real Celery worker process: the worker's counters reach the
web process through the shared metrics directory, and the state gauges follow the database.

Real parts: a Celery worker (tests/workers.py) on the configured broker, sandbox clusters over HTTP with
latency (so that the rollout is seen syncing), a git repository made by the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.services import fetch_repository
from tests.observability.scrape import scrape
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository
from tests.workers import Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-token-for-the-worker-test"
SYNCED = "fleetgate_cluster_syncs_total"
SYNC_COUNT = "fleetgate_cluster_sync_duration_seconds_count"
DECISIONS = "fleetgate_gate_decisions_total"


def test_scrapes_during_a_rollout_on_a_worker_show_the_numbers_move(
    tmp_path: Path, git_repo: Any, make_fleet: Any, settings: Any
) -> None:
    settings.FLEETGATE_METRICS_TOKEN = TOKEN
    client = Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    names = [f"m{i}" for i in range(4)]
    fleet = make_fleet({n: {"env": "metrics"} for n in names})
    for box in fleet.sandboxes.values():
        box.faults.latency = 0.2  # slow clusters: the rollout stays syncing for seconds
    group = make_group("metrics", "metrics", batch_size=1, max_parallel=1)
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"v": "1"})}, "first"
    )

    before = scrape(client)
    assert before.value("fleetgate_rollouts", state="syncing") == 0
    worker = Worker(tmp_path / "worker.log", concurrency=2)
    try:
        assert fetch_repository(repo).ok  # the rollout is created and its prepare task queued on commit
        rollout = wait_for(
            lambda: Rollout.objects.filter(mapping=mapping).first(), timeout=60, what="rollout"
        )

        def one_synced_while_syncing() -> bool:
            states = list(ClusterSync.objects.filter(rollout=rollout).values_list("state", flat=True))
            return Rollout.objects.get(pk=rollout.pk).state == "syncing" and states.count("synced") == 1

        wait_for(
            one_synced_while_syncing, timeout=120, interval=0.05, what="one cluster synced, others to go"
        )
        during = scrape(client)
        wait_for(
            lambda: Rollout.objects.get(pk=rollout.pk).state in ("synced", "failed", "halted"),
            timeout=180,
            what="the rollout to finish",
        )
        after = scrape(client)
    finally:
        worker.stop()

    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    # While it ran: the rollout counted as syncing, and at least the first cluster's sync counted.
    assert during.value("fleetgate_rollouts", state="syncing") == 1
    assert during.value(SYNCED, result="synced") >= before.value(SYNCED, result="synced") + 1
    # Afterwards: every cluster's sync counted once, with its duration, by the worker's processes.
    assert after.value("fleetgate_rollouts", state="syncing") == 0
    assert (
        after.value("fleetgate_rollouts", state="synced")
        == before.value("fleetgate_rollouts", state="synced") + 1
    )
    assert after.value(SYNCED, result="synced") == before.value(SYNCED, result="synced") + len(names)
    assert after.value(SYNC_COUNT, result="synced") == before.value(SYNC_COUNT, result="synced") + len(names)
    assert after.value("fleetgate_cluster_sync_duration_seconds_sum", result="synced") > before.value(
        "fleetgate_cluster_sync_duration_seconds_sum", result="synced"
    )
    # The gate decided once per cluster, in the worker, with the configured engine.
    engine = settings.FLEETGATE_REGO_ENGINE
    assert after.total(DECISIONS, engine=engine) == before.total(DECISIONS, engine=engine) + len(names)
    assert after.total("fleetgate_gate_evaluation_duration_seconds_count", engine=engine) == before.total(
        "fleetgate_gate_evaluation_duration_seconds_count", engine=engine
    ) + len(names)
    assert after.value("fleetgate_celery_queue_length", queue="celery") >= 0
    assert after.value("fleetgate_broker_up") == 1
