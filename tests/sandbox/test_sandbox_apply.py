"""Server-side apply: field managers, conflicts, removal, keyed list merges, dry run; the other patches."""

from __future__ import annotations

import json

import pytest
from kubernetes.dynamic.exceptions import ConflictError

APPLY = "application/apply-patch+yaml"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


def _managers(obj: dict) -> dict[tuple[str, str], dict]:
    return {(m["manager"], m["operation"]): m for m in obj["metadata"].get("managedFields", [])}


def test_apply_creates_with_201_then_updates_with_200(raw, deployment):
    code, created, _ = raw("PATCH", f"{DEPLOY}/web?fieldManager=fleetgate", deployment(), APPLY)
    assert code == 201 and created["metadata"]["resourceVersion"]
    code, updated, _ = raw("PATCH", f"{DEPLOY}/web?fieldManager=fleetgate", deployment(replicas=3), APPLY)
    assert code == 200 and updated["spec"]["replicas"] == 3 and updated["metadata"]["generation"] == 2


def test_apply_without_field_manager_is_invalid(raw, deployment):
    code, body, _ = raw("PATCH", f"{DEPLOY}/web", deployment(), APPLY)
    assert code == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )
    assert [(c["reason"], c["field"]) for c in body["details"]["causes"]] == [
        ("FieldValueRequired", "fieldManager")
    ]


def test_apply_accepts_real_yaml_and_unknown_patch_type_is_415(raw):
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n  namespace: default\ndata:\n  k: v\n"
    code, obj, _ = raw("PATCH", "/api/v1/namespaces/default/configmaps/y?fieldManager=m", body, APPLY)
    assert code == 201 and obj["data"] == {"k": "v"}
    code, status, _ = raw("PATCH", "/api/v1/namespaces/default/configmaps/y", "{}", "application/xml")
    assert code == 415 and status["reason"] == "UnsupportedMediaType"


