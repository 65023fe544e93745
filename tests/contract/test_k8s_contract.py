"""The raw HTTP contract: what the sandbox must answer exactly as the real kube-apiserver does.

Every test sends the same requests to both backends (``both`` = [sandbox, kube-apiserver]) with
``requests`` and compares the parts of the answers that clients depend on.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.contract.conftest import Http

pytestmark = pytest.mark.kube_apiserver

APPLY = "application/apply-patch+yaml"
REQUIRED_VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}
# (group/version path, resource): what the connector and kubectl rely on.
RESOURCES = {
    "/api/v1": ["configmaps", "secrets", "namespaces", "services", "serviceaccounts", "pods"],
    "/apis/apps/v1": ["deployments", "statefulsets", "daemonsets", "replicasets"],
    "/apis/batch/v1": ["jobs", "cronjobs"],
    "/apis/apiextensions.k8s.io/v1": ["customresourcedefinitions"],
    "/apis/rbac.authorization.k8s.io/v1": ["roles", "rolebindings", "clusterroles", "clusterrolebindings"],
    "/apis/networking.k8s.io/v1": ["ingresses", "networkpolicies"],
}


def cm(name: str, ns: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {"k": "v"}}


def deployment(name: str, ns: str, replicas: int = 1, labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def apply(b: Http, path: str, body: dict, manager: str = "fleetgate", **params: str) -> Any:
    return b("PATCH", path, json.dumps(body), APPLY, params={"fieldManager": manager, **params})


def status_shape(body: dict) -> dict:
    """The parts of a Status clients read (uid and causes' order aside)."""
    details = body.get("details") or {}
    return {
        "kind": body.get("kind"),
        "apiVersion": body.get("apiVersion"),
        "status": body.get("status"),
        "reason": body.get("reason"),
        "code": body.get("code"),
        "message": body.get("message"),
        "details.name": details.get("name"),
        "details.kind": details.get("kind"),
        "details.group": details.get("group", ""),
        "causes": sorted(
            (c.get("reason"), c.get("field"), c.get("message")) for c in details.get("causes") or []
        ),
    }


def each(both: list[Http], fn: Any) -> tuple[Any, Any]:
    sandbox, real = (fn(b) for b in both)
    return sandbox, real


# -- discovery ------------------------------------------------------------------------------------------
def _resource_facts(b: Http) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for gv, names in RESOURCES.items():
        r = b("GET", gv)
        assert r.status_code == 200, (b.name, gv, r.text)
        doc = r.json()
        assert (doc["kind"], doc["groupVersion"]) == ("APIResourceList", gv.split("/", 2)[-1]), b.name
        by_name = {res["name"]: res for res in doc["resources"]}
        for name in names:
            res = by_name[name]
            facts[f"{gv}/{name}"] = {
                "kind": res["kind"],
                "singularName": res["singularName"],
                "namespaced": res["namespaced"],
                "verbs": REQUIRED_VERBS & set(res["verbs"]),
                "status": f"{name}/status" in by_name,
            }
    return facts


def test_discovery_documents_agree(both: list[Http]) -> None:
    sandbox, real = each(both, _resource_facts)
    assert sandbox == real

    def groups(b: Http) -> dict[str, Any]:
        doc = b("GET", "/apis").json()
        assert doc["kind"] == "APIGroupList"
        wanted = {"apps", "batch", "apiextensions.k8s.io", "rbac.authorization.k8s.io", "networking.k8s.io"}
        return {
            g["name"]: (g["preferredVersion"]["groupVersion"], sorted(v["version"] for v in g["versions"]))
            for g in doc["groups"]
            if g["name"] in wanted
        }

    sandbox_groups, real_groups = each(both, groups)
    assert sandbox_groups == real_groups and len(real_groups) == 5
    api = [b("GET", "/api").json() for b in both]
    assert [(a["kind"], a["versions"]) for a in api] == [("APIVersions", ["v1"])] * 2
    versions = [b("GET", "/version").json() for b in both]
    assert all(re.match(r"v1\.\d+\.\d+", v["gitVersion"]) for v in versions)
    missing = [b("GET", "/apis/nope.example.com/v1").status_code for b in both]
    assert missing == [404, 404]


# -- apply ----------------------------------------------------------------------------------------------
def test_apply_create_update_and_conflict(both: list[Http]) -> None:
    def run(b: Http) -> dict[str, Any]:
        path = f"/apis/apps/v1/namespaces/{b.namespace}/deployments/web"
        created = apply(b, path, deployment("web", b.namespace, 1))
        updated = apply(b, path, deployment("web", b.namespace, 2))
        before_noop = b("GET", path).json()["metadata"]["resourceVersion"]
        same = apply(b, path, deployment("web", b.namespace, 2))
        conflict = apply(b, path, deployment("web", b.namespace, 3), manager="kubectl")
        forced = apply(b, path, deployment("web", b.namespace, 3), manager="kubectl", force="true")
        body = conflict.json()
        # (the sandbox's workload controller also appears, as kube-controller-manager would on a cluster)
        managers = {
            m["manager"]: m["operation"]
            for m in forced.json()["metadata"]["managedFields"]
            if m["manager"] in ("fleetgate", "kubectl")
        }
        return {
            "codes": [created.status_code, updated.status_code, same.status_code, conflict.status_code],
            "forced": (forced.status_code, forced.json()["spec"]["replicas"]),
            "no-op keeps resourceVersion": same.json()["metadata"]["resourceVersion"] == before_noop,
            "conflict": status_shape(body),
            "managers": managers,
        }

    sandbox, real = each(both, run)
    assert real["codes"] == [201, 200, 200, 409]
    assert real["conflict"]["reason"] == "Conflict"
    assert (
        real["conflict"]["message"]
        == 'Apply failed with 1 conflict: conflict with "fleetgate": .spec.replicas'
    )
    assert real["conflict"]["causes"] == [
        ("FieldManagerConflict", ".spec.replicas", 'conflict with "fleetgate"')
    ]
    assert sandbox == real


def test_apply_without_field_manager_is_422(both: list[Http]) -> None:
    def run(b: Http) -> tuple[int, dict]:
        r = b("PATCH", b.ns("/configmaps/x"), json.dumps(cm("x", b.namespace)), APPLY)
        return r.status_code, status_shape(r.json())

    sandbox, real = each(both, run)
    assert real[0] == 422
    assert real[1]["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )
    assert sandbox == real


def test_dry_run_all_stores_nothing(both: list[Http]) -> None:
    def run(b: Http) -> tuple[Any, ...]:
        r = apply(b, b.ns("/configmaps/dry"), cm("dry", b.namespace), dryRun="All")
        after = b("GET", b.ns("/configmaps/dry"))
        listed = b("GET", b.ns("/configmaps"), params={"fieldSelector": "metadata.name=dry"}).json()
        return r.status_code, r.json()["data"], after.status_code, listed["items"]

    sandbox, real = each(both, run)
    assert real == (201, {"k": "v"}, 404, [])
    assert sandbox == real


def test_generation_increments_only_on_spec_changes(both: list[Http]) -> None:
    def run(b: Http) -> list[int]:
        path = f"/apis/apps/v1/namespaces/{b.namespace}/deployments/gen"
        gens = [apply(b, path, deployment("gen", b.namespace, 1)).json()["metadata"]["generation"]]
        gens.append(
            apply(b, path, deployment("gen", b.namespace, 1, {"app": "gen", "x": "y"})).json()["metadata"][
                "generation"
            ]
        )
        gens.append(
            apply(b, path, deployment("gen", b.namespace, 2, {"app": "gen", "x": "y"})).json()["metadata"][
                "generation"
            ]
        )
        status = {"status": {"observedGeneration": 2, "replicas": 2}}
        r = b("PATCH", path + "/status", status, "application/merge-patch+json")
        gens.append(r.json()["metadata"]["generation"])
        return gens

    sandbox, real = each(both, run)
    assert real == [1, 1, 2, 2]
    assert sandbox == real


# -- lists and selectors ------------------------------------------------------------------------------
SELECTORS = [
    "tier=web",
    "tier!=web",
    "tier in (web,db)",
    "tier notin (web)",
    "tier",
    "!tier",
    "tier=web,env=prod",
    "env in (prod),tier notin (db)",
]


def test_label_selectors_select_the_same_names(both: list[Http]) -> None:
    objects = {
        "a": {"tier": "web", "env": "prod"},
        "b": {"tier": "web", "env": "dev"},
        "c": {"tier": "db", "env": "prod"},
        "d": {"env": "prod"},
        "e": {},
    }

    def run(b: Http) -> dict[str, list[str]]:
        for name, labels in objects.items():
            assert (
                apply(b, b.ns(f"/configmaps/{name}"), cm(name, b.namespace, labels=labels)).status_code == 201
            )
        out = {}
        for selector in SELECTORS:
            r = b("GET", b.ns("/configmaps"), params={"labelSelector": selector})
            doc = r.json()
            assert (r.status_code, doc["kind"], doc["apiVersion"]) == (200, "ConfigMapList", "v1"), b.name
            out[selector] = sorted(
                i["metadata"]["name"] for i in doc["items"] if i["metadata"]["name"] in objects
            )
        return out

    sandbox, real = each(both, run)
    assert real["tier!=web"] == ["c", "d", "e"]
    assert real["tier notin (web)"] == ["c", "d", "e"]
    assert real["!tier"] == ["d", "e"]
    assert sandbox == real


# -- errors ---------------------------------------------------------------------------------------------
def test_status_error_bodies(both: list[Http]) -> None:
    def run(b: Http) -> dict[str, Any]:
        missing = b("GET", f"/apis/apps/v1/namespaces/{b.namespace}/deployments/nothing")
        body = cm("dup", b.namespace)
        first = b("POST", b.ns("/configmaps"), body)
        dup = b("POST", b.ns("/configmaps"), body)
        mismatch = b("PUT", b.ns("/configmaps/other"), body)
        bad_type = b("PATCH", b.ns("/configmaps/dup"), "{}", "application/x-nonsense")
        return {
            "404": (missing.status_code, status_shape(missing.json())),
            "201": first.status_code,
            "409": (dup.status_code, status_shape(dup.json())),
            "400": (mismatch.status_code, mismatch.json()["reason"], mismatch.json()["kind"]),
            "415": (bad_type.status_code, bad_type.json()["reason"]),
        }

    sandbox, real = each(both, run)
    assert real["404"][1]["message"] == 'deployments.apps "nothing" not found'
    assert real["409"][1]["reason"] == "AlreadyExists"
    assert real["409"][1]["message"] == 'configmaps "dup" already exists'
    assert sandbox == real


# -- watch ----------------------------------------------------------------------------------------------
def test_watch_events(both: list[Http]) -> None:
    def run(b: Http) -> list[tuple[str, str, bool]]:
        rv = b("GET", b.ns("/configmaps")).json()["metadata"]["resourceVersion"]
        apply(b, b.ns("/configmaps/w"), cm("w", b.namespace, {"v": "1"}))
        apply(b, b.ns("/configmaps/w"), cm("w", b.namespace, {"v": "2"}))
        assert b("DELETE", b.ns("/configmaps/w")).status_code == 200
        r = b(
            "GET",
            b.ns("/configmaps"),
            params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"},
            stream=True,
        )
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
        events = []
        for line in r.iter_lines():
            if line:
                event = json.loads(line)
                meta = event["object"]["metadata"]
                events.append((event["type"], meta["name"], bool(meta.get("resourceVersion"))))
        return events

    sandbox, real = each(both, run)
    assert real == [("ADDED", "w", True), ("MODIFIED", "w", True), ("DELETED", "w", True)]
    assert sandbox == real


def test_delete_answers(both: list[Http]) -> None:
    def run(b: Http) -> dict[str, Any]:
        apply(b, b.ns("/configmaps/gone"), cm("gone", b.namespace))
        path = f"/apis/apps/v1/namespaces/{b.namespace}/deployments/gone"
        apply(b, path, deployment("gone", b.namespace))
        out = {}
        for what, url in (("configmap", b.ns("/configmaps/gone")), ("deployment", path)):
            r = b("DELETE", url)
            body = r.json()
            details = body.get("details") or {}
            out[what] = (
                r.status_code,
                body.get("kind"),
                body.get("status"),
                details.get("name"),
                details.get("kind"),
                details.get("group"),
                bool(details.get("uid")),
            )
            again = b("DELETE", url)
            out[f"{what} again"] = (again.status_code, again.json()["reason"])
        return out

    sandbox, real = each(both, run)
    assert sandbox == real


def test_main_resource_ignores_status_and_status_subresource_keeps_spec(both: list[Http]) -> None:
    def run(b: Http) -> tuple[Any, ...]:
        path = f"/apis/apps/v1/namespaces/{b.namespace}/deployments/st"
        apply(b, path, deployment("st", b.namespace, 1))
        b(
            "PATCH",
            path + "/status",
            {"status": {"observedGeneration": 7, "replicas": 1}},
            "application/merge-patch+json",
        )
        body = deployment("st", b.namespace, 1)
        body["status"] = {"observedGeneration": 99}
        applied = apply(b, path, body).json()
        spec_via_status = b(
            "PATCH", path + "/status", {"spec": {"replicas": 5}}, "application/merge-patch+json"
        ).json()
        return applied["status"]["observedGeneration"], spec_via_status["spec"]["replicas"]

    sandbox, real = each(both, run)
    assert real == (7, 1)
    assert sandbox == real
