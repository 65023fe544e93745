"""Tenant allow-lists (issue 21) on real parts: git repositories made here, sandbox clusters, the real
kube-apiserver (RBAC authorization) for impersonation, the API with real tokens.

- a mapping of a repository/path a restricted group does not allow is refused (API 400, model clean), and so
  are Helm values files outside the paths it allows (API, admin, render);
- an object in a namespace outside the list, or a cluster-scoped kind the group may not deploy, fails the
  render for the cluster with the object's file and line; a waiver of a policy denying it changes nothing
  (the gate never sees it); allowed objects deploy;
- the group's service account is impersonated: the real kube-apiserver refuses what its RBAC does not allow;
- only the admin role on all clusters changes an allow-list (403 otherwise), audited with before/after;
- the render check costs no query per object or per cluster.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kubernetes import client as k8s_client

from clusters import allowlist
from clusters.models import AllowList, Cluster, ClusterGroup
from clusters.tenancy import save_allow_list
from fleet.access.choices import Role
from fleet.audit.models import AuditEvent
from fleet.rollouts import ports
from fleet.rollouts.models import Rollout
from fleet.sources.models import MappingRender, PathMapping
from fleet.sources.services import fetch_repository
from fleet.sources.services.manifests import RenderFailed
from policies.models import Evaluation, PolicyBinding, Waiver
from policies.services.definitions import PolicyDefinition, save_policy
from tests.factories import UserFactory
from tests.kube_backends import (  # noqa: F401 - fixtures registered by import
    KubeApiServer,
    kube_apiserver,
    kube_apiserver_bin_dir,
    unique_name,
)
from tests.rollouts.conftest import configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)

TEAM_A = {
    "sources": [{"repository": "apps", "path": "teams/a/*"}],
    "namespaces": ["team-a", "team-a-*"],
}

CLUSTER_ROLE = """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: team-a-reader
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get"]
"""

DENY_CLUSTER_ROLES = """package main

