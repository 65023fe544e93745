"""The real kube-apiserver, driven the way Fleetgate's connector drives a cluster.

The official ``kubernetes`` client (DynamicClient, bearer token, TLS verified against the test CA)
against etcd + kube-apiserver built from Go modules. These are the answers the sandbox emulator and the
connector are held to.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (
    ConflictError,
    DynamicApiError,
    NotFoundError,
    ResourceNotFoundError,
    UnprocessibleEntityError,
)
from kubernetes.dynamic.resource import Resource

pytestmark = pytest.mark.kube_apiserver

REPO_ROOT = Path(__file__).resolve().parents[2]
MANAGER = "fleetgate"
MANAGED_BY = "app.kubernetes.io/managed-by"


def configmap(namespace: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "data": data,
    }


def deployment(namespace: str, name: str, replicas: int, image: str = "nginx:1.27") -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY: MANAGER}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        },
    }


def apply(
    dyn: DynamicClient, resource: Resource, body: dict, *, manager: str = MANAGER, **params: Any
) -> tuple[int, dict]:
    """Server-side apply; returns (HTTP status, object) so 201-versus-200 can be checked."""
    response = dyn.server_side_apply(
        resource,
        body=body,
        namespace=body["metadata"].get("namespace"),
        field_manager=manager,
        serialize=False,
        **params,
    )
    return response.status, json.loads(response.data)


def status_body(error: DynamicApiError) -> dict:
    body = error.body.decode() if isinstance(error.body, bytes) else error.body
    return json.loads(body)


@pytest.fixture
def configmaps(kube_dynamic_client: DynamicClient) -> Resource:
    return kube_dynamic_client.resources.get(api_version="v1", kind="ConfigMap")


@pytest.fixture
def deployments(kube_dynamic_client: DynamicClient) -> Resource:
    return kube_dynamic_client.resources.get(api_version="apps/v1", kind="Deployment")


def test_discovery_and_version(kube_apiserver, kube_dynamic_client: DynamicClient) -> None:
    with kube_apiserver.api_client() as api:
        version = k8s_client.VersionApi(api).get_code()
    assert version.git_version == kube_apiserver.version

    deploy = kube_dynamic_client.resources.get(api_version="apps/v1", kind="Deployment")
    assert deploy.namespaced
    assert deploy.name == "deployments"
    assert "status" in deploy.subresources
    assert {"get", "list", "watch", "create", "patch", "delete"} <= set(deploy.verbs)
    namespaces = kube_dynamic_client.resources.get(api_version="v1", kind="Namespace")
    assert not namespaces.namespaced
    with pytest.raises(ResourceNotFoundError):
        kube_dynamic_client.resources.get(api_version="apps/v1", kind="NoSuchKind")


def test_tls_is_verified_against_the_test_ca(kube_apiserver) -> None:
    config = kube_apiserver.configuration()
    config.ca_cert_data = None  # the system trust store does not know the test CA
    with k8s_client.ApiClient(config) as api, pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        k8s_client.VersionApi(api).get_code(_request_timeout=10)


def test_wrong_token_is_401(kube_apiserver) -> None:
    config = kube_apiserver.configuration()
    config.api_key = {"authorization": "not-the-token"}
    with k8s_client.ApiClient(config) as api, pytest.raises(k8s_client.ApiException) as caught:
        k8s_client.CoreV1Api(api).list_namespace(_request_timeout=10)
    assert caught.value.status == 401


def test_apply_configmap_creates_201_then_updates_200(
    kube_dynamic_client: DynamicClient, configmaps: Resource, kube_namespace: str
) -> None:
    code, created = apply(
        kube_dynamic_client, configmaps, configmap(kube_namespace, "cfg", {"a": "1", "b": "2"})
    )
    assert code == 201
    assert created["data"] == {"a": "1", "b": "2"}
    assert [(m["manager"], m["operation"]) for m in created["metadata"]["managedFields"]] == [
        (MANAGER, "Apply")
    ]

    # A key the manager stops sending is removed, since no other manager owns it.
    code, updated = apply(kube_dynamic_client, configmaps, configmap(kube_namespace, "cfg", {"a": "10"}))
    assert code == 200
    assert updated["data"] == {"a": "10"}
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_apply_deployment_creates_201_then_updates_200(
    kube_dynamic_client: DynamicClient, deployments: Resource, kube_namespace: str
) -> None:
    code, created = apply(kube_dynamic_client, deployments, deployment(kube_namespace, "web", 2))
    assert code == 201
    assert created["metadata"]["generation"] == 1
    assert created["spec"]["replicas"] == 2

    code, updated = apply(
        kube_dynamic_client, deployments, deployment(kube_namespace, "web", 2, "nginx:1.28")
    )
    assert code == 200
    assert updated["metadata"]["generation"] == 2
    assert updated["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"

    # Re-applying the same intent changes nothing: same generation, same resourceVersion.
    code, again = apply(kube_dynamic_client, deployments, deployment(kube_namespace, "web", 2, "nginx:1.28"))
    assert code == 200
    assert again["metadata"]["generation"] == 2
    assert again["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]


def test_field_manager_conflict_is_409_until_forced(
    kube_dynamic_client: DynamicClient, deployments: Resource, kube_namespace: str
) -> None:
    apply(kube_dynamic_client, deployments, deployment(kube_namespace, "web", 2))
    # Someone scales by hand with another manager, taking ownership of .spec.replicas.
    scaled = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": kube_namespace},
        "spec": {"replicas": 5},
    }
    apply(kube_dynamic_client, deployments, scaled, manager="kubectl-scale", force_conflicts=True)

    with pytest.raises(ConflictError) as caught:
        apply(kube_dynamic_client, deployments, deployment(kube_namespace, "web", 2))
    body = status_body(caught.value)
    assert caught.value.status == 409
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status",
        "Failure",
        "Conflict",
        409,
    )
    assert body["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-scale": .spec.replicas'
    assert body["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "kubectl-scale"',
            "field": ".spec.replicas",
        }
    ]
    current = kube_dynamic_client.get(deployments, name="web", namespace=kube_namespace)
    assert current.spec.replicas == 5

    code, forced = apply(
        kube_dynamic_client, deployments, deployment(kube_namespace, "web", 2), force_conflicts=True
    )
    assert code == 200
    assert forced["spec"]["replicas"] == 2
    owners = {m["manager"]: m["fieldsV1"] for m in forced["metadata"]["managedFields"]}
    assert "f:replicas" in owners[MANAGER]["f:spec"]
    assert "f:replicas" not in owners.get("kubectl-scale", {}).get("f:spec", {})


def test_dry_run_all_stores_nothing(
    kube_dynamic_client: DynamicClient, configmaps: Resource, kube_namespace: str
) -> None:
    code, preview = apply(
        kube_dynamic_client, configmaps, configmap(kube_namespace, "dry", {"k": "v"}), dry_run="All"
    )
    assert code == 201
    assert preview["data"] == {"k": "v"}
    with pytest.raises(NotFoundError):
        kube_dynamic_client.get(configmaps, name="dry", namespace=kube_namespace)

    apply(kube_dynamic_client, configmaps, configmap(kube_namespace, "dry", {"k": "v"}))
    code, preview = apply(
        kube_dynamic_client, configmaps, configmap(kube_namespace, "dry", {"k": "changed"}), dry_run="All"
    )
    assert (code, preview["data"]) == (200, {"k": "changed"})
    assert kube_dynamic_client.get(configmaps, name="dry", namespace=kube_namespace).data.k == "v"


def test_list_with_label_selector(
    kube_dynamic_client: DynamicClient, configmaps: Resource, kube_namespace: str
) -> None:
    for name, labels in [("one", {MANAGED_BY: MANAGER}), ("two", {MANAGED_BY: MANAGER}), ("three", {})]:
        apply(kube_dynamic_client, configmaps, configmap(kube_namespace, name, {"n": name}, labels))
    listed = kube_dynamic_client.get(
        configmaps, namespace=kube_namespace, label_selector=f"{MANAGED_BY}={MANAGER}"
    )
    assert (listed.kind, listed.apiVersion) == ("ConfigMapList", "v1")
    assert sorted(item.metadata.name for item in listed.items) == ["one", "two"]
    assert listed.metadata.resourceVersion


def test_error_bodies_are_status_objects(
    kube_dynamic_client: DynamicClient, configmaps: Resource, kube_namespace: str
) -> None:
    with pytest.raises(NotFoundError) as missing:
        kube_dynamic_client.get(configmaps, name="missing", namespace=kube_namespace)
    assert status_body(missing.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'configmaps "missing" not found',
        "reason": "NotFound",
        "details": {"name": "missing", "kind": "configmaps"},
        "code": 404,
    }

    kube_dynamic_client.create(
        configmaps, body=configmap(kube_namespace, "dup", {}), namespace=kube_namespace
    )
    with pytest.raises(ConflictError) as exists:
        kube_dynamic_client.create(
            configmaps, body=configmap(kube_namespace, "dup", {}), namespace=kube_namespace
        )
    body = status_body(exists.value)
    assert (body["reason"], body["code"], body["message"]) == (
        "AlreadyExists",
        409,
        'configmaps "dup" already exists',
    )
    assert body["details"] == {"name": "dup", "kind": "configmaps"}

    with pytest.raises(UnprocessibleEntityError) as no_manager:
        kube_dynamic_client.server_side_apply(
            configmaps, body=configmap(kube_namespace, "x", {}), namespace=kube_namespace
        )
    body = status_body(no_manager.value)
    assert (body["reason"], body["code"]) == ("Invalid", 422)
    assert body["details"]["causes"][0]["reason"] == "FieldValueRequired"
    assert body["details"]["causes"][0]["field"] == "fieldManager"


def test_deployment_status_via_status_subresource(
    kube_dynamic_client: DynamicClient, deployments: Resource, kube_namespace: str
) -> None:
    """No controller-manager runs, so tests write the status a controller would (as envtest users do)."""
    _, created = apply(kube_dynamic_client, deployments, deployment(kube_namespace, "web", 2))
    assert "status" not in created or not created["status"].get("readyReplicas")
    status = {
        "observedGeneration": created["metadata"]["generation"],
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": 'ReplicaSet "web-1" has successfully progressed.',
            },
        ],
    }
    patched = kube_dynamic_client.patch(
        deployments.status,
        body={"status": status},
        name="web",
        namespace=kube_namespace,
        content_type="application/merge-patch+json",
    )
    assert patched.status.readyReplicas == 2
    assert patched.metadata.generation == created["metadata"]["generation"]  # status writes keep generation

    # The main resource ignores .status: an apply that sends one leaves the stored status alone.
    with_status = deployment(kube_namespace, "web", 2)
    with_status["status"] = {"readyReplicas": 0}
    _, applied = apply(kube_dynamic_client, deployments, with_status)
    assert applied["status"]["readyReplicas"] == 2
    assert applied["status"]["observedGeneration"] == applied["metadata"]["generation"]
    conditions = {c["type"]: c["reason"] for c in applied["status"]["conditions"]}
    assert conditions == {"Available": "MinimumReplicasAvailable", "Progressing": "NewReplicaSetAvailable"}


def _wait_until(check, what: str, limit: float = 60.0):
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {limit}s")
        time.sleep(0.2)


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.fleetgate.test"},
    "spec": {
        "group": "smoke.fleetgate.test",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_then_custom_resource(kube_dynamic_client: DynamicClient, kube_namespace: str) -> None:
    crds = kube_dynamic_client.resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    code, _ = apply(kube_dynamic_client, crds, WIDGET_CRD)
    assert code == 201
    try:

        def established() -> bool:
            crd = kube_dynamic_client.get(crds, name=WIDGET_CRD["metadata"]["name"])
            return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

        _wait_until(established, "CRD Established")

        def discovered() -> Resource | None:
            try:
                return kube_dynamic_client.resources.get(api_version="smoke.fleetgate.test/v1", kind="Widget")
            except ResourceNotFoundError:
                kube_dynamic_client.resources.invalidate_cache()
                return None

        widgets = _wait_until(discovered, "Widget in discovery")
        assert widgets.namespaced

        widget = {
            "apiVersion": "smoke.fleetgate.test/v1",
            "kind": "Widget",
            "metadata": {"name": "w1", "namespace": kube_namespace},
            "spec": {"size": 3},
        }
        code, created = apply(kube_dynamic_client, widgets, widget)
        assert (code, created["spec"]) == (201, {"size": 3})
        assert created["metadata"]["generation"] == 1

        widget["spec"] = {"size": 0}
        with pytest.raises(UnprocessibleEntityError) as invalid:
            apply(kube_dynamic_client, widgets, widget)
        body = status_body(invalid.value)
        assert (body["reason"], body["code"]) == ("Invalid", 422)
        assert body["details"]["causes"][0]["field"] == "spec.size"
    finally:
        kube_dynamic_client.delete(crds, name=WIDGET_CRD["metadata"]["name"])


def test_watch_streams_events_and_ends_after_timeout_seconds(
    kube_dynamic_client: DynamicClient, configmaps: Resource, kube_namespace: str
) -> None:
    start_rv = kube_dynamic_client.get(configmaps, namespace=kube_namespace).metadata.resourceVersion
    apply(kube_dynamic_client, configmaps, configmap(kube_namespace, "watched", {"v": "1"}))
    apply(kube_dynamic_client, configmaps, configmap(kube_namespace, "watched", {"v": "2"}))
    kube_dynamic_client.delete(configmaps, name="watched", namespace=kube_namespace)

    # The server closes the stream after timeoutSeconds, so this loop ends by itself.
    events = [
        (event["type"], event["object"].metadata.name, (event["object"].data or {}).get("v"))
        for event in kube_dynamic_client.watch(
            configmaps, namespace=kube_namespace, resource_version=start_rv, timeout=1
        )
    ]
    watched = [e for e in events if e[1] == "watched"]
    assert watched == [("ADDED", "watched", "1"), ("MODIFIED", "watched", "2"), ("DELETED", "watched", "2")]


def test_kubectl_server_side_apply_and_diff(kube_apiserver, kube_namespace: str, tmp_path) -> None:
    """A real kubectl 1.37 with the written kubeconfig: apply --server-side, then diff (exit 1 = differs)."""
    kubectl = [str(REPO_ROOT / ".venv" / "bin" / "kubectl"), "--kubeconfig", str(kube_apiserver.kubeconfig)]
    manifest = tmp_path / "cm.json"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*kubectl, *args], capture_output=True, text=True, timeout=60, check=False)

    manifest.write_text(json.dumps(configmap(kube_namespace, "from-kubectl", {"a": "1"})))
    applied = run("apply", "--server-side", "--field-manager", MANAGER, "-f", str(manifest))
    assert (applied.returncode, applied.stdout.strip()) == (0, "configmap/from-kubectl serverside-applied")
    same = run("diff", "--server-side", "--field-manager", MANAGER, "-f", str(manifest))
    assert (same.returncode, same.stdout) == (0, ""), same.stderr

    manifest.write_text(json.dumps(configmap(kube_namespace, "from-kubectl", {"a": "2"})))
    changed = run("diff", "--server-side", "--field-manager", MANAGER, "-f", str(manifest))
    assert changed.returncode == 1, changed.stderr
    assert '-  a: "1"' in changed.stdout
    assert '+  a: "2"' in changed.stdout
    got = run("get", "configmap", "from-kubectl", "-n", kube_namespace, "-o", "json")
    assert json.loads(got.stdout)["data"] == {"a": "1"}  # diff stored nothing
