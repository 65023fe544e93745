"""PolicyReports from the API (issue 16): a cluster's latest Evaluations as wgpolicyk8s.io/v1alpha2 and
openreports.io/v1alpha1 objects, valid against the CRDs' openAPIV3Schema (re-typed below from the upstream
CRDs: kubernetes-sigs/wg-policy-prototypes policy-report/crd/v1alpha2 and openreports/reports-api
config/crd), only for users who may see the cluster, with no secrets."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from policies.engine import RegoEngine
from policies.models import Policy, Waiver
from policies.services.evaluation import evaluate_mapping, evaluate_targets
from policies.services.reviews import TargetReview
from tests.factories import ClusterFactory, PathMappingFactory
from tests.policies import policy_library as lib

pytestmark = pytest.mark.django_db

# ----------------------------------------------------------------------------- CRD schemas, re-typed
# Both CRDs share the shape below; additionalProperties is false here (the API server would prune an
# unknown field, so producing one is a bug we want to see).
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_REFERENCE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        k: {"type": "string"}
        for k in ("apiVersion", "fieldPath", "kind", "name", "namespace", "resourceVersion", "uid")
    },
}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STRINGS,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_STATUS = ["pass", "fail", "warn", "error", "skip"]
_RESULT = {
    "type": "object",
    "required": ["policy"],
    "additionalProperties": False,
    "properties": {
        "category": {"type": "string"},
        "message": {"type": "string"},
        "policy": {"type": "string"},
        "properties": _STRINGS,
        "resourceSelector": _SELECTOR,
        "resources": {"type": "array", "items": _OBJECT_REFERENCE},
        "result": {"type": "string", "enum": _STATUS},
        "rule": {"type": "string"},
        "scored": {"type": "boolean"},
        "severity": {"type": "string", "enum": ["critical", "high", "low", "medium", "info"]},
        "source": {"type": "string"},
        "timestamp": {
            "type": "object",
            "required": ["nanos", "seconds"],
            "additionalProperties": False,
            "properties": {"nanos": {"type": "integer"}, "seconds": {"type": "integer"}},
        },
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": _STRINGS,
    },
}


def _report_schema(api_version: str, kind: str, *, namespaced: bool, report_source: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"const": api_version},
        "kind": {"const": kind},
        "metadata": _METADATA,
        "results": {"type": "array", "items": _RESULT},
        "scope": _OBJECT_REFERENCE,
        "scopeSelector": _SELECTOR,
        "summary": {
            "type": "object",
            "additionalProperties": False,
            "properties": {s: {"type": "integer"} for s in _STATUS},
        },
    }
    if report_source:  # openreports has a report-level source and configuration
        properties["source"] = {"type": "string"}
        properties["configuration"] = {"type": "object"}
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "additionalProperties": False,
        "properties": properties,
    }
    if namespaced:
        schema["properties"]["metadata"] = {**_METADATA, "required": ["name", "namespace"]}
    return schema


SCHEMAS = {
    ("wgpolicyk8s.io/v1alpha2", "PolicyReport"): _report_schema(
        "wgpolicyk8s.io/v1alpha2", "PolicyReport", namespaced=True, report_source=False
    ),
    ("wgpolicyk8s.io/v1alpha2", "ClusterPolicyReport"): _report_schema(
        "wgpolicyk8s.io/v1alpha2", "ClusterPolicyReport", namespaced=False, report_source=False
    ),
    ("openreports.io/v1alpha1", "Report"): _report_schema(
        "openreports.io/v1alpha1", "Report", namespaced=True, report_source=True
    ),
    ("openreports.io/v1alpha1", "ClusterReport"): _report_schema(
        "openreports.io/v1alpha1", "ClusterReport", namespaced=False, report_source=True
    ),
}


def _validate(item: dict[str, Any]) -> None:
    schema = SCHEMAS[(item["apiVersion"], item["kind"])]
    jsonschema.Draft7Validator(schema).validate(item)
    if item["kind"] in ("ClusterPolicyReport", "ClusterReport"):
        assert "namespace" not in item["metadata"]


# ----------------------------------------------------------------------------- the fleet


@pytest.fixture
def reported(
    fleet: dict[str, Any],
    make_policy: Any,
    bind: Any,
    regorus_engine: RegoEngine,
    waive_legacy: Any,
    store_render: Any,
) -> dict[str, Any]:
    engine = regorus_engine
    names = ("no-latest", "required-labels", "numbers")
    policies: dict[str, Policy] = {name: make_policy(name, engine, **lib.spec(name)) for name in names}
    for policy in policies.values():
        bind(policy)
    bind(policies["no-latest"], fleet["web"], "warn")  # the group's binding wins: warn on web clusters
    waive_legacy(policies["required-labels"], fleet["web"])
    objects = [
        lib.deployment("web"),  # passes everything
        lib.deployment("latest", image="nginx:latest"),  # warn (no-latest on web is warn)
        lib.deployment("unlabelled", labels={}),  # fail (required-labels)
        lib.deployment("legacy-app", labels={}),  # skip (waived)
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}},  # cluster-scoped
    ]
    commit, mapping = fleet["commit"], fleet["mapping"]
    store_render(commit, mapping, [fleet["prod"], fleet["staging"]], objects, "apps/web/all.yaml")
    evaluate_mapping(commit, mapping, engine=engine)
    return {"policies": policies, **fleet}


def _results(items: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    out = []
    for item in items:
        for r in item.get("results", []):
            res = (r.get("resources") or [{}])[0]
            out.append((r["policy"], r["result"], res.get("kind", ""), res.get("name", "")))
    return sorted(out)


@pytest.mark.parametrize(
    ("fmt", "api", "kinds"),
    [
        ("wgpolicyk8s", "wgpolicyk8s.io/v1alpha2", ("PolicyReport", "ClusterPolicyReport")),
        ("openreports", "openreports.io/v1alpha1", ("Report", "ClusterReport")),
    ],
)
def test_cluster_reports_in_both_formats_are_valid_and_complete(
    reported: dict[str, Any], make_user: Any, token_client: Any, fmt: str, api: str, kinds: tuple[str, str]
) -> None:
    viewer = make_user("vera", role="viewer", scope=reported["web"])
    client = token_client(viewer)
    prod = reported["prod"]
    response = client.get(f"/api/policy-reports/{prod.pk}/?format={fmt}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["apiVersion"], body["kind"]) == ("v1", "List")
    items = body["items"]
    assert [(i["apiVersion"], i["kind"], i["metadata"].get("namespace")) for i in items] == [
        (api, kinds[1], None),
        (api, kinds[0], "apps"),
    ]
    for item in items:
        _validate(item)
        assert item["summary"] == {
            s: sum(1 for r in item["results"] if r["result"] == s)
            for s in ("pass", "fail", "warn", "error", "skip")
        }
        assert item["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fleetgate"
        assert all(r["source"] == "fleetgate" for r in item["results"])
        if fmt == "openreports":
            assert item["source"] == "fleetgate"
    results = _results(items)
    deployments = ("web", "latest", "unlabelled", "legacy-app")
    expected = sorted(
        [("no-latest", "warn", "Deployment", "latest")]
        + [("no-latest", "pass", "Deployment", n) for n in deployments if n != "latest"]
        + [("no-latest", "pass", "Namespace", "apps")]
        + [("required-labels", "fail", "Deployment", "unlabelled")]
        + [("required-labels", "skip", "Deployment", "legacy-app")]
        + [("required-labels", "pass", "Deployment", n) for n in ("web", "latest")]
        + [("numbers", "pass", "Deployment", n) for n in deployments]
        + [("numbers", "pass", "Namespace", "apps")]
    )
    # the erroring policy errors only on ConfigMaps: there are none, so it passes; no error result
    assert results == expected
    failing = next(r for i in items for r in i["results"] if r["result"] == "fail")
    assert failing["rule"] == "must-have-team"
    assert failing["severity"] == "high"
    assert failing["resources"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "unlabelled", "namespace": "apps"}
    ]
    assert failing["properties"]["cluster"] == "prod-eu-1"
    assert failing["properties"]["mapping"] == "web"
    assert failing["properties"]["commit"] == reported["commit"].sha
    skipped = next(r for i in items for r in i["results"] if r["result"] == "skip")
    waiver = Waiver.objects.get()
    assert skipped["properties"]["waiver"] == str(waiver.pk)
    warned = next(r for i in items for r in i["results"] if r["result"] == "warn")
    assert (warned["severity"], warned["properties"]["enforcement"]) == ("medium", "warn")
    # no secrets: the cluster's credentials never appear
    assert prod.token not in response.content.decode()


def test_engine_errors_are_error_results_in_the_cluster_report(
    reported: dict[str, Any], make_user: Any, token_client: Any, regorus_engine: RegoEngine
) -> None:
    commit, mapping, prod = reported["commit"], reported["mapping"], reported["prod"]
    manifest = prod.rendered_manifests.get(commit=commit, mapping=mapping)
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "apps", "annotations": {"example.com/n": "not a number"}},
    }
    manifest.resources = [
        *manifest.resources,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "x",
            "namespace": "apps",
            "source": "a.yaml",
            "document": 0,
            "object": cm,
        },
    ]
    manifest.save()
    evaluate_mapping(commit, mapping, engine=regorus_engine)
    client = token_client(make_user("root", role="admin"))
    items = client.get(f"/api/policy-reports/{prod.pk}/").json()["items"]
    for item in items:
        _validate(item)
    cluster_report = items[0]
    assert cluster_report["kind"] == "ClusterPolicyReport"  # the default format
    errors = [r for r in cluster_report["results"] if r["result"] == "error"]
    assert [(r["policy"], r["severity"]) for r in errors] == [("numbers", "high")]
    assert "engine error" in errors[0]["message"]
    assert cluster_report["summary"]["error"] == 1
    # the policy did not run: no pass results for it anywhere, the other policies still report
    results = _results(items)
    assert not [r for r in results if r[0] == "numbers" and r[1] == "pass"]
    assert ("no-latest", "pass", "ConfigMap", "x") in results


def test_only_users_who_may_see_the_cluster_get_its_reports(
    reported: dict[str, Any], make_user: Any, token_client: Any, django_assert_max_num_queries: Any
) -> None:
    prod = reported["prod"]
    outsider = token_client(make_user("olga", role="viewer", scope=reported["other"]))
    assert outsider.get(f"/api/policy-reports/{prod.pk}/").status_code == 404
    assert outsider.get("/api/policy-reports/999999/").status_code == 404
    anonymous = token_client(make_user("nobody"))
    assert anonymous.get(f"/api/policy-reports/{prod.pk}/").status_code == 404
    # the outsider's own cluster has no evaluations: an empty list, not someone else's results
    lonely = reported["lonely"]
    assert outsider.get(f"/api/policy-reports/{lonely.pk}/").json()["items"] == []
    # an unknown format is refused
    admin = token_client(make_user("root", role="admin"))
    assert admin.get(f"/api/policy-reports/{prod.pk}/?format=yaml").status_code == 404
    with django_assert_max_num_queries(12):
        assert admin.get(f"/api/policy-reports/{prod.pk}/").status_code == 200


def test_a_cluster_without_evaluations_has_no_reports(make_user: Any, token_client: Any) -> None:
    cluster = ClusterFactory(name="empty-1")
    admin = token_client(make_user("root", role="admin"))
    body = admin.get(f"/api/policy-reports/{cluster.pk}/?format=openreports").json()
    assert body == {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}
    assert json.dumps(body)  # plain JSON


def test_the_number_of_queries_does_not_grow_with_mappings(
    reported: dict[str, Any],
    make_user: Any,
    token_client: Any,
    regorus_engine: RegoEngine,
    store_render: Any,
) -> None:
    admin = token_client(make_user("root", role="admin"))
    url = f"/api/policy-reports/{reported['prod'].pk}/"
    admin.get(url)  # warm up (token lookup caches and the like)
    with CaptureQueriesContext(connection) as one:
        first = admin.get(url).json()
    commit, prod = reported["commit"], reported["prod"]
    api = PathMappingFactory(
        repository=reported["repo"], name="api", path="apps/api", cluster_group=reported["web"]
    )
    store_render(commit, api, [prod], [lib.deployment("api", labels={})], "apps/api/d.yaml")
    evaluate_mapping(commit, api, engine=regorus_engine)
    with CaptureQueriesContext(connection) as two:
        second = admin.get(url).json()
    assert len(_results(second["items"])) > len(_results(first["items"]))  # the new mapping is in
    assert ("required-labels", "fail", "Deployment", "api") in _results(second["items"])
    assert len(two) == len(one)


def test_a_cluster_that_could_not_be_reviewed_reports_an_error_and_no_passes(
    reported: dict[str, Any], make_user: Any, token_client: Any, regorus_engine: RegoEngine
) -> None:
    commit, mapping, prod = reported["commit"], reported["mapping"], reported["prod"]
    manifest = prod.rendered_manifests.get(commit=commit, mapping=mapping)
    reason = "the live state of prod-eu-1 could not be read: ConnectionRefusedError"
    evaluate_targets(
        commit,
        mapping,
        [(prod, manifest.resources, "apps")],
        engine=regorus_engine,
        reviews={prod.pk: TargetReview.unreadable(reason, create_only_allowed=False)},
    )
    client = token_client(make_user("root", role="admin"))
    items = client.get(f"/api/policy-reports/{prod.pk}/").json()["items"]
    for item in items:
        _validate(item)
    results = [r for item in items for r in item["results"]]
    assert [(r["result"], r["rule"]) for r in results] == [("error", "cannot_review")]
    assert reason in results[0]["message"]
    assert items[0]["summary"] == {"pass": 0, "fail": 0, "warn": 0, "error": 1, "skip": 0}


def test_findings_a_conftest_exception_excused_are_skip_results_with_the_exception(
    fleet: dict[str, Any],
    make_policy: Any,
    bind: Any,
    engine: RegoEngine,
    make_user: Any,
    token_client: Any,
    store_render: Any,
) -> None:
    """conftest ``exception`` rules are no Violation rows: the Evaluation keeps them (``review``), and the
    cluster's report shows each as ``skip`` with conftest's message for the exception, not as a pass."""
    policy = make_policy(
        "host-network",
        engine,
        style="conftest",
        modules=[{"path": "hn.rego", "source": lib.HOST_NETWORK}],
        data=lib.HOST_NETWORK_DATA,
    )
    bind(policy)
    objects = [
        lib.deployment("node-agent", host_network=True),
        lib.deployment("rogue", host_network=True),
        lib.deployment("web"),
    ]
    commit, mapping, prod = fleet["commit"], fleet["mapping"], fleet["prod"]
    resources = store_render(commit, mapping, [prod], objects, "apps/web/all.yaml")
    evaluate_targets(commit, mapping, [(prod, resources, "apps")], engine=engine)
    (stored,) = prod.evaluations.filter(commit=commit, mapping=mapping)
    assert [(e["policy"], e["rule"], e["name"]) for e in stored.review["exceptions"]] == [
        ("host-network", "deny_host_network", "node-agent")
    ]

    client = token_client(make_user("vera", role="viewer", scope=fleet["web"]))
    for fmt in ("wgpolicyk8s", "openreports"):
        items = client.get(f"/api/policy-reports/{prod.pk}/?format={fmt}").json()["items"]
        for item in items:
            _validate(item)
        assert _results(items) == [
            ("host-network", "fail", "Deployment", "rogue"),
            ("host-network", "pass", "Deployment", "web"),
            ("host-network", "skip", "Deployment", "node-agent"),
        ]
        (skipped,) = [r for i in items for r in i["results"] if r["result"] == "skip"]
        assert skipped["rule"] == "deny_host_network"
        assert skipped["message"] == (
            'excused by the policy\'s exception rule: data.main.exception[_][_] == "host_network"'
        )
        assert skipped["properties"]["exception"] == 'data.main.exception[_][_] == "host_network"'
        assert items[-1]["summary"]["skip"] == 1
