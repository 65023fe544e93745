"""Discovery documents, as the kubernetes client and kubectl read them, and CRDs adding their group."""

from __future__ import annotations

import pytest
from kubernetes.dynamic.exceptions import ResourceNotFoundError

REQUIRED = [
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Pod"),
    ("v1", "Event"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
]

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            },
        ],
    },
}


def test_version_and_root_documents(raw):
    code, version, _ = raw("GET", "/version")
    assert code == 200 and version["major"] == "1" and version["gitVersion"].startswith("v1.")
    code, api, _ = raw("GET", "/api")
    assert code == 200 and api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    code, apis, _ = raw("GET", "/apis")
    groups = {g["name"]: g for g in apis["groups"]}
    assert apis["kind"] == "APIGroupList"
    assert groups["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert {"batch", "networking.k8s.io", "rbac.authorization.k8s.io", "apiextensions.k8s.io"} <= set(groups)


def test_resource_lists_carry_verbs_short_names_and_status_subresources(raw):
    code, core, _ = raw("GET", "/api/v1")
    assert code == 200 and core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    cm = by_name["configmaps"]
    assert cm["kind"] == "ConfigMap" and cm["singularName"] == "configmap" and cm["namespaced"] is True
    assert cm["shortNames"] == ["cm"] and {"create", "get", "list", "watch", "patch", "delete"} <= set(
        cm["verbs"]
    )
    assert by_name["namespaces"]["namespaced"] is False
    assert by_name["namespaces/status"]["verbs"] == ["get", "patch", "update"]
    _, apps, _ = raw("GET", "/apis/apps/v1")
    names = {r["name"] for r in apps["resources"]}
    assert {"deployments", "deployments/status", "statefulsets", "daemonsets"} <= names


def test_unknown_group_version_and_openapi_are_404_status(raw):
    for path in ("/apis/nope.example.com/v1", "/apis/apps/v9", "/api/v2", "/openapi/v2", "/openapi/v3"):
        code, body, _ = raw("GET", path)
        assert code == 404, path
        assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "NotFound"


def test_aggregated_discovery_request_gets_the_plain_form(raw):
    accept = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    )
    code, body, resp = raw("GET", "/apis", headers={"Accept": accept})
    assert code == 200 and body["kind"] == "APIGroupList"
    assert resp.getheader("Content-Type") == "application/json"


def test_dynamic_client_finds_every_required_kind(dyn):
    for api_version, kind in REQUIRED:
        res = dyn.resources.get(api_version=api_version, kind=kind)
        assert res.kind == kind
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.namespaced and deployments.short_names == ["deploy"]
    assert deployments.subresources["status"].kind == "Deployment"


def test_crd_is_established_and_serves_its_custom_resources(cluster, dyn, make_client, raw):
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    with pytest.raises(ResourceNotFoundError):
        dyn.resources.get(api_version="example.com/v1", kind="Widget")
    crds.server_side_apply(body=CRD, name="widgets.example.com", field_manager="fleetgate")
    crd = crds.get(name="widgets.example.com")
    conditions = {c["type"]: c["status"] for c in crd.status.conditions}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    _, apis, _ = raw("GET", "/apis")
    assert "example.com" in {g["name"] for g in apis["groups"]}
    _, res_list, _ = raw("GET", "/apis/example.com/v1")
    assert {r["name"] for r in res_list["resources"]} == {"widgets", "widgets/status"}

    fresh = make_client(cluster)  # a new discovery cache sees the new group
    widgets = fresh.resources.get(api_version="example.com/v1", kind="Widget")
    widgets.create(
        body={
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w1", "namespace": "default"},
            "spec": {"size": 3},
        }
    )
    listed = widgets.get(namespace="default")
    assert listed.kind == "WidgetList" and [w.metadata.name for w in listed.items] == ["w1"]

    crds.delete(name="widgets.example.com")
    code, _, _ = raw("GET", "/apis/example.com/v1")
    assert code == 404
    code, _, _ = raw("GET", "/apis/example.com/v1/namespaces/default/widgets/w1")
    assert code == 404


def test_crd_name_must_match_plural_and_group(dyn):
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    bad = {**CRD, "metadata": {"name": "gadgets.example.com"}}
    from kubernetes.dynamic.exceptions import UnprocessibleEntityError

    with pytest.raises(UnprocessibleEntityError) as err:
        crds.create(body=bad)
    import json

    assert 'must be spec.names.plural+"."+spec.group' in json.loads(err.value.body)["message"]


def test_table_answers_for_kubectl_get(raw, deployment):
    raw("POST", "/apis/apps/v1/namespaces/default/deployments", deployment())
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    code, tab, resp = raw("GET", "/apis/apps/v1/namespaces/default/deployments", headers={"Accept": accept})
    assert code == 200 and tab["kind"] == "Table" and tab["apiVersion"] == "meta.k8s.io/v1"
    assert resp.getheader("Content-Type").startswith("application/json;as=Table")
    assert [c["name"] for c in tab["columnDefinitions"]] == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
    ]
    row = tab["rows"][0]
    assert row["cells"][:4] == ["web", "2/2", 2, 2]
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "web"
    code, one, _ = raw("GET", "/api/v1/namespaces/default", headers={"Accept": accept})
    assert one["rows"][0]["cells"][:2] == ["default", "Active"]


def test_events_can_be_selected_by_involved_object(raw):
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1"},
        "reason": "Scaled",
        "type": "Normal",
        "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "default"},
    }
    assert raw("POST", "/api/v1/namespaces/default/events", event)[0] == 201
    _, hit, _ = raw(
        "GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb,type%3DNormal"
    )
    _, miss, _ = raw("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Ddb")
    assert [e["metadata"]["name"] for e in hit["items"]] == ["e1"] and miss["items"] == []
    code, _, _ = raw("GET", "/api/v1/namespaces/default/configmaps?fieldSelector=involvedObject.name%3Dweb")
    assert code == 400