def test_managed_fields_use_fields_v1_with_keyed_list_items(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    obj = deps.server_side_apply(
        body=deployment(), name="web", namespace="default", field_manager="fleetgate"
    )
    entry = _managers(obj.to_dict())[("fleetgate", "Apply")]
    assert entry["apiVersion"] == "apps/v1" and entry["fieldsType"] == "FieldsV1" and entry["time"]
    spec = entry["fieldsV1"]["f:spec"]
    assert spec["f:replicas"] == {}
    container = spec["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert container["."] == {} and container["f:image"] == {} and container["f:name"] == {}
    assert 'k:{"containerPort":80,"protocol":"TCP"}' in container["f:ports"]
    assert entry["fieldsV1"]["f:metadata"] == {"f:labels": {"f:app": {}}}


def test_conflict_with_another_manager_and_force_moves_ownership(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.server_side_apply(
        body=deployment(replicas=2), name="web", namespace="default", field_manager="kubectl"
    )
    with pytest.raises(ConflictError) as err:
        deps.server_side_apply(
            body=deployment(replicas=3), name="web", namespace="default", field_manager="fleetgate"
        )
    status = json.loads(err.value.body)
    assert status["reason"] == "Conflict" and status["code"] == 409
    # an applier is named without its apiVersion, as kube-apiserver 1.37 does (updaters get "using ...")
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas'
    assert status["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "kubectl"',
            "field": ".spec.replicas",
        }
    ]
    assert deps.get(name="web", namespace="default").spec.replicas == 2

    forced = deps.server_side_apply(
        body=deployment(replicas=3),
        name="web",
        namespace="default",
        field_manager="fleetgate",
        force_conflicts=True,
    ).to_dict()
    assert forced["spec"]["replicas"] == 3
    managers = _managers(forced)
    assert "f:replicas" in managers[("fleetgate", "Apply")]["fieldsV1"]["f:spec"]
    assert "f:replicas" not in managers[("kubectl", "Apply")]["fieldsV1"]["f:spec"]


def test_several_conflicts_are_listed_per_manager(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.server_side_apply(
        body=deployment(replicas=2), name="web", namespace="default", field_manager="kubectl"
    )
    with pytest.raises(ConflictError) as err:
        deps.server_side_apply(
            body=deployment(replicas=4, image="nginx:2"),
            name="web",
            namespace="default",
            field_manager="fleetgate",
        )
    status = json.loads(err.value.body)
    assert status["message"] == (
        'Apply failed with 2 conflicts: conflicts with "kubectl":\n'
        "- .spec.replicas\n"
        '- .spec.template.spec.containers[name="web"].image'
    )
    assert len(status["details"]["causes"]) == 2


def test_same_value_is_shared_ownership_not_a_conflict(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.server_side_apply(body=deployment(), name="web", namespace="default", field_manager="a")
    obj = deps.server_side_apply(
        body=deployment(), name="web", namespace="default", field_manager="b"
    ).to_dict()
    managers = _managers(obj)
    assert "f:replicas" in managers[("a", "Apply")]["fieldsV1"]["f:spec"]
    assert "f:replicas" in managers[("b", "Apply")]["fieldsV1"]["f:spec"]


def test_conflict_with_an_update_manager_names_its_api_version(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.server_side_apply(body=deployment(), name="web", namespace="default", field_manager="fleetgate")
    deps.patch(
        name="web",
        namespace="default",
        body={"spec": {"replicas": 7}},
        content_type="application/merge-patch+json",
        field_manager="kubectl",
    )
    with pytest.raises(ConflictError) as err:
        deps.server_side_apply(body=deployment(), name="web", namespace="default", field_manager="fleetgate")
    status = json.loads(err.value.body)
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl" using apps/v1: .spec.replicas'
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "kubectl" using apps/v1',
            "field": ".spec.replicas",
        }
    ]


def test_managed_fields_are_ordered_like_the_apiserver(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.server_side_apply(body=deployment(), name="web", namespace="default", field_manager="zeta")
    deps.patch(
        name="web",
        namespace="default",
        body={"metadata": {"labels": {"x": "1"}}},
        content_type="application/merge-patch+json",
        field_manager="alpha",
    )
    obj = deps.server_side_apply(
        body=deployment(), name="web", namespace="default", field_manager="beta"
    ).to_dict()
    order = [(m["operation"], m["manager"]) for m in obj["metadata"]["managedFields"]]
    applies = [m for op, m in order if op == "Apply"]
    assert order[: len(applies)] == [("Apply", m) for m in applies]  # Apply entries before Update entries
    assert ("Update", "alpha") in order and set(applies) == {"zeta", "beta"}


def test_label_selectors_are_atomic(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    obj = deps.server_side_apply(
        body=deployment(), name="web", namespace="default", field_manager="f"
    ).to_dict()
    entry = _managers(obj)[("f", "Apply")]["fieldsV1"]["f:spec"]
    assert entry["f:selector"] == {}  # owned as a whole, as in kube-apiserver
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    svc = (
        dyn.resources.get(api_version="v1", kind="Service")
        .server_side_apply(body=service, name="s", namespace="default", field_manager="f")
        .to_dict()
    )
    assert _managers(svc)[("f", "Apply")]["fieldsV1"]["f:spec"]["f:selector"] == {"f:app": {}}


def test_fields_a_manager_stops_sending_are_removed_unless_someone_else_owns_them(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    first = deployment()
    first["metadata"]["labels"].update({"team": "a", "shared": "x"})
    first["metadata"]["annotations"] = {"note": "hello"}
    deps.server_side_apply(body=first, name="web", namespace="default", field_manager="fleetgate")
    other = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"shared": "x"}},
    }
    deps.server_side_apply(body=other, name="web", namespace="default", field_manager="other")
    second = deployment()  # drops team, shared and the annotation
    obj = deps.server_side_apply(
        body=second, name="web", namespace="default", field_manager="fleetgate"
    ).to_dict()
    assert obj["metadata"]["labels"] == {"app": "web", "shared": "x"}
    assert "note" not in (obj["metadata"].get("annotations") or {})


def test_keyed_lists_merge_by_key_and_other_lists_are_atomic(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    mine = deployment()
    container = mine["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "A", "value": "1"}]
    container["args"] = ["--one", "--two"]
    deps.server_side_apply(body=mine, name="web", namespace="default", field_manager="fleetgate")
    sidecar = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "web", "env": [{"name": "B", "value": "2"}]},
                        {"name": "proxy", "image": "envoy"},
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                }
            }
        },
    }
    obj = deps.server_side_apply(
        body=sidecar, name="web", namespace="default", field_manager="mesh"
    ).to_dict()
    pod = obj["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["web", "proxy"]
    web = pod["containers"][0]
    assert {e["name"]: e["value"] for e in web["env"]} == {"A": "1", "B": "2"}
    assert web["image"] == "nginx:1.27" and pod["volumes"] == [{"name": "cache", "emptyDir": {}}]

    container["args"] = ["--three"]
    obj = deps.server_side_apply(
        body=mine, name="web", namespace="default", field_manager="fleetgate"
    ).to_dict()
    pod = obj["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["--three"]  # atomic: replaced, not merged
    assert [c["name"] for c in pod["containers"]] == ["web", "proxy"]  # the mesh's container stays


def test_dropping_a_list_item_removes_it(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    two = deployment()
    two["spec"]["template"]["spec"]["containers"].append({"name": "log", "image": "busybox"})
    deps.server_side_apply(body=two, name="web", namespace="default", field_manager="fleetgate")
    obj = deps.server_side_apply(
        body=deployment(), name="web", namespace="default", field_manager="fleetgate"
    )
    assert [c.name for c in obj.spec.template.spec.containers] == ["web"]


def test_apply_dry_run_returns_the_result_and_stores_nothing(raw, cluster, deployment):
    code, preview, _ = raw("PATCH", f"{DEPLOY}/web?fieldManager=f&dryRun=All", deployment(), APPLY)
    assert code == 201 and preview["spec"]["replicas"] == 2
    assert cluster.get_object("apps/v1", "Deployment", "web", "default") is None
    raw("PATCH", f"{DEPLOY}/web?fieldManager=f", deployment(), APPLY)
    rv = cluster.resource_version
    code, preview, _ = raw("PATCH", f"{DEPLOY}/web?fieldManager=f&dryRun=All", deployment(replicas=9), APPLY)
    assert code == 200 and preview["spec"]["replicas"] == 9
    assert cluster.get_object("apps/v1", "Deployment", "web", "default")["spec"]["replicas"] == 2
    assert cluster.resource_version == rv


def test_identical_apply_is_a_no_op(raw, cluster):
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "default"},
        "data": {"a": "1"},
    }
    _, first, _ = raw("PATCH", "/api/v1/namespaces/default/configmaps/c?fieldManager=f", body, APPLY)
    _, again, _ = raw("PATCH", "/api/v1/namespaces/default/configmaps/c?fieldManager=f", body, APPLY)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_merge_patch_records_an_update_entry(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.server_side_apply(body=deployment(), name="web", namespace="default", field_manager="fleetgate")
    obj = deps.patch(
        name="web",
        namespace="default",
        body={"metadata": {"labels": {"patched": "yes"}}},
        content_type="application/merge-patch+json",
        field_manager="ops",
    ).to_dict()
    assert obj["metadata"]["labels"]["patched"] == "yes"
    entry = _managers(obj)[("ops", "Update")]
    assert entry["fieldsV1"] == {"f:metadata": {"f:labels": {"f:patched": {}}}}


def test_patch_without_field_manager_uses_the_user_agent(raw, cluster):
    raw("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    code, obj, _ = raw(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        {"data": {"b": "2"}},
        "application/merge-patch+json",
        headers={"User-Agent": "fleetgate-worker/1.0 (linux)"},
    )
    assert code == 200 and obj["data"] == {"a": "1", "b": "2"}
    assert ("fleetgate-worker", "Update") in _managers(obj)


def test_strategic_merge_patch_merges_containers_by_name(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = deployment()
    body["spec"]["template"]["spec"]["containers"].append({"name": "log", "image": "busybox"})
    deps.create(body=body)
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:2"},
                        {"name": "log", "$patch": "delete"},
                    ]
                }
            }
        }
    }
    obj = deps.patch(
        name="web", namespace="default", body=patch, content_type="application/strategic-merge-patch+json"
    )
    containers = obj.spec.template.spec.containers
    assert [(c.name, c.image) for c in containers] == [("web", "nginx:2")]
    assert containers[0].ports[0].containerPort == 80  # merged, not replaced


