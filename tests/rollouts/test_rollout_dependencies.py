"""Dependencies between mappings in the rollout flow, on real parts (a git repository made here, the real
fetch and render, sandbox clusters over HTTP), with the rollout tasks run in this process in the order
they were queued: a dependent's leg on a cluster waits, visibly, until its dependency is synced and
healthy there, is woken by the dependency's sync, and never applies before it; a failed dependency keeps
it waiting with the reason. The same flow on a real Celery worker:
tests/rollouts/test_rollout_dependencies_worker.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from clusters.models import ClusterGroup
from clusters.sandbox import SandboxCluster
from fleet.audit.models import AuditEvent
from fleet.rollouts import services
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.rollouts.services import dependencies
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import (
    NAMESPACE,
    configmap,
    deployment,
    make_group,
    make_mapping,
    make_repository,
)

pytestmark = pytest.mark.django_db(transaction=True)

CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""
WIDGET = (
    "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: apps\nspec:\n  size: 1\n"
)
FAILING = "\n  annotations:\n    sandbox.fleetgate.io/fail: \"true\""


def infra_files(failing: bool = False) -> dict[str, str]:
    operator = deployment("operator", "example/operator:" + ("1.1-broken" if failing else "1.0"))
    if failing:  # a new image (a new generation) whose rollout the sandbox fails
        operator = operator.replace("  namespace: apps", "  namespace: apps" + FAILING, 1)
    return {"infra/ns.yaml": NAMESPACE, "infra/crd.yaml": CRD, "infra/operator.yaml": operator}


APP_FILES = {
    "app/fleetgate.yaml": "dependsOn:\n  - infra\n",
    "app/widget.yaml": WIDGET,
    "app/cm.yaml": configmap("web", {"v": "1"}),
}


def first_event_rv(box: SandboxCluster, kind: str, name: str, *, ready: bool = False) -> int:
    """The resourceVersion at which ``kind/name`` was created (or, with ``ready``, first became available)
    on the sandbox, from its event history."""
    for event in box.state.history:
        meta, status = event.obj["metadata"], event.obj.get("status") or {}
        if event.obj.get("kind") == kind and meta.get("name") == name:
            if not ready or (status.get("availableReplicas") or 0) >= 1:
                return event.rv
    raise AssertionError(f"no {'ready ' if ready else ''}event of {kind}/{name}")


def test_the_dependent_waits_and_applies_only_after_its_dependency_is_healthy(
    git_repo: Any, make_fleet: Any, tasks: Any, admin_client: Any
) -> None:
    fleet = make_fleet({"c1": {"env": "dep"}, "c2": {"env": "dep"}})
    group = make_group("dep", "dep", max_parallel=5)
    repo = make_repository(git_repo)
    app = make_mapping(repo, "app", "app", group)  # "app" sorts before "infra": the order is not by name
    infra = make_mapping(repo, "infra", "infra", group)
    git_repo.commit({**infra_files(), **APP_FILES}, "infra and app")
    assert fetch_repository(repo).ok
    app.refresh_from_db()
    assert app.declared_depends_on == ["apps/infra"]

    tasks.drain()
    app_rollout = Rollout.objects.get(mapping=app)
    infra_rollout = Rollout.objects.get(mapping=infra)
    assert infra_rollout.pk < app_rollout.pk  # the dependency's rollout was created first
    assert infra_rollout.state == "synced", infra_rollout.reason
    assert app_rollout.state == "synced", app_rollout.reason
    assert not tasks.items  # nothing left polling
    for short, box in fleet.sandboxes.items():
        name = fleet.clusters[short].name
        operator_ready = first_event_rv(box, "Deployment", "operator", ready=True)
        assert first_event_rv(box, "Widget", "w1") > operator_ready
        assert first_event_rv(box, "ConfigMap", "web") > operator_ready
        # Each leg of the app waited for infra on its cluster, visibly, and was woken when it was ready.
        leg = ClusterSync.objects.get(rollout=app_rollout, cluster__name=name)
        waited = AuditEvent.objects.filter(action="sync.waiting", target_id=str(leg.pk)).first()
        assert waited is not None
        assert waited.message.startswith(f"waiting for dependencies: apps/infra on {name} (not synced yet")
        actions = list(AuditEvent.objects.filter(target_id=str(leg.pk), target_type__endswith="clustersync")
                       .order_by("sequence").values_list("action", flat=True))
        assert actions.index("sync.waiting") < actions.index("sync.dependencies_ready") \
            < actions.index("sync.started")
        assert leg.waiting_for == []
    # The dependency's finished sync woke the app's rollout: advance was queued for it by the sync.
    woke = [i for i, (name, args, _) in enumerate(tasks.ran)
            if name == "fleet.rollouts.advance" and args == [app_rollout.pk]]
    assert woke


def test_a_failed_dependency_keeps_the_dependent_waiting_with_the_reason_until_it_is_fixed(
    git_repo: Any, make_fleet: Any, tasks: Any, admin_client: Any, make_user: Any
) -> None:
    fleet = make_fleet({"c1": {"env": "dep"}})
    group = make_group("dep", "dep", health_timeout_seconds=5)
    repo = make_repository(git_repo)
    app = make_mapping(repo, "app", "app", group)
    infra = make_mapping(repo, "infra", "infra", group)
    git_repo.commit({**infra_files(failing=True), **APP_FILES}, "a broken operator")
    assert fetch_repository(repo).ok
    tasks.drain()
    infra_rollout = Rollout.objects.get(mapping=infra)
    app_rollout = Rollout.objects.get(mapping=app)
    assert infra_rollout.state == "halted"  # its one cluster failed: more than the threshold of 0
    cluster = fleet.clusters["c1"].name
    leg = ClusterSync.objects.get(rollout=app_rollout)
    assert app_rollout.state == "syncing"
    assert leg.state == "waiting"
    assert [w["mapping"] for w in leg.waiting_for] == ["apps/infra"]
    assert leg.waiting_for[0]["reason"].startswith("failed: not healthy")
    waiting = f"waiting for dependencies: apps/infra on {cluster} (failed: not healthy"
    assert app_rollout.reason.startswith(waiting)
    assert not tasks.items  # it waits for an event, it does not poll
    box = fleet.sandboxes["c1"]
    assert box.get_object("v1", "ConfigMap", "web", "apps") is None  # the dependent applied nothing

    # The API and the rollout page say what waits on what.
    body = admin_client.get(f"/api/rollouts/{app_rollout.pk}/").json()
    assert body["reason"] == app_rollout.reason
    assert body["syncs"][0]["state"] == "waiting"
    assert body["syncs"][0]["waiting_for"] == leg.waiting_for
    assert admin_client.get("/api/cluster-syncs/?state=waiting").json()["count"] == 1
    web = Client()
    web.force_login(make_user("viewer-1", role="viewer"))
    page = web.get(f"/rollouts/{app_rollout.pk}/").content.decode()
    assert 'id="waiting-here"' in page and f"<td>{cluster}</td><td><code>apps/infra</code></td>" in page
    assert 'id="depends-on"' in page
    page = web.get(f"/rollouts/{infra_rollout.pk}/").content.decode()
    assert 'id="waited-on-by"' in page and f"<code>apps/app</code></td><td>{cluster}</td>" in page
    # A wait recorded by label only (a fleetgate.yaml dependency named before the mapping existed) is the
    # same wait: the page lists what the dependency service wakes.
    by_label = [{k: v for k, v in w.items() if k != "mapping_id"} for w in leg.waiting_for]
    ClusterSync.objects.filter(pk=leg.pk).update(waiting_for=by_label)
    assert [w["mapping"] for w in dependencies.waits_for(by_label, infra)] == ["apps/infra"]
    page = web.get(f"/rollouts/{infra_rollout.pk}/").content.decode()
    assert 'id="waited-on-by"' in page and f"<code>apps/app</code></td><td>{cluster}</td>" in page

    # The operator is fixed: the dependency's new rollout syncs, and its sync wakes the waiting leg.
    git_repo.commit(infra_files(), "operator fixed")
    assert fetch_repository(repo).ok
    tasks.drain()
    app_rollout.refresh_from_db()
    assert app_rollout.state == "synced", app_rollout.reason
    assert box.get_object("v1", "ConfigMap", "web", "apps") is not None
    assert first_event_rv(box, "ConfigMap", "web") > first_event_rv(box, "Deployment", "operator", ready=True)


def test_a_dependency_not_targeted_on_a_cluster_keeps_that_cluster_waiting(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    fleet = make_fleet({"c1": {"env": "dep", "infra": "yes"}, "c2": {"env": "dep"}})
    group = make_group("dep", "dep")
    infra_group = ClusterGroup.objects.create(name="dep-infra", selector={"matchLabels": {"infra": "yes"}})
    repo = make_repository(git_repo)
    app = make_mapping(repo, "app", "app", group)
    make_mapping(repo, "infra", "infra", infra_group)
    git_repo.commit({**infra_files(), **APP_FILES}, "infra on c1 only")
    assert fetch_repository(repo).ok
    tasks.drain()
    legs = {cs.cluster.name: cs for cs in ClusterSync.objects.filter(rollout__mapping=app)}
    assert legs[fleet.clusters["c1"].name].state == "synced"
    c2 = legs[fleet.clusters["c2"].name]
    assert c2.state == "waiting"
    assert c2.waiting_for == [{"mapping": "apps/infra", "mapping_id": c2.waiting_for[0]["mapping_id"],
                               "reason": "not targeted on this cluster"}]


def test_the_readiness_check_reads_a_constant_number_of_queries(
    git_repo: Any, make_fleet: Any, tasks: Any, django_assert_num_queries: Any
) -> None:
    fleet = make_fleet({f"c{i}": {"env": "dep"} for i in range(6)})
    group = make_group("dep", "dep", max_parallel=10)
    repo = make_repository(git_repo)
    app = make_mapping(repo, "app", "app", group)
    make_mapping(repo, "infra", "infra", group)
    git_repo.commit({**infra_files(), **APP_FILES}, "infra and app")
    assert fetch_repository(repo).ok
    tasks.drain()
    ids = [c.pk for c in fleet.clusters.values()]
    app = type(app).objects.select_related("repository").get(pk=app.pk)
    with django_assert_num_queries(5):
        one = dependencies.waits(app, ids[:1])
    with django_assert_num_queries(5):
        every = dependencies.waits(app, ids)
    assert one == {ids[0]: []} and every == {pk: [] for pk in ids}


def test_removing_the_dependency_lets_a_waiting_leg_go_on(git_repo: Any, make_fleet: Any, tasks: Any) -> None:
    fleet = make_fleet({"c1": {"env": "dep"}})
    group = make_group("dep", "dep", health_timeout_seconds=5)
    repo = make_repository(git_repo)
    app = make_mapping(repo, "app", "app", group)
    make_mapping(repo, "infra", "infra", group)
    git_repo.commit({**infra_files(failing=True), "app/cm.yaml": APP_FILES["app/cm.yaml"]}, "broken infra")
    assert fetch_repository(repo).ok
    tasks.drain()
    app.depends_on.set([type(app).objects.get(name="infra")])
    git_repo.commit({"app/cm.yaml": configmap("web", {"v": "2"})}, "app v2")
    assert fetch_repository(repo).ok
    tasks.drain()
    leg = ClusterSync.objects.filter(rollout__mapping=app).order_by("-rollout_id").first()
    assert leg is not None and leg.state == "waiting"
    app.depends_on.clear()  # nothing left to wait for: the next advance (here reconcile's) lets it go
    services.reconcile()
    tasks.drain()
    leg.refresh_from_db()
    assert leg.state == "synced", leg.waiting_for
    live = fleet.sandboxes["c1"].get_object("v1", "ConfigMap", "web", "apps")
    assert live is not None and live["data"] == {"v": "2"}