deny[msg] {
  input.kind == "ClusterRole"
  msg := sprintf("ClusterRole %v is not for teams", [input.metadata.name])
}
"""


def restrict(group: ClusterGroup, **fields: Any) -> AllowList:
    return save_allow_list(_root(), group, {**TEAM_A, **fields})


def _root() -> Any:
    return UserFactory(username="root-admin", is_superuser=True)


def failed_render(mapping: PathMapping, sha: str) -> MappingRender:
    mr = MappingRender.objects.get(mapping=mapping, commit__sha=sha)
    assert mr.status == "failed", mr.error_message
    return mr


# --------------------------------------------------------------------------- mapping doors


def test_a_mapping_of_a_path_the_group_does_not_allow_is_refused(
    git_repo: Any, make_user: Any, token_client: Any
) -> None:
    group = make_group("team-a", "team-a")
    restrict(group)
    repo = make_repository(git_repo)
    # a cluster admin on all clusters: the allow-list binds whoever maps, whatever their role
    client = token_client(make_user("ops", role=Role.CLUSTER_ADMIN))

    refused = client.post("/api/mappings/", {"repository": repo.pk, "name": "b", "path": "teams/b/web",
                                            "cluster_group": group.pk}, format="json")
    assert refused.status_code == 400, refused.content
    message = refused.json()["path"][0]
    assert "repository 'apps' path 'teams/b/web' is not allowed for cluster group 'team-a'" in message
    assert "apps:teams/a/*" in message
    assert not PathMapping.objects.exists()

    ok = client.post("/api/mappings/", {"repository": repo.pk, "name": "a", "path": "teams/a/web",
                                       "cluster_group": group.pk}, format="json")
    assert ok.status_code == 201, ok.content
    moved = client.patch(f"/api/mappings/{ok.json()['id']}/", {"path": "teams/b/web"}, format="json")
    assert moved.status_code == 400 and "not allowed" in moved.json()["path"][0]

    other = make_group("open", "open")  # no allow-list: unrestricted, as before
    assert client.post("/api/mappings/", {"repository": repo.pk, "name": "c", "path": "anything",
                                         "cluster_group": other.pk}, format="json").status_code == 201


def test_values_files_outside_the_allowed_paths_are_refused_at_save_in_the_admin_and_at_render(
    git_repo: Any, make_fleet: Any, make_user: Any, token_client: Any, tasks: Any
) -> None:
    fleet = make_fleet({"one": {"env": "tenants"}})
    fleet.sandbox("one").apply_object({"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": "team-a"}})
    group = make_group("tenants", "tenants")
    repo = make_repository(git_repo)
    # saved before the group was restricted: the render checks the values files too
    early = make_mapping(repo, "early", "teams/a/web", group)
    PathMapping.objects.filter(pk=early.pk).update(helm_values_files=["teams/b/secret-values.yaml"])
    restrict(group)
    client = token_client(make_user("ops", role=Role.CLUSTER_ADMIN))
    body = {"repository": repo.pk, "name": "b", "path": "teams/a/web", "cluster_group": group.pk,
            "helm_values_files": ["teams/a/shared/values.yaml", "./teams/b/secret-values.yaml"]}
    refused = client.post("/api/mappings/", body, format="json")
    assert refused.status_code == 400, refused.content
    message = refused.json()["helm_values_files"][0]
    assert "values file './teams/b/secret-values.yaml' of repository 'apps' is outside the paths " \
           "cluster group 'tenants' allows (its allow-list permits apps:teams/a/*)" in message
    escape = {**body, "helm_values_files": ["teams/a/web/../../b/secret-values.yaml"]}
    assert client.post("/api/mappings/", escape, format="json").status_code == 400
    ok = client.post("/api/mappings/", {**body, "helm_values_files": ["teams/a/shared/values.yaml"]},
                     format="json")
    assert ok.status_code == 201, ok.content
    moved = client.patch(f"/api/mappings/{ok.json()['id']}/",
                         {"helm_values_files": ["teams/b/secret-values.yaml"]}, format="json")
    assert moved.status_code == 400 and "outside the paths" in moved.json()["helm_values_files"][0]

    root = Client()
    root.force_login(make_user("root", role=Role.ADMIN, superuser=True))
    form = {"repository": repo.pk, "name": "c", "path": "teams/a/api", "cluster_group": group.pk,
            "renderer": "auto", "values": "{}", "target_namespace": "", "enabled": "on",
            "helm_values_files": '["teams/b/secret-values.yaml"]'}
    response = root.post("/admin/sources/pathmapping/add/", form)
    assert response.status_code == 200  # the form again, with the error on the values files
    assert "is outside the paths cluster group" in response.content.decode()
    assert not PathMapping.objects.filter(name="c").exists()

    sha = git_repo.commit({"teams/a/web/cm.yaml": configmap("ok", {"a": "1"}, namespace="team-a"),
                           "teams/a/shared/values.yaml": "a: 1\n",
                           "teams/b/secret-values.yaml": "token: team-b\n"}, "web and values")
    fetch_repository(repo)
    tasks.drain()
    mr = failed_render(early, sha)
    assert mr.error_message.startswith("not allowed: values file 'teams/b/secret-values.yaml' of "
                                       "repository 'apps' is outside the paths")
    assert not Rollout.objects.filter(mapping=early).exists()


def test_files_a_fleet_yaml_names_outside_the_allowed_paths_fail_the_render(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    fleet = make_fleet({"one": {"env": "tenants"}, "two": {"env": "open"}})
    fleet.sandbox("one").apply_object({"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": "team-a"}})
    group = make_group("tenants", "tenants")
    repo = make_repository(git_repo)
    restrict(group)
    inside = make_mapping(repo, "inside", "teams/a/web", group)
    values = make_mapping(repo, "values", "teams/a/api", group)
    kdir = make_mapping(repo, "kdir", "teams/a/jobs", group)
    open_group = make_group("open", "open")  # no allow-list: reads any file of the repository, as before
    unrestricted = make_mapping(repo, "unrestricted", "teams/a/api", open_group)
    sha = git_repo.commit({
        "teams/a/web/cm.yaml": configmap("web", {"a": "1"}, namespace="team-a"),
        "teams/a/web/fleet.yaml": "helm:\n  valuesFiles: [../shared/values.yaml]\n",
        "teams/a/shared/values.yaml": "a: 1\n",
        "teams/a/api/cm.yaml": configmap("api", {"a": "1"}, namespace="team-a"),
        "teams/a/api/fleet.yaml": ("helm:\n  valuesFiles: [values.yaml]\ntargetCustomizations:\n"
                                   "  - name: sneaky\n    helm:\n      valuesFiles: [../../b/values.yaml]\n"),
        "teams/a/api/values.yaml": "a: 1\n",
        "teams/a/jobs/fleetgate.yaml": "kustomize:\n  dir: ../../b/web\n",
        "teams/b/values.yaml": "token: team-b\n",
        "teams/b/web/kustomization.yaml": "resources: [cm.yaml]\n",
        "teams/b/web/cm.yaml": configmap("b", {"b": "1"}, namespace="team-a"),
    }, "fleet.yaml files")
    fetch_repository(repo)
    tasks.drain()
    for mapping in (inside, unrestricted):  # inside the allowed paths, or a group without an allow-list
        mr = MappingRender.objects.get(mapping=mapping, commit__sha=sha)
        assert mr.status == "rendered", mr.error_message
    mr = failed_render(values, sha)
    assert mr.error_message == (
        "not allowed: teams/a/api/fleet.yaml: helm.valuesFiles '../../b/values.yaml' reads "
        "'teams/b/values.yaml' of repository 'apps', outside the paths cluster group 'tenants' allows "
        "(its allow-list permits apps:teams/a/*)")
    mr = failed_render(kdir, sha)
    assert mr.error_message.startswith("not allowed: teams/a/jobs/fleetgate.yaml: kustomize.dir "
                                       "'../../b/web' reads 'teams/b/web' of repository 'apps', outside")
    # refused before the policy gate, as an object outside the allow-list: no waiver applies, no rollout
    assert not Evaluation.objects.filter(mapping__in=[values, kdir]).exists()
    assert not Rollout.objects.filter(mapping__in=[values, kdir]).exists()


def test_every_file_the_render_reads_must_lie_under_the_allowed_paths(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    """The general rule: a kustomization's base elsewhere in the repository, or a symlink to another team's
    folder, makes the render read files outside the allowed paths: it fails (render and manage.py render),
    naming the file and what led there; a group without an allow-list renders it as before."""
    fleet = make_fleet({"one": {"env": "tenants"}, "two": {"env": "open"}})
    for box in fleet.sandboxes.values():
        box.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    group = make_group("tenants", "tenants")
    repo = make_repository(git_repo)
    restrict(group)
    based = make_mapping(repo, "based", "teams/a/overlay", group)
    linked = make_mapping(repo, "linked", "teams/a/linked", group)
    own = make_mapping(repo, "own", "teams/a/own", group)
    unrestricted = make_mapping(repo, "unrestricted", "teams/a/overlay", make_group("open", "open"))
    (git_repo.path / "teams/a/linked").mkdir(parents=True)
    (git_repo.path / "teams/a/linked/b").symlink_to("../../b")  # a folder of team b, inside team a's
    sha = git_repo.commit({
        "teams/a/overlay/kustomization.yaml": "resources: [../../b]\n",
        "teams/a/linked/cm.yaml": configmap("linked", {"a": "1"}, namespace="team-a"),
        "teams/a/own/kustomization.yaml": "resources: [../base]\n",  # a base inside the allowed paths
        "teams/a/base/kustomization.yaml": "resources: [cm.yaml]\n",
        "teams/a/base/cm.yaml": configmap("base", {"a": "1"}, namespace="team-a"),
        "teams/b/kustomization.yaml": "resources: [cm.yaml]\n",
        "teams/b/cm.yaml": configmap("b", {"secret": "team-b"}, namespace="team-a"),
    }, "a base and a symlink outside team a")
    fetch_repository(repo)
    tasks.drain()
    for mapping in (own, unrestricted):
        mr = MappingRender.objects.get(mapping=mapping, commit__sha=sha)
        assert mr.status == "rendered", mr.error_message
    mr = failed_render(based, sha)
    assert mr.error_message == (
        "not allowed: the render of 'teams/a/overlay' reads 'teams/b/cm.yaml' (Kustomize base or component "
        "teams/b) of repository 'apps', outside the paths cluster group 'tenants' allows (its allow-list "
        "permits apps:teams/a/*)")
    assert mr.error_file == "teams/b/cm.yaml"
    mr = failed_render(linked, sha)
    assert mr.error_message.startswith(
        "not allowed: the render of 'teams/a/linked' reads 'teams/b/cm.yaml' (through the symlink "
        "'teams/a/linked/b/cm.yaml') of repository 'apps', outside the paths")
    assert not Rollout.objects.filter(mapping__in=[based, linked]).exists()
    for name in ("based", "linked"):  # manage.py render (the preview) refuses the same
        with pytest.raises(CommandError) as preview:
            call_command("render", "apps", sha, name, "--cluster", fleet.clusters["one"].name)
        assert "not allowed: the render of 'teams/a/" in str(preview.value)
        assert "reads 'teams/b/cm.yaml'" in str(preview.value)
    # the unrestricted mapping's stored render, once its group is restricted (moved here behind the model's
    # back): refused where every deploy takes its manifests
    PathMapping.objects.filter(pk=unrestricted.pk).update(cluster_group=group)
    with pytest.raises(RenderFailed) as manifests:
        ports.render_mapping(sha, PathMapping.objects.get(pk=unrestricted.pk), [fleet.clusters["two"]])
    assert "reads 'teams/b/cm.yaml' (Kustomize base or component teams/b)" in manifests.value.message
    assert manifests.value.file == "teams/b/cm.yaml"


# --------------------------------------------------------------------------- render door


def test_objects_outside_the_allow_list_fail_the_render_with_file_and_line_and_no_waiver_helps(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    fleet = make_fleet({"one": {"env": "tenants"}, "two": {"env": "tenants"}})
    for box in fleet.sandboxes.values():
        box.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    group = make_group("tenants", "tenants")
    restrict(group)
    # a policy that denies ClusterRoles, and a waiver that would excuse every one of its violations
    policy = save_policy("no-cluster-roles",
                         PolicyDefinition(style="conftest", modules=(("p.rego", DENY_CLUSTER_ROLES),))).policy
    PolicyBinding.objects.create(policy=policy, cluster_group=group, enforcement="deny")
    Waiver.objects.create(policy=policy, cluster_group=group, justification="tenant onboarding",
                          expires_at=timezone.now() + timedelta(days=1))
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "teams/a/web", group)

    sneaky = configmap("ok", {"a": "1"}, namespace="team-a") + "---\n" + configmap(
        "sneaky", {"b": "2"}, namespace="kube-system")
    sha = git_repo.commit({"teams/a/web/cm.yaml": sneaky}, "a config map into kube-system")
    fetch_repository(repo)
    tasks.drain()
    mr = failed_render(mapping, sha)
    assert (mr.error_file, mr.error_line) == ("teams/a/web/cm.yaml", 9)  # the second document's first line
    assert "not allowed: ConfigMap sneaky: namespace 'kube-system' is not allowed for cluster group " \
           "'tenants'" in mr.error_message
    assert mr.failed_count == 2
    assert not Rollout.objects.filter(mapping=mapping).exists()
    failed = AuditEvent.objects.filter(action="render.failed").get()
    assert "teams/a/web/cm.yaml:9" in failed.message
    with pytest.raises(CommandError) as preview:  # manage.py render shows what a fetch would store
        call_command("render", "apps", sha, "web", "--cluster", fleet.clusters["one"].name)
    assert str(preview.value).startswith(
        "render failed at teams/a/web/cm.yaml:9: not allowed: ConfigMap sneaky")
    viewer = Client()
    viewer.force_login(UserFactory(username="viewer", is_superuser=True))
    page = viewer.get(f"/commits/{mr.commit_id}/").content.decode()  # the commit page says why, and where
    assert "teams/a/web/cm.yaml" in page and "namespace &#x27;kube-system&#x27; is not allowed" in page

    # a cluster-scoped kind: off by default for a restricted group, whatever a waiver says
    sha = git_repo.commit({"teams/a/web/cm.yaml": configmap("ok", {"a": "1"}, namespace="team-a"),
                           "teams/a/web/role.yaml": CLUSTER_ROLE}, "a cluster role")
    fetch_repository(repo)
    tasks.drain()
    mr = failed_render(mapping, sha)
    assert (mr.error_file, mr.error_line) == ("teams/a/web/role.yaml", 1)
    assert "cluster-scoped kind rbac.authorization.k8s.io/ClusterRole is not allowed" in mr.error_message
    assert not Evaluation.objects.filter(commit__sha=sha).exists()  # the gate (and its waiver) never ran
    assert not Rollout.objects.filter(mapping=mapping).exists()

    # allowed objects deploy: the ClusterRole removed, the namespaced object lands in team-a
    sha = git_repo.commit({"teams/a/web/extra.yaml": configmap("extra", {"c": "3"}, namespace="team-a-x")},
                          "only team-a objects", delete=("teams/a/web/role.yaml",))
    fleet.sandbox("one").apply_object(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a-x"}})
    fleet.sandbox("two").apply_object(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a-x"}})
    assert fetch_repository(repo).ok
    tasks.drain()
    rollout = Rollout.objects.get(mapping=mapping, commit__sha=sha)
    assert rollout.state == "synced", rollout.reason
    for short in ("one", "two"):
        assert fleet.sandbox(short).get_object("v1", "ConfigMap", "ok", "team-a")["data"] == {"a": "1"}
        assert fleet.sandbox(short).get_object("v1", "ConfigMap", "extra", "team-a-x")["data"] == {"c": "3"}

    # the allow-list is tightened afterwards: the stored render of that commit (a rollback or re-sync would
    # use it) is refused where every deploy takes its manifests, with the object's file and line
    save_allow_list(_root(), group, {**TEAM_A, "namespaces": ["team-a"]})
    mapping = PathMapping.objects.get(pk=mapping.pk)
    with pytest.raises(RenderFailed) as refused:
        ports.render_mapping(rollout.commit, mapping, list(fleet.clusters.values()))
    assert (refused.value.file, refused.value.line) == ("teams/a/web/extra.yaml", 1)
    assert "namespace 'team-a-x' is not allowed" in refused.value.message


def test_listed_cluster_kinds_and_denied_namespaced_kinds(git_repo: Any, make_fleet: Any, tasks: Any) -> None:
    make_fleet({"one": {"env": "kinds"}})
    group = make_group("kinds", "kinds")
    restrict(group, cluster_resources_allow=[{"group": "rbac.authorization.k8s.io", "kind": "ClusterRole"}],
             namespace_resources_deny=[{"group": "", "kind": "Secret"}], namespaces=["team-a", "!kube-*"])
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "teams/a/web", group)
    secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: team-a\n"
    sha = git_repo.commit({"teams/a/web/role.yaml": CLUSTER_ROLE, "teams/a/web/secret.yaml": secret}, "x")
    fetch_repository(repo)
    mr = failed_render(mapping, sha)  # the ClusterRole is listed; the Secret kind is denied
    assert (mr.error_file, mr.error_line) == ("teams/a/web/secret.yaml", 1)
    assert "Secret s: kind Secret is denied for cluster group 'kinds'" in mr.error_message

    # the allow-list changed: the next fetch renders the mapping again (its fingerprint changed)
    save_allow_list(_root(), group, {**TEAM_A, "cluster_resources_allow": [{"kind": "ClusterRole"}],
                                     "namespaces": ["team-a"]})
    fetch_repository(repo)
    assert MappingRender.objects.filter(mapping=mapping, commit__sha=sha).get().status == "rendered"


def test_the_render_check_costs_no_query_per_object_or_cluster(git_repo: Any, make_fleet: Any) -> None:
    """Two restricted mappings, one with 2 clusters x 2 objects, the other 4 clusters x 12 objects."""

    def fetch_queries(env: str, clusters: int, objects: int) -> int:
        make_fleet({f"c{i}": {"env": env} for i in range(clusters)})
        group = make_group(env, env)
        restrict(group)
        repo = make_repository(git_repo, name=f"apps-{env}")
        AllowList.objects.filter(cluster_group=group).update(
            sources=[{"repository": f"apps-{env}", "path": "teams/a/*"}])
        make_mapping(repo, "web", f"teams/a/{env}", group)
        git_repo.commit({f"teams/a/{env}/cm-{i}.yaml": configmap(f"cm-{i}", {"i": str(i)}, namespace="team-a")
                         for i in range(objects)}, f"{objects} objects")
        with CaptureQueriesContext(connection) as ctx:
            assert fetch_repository(repo).ok
        rendered = MappingRender.objects.get(mapping__repository=repo)
        assert rendered.status == "rendered" and rendered.object_count == clusters * objects
        return len(ctx.captured_queries)

    small = fetch_queries("small", 2, 2)
    large = fetch_queries("large", 4, 12)
    assert large == small


# --------------------------------------------------------------------------- who may change it


def test_only_an_admin_on_all_clusters_changes_an_allow_list_and_it_is_audited(
    make_user: Any, token_client: Any
) -> None:
    group = ClusterGroup.objects.create(name="team-a")
    url = f"/api/groups/{group.pk}/allow-list/"
    body = {**TEAM_A, "service_account_namespace": "team-a", "service_account_name": "deployer"}

    scoped_admin = token_client(make_user("scoped", role=Role.ADMIN, scope=group))
    assert scoped_admin.get(url).status_code == 404  # the group is unrestricted: no allow-list yet
    refused = scoped_admin.put(url, body, format="json")
    assert refused.status_code == 403, refused.content
    global_cluster_admin = token_client(make_user("ca", role=Role.CLUSTER_ADMIN))
    assert global_cluster_admin.put(url, body, format="json").status_code == 403
    assert not AllowList.objects.exists()

    admin = token_client(make_user("boss", role=Role.ADMIN))
    bad = admin.put(url, {**body, "namespaces": "team-a", "service_account_name": ""}, format="json")
    assert bad.status_code == 400
    assert "namespaces" in bad.json() or "service_account_name" in bad.json()
    created = admin.put(url, body, format="json")
    assert created.status_code == 200, created.content
    assert created.json()["impersonates"] == "system:serviceaccount:team-a:deployer"
    changed = admin.put(url, {**body, "namespaces": ["team-a"]}, format="json")
    assert changed.status_code == 200

    assert scoped_admin.get(url).json()["namespaces"] == ["team-a"]  # seen with the group
    assert scoped_admin.delete(url).status_code == 403
    events = list(AuditEvent.objects.filter(action__startswith="allowlist.").order_by("sequence"))
    assert [e.action for e in events] == ["allowlist.create", "allowlist.update"]
    assert events[1].before["namespaces"] == ["team-a", "team-a-*"]
    assert events[1].after["namespaces"] == ["team-a"]
    assert events[1].actor_name == "boss" and events[1].scope_group_name == "team-a"

    page = Client()
    page.force_login(User.objects.get(username="scoped"))
    shown = page.get(f"/groups/{group.pk}/").content.decode()  # the group page shows it, read-only
    assert "Tenant allow-list" in shown and "apps:teams/a/*" in shown
    assert "system:serviceaccount:team-a:deployer" in shown

    assert admin.delete(url).status_code == 204
    assert "None: this group is unrestricted." in page.get(f"/groups/{group.pk}/").content.decode()
    assert AuditEvent.objects.filter(action="allowlist.delete").get().before["namespaces"] == ["team-a"]
    assert admin.get(url).status_code == 404


# --------------------------------------------------------------------------- impersonation


@pytest.mark.kube_apiserver
def test_the_sync_impersonates_the_group_service_account_and_the_api_server_enforces_it(
    kube_apiserver: KubeApiServer,  # noqa: F811
    git_repo: Any, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    raw = kube_apiserver.dynamic_client(tmp_path / "raw.json")
    core = k8s_client.CoreV1Api(raw.client)
    rbac = k8s_client.RbacAuthorizationV1Api(raw.client)
    own = unique_name(request.node.originalname, "own")
    other = unique_name(request.node.originalname, "oth")
    for ns in (own, other):
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        core.create_namespaced_service_account(own, {"metadata": {"name": "deployer"}})
        # (the aggregated ClusterRole "edit" is empty here: no kube-controller-manager aggregates it)
        rbac.create_namespaced_role(own, {
            "metadata": {"name": "config-editor"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}],
        })
        rbac.create_namespaced_role_binding(own, {
            "metadata": {"name": "deployer-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "config-editor"},
            "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": own}],
        })
        cluster = Cluster.objects.create(name="real", api_url=kube_apiserver.url, auth_method="token",
                                         token=kube_apiserver.token, ca_data=kube_apiserver.ca_pem,
                                         labels={"tenant": "team"})
        group = ClusterGroup.objects.create(name="team", selector={"matchLabels": {"tenant": "team"}})
        repo = make_repository(git_repo)
        mapping = make_mapping(repo, "web", "teams/a/web", group)
        objects = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web", "namespace": ns},
             "data": {"k": "v"}} for ns in (own, other)
        ]

        # unrestricted: the cluster's own (system:masters) credentials may write anywhere
        assert ports.identity(mapping) == ""
        admin_made = {**objects[1], "metadata": {"name": "admin-made", "namespace": other}}
        assert ports.apply(cluster, mapping, [admin_made], [], prune=False).ok
        # restricted with a service account: every request impersonates it
        save_allow_list(_root(), group, {"sources": [{"repository": "*", "path": "*"}],
                                         "namespaces": [own, other], "service_account_namespace": own,
                                         "service_account_name": "deployer"})
        mapping = PathMapping.objects.select_related("cluster_group", "repository").get(pk=mapping.pk)
        assert ports.identity(mapping) == f"system:serviceaccount:{own}:deployer"

        outcome = ports.apply(cluster, mapping, objects, [], prune=False)
        by_ns = {r["ref"]["namespace"]: r for r in outcome.results}
        assert not outcome.ok
        assert by_ns[own]["action"] in ("created", "configured"), by_ns[own]
        refused = by_ns[other]
        assert refused["status"] == 403, refused
        assert f"system:serviceaccount:{own}:deployer" in refused["message"]
        assert core.read_namespaced_config_map("web", own).data == {"k": "v"}
        with pytest.raises(k8s_client.ApiException) as missing:
            core.read_namespaced_config_map("web", other)
        assert missing.value.status == 404  # the API server refused the write: nothing landed there

        # the live reads of the gate act as the same identity: reading the other namespace is refused
        with pytest.raises(Exception, match=r"(?i)forbidden|403"):
            ports.live_state(cluster, mapping, objects[1:], [])
        ports.live_state(cluster, mapping, objects[:1], [])  # its own namespace reads fine
        # and so does the plan's server-side dry run
        refused_plan = ports.plan(cluster, mapping, objects[1:], [])
        assert not refused_plan["ok"] and refused_plan["counts"]["failed"] == 1
        assert f'User "system:serviceaccount:{own}:deployer"' in refused_plan["items"][0]["message"]
        assert ports.plan(cluster, mapping, objects[:1], [])["ok"]
    finally:
        for ns in (own, other):
            core.delete_namespace(ns)


# --------------------------------------------------------------------------- the admin door


def test_the_admin_refuses_a_disallowed_mapping_and_a_scoped_admin_s_allow_list_change(
    git_repo: Any, make_user: Any
) -> None:
    group = make_group("team-a", "team-a")
    row = restrict(group)
    repo = make_repository(git_repo)
    root = Client()
    root.force_login(make_user("root", role=Role.ADMIN, superuser=True))
    form = {"repository": repo.pk, "name": "b", "path": "teams/b/web", "cluster_group": group.pk,
            "renderer": "auto", "values": "{}", "target_namespace": "", "enabled": "on"}
    response = root.post("/admin/sources/pathmapping/add/", form)
    assert response.status_code == 200  # the form again, with the error on the path
    assert "is not allowed for cluster group" in response.content.decode()
    assert not PathMapping.objects.exists()
    assert root.post("/admin/sources/pathmapping/add/", {**form, "path": "teams/a/web"}).status_code == 302

    scoped = make_user("scoped-admin", role=Role.ADMIN, scope=group)
    scoped.is_staff = True
    scoped.save()
    staff = Client()
    staff.force_login(scoped)
    url = f"/admin/clusters/allowlist/{row.pk}/change/"
    allow_form = {"cluster_group": group.pk, "sources": '[{"repository": "*", "path": "*"}]',
                  "namespaces": '["*"]', "cluster_resources_allow": '[{"kind": "*"}]',
                  "cluster_resources_deny": "[]", "namespace_resources_allow": "[]",
                  "namespace_resources_deny": "[]", "service_account_namespace": "",
                  "service_account_name": ""}
    assert staff.post(url, allow_form).status_code == 403
    row.refresh_from_db()
    assert row.namespaces == ["team-a", "team-a-*"]
    assert root.post(url, allow_form).status_code == 302
    row.refresh_from_db()
    assert row.namespaces == ["*"]
    event = AuditEvent.objects.filter(action="allowlist.update").get()
    assert event.before["namespaces"] == ["team-a", "team-a-*"] and event.after["namespaces"] == ["*"]
    assert (event.actor_name, event.scope_group_name) == ("root", "team-a")


# --------------------------------------------------------------------------- the rules (plain data)


def test_the_rules_on_plain_data() -> None:
    rules = allowlist.rules_from(
        "g", sources=[{"repository": "https://git.example.com/team-a/*", "path": "apps/*"}],
        namespaces=["team-a-*", "!team-a-system"], cluster_allow=[{"group": "", "kind": "Namespace"}],
        cluster_deny=[], namespaced_allow=[], namespaced_deny=[{"group": "rbac.authorization.k8s.io",
                                                                "kind": "*"}])
    url = "https://git.example.com/team-a/web.git"
    assert allowlist.source_refusal(rules, repository="web", url=url, path="apps/web") is None
    assert allowlist.source_refusal(rules, repository="web", url=url, path="infra/web")
    assert allowlist.source_refusal(rules, repository="web", url="https://git.example.com/b/x", path="apps/x")
    values = allowlist.values_files_refusal
    assert values(rules, repository="web", url=url, values_files=["apps/web/v.yaml", "chart:values-a.yaml"]) \
        is None
    assert values(rules, repository="web", url=url, values_files=["apps/web/v.yaml", "infra/v.yaml"])
    assert values(rules, repository="web", url=url, values_files=["apps/../infra/v.yaml"])
    narrow = allowlist.rules_from("g", sources=[{"repository": "*", "path": "apps/web"}], namespaces=[],
                                  cluster_allow=[], cluster_deny=[], namespaced_allow=[], namespaced_deny=[])
    assert values(narrow, repository="web", url=url, values_files=["apps/web/values/prod.yaml"]) is None
    assert values(narrow, repository="web", url=url, values_files=["apps/webx/values.yaml"])
    files = allowlist.fleet_file_refusal
    assert files(rules, repository="web", url=url,
                 references=[("apps/web/fleet.yaml", "helm.chart", "../chart", "apps/chart")]) is None
    refusal = files(rules, repository="web", url=url,
                    references=[("apps/web/fleet.yaml", "kustomize.dir", "../../infra", "infra")])
    assert refusal and refusal.startswith("apps/web/fleet.yaml: kustomize.dir '../../infra' reads 'infra' ")

    def obj(kind: str, namespace: str | None, api: str = "v1", name: str = "x") -> dict[str, Any]:
        return {"apiVersion": api, "kind": kind, "name": name, "namespace": namespace, "source": "f.yaml",
                "document": 0}

    refused = allowlist.object_refusals(rules, [
        obj("ConfigMap", "team-a-web"),  # allowed
        obj("ConfigMap", "team-a-system"),  # excluded by "!"
        obj("ConfigMap", None),  # lands in the default namespace "team-a-web": allowed
        obj("Namespace", None),  # a listed cluster-scoped kind
        obj("ClusterRole", None, "rbac.authorization.k8s.io/v1"),  # cluster-scoped, not listed
        obj("Role", "team-a-web", "rbac.authorization.k8s.io/v1"),  # a denied namespaced group
        obj("Widget", None, "example.com/v1"),  # declared Cluster-scoped by a CRD of the same render
    ], "team-a-web", cluster_scoped_kinds={"Widget"})
    assert [(r.kind, r.namespace) for r in refused] == [
        ("ConfigMap", "team-a-system"), ("ClusterRole", None), ("Role", "team-a-web"), ("Widget", None)]
    assert "cluster-scoped kind example.com/Widget is not allowed" in refused[3].message
    crd = {"kind": "CustomResourceDefinition", "object": {"spec": {"scope": "Cluster", "names": {
        "kind": "Widget"}}}}
    assert allowlist.declared_cluster_kinds([crd, obj("ConfigMap", "a")]) == {"Widget"}
    assert allowlist.validate_entries([{"kind": 3, "verb": "x"}], "kinds", allowlist.ENTRY_KEYS) == [
        "kinds[0]: unknown key(s) verb; use group, kind.", "kinds[0].kind must be a string (a glob)."]
    assert allowlist.validate_globs(["ok", "!", ""], "namespaces") == [
        "namespaces[1] must be a non-empty string.", "namespaces[2] must be a non-empty string."]
