"""Less common write paths: multi-version custom resources, deletecollection, patch directives."""

from __future__ import annotations

APPLY = "application/apply-patch+yaml"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Cluster",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {"name": "v1", "served": True, "storage": True},
            {"name": "v2", "served": True, "storage": False},
            {"name": "v0", "served": False, "storage": False},
        ],
    },
}


def test_custom_resource_served_at_every_served_version(raw):
    assert raw("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)[0] == 201
    _, group, _ = raw("GET", "/apis/example.com")
    assert [v["version"] for v in group["versions"]] == ["v1", "v2"]
    assert raw("GET", "/apis/example.com/v0")[0] == 404
    body = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"n": 1}}
    assert raw("POST", "/apis/example.com/v1/gadgets", body)[0] == 201
    code, v2, _ = raw("GET", "/apis/example.com/v2/gadgets/g")
    assert code == 200 and v2["apiVersion"] == "example.com/v2" and v2["spec"] == {"n": 1}
    _, listed, _ = raw("GET", "/apis/example.com/v2/gadgets")
    assert listed["kind"] == "GadgetList" and listed["items"][0]["apiVersion"] == "example.com/v2"
    assert raw("GET", "/apis/example.com/v1/namespaces/default/gadgets")[0] == 404  # cluster-scoped
    code, applied, _ = raw(
        "PATCH",
        "/apis/example.com/v2/gadgets/g?fieldManager=m&force=true",  # the creator owns spec.n
        {"apiVersion": "example.com/v2", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"n": 2}},
        APPLY,
    )
    assert code == 200 and applied["spec"]["n"] == 2 and applied["metadata"]["generation"] == 2


def test_deletecollection_by_label(raw):
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            {"metadata": {"name": name, "labels": {"tier": tier}}},
        )
    code, deleted, _ = raw("DELETE", "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dweb")
    assert code == 200 and deleted["kind"] == "ConfigMapList"
    assert sorted(i["metadata"]["name"] for i in deleted["items"]) == ["a", "b"]
    _, left, _ = raw("GET", "/api/v1/namespaces/default/configmaps")
    assert [i["metadata"]["name"] for i in left["items"]] == ["c"]


def test_strategic_merge_patch_directives(raw, deployment):
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    body["metadata"]["finalizers"] = ["x/one", "x/two"]
    raw("POST", "/apis/apps/v1/namespaces/default/deployments", body)
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["x/one"]},
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [
                        {
                            "name": "web",
                            "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}],
                        }
                    ],
                }
            }
        },
    }
    code, obj, _ = raw(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web",
        patch,
        "application/strategic-merge-patch+json",
    )
    assert code == 200, obj
    assert obj["metadata"]["finalizers"] == ["x/two"]
    env = obj["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["A", "C"]
    replace = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}
        }
    }
    _, obj, _ = raw(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web",
        replace,
        "application/strategic-merge-patch+json",
    )
    assert [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["only"]


def test_json_patch_move_copy_and_failed_test(raw):
    raw("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "j"}, "data": {"a": "1"}})
    ops = [
        {"op": "copy", "from": "/data/a", "path": "/data/b"},
        {"op": "move", "from": "/data/a", "path": "/data/c"},
    ]
    code, obj, _ = raw("PATCH", "/api/v1/namespaces/default/configmaps/j", ops, "application/json-patch+json")
    assert code == 200 and obj["data"] == {"b": "1", "c": "1"}
    code, status, _ = raw(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/j",
        [{"op": "test", "path": "/data/b", "value": "2"}],
        "application/json-patch+json",
    )
    assert code == 422 and status["kind"] == "Status"
    code, status, _ = raw(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/j",
        [{"op": "remove", "path": "/data/zz"}],
        "application/json-patch+json",
    )
    assert code == 422


def test_patch_with_a_stale_resource_version_conflicts(raw):
    _, created, _ = raw(
        "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "p"}, "data": {"a": "1"}}
    )
    raw(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/p",
        {"data": {"a": "2"}},
        "application/merge-patch+json",
    )
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"a": "3"}}
    code, status, _ = raw(
        "PATCH", "/api/v1/namespaces/default/configmaps/p", stale, "application/merge-patch+json"
    )
    assert code == 409 and status["reason"] == "Conflict"


def test_custom_resource_lists_follow_the_crd_schema(raw):
    """x-kubernetes-list-type map/set and map-type atomic drive apply, as in kube-apiserver."""
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "ports": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
                        },
                    },
                    "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "sel": {
                        "type": "object",
                        "x-kubernetes-map-type": "atomic",
                        "additionalProperties": {"type": "string"},
                    },
                },
            }
        },
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }
    assert raw("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[0] == 201
    path = "/apis/example.com/v1/namespaces/default/things/t"

    def apply(manager: str, spec: dict) -> tuple[int, dict]:
        body = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": spec}
        code, out, _ = raw("PATCH", f"{path}?fieldManager={manager}", body, APPLY)
        return code, out

    assert (
        apply("a", {"ports": [{"name": "a", "port": 1}], "tags": ["x"], "args": ["1"], "sel": {"k": "v"}})[0]
        == 201
    )
    assert apply("b", {"ports": [{"name": "b", "port": 2}], "tags": ["y"]})[0] == 200
    code, status = apply("b", {"args": ["2"]})
    assert code == 409 and status["message"].endswith('conflict with "a": .spec.args')  # atomic list
    code, status = apply("b", {"sel": {"k2": "v2"}})
    assert code == 409 and status["message"].endswith('conflict with "a": .spec.sel')  # atomic map
    _, obj, _ = raw("GET", path)
    assert obj["spec"]["ports"] == [{"name": "a", "port": 1}, {"name": "b", "port": 2}]
    assert obj["spec"]["tags"] == ["x", "y"]
    owned = {m["manager"]: m["fieldsV1"]["f:spec"] for m in obj["metadata"]["managedFields"]}
    assert owned["a"]["f:sel"] == {} and 'k:{"name":"a"}' in owned["a"]["f:ports"]
    assert owned["b"]["f:tags"] == {'v:"y"': {}}
