"""The connector against both backends (sandbox over HTTP, real kube-apiserver), same assertions."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest

from clusters.connector import MANAGED_BY_LABEL, PRUNE_ANNOTATION, TRACKING_ANNOTATION, ObjectRef
from tests.connector.conftest import Backend


def configmap(name: str, data: dict[str, str], namespace: str | None = None, **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": encoded,
    }


def deployment(name: str, replicas: int = 2, image: str = "nginx:1.27") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        },
    }


def crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                            },
                        }
                    },
                }
            ],
        },
    }


def test_check_reports_version(backend: Backend) -> None:
    with backend.connector() as kube:
        result = kube.check()
    assert result.reachable, result.error
    assert result.version.startswith("v1.")


def test_ordered_apply_crd_custom_resource_and_namespace_in_one_batch(backend: Backend) -> None:
    group = f"t{secrets.token_hex(4)}.fleetgate.test"
    new_ns = f"{backend.namespace}-extra"
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": new_ns},
        "spec": {"size": 3},
    }
    manifests = [
        widget,  # listed first, applied after its CRD
        configmap("settings", {"a": "1"}),  # no namespace: gets the default namespace
        configmap("extra", {"b": "2"}, namespace=new_ns),  # needs the Namespace from this batch
        crd(group),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": new_ns}},
    ]
    with backend.connector() as kube:
        first = kube.apply(manifests, mapping="web", default_namespace=backend.namespace)
        assert first.ok, [(str(r.ref), r.message) for r in first.results]
        kinds = [r.ref.kind for r in first.results]
        assert kinds[:2] == ["Namespace", "CustomResourceDefinition"]
        assert {r.action for r in first.results} == {"created"}
        # cluster-scoped kinds never get a namespace; namespaced ones get the default
        assert first.result("Namespace", new_ns).ref.namespace == ""
        assert first.result("CustomResourceDefinition", f"widgets.{group}").ref.namespace == ""
        assert first.result("ConfigMap", "settings").ref.namespace == backend.namespace

        live = backend.get(f"{group}/v1", "Widget", "w1", new_ns)
        assert live is not None and live["spec"] == {"size": 3}
        notes = live["metadata"]["annotations"]
        assert notes[TRACKING_ANNOTATION] == f"web:{group}/Widget/{new_ns}/w1"
        assert live["metadata"]["labels"][MANAGED_BY_LABEL] == "fleetgate"
        cm = backend.get("v1", "ConfigMap", "settings", backend.namespace)
        assert cm is not None
        assert (
            cm["metadata"]["annotations"][TRACKING_ANNOTATION]
            == f"web:/ConfigMap/{backend.namespace}/settings"
        )

        again = kube.apply(manifests, mapping="web", default_namespace=backend.namespace)
        assert {r.action for r in again.results} == {"unchanged"}, [
            (str(r.ref), r.action) for r in again.results
        ]
        assert sorted(map(str, map(ObjectRef.from_dict, again.inventory))) == sorted(
            map(str, map(ObjectRef.from_dict, first.inventory))
        )
        assert len(first.inventory) == 5


def test_prune_only_what_left_git_and_is_ours(backend: Backend) -> None:
    ns = backend.namespace
    keep_note = {"annotations": {PRUNE_ANNOTATION: "disabled"}}
    argo_note = {"annotations": {"argocd.argoproj.io/sync-options": "Prune=false"}}
    extra_ns = f"{ns}-gone"
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": extra_ns}},
        configmap("stays", {"k": "v"}),
        configmap("leaves", {"k": "v"}),
        configmap("opted-out", {"k": "v"}, **keep_note),
        configmap("argo-opted-out", {"k": "v"}, **argo_note),
    ]
    # Someone else's object, with Fleetgate's label but another mapping's tracking id.
    backend.apply_as(
        "kubectl",
        configmap(
            "foreign",
            {"k": "v"},
            namespace=ns,
            labels={MANAGED_BY_LABEL: "fleetgate"},
            annotations={TRACKING_ANNOTATION: f"other:/ConfigMap/{ns}/foreign"},
        ),
    )
    with backend.connector() as kube:
        first = kube.apply(manifests, mapping="web", default_namespace=ns)
        assert first.ok
        inventory = [*first.inventory, ObjectRef("v1", "ConfigMap", ns, "foreign").to_dict()]

        second = kube.apply(
            [configmap("stays", {"k": "v"})],
            mapping="web",
            default_namespace=ns,
            prune=True,
            previous_inventory=inventory,
        )
    actions = {r.ref.name: (r.action, r.message) for r in second.results}
    assert actions["stays"][0] == "unchanged"
    assert actions["leaves"][0] == "deleted"
    assert actions["opted-out"] == ("skipped", "not pruned: pruning disabled by annotation")
    assert actions["argo-opted-out"] == ("skipped", "not pruned: pruning disabled by annotation")
    assert actions["foreign"][0] == "skipped" and "not owned" in actions["foreign"][1]
    assert actions[extra_ns][0] == "skipped" and "prune_cascading" in actions[extra_ns][1]
    assert backend.get("v1", "Namespace", extra_ns) is not None
    assert backend.get("v1", "ConfigMap", "leaves", ns) is None
    for name in ("stays", "opted-out", "argo-opted-out", "foreign"):
        assert backend.get("v1", "ConfigMap", name, ns) is not None, name
    # the namespace stays in the inventory (still Fleetgate's); pruned once cascading prune is asked for
    assert sorted(ObjectRef.from_dict(r).name for r in second.inventory) == sorted(["stays", extra_ns])
    with backend.connector() as kube:
        third = kube.apply(
            [configmap("stays", {"k": "v"})],
            mapping="web",
            default_namespace=ns,
            prune=True,
            prune_cascading=True,
            previous_inventory=second.inventory,
        )
    assert third.result("Namespace", extra_ns).action == "deleted"
    gone = backend.get("v1", "Namespace", extra_ns)  # the bare kube-apiserver leaves it Terminating
    assert gone is None or gone["metadata"].get("deletionTimestamp")
    assert [ObjectRef.from_dict(r).name for r in third.inventory] == ["stays"]


def test_conflict_with_another_field_manager_is_reported_then_forced(backend: Backend) -> None:
    ns = backend.namespace
    with backend.connector() as kube:
        assert kube.apply([deployment("web", 2)], mapping="web", default_namespace=ns).ok
        taken = deployment("web", 5)
        taken["metadata"]["namespace"] = ns
        del taken["spec"]["template"]  # kubectl-style: this manager only cares about replicas
        del taken["spec"]["selector"]
        backend.apply_as("kubectl", taken, force=True)

        refused = kube.apply([deployment("web", 3)], mapping="web", default_namespace=ns)
        outcome = refused.result("Deployment", "web")
        assert outcome.action == "failed" and outcome.status == 409
        assert [(c.manager, c.field) for c in outcome.conflicts] == [("kubectl", ".spec.replicas")]
        assert 'conflict with "kubectl"' in outcome.message and "force" in outcome.message
        planned = kube.plan([deployment("web", 3)], mapping="web", default_namespace=ns)
        assert planned.item("Deployment", "web").action == "conflict"
        assert [(c.manager, c.field) for c in planned.item("Deployment", "web").conflicts] == [
            ("kubectl", ".spec.replicas")
        ]
        assert planned.counts["conflict"] == 1 and not planned.ok
        live = backend.get("apps/v1", "Deployment", "web", ns)
        assert live is not None and live["spec"]["replicas"] == 5

        forced = kube.apply([deployment("web", 3)], mapping="web", default_namespace=ns, force=True)
        assert forced.result("Deployment", "web").action == "configured"
    live = backend.get("apps/v1", "Deployment", "web", ns)
    assert live is not None and live["spec"]["replicas"] == 3


def test_plan_counts_diff_and_masks_secrets(backend: Backend) -> None:
    ns = backend.namespace
    with backend.connector() as kube:
        first = kube.apply(
            [
                configmap("app", {"mode": "old"}),
                configmap("gone", {"x": "1"}),
                secret("creds", {"pw": "hunter2"}),
            ],
            mapping="web",
            default_namespace=ns,
        )
        assert first.ok
        plan = kube.plan(
            [
                configmap("app", {"mode": "new"}),
                configmap("fresh", {"y": "2"}),
                secret("creds", {"pw": "correct-horse"}),
                deployment("same", 1),
            ],
            mapping="web",
            default_namespace=ns,
            previous_inventory=first.inventory,
        )
        # a second plan after applying "same" shows it unchanged
        kube.apply([deployment("same", 1)], mapping="web", default_namespace=ns)
        unchanged = kube.plan([deployment("same", 1)], mapping="web", default_namespace=ns)
    assert plan.counts == {"create": 2, "update": 2, "delete": 1, "unchanged": 0, "conflict": 0, "failed": 0}
    app = plan.item("ConfigMap", "app")
    assert app.action == "update"
    assert "-  mode: old\n" in app.diff and "+  mode: new\n" in app.diff
    assert app.diff.startswith(
        f"--- live/core/v1/ConfigMap/{ns}/app\n+++ desired/core/v1/ConfigMap/{ns}/app\n"
    )
    for server_field in ("resourceVersion", "managedFields", "uid:", "creationTimestamp", "generation"):
        assert server_field not in plan.diff
    assert plan.item("ConfigMap", "gone").action == "delete"
    assert "-  x: '1'" in plan.item("ConfigMap", "gone").diff
    creds = plan.item("Secret", "creds")
    assert creds.action == "update" and "(changed)" in creds.diff
    for value in ("hunter2", "correct-horse"):
        assert value not in plan.diff
        assert base64.b64encode(value.encode()).decode() not in plan.diff
    assert unchanged.counts["unchanged"] == 1 and unchanged.item("Deployment", "same").diff == ""
    # a plan stores nothing
    live = backend.get("v1", "ConfigMap", "app", ns)
    assert live is not None and live["data"] == {"mode": "old"}
    assert backend.get("v1", "ConfigMap", "fresh", ns) is None


def test_health_waits_for_a_slow_rollout(backend: Backend) -> None:
    ns = backend.namespace
    backend.rollout("slow", ok=True, delay=0.5)
    with backend.connector() as kube:
        sync = kube.apply(
            [deployment("slow", 2), configmap("cfg", {"a": "b"})], mapping="web", default_namespace=ns
        )
        assert sync.ok
        report = kube.wait_healthy(sync.inventory, timeout=30)
    assert report.state == "Healthy", report.reason
    assert not report.timed_out
    assert report.of("Deployment", "slow").state == "Healthy"
    assert report.of("ConfigMap", "cfg").state == "Healthy"


def test_health_reports_a_failed_rollout(backend: Backend) -> None:
    ns = backend.namespace
    backend.rollout("broken", ok=False, delay=0.1)
    with backend.connector() as kube:
        sync = kube.apply([deployment("broken", 2)], mapping="web", default_namespace=ns)
        report = kube.wait_healthy(sync.inventory, timeout=30)
    assert report.state == "Degraded"
    assert not report.timed_out
    assert report.of("Deployment", "broken").reason == "ProgressDeadlineExceeded"
    assert "ProgressDeadlineExceeded" in report.reason


def test_health_timeout_is_degraded(backend: Backend) -> None:
    ns = backend.namespace
    if backend.sandbox is not None:
        backend.sandbox.settings.update(never_ready=True)
    with backend.connector() as kube:
        sync = kube.apply([deployment("stuck", 1)], mapping="web", default_namespace=ns)
        report = kube.wait_healthy(sync.inventory, timeout=0.3)
    assert report.state == "Degraded" and report.timed_out
    assert report.reason.startswith("HealthTimeout")
    assert report.of("Deployment", "stuck").state == "Progressing"


def test_drift_reports_changed_managed_fields_and_deleted_objects(backend: Backend) -> None:
    ns = backend.namespace
    with backend.connector() as kube:
        sync = kube.apply(
            [deployment("web", 2), configmap("cfg", {"a": "b"}), configmap("kept", {"c": "d"})],
            mapping="web",
            default_namespace=ns,
        )
        assert sync.ok
        assert not kube.drift(sync.applied).drifted

        edit = deployment("web", 5)
        edit["metadata"]["namespace"] = ns
        edit["metadata"]["labels"] = {"team": "someone-else"}  # a field Fleetgate does not manage
        del edit["spec"]["template"]
        del edit["spec"]["selector"]
        backend.apply_as("kubectl", edit, force=True)
        backend.delete("v1", "ConfigMap", "cfg", ns)

        report = kube.drift(sync.applied)
    assert report.checked == 3
    web = report.of("Deployment", "web")
    assert web is not None and web.state == "changed"
    assert [(f.path, f.expected, f.actual) for f in web.fields] == [(".spec.replicas", 2, 5)]
    assert web.fields[0].managers == ["kubectl"]  # who took the field over
    cfg = report.of("ConfigMap", "cfg")
    assert cfg is not None and cfg.state == "deleted"
    assert report.of("ConfigMap", "kept") is None


def test_validation_error_is_not_retried_and_carries_the_server_message(backend: Backend) -> None:
    with backend.connector() as kube:
        sync = kube.apply(
            [configmap("Bad_Name", {"a": "b"})], mapping="web", default_namespace=backend.namespace
        )
        outcome = sync.results[0]
        assert kube.retries == 0
    assert outcome.action == "failed" and outcome.status == 422
    assert "Invalid" in outcome.message
    assert 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' in outcome.message


def test_unknown_kind_fails_clearly(backend: Backend) -> None:
    unknown = {"apiVersion": "nope.fleetgate.test/v1", "kind": "Thing", "metadata": {"name": "x"}}
    with backend.connector() as kube:
        sync = kube.apply(
            [unknown, configmap("ok", {"a": "b"})], mapping="web", default_namespace=backend.namespace
        )
    assert sync.result("Thing", "x").action == "failed"
    assert "no kind Thing in nope.fleetgate.test/v1" in sync.result("Thing", "x").message
    assert sync.result("ConfigMap", "ok").action == "created"


@pytest.mark.parametrize("code", [503, 429, 500])
def test_transient_errors_are_retried_sandbox(sandbox_backend: Backend, code: int) -> None:
    # Fault injection is a sandbox feature: this test runs on the sandbox only (no skip on the real server).
    backend = sandbox_backend
    assert backend.sandbox is not None
    with backend.connector() as kube:
        assert kube.check().reachable  # discovery done
        backend.sandbox.faults.fail_next(2, code)
        sync = kube.apply(
            [configmap("retried", {"a": "b"})], mapping="web", default_namespace=backend.namespace
        )
        assert sync.ok, sync.results[0].message
        assert kube.retries == 2
        backend.sandbox.faults.fail_next(10, code)
        failed = kube.apply(
            [configmap("given-up", {"a": "b"})], mapping="web", default_namespace=backend.namespace
        )
        # five attempts each (the resourceVersion list, then the apply), then the failure is reported
        assert kube.retries == 2 + 4 + 4
    backend.sandbox.faults.clear()
    assert failed.results[0].action == "failed" and failed.results[0].status == code


def test_schema_errors_are_not_retried(backend: Backend) -> None:
    """kube-apiserver refuses an apply that does not fit the schema with 500 "failed to create typed patch
    object"; that is permanent. The sandbox has no schema validation (docs/testing.md) and stores it."""
    bad = deployment("typed", 1)
    bad["spec"]["replicas"] = "three"
    with backend.connector() as kube:
        sync = kube.apply([bad], mapping="web", default_namespace=backend.namespace)
        retries = kube.retries
    outcome = sync.results[0]
    assert retries == 0
    if backend.sandbox is None:
        assert outcome.action == "failed" and outcome.status == 500
        assert ".spec.replicas: expected numeric (int or float), got string" in outcome.message
    else:
        assert outcome.action == "created"  # no schema validation, and the controller does not crash on it


def test_a_failure_during_discovery_keeps_its_status_code(sandbox_backend: Backend) -> None:
    """A 503 while the connector discovers a kind is reported with its code, so callers can retry later."""
    backend = sandbox_backend
    assert backend.sandbox is not None
    backend.sandbox.faults.fail_next(50, 503)
    try:
        with backend.connector() as kube:
            sync = kube.apply(
                [configmap("late", {"a": "b"})], mapping="web", default_namespace=backend.namespace
            )
    finally:
        backend.sandbox.faults.clear()
    outcome = sync.results[0]
    assert outcome.action == "failed"
    assert outcome.status == 503, outcome.message
