"""Drift checks of a fleet in slices (issue 19): ``check_all`` queues one task per slice of states; a slice
costs the same number of queries whatever the fleet's size: one load, one bulk update of the states that stay
in sync (or cannot be read), and the recording of each drift found. Real sandbox clusters, objects applied by
the product's connector; the queued tasks run in process (tests/rollouts/conftest.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clusters.models import Cluster
from fleet.audit.models import AuditEvent
from fleet.rollouts import dispatch, ports, services
from fleet.rollouts.models import SyncedState
from fleet.rollouts.services import drift
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)

OBJECTS = [NAMESPACE, configmap("web", {"color": "blue"})]


def synced_fleet(make_fleet: Any, git_repo: Any, env: str, size: int) -> tuple[Any, list[SyncedState]]:
    """``size`` sandbox clusters with one mapping's objects applied by the connector and their SyncedState
    rows, as a sync leaves them."""
    import yaml

    fleet = make_fleet({f"{env}-{i}": {"env": env} for i in range(size)})
    group = make_group(f"g-{env}", env)
    repo = make_repository(git_repo, name=f"repo-{env}")
    mapping = make_mapping(repo, "web", "apps/web", group)
    bodies = [yaml.safe_load(text) for text in OBJECTS]
    states = []
    for short in sorted(fleet.clusters):
        outcome = ports.apply(fleet.clusters[short], mapping, bodies, [], prune=False)
        assert outcome.ok, outcome.error
        states.append(
            SyncedState.objects.create(
                mapping=mapping,
                cluster=fleet.clusters[short],
                inventory=outcome.inventory,
                applied=outcome.applied,
                drift_status="in_sync",
                synced_at=timezone.now(),
            )
        )
    return fleet, states


def edit(box: Any) -> None:
    box.apply_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "apps"},
            "data": {"color": "red"},
        },
        manager="kubectl-edit",
    )


def statements(ctx: CaptureQueriesContext) -> int:
    """Queries other than transaction control (SQLite's backend logs BEGIN and COMMIT, PostgreSQL's not)."""
    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
    return sum(1 for q in ctx.captured_queries if not q["sql"].upper().startswith(control))


def run_slices(tasks: Any) -> list[int]:
    """Run the queued drift tasks one by one; the queries of each."""
    counts = []
    while tasks.items:
        item = tasks.items.pop(0)
        assert item.name == dispatch.CHECK_DRIFT_BATCH
        with CaptureQueriesContext(connection) as ctx:
            services.check_drift_many(item.args)
        counts.append(statements(ctx))
    return counts


def test_a_pass_costs_queries_per_slice_not_per_cluster(
    make_fleet: Any, git_repo: Any, tasks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drift, "DRIFT_BATCH", 4)
    synced_fleet(make_fleet, git_repo, "small", 4)
    large, _ = synced_fleet(make_fleet, git_repo, "large", 12)
    edit(large.sandbox("large-5"))  # drifted: recorded and audited on its own
    large.sandbox("large-9").delete_object("v1", "ConfigMap", "web", "apps")
    start = timezone.now()

    with CaptureQueriesContext(connection) as ctx:
        assert services.check_all_drift() == 16
    assert statements(ctx) == 1  # the ids; tasks are queued after commit, no query each
    assert len(tasks.items) == math.ceil(16 / 4)
    assert all(len(item.args) <= 4 for item in tasks.items)

    counts = run_slices(tasks)
    # Slices follow the clusters' order: the small fleet's, then the large fleet's 0-3, 4-7 (large-5 drifted)
    # and 8-11 (large-9 drifted). A slice where every state stays in sync: one load and one bulk update,
    # whatever its size or the fleet's. A drift found adds its own recording: its save and its audit event
    # (drift.detected), whose queries are the audit app's (about ten with the pending-event sealing).
    assert counts[:2] == [2, 2]
    assert all(2 < count <= 2 + 15 for count in counts[2:]), counts

    by_name = {s.cluster.name: s for s in SyncedState.objects.select_related("cluster")}
    assert all(s.drift_checked_at is not None and s.drift_checked_at >= start for s in by_name.values())
    drifted = sorted(n for n, s in by_name.items() if s.drift_status == "drifted")
    assert drifted == [large.clusters["large-5"].name, large.clusters["large-9"].name]
    assert by_name[large.clusters["large-9"].name].drift[0]["state"] == "deleted"
    assert AuditEvent.objects.filter(action="drift.detected").count() == 2
    # The next pass finds the same drift: checked again, not detected (audited, notified) again.
    assert services.check_all_drift() == 16
    run_slices(tasks)
    assert AuditEvent.objects.filter(action="drift.detected").count() == 2
    assert SyncedState.objects.filter(drift_status="drifted").count() == 2


def test_an_unreachable_clusters_errors_are_stored_with_its_slice_and_a_cleared_drift_is_audited(
    make_fleet: Any, git_repo: Any, tasks: Any
) -> None:
    fleet, _ = synced_fleet(make_fleet, git_repo, "mixed", 3)
    gone = fleet.clusters["mixed-1"]
    Cluster.objects.filter(pk=gone.pk).update(api_url="http://127.0.0.1:9")  # nothing listens on port 9
    box = fleet.sandbox("mixed-2")
    edit(box)
    assert services.check_all_drift() == 3
    tasks.drain()
    status = dict(SyncedState.objects.values_list("cluster__name", "drift_status"))
    # The connector keeps a failed read as an error of the report, not as drift (record_check's rule, the
    # same for an agent's report): the check failed ("error", not "in_sync"); the error is kept for the UI.
    assert status == {
        fleet.clusters["mixed-0"].name: "in_sync",
        gone.name: "error",
        fleet.clusters["mixed-2"].name: "drifted",
    }
    assert "ConfigMap" in SyncedState.objects.get(cluster=gone).drift_error
    assert SyncedState.objects.get(cluster=fleet.clusters["mixed-0"]).drift_error == ""

    box.apply_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "apps"},
            "data": {"color": "blue"},
        },
        manager="kubectl-edit",
    )
    assert services.check_drift(SyncedState.objects.get(cluster=fleet.clusters["mixed-2"]).pk) == "in_sync"
    assert (
        AuditEvent.objects.filter(action="drift.cleared", cluster_name=fleet.clusters["mixed-2"].name).count()
        == 1
    )