def test_json_patch_operations(dyn):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cms.create(
        body={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "j", "namespace": "default"},
            "data": {"a": "1", "b": "2"},
        }
    )
    ops = [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/data/c~1d", "value": "3"},
    ]
    obj = cms.patch(name="j", namespace="default", body=ops, content_type="application/json-patch+json")
    assert obj.data.to_dict() == {"a": "10", "c/d": "3"}


def test_strategic_merge_patch_is_refused_for_custom_resources(raw):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }
    raw("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    thing = {
        "apiVersion": "example.com/v1",
        "kind": "Thing",
        "metadata": {"name": "t"},
        "spec": {"items": [1]},
    }
    code, _, _ = raw("POST", "/apis/example.com/v1/namespaces/default/things", thing)
    assert code == 201
    code, _, _ = raw(
        "PATCH",
        "/apis/example.com/v1/namespaces/default/things/t",
        {"spec": {}},
        "application/strategic-merge-patch+json",
    )
    assert code == 415
    code, obj, _ = raw(
        "PATCH",
        "/apis/example.com/v1/namespaces/default/things/t",
        {"spec": {"items": [2]}},
        "application/merge-patch+json",
    )
    assert code == 200 and obj["spec"]["items"] == [2]


def test_keyed_list_order_follows_structured_merge_diff(dyn, deployment):
    """Shared items follow the applied order, live-only items keep their place (as in kube-apiserver)."""
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    mine = deployment()
    mine["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "E1", "value": "1"},
        {"name": "E2", "value": "2"},
    ]
    deps.server_side_apply(body=mine, name="web", namespace="default", field_manager="a")
    theirs = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "side", "image": "busybox"},
                        {"name": "web", "env": [{"name": "E3", "value": "3"}]},
                    ]
                }
            }
        },
    }
    obj = deps.server_side_apply(body=theirs, name="web", namespace="default", field_manager="b").to_dict()
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["side", "web"]
    assert [e["name"] for e in containers[1]["env"]] == ["E1", "E2", "E3"]


def test_an_update_that_creates_a_map_owns_the_map(raw):
    raw(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"metadata": {"name": "m"}, "data": {"k": "1"}},
        headers={"User-Agent": "creator/1.0"},
    )
    code, body, _ = raw(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/m?fieldManager=applier",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": {"k": "2"}},
        APPLY,
    )
    assert code == 409 and body["message"] == (
        'Apply failed with 1 conflict: conflict with "creator" using v1: .data.k'
    )
    _, obj, _ = raw("GET", "/api/v1/namespaces/default/configmaps/m")
    assert _managers(obj)[("creator", "Update")]["fieldsV1"] == {"f:data": {".": {}, "f:k": {}}}
