"""The rollouts API: constant query counts on lists, filters, progress counts, idempotent tasks, the
reconcile that re-dispatches legs whose worker died, and the pause between batches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from clusters.models import Cluster
from fleet.audit.models import AuditEvent
from fleet.rollouts import services
from fleet.rollouts.models import ClusterSync, Rollout, SyncedState
from tests.factories import ClusterGroupFactory, CommitFactory, PathMappingFactory, RepositoryFactory
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository


def _rows(n: int) -> None:
    group = ClusterGroupFactory(name=f"g{n}", selector={"matchLabels": {"env": f"q{n}"}})
    clusters = [
        Cluster.objects.create(
            name=f"q{n}-{i}", api_url="https://10.0.0.1:6443", token="x", labels={"env": f"q{n}"}
        )
        for i in range(3)
    ]
    repo = RepositoryFactory(name=f"repo-q{n}")
    for i in range(n):
        mapping = PathMappingFactory(repository=repo, name=f"m{i}", cluster_group=group)
        commit = CommitFactory(repository=repo)
        rollout = Rollout.objects.create(mapping=mapping, commit=commit, state="syncing", batch_count=2)
        ClusterSync.objects.bulk_create(
            [
                ClusterSync(rollout=rollout, cluster=c, batch=j % 2, state="synced")
                for j, c in enumerate(clusters)
            ]
        )
        SyncedState.objects.create(mapping=mapping, cluster=clusters[0], commit=commit, rollout=rollout)


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/rollouts/", "/api/cluster-syncs/", "/api/synced-states/"])
def test_list_query_count_is_constant(
    url: str, admin_client: Any, django_assert_max_num_queries: Any
) -> None:
    _rows(10)
    with django_assert_max_num_queries(8):
        small = admin_client.get(url + "?limit=1000")
    _rows(200)
    with django_assert_max_num_queries(8):
        large = admin_client.get(url + "?limit=1000")
    assert small.status_code == large.status_code == 200
    assert large.json()["count"] > small.json()["count"] >= 10


@pytest.mark.django_db
def test_rollout_list_shows_progress_and_filters(admin_client: Any) -> None:
    _rows(3)
    rollout = Rollout.objects.order_by("id").first()
    ClusterSync.objects.filter(rollout=rollout, batch=1).update(state="failed")
    body = admin_client.get(f"/api/rollouts/?mapping={rollout.mapping_id}").json()
    assert body["count"] == 1
    progress = body["results"][0]["progress"]
    assert progress["total"] == 3
    assert progress["by_state"] == {"synced": 2, "failed": 1}
    assert progress["by_batch"] == {"0": {"synced": 2}, "1": {"failed": 1}}
    assert admin_client.get("/api/rollouts/?state=synced").json()["count"] == 0
    assert admin_client.get("/api/rollouts/?state=syncing").json()["count"] == 3
    assert admin_client.get(f"/api/rollouts/?commit={rollout.commit_id}").json()["count"] == 1
    assert admin_client.get(f"/api/rollouts/?group={rollout.mapping.cluster_group_id}").json()["count"] == 3
    assert admin_client.get("/api/rollouts/?state=nonsense").status_code == 400


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_task_and_a_dead_worker_leave_one_outcome(
    git_repo: Any, make_fleet: Any, tasks: Any, monkeypatch: Any
) -> None:
    from fleet.sources.services import fetch_repository

    fleet = make_fleet({"a": {"env": "dup"}})
    group = make_group("dup", "dup")
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    git_repo.commit({"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"a": "1"})}, "one")
    assert fetch_repository(repo).ok
    tasks.drain(until=lambda: ClusterSync.objects.filter(state="queued").exists())
    leg = ClusterSync.objects.get(rollout__mapping=mapping)
    # A worker claimed the leg and died: the leg is syncing under a lease nobody renews.
    monkeypatch.setattr("django.conf.settings.FLEETGATE_SYNC_LEASE_SECONDS", "30")
    claimed, _ = services.sync._claim(leg.pk)
    assert claimed is not None
    assert services.run_cluster_sync(leg.pk) == "owned by another worker"
    assert services.reconcile()["redispatched"] == 0  # the lease is still live
    ClusterSync.objects.filter(pk=leg.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    tasks.clear()
    assert services.reconcile()["redispatched"] == 1
    tasks.drain()
    leg.refresh_from_db()
    assert leg.state == "synced" and leg.attempts == 2
    assert fleet.sandbox("a").get_object("v1", "ConfigMap", "web", "apps")["data"] == {"a": "1"}
    # Delivered again (a broker redelivery): nothing changes.
    assert services.run_cluster_sync(leg.pk) == "already synced"
    assert (
        AuditEvent.objects.filter(action="sync.succeeded", cluster_name=fleet.clusters["a"].name).count() == 1
    )
    assert AuditEvent.objects.filter(action="sync.started", message__contains="taken over").count() == 1
    assert Rollout.objects.get(mapping=mapping).state == "synced"


@pytest.mark.django_db(transaction=True)
def test_pause_between_batches(git_repo: Any, make_fleet: Any, tasks: Any) -> None:
    from fleet.sources.services import fetch_repository

    make_fleet({"a": {"env": "bp"}, "b": {"env": "bp"}})
    group = make_group("bp", "bp", batch_size=1, batch_pause_seconds=600)
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    git_repo.commit({"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"a": "1"})}, "one")
    assert fetch_repository(repo).ok
    tasks.drain()
    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "syncing"
    assert sorted(ClusterSync.objects.filter(rollout=rollout).values_list("state", flat=True)) == [
        "pending",
        "synced",
    ]
    assert rollout.next_batch_at is not None
    assert 590 < (rollout.next_batch_at - timezone.now()).total_seconds() <= 600
    [delayed] = tasks.delayed()
    assert delayed.name == "fleet.rollouts.advance"
    tasks.drain(include_delayed=True)  # too early: the pause holds
    assert Rollout.objects.get(pk=rollout.pk).state == "syncing"
    Rollout.objects.filter(pk=rollout.pk).update(next_batch_at=timezone.now() - timedelta(seconds=1))
    services.advance(rollout.pk)  # what the scheduled advance (or beat's reconcile) does once the pause ends
    tasks.drain()
    assert Rollout.objects.get(pk=rollout.pk).state == "synced"
    assert AuditEvent.objects.filter(action="rollout.batch_pause", target_id=str(rollout.pk)).count() == 1


@pytest.mark.django_db(transaction=True)
def test_reconcile_resumes_rollouts_from_the_database(git_repo: Any, make_fleet: Any, tasks: Any) -> None:
    """What a restart of every process leaves: a preparation that stopped between phases, and a rollout
    whose sync window ended while nothing ran. Reconcile (worker start, beat) finishes both."""
    from fleet.sources.services import fetch_repository

    fleet = make_fleet({"a": {"env": "rc"}})
    group = make_group("rc", "rc")
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    git_repo.commit({"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"a": "1"})}, "one")
    assert fetch_repository(repo).ok
    assert [q.name for q in tasks.items] == ["fleet.rollouts.prepare"]
    tasks.clear()  # every process died before a worker took the prepare task (lost with the broker's data)
    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "pending"
    assert services.reconcile()["prepare"] == 0  # too recent: maybe still in a queue
    Rollout.objects.filter(pk=rollout.pk).update(updated=timezone.now() - timedelta(minutes=5))
    assert services.reconcile()["prepare"] == 1
    tasks.drain()
    rollout.refresh_from_db()
    assert rollout.state == "synced"

    # A rollout waiting for a window that has ended, with its scheduled advance lost.
    git_repo.commit({"apps/web/cm.yaml": configmap("web", {"a": "2"})}, "two")
    group.sync_windows = [{"kind": "deny", "schedule": "* * * * *", "duration": "1h"}]
    group.save()
    assert fetch_repository(repo).ok
    tasks.drain()
    waiting = Rollout.objects.filter(mapping=mapping).order_by("-id").first()
    assert waiting.state == "queued" and waiting.wait_until is not None
    tasks.clear()
    group.sync_windows = []
    group.save()
    Rollout.objects.filter(pk=waiting.pk).update(wait_until=timezone.now() - timedelta(seconds=1))
    assert services.reconcile()["advanced"] == 1
    tasks.drain()
    waiting.refresh_from_db()
    assert waiting.state == "synced"
    assert fleet.sandbox("a").get_object("v1", "ConfigMap", "web", "apps")["data"] == {"a": "2"}
