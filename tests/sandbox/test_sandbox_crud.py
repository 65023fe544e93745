"""Create, get, replace, delete and list through the kubernetes client, with the apiserver's exact errors."""

from __future__ import annotations

import json

import pytest
from kubernetes.dynamic.exceptions import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    UnprocessibleEntityError,
)


def _status(exc: Exception) -> dict:
    return json.loads(exc.body)  # type: ignore[attr-defined]


def _cm(name: str, ns: str = "default", labels: dict | None = None, **data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "data": data,
    }


def test_create_sets_server_metadata_and_second_create_is_already_exists(dyn, raw):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    created = cms.create(body=_cm("settings", a="1"))
    meta = created.metadata
    assert meta.uid and meta.creationTimestamp.endswith("Z") and isinstance(meta.resourceVersion, str)
    assert created.kind == "ConfigMap" and created.apiVersion == "v1"
    assert meta.managedFields[0].operation == "Update"
    with pytest.raises(ConflictError) as err:
        cms.create(body=_cm("settings"))
    status = _status(err.value)
    assert status == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'configmaps "settings" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "settings", "kind": "configmaps"},
        "code": 409,
    }
    code, _, _ = raw("POST", "/api/v1/namespaces/default/configmaps", _cm("other"))
    assert code == 201


