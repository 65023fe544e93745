"""Tenant allow-lists and cluster-scoped kinds of CRDs already installed on a cluster (review of issue 21).

The render knows a kind is cluster-scoped only from its own list and from CRDs of the same render; a CRD the
cluster already has (ClusterSecretStore, ClusterIssuer, Kyverno's ClusterPolicy) looked namespaced there and
passed. The connector knows the scope from the cluster's discovery and refuses such an object for a
restricted group that does not list the kind: the sync fails naming the object, and nothing is applied.
Shown on a sandbox cluster (the whole fetch -> render -> gate -> rollout flow) and on the real kube-apiserver
(plan and apply with the cluster's own credentials, no service account to bound them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from kubernetes import client as k8s_client

from clusters.models import Cluster, ClusterGroup
from clusters.tenancy import save_allow_list
from fleet.rollouts import ports
from fleet.rollouts.models import Rollout
from fleet.sources.models import MappingRender, PathMapping
from fleet.sources.services import fetch_repository
from tests.factories import UserFactory
from tests.kube_backends import (  # noqa: F401 - fixtures registered by import
    KubeApiServer,
    kube_apiserver,
    kube_apiserver_bin_dir,
    unique_name,
)
from tests.rollouts.conftest import configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)


def crd(group: str, kind: str = "ClusterSecretStore", plural: str = "clustersecretstores") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Cluster",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }


def store(group: str, name: str = "vault") -> str:
    return (f"apiVersion: {group}/v1\nkind: ClusterSecretStore\nmetadata:\n  name: {name}\n"
            "spec:\n  provider: vault\n")


def restrict(group: ClusterGroup, **fields: Any) -> None:
    root = User.objects.filter(username="root-admin").first() or UserFactory(username="root-admin",
                                                                               is_superuser=True)
    save_allow_list(root, group, {"sources": [{"repository": "*", "path": "*"}], "namespaces": ["team-a"],
                                  **fields})


def test_an_installed_crd_s_cluster_scoped_kind_is_refused_at_sync_and_nothing_is_applied(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    fleet = make_fleet({"one": {"env": "tenants"}})
    box = fleet.sandbox("one")
    box.apply_object(crd("external-secrets.io"))  # installed on the cluster beforehand, not by the mapping
    box.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    group = make_group("tenants", "tenants")
    restrict(group)
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "teams/a/web", group)
    PathMapping.objects.filter(pk=mapping.pk).update(target_namespace="team-a")

    sha = git_repo.commit({"teams/a/web/cm.yaml": configmap("ok", {"a": "1"}, namespace="team-a"),
                           "teams/a/web/store.yaml": store("external-secrets.io")}, "a cluster secret store")
    fetch_repository(repo)
    tasks.drain()
    render = MappingRender.objects.get(mapping=mapping, commit__sha=sha)
    assert render.status == "rendered"  # the render cannot know the kind's scope: the cluster can
    rollout = Rollout.objects.get(mapping=mapping, commit__sha=sha)
    assert rollout.state == "halted", (rollout.state, rollout.reason)
    sync = rollout.syncs.get()
    message = sync.error or rollout.reason
    assert "ClusterSecretStore vault: cluster-scoped kind external-secrets.io/ClusterSecretStore is not " \
           "allowed for cluster group 'tenants'" in message, message
    assert "nothing of this mapping was applied" in message
    assert box.get_object("external-secrets.io/v1", "ClusterSecretStore", "vault") is None
    assert box.get_object("v1", "ConfigMap", "ok", "team-a") is None  # nothing applied, not even the rest


@pytest.mark.kube_apiserver
def test_the_real_api_server_s_discovery_tells_the_connector_the_kind_is_cluster_scoped(
    kube_apiserver: KubeApiServer,  # noqa: F811
    git_repo: Any, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    raw = kube_apiserver.dynamic_client(tmp_path / "raw.json")
    api_group = f"{unique_name(request.node.originalname, 'g')[-6:]}.example.com"
    definition = crd(api_group)
    ext = k8s_client.ApiextensionsV1Api(raw.client)
    ext.create_custom_resource_definition(definition)
    for _ in range(300):  # installed and served before the test starts (not a timing assertion)
        status = ext.read_custom_resource_definition(definition["metadata"]["name"]).status
        conditions = status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            break
        time.sleep(0.1)
    custom = k8s_client.CustomObjectsApi(raw.client)
    try:
        cluster = Cluster.objects.create(name="real", api_url=kube_apiserver.url, auth_method="token",
                                         token=kube_apiserver.token, ca_data=kube_apiserver.ca_pem,
                                         labels={"tenant": "team"})
        group = ClusterGroup.objects.create(name="team", selector={"matchLabels": {"tenant": "team"}})
        restrict(group)  # no service account: the sync acts with the cluster's own (system:masters) rights
        repo = make_repository(git_repo)
        mapping = make_mapping(repo, "web", "teams/a/web", group)
        mapping = PathMapping.objects.select_related("cluster_group", "repository").get(pk=mapping.pk)
        body = {"apiVersion": f"{api_group}/v1", "kind": "ClusterSecretStore", "metadata": {"name": "vault"},
                "spec": {"provider": "vault"}}
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok", "namespace": "default"},
              "data": {"a": "1"}}

        planned = ports.plan(cluster, mapping, [cm, body], [])
        assert not planned["ok"]
        assert [i["ref"]["kind"] for i in planned["items"]] == ["ClusterSecretStore"]
        assert "cluster-scoped kind" in planned["items"][0]["message"]

        outcome = ports.apply(cluster, mapping, [cm, body], [], prune=False)
        assert not outcome.ok and not outcome.transient
        assert f"ClusterSecretStore vault: not allowed: ClusterSecretStore vault: cluster-scoped kind " \
               f"{api_group}/ClusterSecretStore is not allowed for cluster group 'team'" in outcome.error
        with pytest.raises(k8s_client.ApiException) as missing:
            custom.get_cluster_custom_object(api_group, "v1", "clustersecretstores", "vault")
        assert missing.value.status == 404
        with pytest.raises(k8s_client.ApiException) as missing_cm:
            k8s_client.CoreV1Api(raw.client).read_namespaced_config_map("ok", "default")
        assert missing_cm.value.status == 404

        # listed in cluster_resources_allow: the same objects apply
        restrict(group, cluster_resources_allow=[{"group": api_group, "kind": "ClusterSecretStore"}])
        mapping = PathMapping.objects.select_related("cluster_group", "repository").get(pk=mapping.pk)
        applied = ports.apply(cluster, mapping, [cm, body], [], prune=False)
        assert applied.ok, applied.error
        assert custom.get_cluster_custom_object(api_group, "v1", "clustersecretstores", "vault")["spec"] == {
            "provider": "vault"}
        k8s_client.CoreV1Api(raw.client).delete_namespaced_config_map("ok", "default")
    finally:
        ext.delete_custom_resource_definition(definition["metadata"]["name"])