def test_already_exists_message_names_the_group(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.create(body=deployment())
    with pytest.raises(ConflictError) as err:
        deps.create(body=deployment())
    status = _status(err.value)
    assert status["message"] == 'deployments.apps "web" already exists'
    assert status["details"] == {"name": "web", "group": "apps", "kind": "deployments"}


def test_get_missing_is_not_found_status(dyn):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    with pytest.raises(NotFoundError) as err:
        deps.get(name="nope", namespace="default")
    status = _status(err.value)
    assert status["code"] == 404 and status["reason"] == "NotFound"
    assert status["message"] == 'deployments.apps "nope" not found'


def test_namespaced_object_needs_its_namespace(dyn):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    with pytest.raises(NotFoundError) as err:
        cms.create(body=_cm("x", ns="missing"))
    assert _status(err.value)["message"] == 'namespaces "missing" not found'


def test_replace_with_stale_resource_version_conflicts(dyn):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    first = cms.create(body=_cm("cfg", a="1")).to_dict()
    second = dict(first, data={"a": "2"})
    updated = cms.replace(body=second)
    assert int(updated.metadata.resourceVersion) > int(first["metadata"]["resourceVersion"])
    assert updated.metadata.uid == first["metadata"]["uid"]
    stale = dict(first, data={"a": "3"})
    with pytest.raises(ConflictError) as err:
        cms.replace(body=stale)
    status = _status(err.value)
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on configmaps "cfg": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    unconditional = dict(first, data={"a": "4"})
    unconditional["metadata"] = {k: v for k, v in first["metadata"].items() if k != "resourceVersion"}
    assert cms.replace(body=unconditional).data.a == "4"


def test_body_name_differing_from_url_is_bad_request(dyn, raw):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cms.create(body=_cm("cfg"))
    with pytest.raises(BadRequestError):
        cms.replace(body=_cm("other"), name="cfg", namespace="default")
    code, body, _ = raw(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/cfg?fieldManager=t",
        _cm("other"),
        "application/apply-patch+yaml",
    )
    assert code == 400 and body["reason"] == "BadRequest"


def test_invalid_name_is_unprocessable(dyn):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    with pytest.raises(UnprocessibleEntityError) as err:
        cms.create(body=_cm("Not_Valid"))
    status = _status(err.value)
    assert status["reason"] == "Invalid" and status["details"]["causes"][0]["field"] == "metadata.name"


def test_generation_counts_spec_changes_only(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.create(body=deployment())
    obj = deps.get(name="web", namespace="default").to_dict()
    assert obj["metadata"]["generation"] == 1 and obj["status"]["observedGeneration"] == 1  # status: no bump
    obj["metadata"]["labels"]["extra"] = "yes"
    deps.replace(body=obj)
    obj = deps.get(name="web", namespace="default").to_dict()
    assert obj["metadata"]["generation"] == 1
    obj["spec"]["replicas"] = 5
    deps.replace(body=obj)
    assert deps.get(name="web", namespace="default").metadata.generation == 2


def test_delete_answers_status_success_with_details(dyn, cluster):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    uid = cms.create(body=_cm("gone")).metadata.uid
    result = cms.delete(name="gone", namespace="default")
    assert result.kind == "Status" and result.status == "Success"
    assert result.details.name == "gone" and result.details.kind == "configmaps" and result.details.uid == uid
    assert cluster.get_object("v1", "ConfigMap", "gone", "default") is None
    with pytest.raises(NotFoundError):
        cms.delete(name="gone", namespace="default")


def test_delete_with_finalizers_sets_deletion_timestamp_until_they_are_removed(dyn, cluster):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    body = _cm("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    cms.create(body=body)
    pending = cms.delete(name="held", namespace="default")
    assert pending.kind == "ConfigMap" and pending.metadata.deletionTimestamp
    assert cms.get(name="held", namespace="default").metadata.deletionTimestamp
    cms.patch(
        name="held",
        namespace="default",
        body={"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    with pytest.raises(NotFoundError):
        cms.get(name="held", namespace="default")


def test_deleting_a_namespace_removes_its_objects(dyn, cluster):
    nss = dyn.resources.get(api_version="v1", kind="Namespace")
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    ns = nss.create(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    assert ns.status.phase == "Active" and ns.metadata.labels["kubernetes.io/metadata.name"] == "team-a"
    cms.create(body=_cm("a", ns="team-a"))
    cms.create(body=_cm("b", ns="team-a"))
    cms.create(body=_cm("keep"))
    nss.delete(name="team-a")
    assert [c.metadata.name for c in cms.get().items] == ["keep"]
    with pytest.raises(NotFoundError):
        cms.get(name="a", namespace="team-a")


def test_list_with_label_selectors(dyn):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cms.create(body=_cm("a", labels={"tier": "web", "env": "prod"}))
    cms.create(body=_cm("b", labels={"tier": "db", "env": "prod"}))
    cms.create(body=_cm("c", labels={"tier": "web"}))
    cms.create(body=_cm("d"))

    def names(selector: str) -> list[str]:
        result = cms.get(namespace="default", label_selector=selector)
        assert result.kind == "ConfigMapList" and result.apiVersion == "v1"
        return [i.metadata.name for i in result.items]

    assert names("tier=web") == ["a", "c"]
    assert names("tier==web,env=prod") == ["a"]
    assert names("tier!=web") == ["b", "d"]
    assert names("tier in (db, web)") == ["a", "b", "c"]
    assert names("tier notin (web)") == ["b", "d"]
    assert names("env") == ["a", "b"]
    assert names("!env") == ["c", "d"]
    with pytest.raises(BadRequestError):
        cms.get(namespace="default", label_selector="tier in (web")


def test_list_field_selectors_all_namespaces_and_list_resource_version(dyn, cluster):
    nss = dyn.resources.get(api_version="v1", kind="Namespace")
    nss.create(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cms.create(body=_cm("x"))
    cms.create(body=_cm("x", ns="other"))
    cms.create(body=_cm("y", ns="other"))
    everything = cms.get()
    assert [(i.metadata.namespace, i.metadata.name) for i in everything.items] == [
        ("default", "x"),
        ("other", "x"),
        ("other", "y"),
    ]
    assert everything.metadata.resourceVersion == str(cluster.resource_version)
    assert len(cms.get(field_selector="metadata.name=x").items) == 2
    assert [i.metadata.namespace for i in cms.get(field_selector="metadata.namespace!=default").items] == [
        "other",
        "other",
    ]
    assert [
        i.metadata.name for i in cms.get(field_selector="metadata.name==y,metadata.namespace=other").items
    ] == ["y"]
    with pytest.raises(BadRequestError):
        cms.get(field_selector="spec.foo=1")


def test_list_pagination_with_limit_and_continue(dyn):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    for i in range(5):
        cms.create(body=_cm(f"cm-{i}"))
    page = cms.get(namespace="default", limit=2)
    names = [i.metadata.name for i in page.items]
    while page.metadata["continue"]:
        page = cms.get(namespace="default", limit=2, _continue=page.metadata["continue"])
        names += [i.metadata.name for i in page.items]
    assert names == [f"cm-{i}" for i in range(5)]


def test_dry_run_create_update_and_delete_store_nothing(dyn, cluster):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    rv = cluster.resource_version
    preview = cms.create(body=_cm("dry", a="1"), dry_run="All")
    assert preview.metadata.name == "dry" and preview.data.a == "1"
    assert cluster.get_object("v1", "ConfigMap", "dry", "default") is None
    assert cluster.resource_version == rv
    cms.create(body=_cm("real", a="1"))
    rv = cluster.resource_version
    assert cms.replace(body=_cm("real", a="2"), dry_run="All").data.a == "2"
    cms.delete(name="real", namespace="default", dry_run="All")
    assert cluster.get_object("v1", "ConfigMap", "real", "default")["data"] == {"a": "1"}
    assert cluster.resource_version == rv


def test_secret_string_data_is_stored_as_base64_data(dyn):
    secrets = dyn.resources.get(api_version="v1", kind="Secret")
    s = secrets.create(
        body={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "stringData": {"password": "hunter2"},
        }
    )
    assert s.data.password == "aHVudGVyMg==" and s.type == "Opaque"
    assert "stringData" not in s.to_dict()


def test_cluster_scoped_kinds_and_cluster_wide_rbac(dyn):
    roles = dyn.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole")
    role = roles.create(
        body={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        }
    )
    assert "namespace" not in role.metadata.to_dict() or role.metadata.namespace is None
    assert [r.metadata.name for r in roles.get().items] == ["reader"]


def test_errors_for_bad_bodies_are_status_objects(raw):
    code, body, _ = raw("POST", "/api/v1/namespaces/default/configmaps", b"{not json")
    assert code == 400 and body["kind"] == "Status" and body["status"] == "Failure"
    code, body, _ = raw(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}},
    )
    assert code == 400 and body["reason"] == "BadRequest"
    code, body, _ = raw("GET", "/api/v1/namespaces/default/nothings")
    assert code == 404 and body["message"] == "the server could not find the requested resource"


def test_generation_only_on_kinds_that_have_it(dyn, deployment):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    assert "generation" not in cms.create(body=_cm("plain")).metadata.to_dict()
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deps.create(body=deployment()).metadata.generation == 1


def test_scale_subresource(dyn, deployment, raw):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.create(body=deployment(replicas=2))
    code, scale, _ = raw("GET", "/apis/apps/v1/namespaces/default/deployments/web/scale")
    assert code == 200 and scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2} and scale["status"]["selector"] == "app=web"
    code, scale, _ = raw(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        {"spec": {"replicas": 4}},
        "application/merge-patch+json",
    )
    assert code == 200 and scale["spec"]["replicas"] == 4
    obj = deps.get(name="web", namespace="default").to_dict()
    assert obj["spec"]["replicas"] == 4 and obj["metadata"]["generation"] == 2
    assert any(m.get("subresource") == "scale" for m in obj["metadata"]["managedFields"])
    code, _, _ = raw("GET", "/api/v1/namespaces/default/configmaps/x/scale")
    assert code == 404


def test_request_bodies_over_the_apiserver_limit_are_refused(raw):
    big = {"metadata": {"name": "big"}, "data": {"x": "a" * (3 * 1024 * 1024)}}
    code, body, _ = raw("POST", "/api/v1/namespaces/default/configmaps", big)
    assert code == 413 and body["reason"] == "RequestEntityTooLarge"


def test_protobuf_bodies_are_refused_with_415(raw):
    code, body, _ = raw(
        "POST", "/api/v1/namespaces/default/configmaps", b"k8s\x00\x0a", "application/vnd.kubernetes.protobuf"
    )
    assert code == 415 and "JSON only" in body["message"]


def test_built_in_defaults_and_list_items_like_the_apiserver(dyn, deployment, raw):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = deployment()
    body["spec"]["template"]["spec"]["containers"].append({"name": "latest", "image": "busybox"})
    obj = deps.create(body=body).to_dict()
    spec = obj["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate" and spec["revisionHistoryLimit"] == 10
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["dnsPolicy"] == "ClusterFirst"
    pulls = [c["imagePullPolicy"] for c in pod["containers"]]
    assert pulls == ["IfNotPresent", "Always"]  # a tag vs no tag
    svc = (
        dyn.resources.get(api_version="v1", kind="Service")
        .create(
            body={
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "s", "namespace": "default"},
                "spec": {"ports": [{"port": 80}]},
            }
        )
        .to_dict()
    )
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["clusterIP"].startswith("10.96.")
    assert svc["spec"]["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    assert svc["status"] == {"loadBalancer": {}}
    _, listed, _ = raw("GET", "/apis/apps/v1/namespaces/default/deployments")
    assert listed["kind"] == "DeploymentList" and "kind" not in listed["items"][0]


def test_a_terminating_namespace_takes_no_new_objects(dyn):
    from kubernetes.client.exceptions import ApiException

    nss = dyn.resources.get(api_version="v1", kind="Namespace")
    nss.create(
        body={
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "closing", "finalizers": ["example.com/hold"]},
        }
    )
    pending = nss.delete(name="closing")
    assert pending.status.phase == "Terminating" and pending.metadata.deletionTimestamp
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    with pytest.raises(ApiException) as err:
        cms.create(body=_cm("late", ns="closing"))
    assert err.value.status == 403 and "being terminated" in json.loads(err.value.body)["message"]
    nss.patch(
        name="closing", body={"metadata": {"finalizers": None}}, content_type="application/merge-patch+json"
    )
    with pytest.raises(NotFoundError):
        nss.get(name="closing")
