"""Authorization boundaries between cluster groups (tenants): scope escalation and existence disclosure.

Attack class: a user whose role is scoped to one cluster group (`dev`) widens what that group, or another
group, holds (a selector, labels on a cluster, include/exclude, a new group) and so takes clusters of a
group they do not manage (`prod`) into their reach: they then see those clusters, test them, and their
commits sync there without prod's approvals. Related: telling apart "exists but forbidden" from "does not
exist" (400 "already has this role" against 403), and names of invisible objects in error messages.

Peer advisories that motivated these tests:
- Argo CD CVE-2023-23947 (GHSA-3jfq-742w-xg8j): a user allowed to update one cluster secret could update
  any cluster secret, an escalation from a narrow grant to every cluster;
- Argo CD CVE-2022-41354 (GHSA-2q5c-qw9c-fmvq): answers told apart existing applications from missing ones,
  letting users without access enumerate them;
- Argo CD CVE-2024-36106 (GHSA-3cqf-953p-h5cp): error messages let authenticated users enumerate clusters
  by name;
- Rancher Fleet's and Flux's multi-tenancy models (workspaces, no cross-namespace references): a tenant's
  target selectors and references must never reach another tenant's clusters.

Everything runs against the real API with real users, API tokens and role bindings (no sandbox clusters are
needed for membership); the approval rule runs a real rollout on sandbox clusters over HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client

from clusters import services as cluster_services
from clusters.models import Cluster, ClusterGroup
from fleet.access.models import RoleBinding
from fleet.audit.models import AuditEvent
from fleet.audit.services import record
from fleet.rollouts.models import Approval, ClusterSync, Rollout, SyncedState
from fleet.sources.models import PathMapping
from tests.factories import (
    ClusterFactory,
    ClusterGroupFactory,
    CommitFactory,
    PathMappingFactory,
    RepositoryFactory,
    UserFactory,
)
from tests.rollouts.conftest import (  # noqa: F401 - fixtures, registered by import
    NAMESPACE,
    configmap,
    git_repo,
    make_fleet,
    make_mapping,
    make_repository,
    sandbox_server,
    tasks,
)

Through = ClusterGroup.members.through


# --------------------------------------------------------------------------------------------- world


@pytest.fixture
def world(make_user: Any, token_client: Any) -> dict[str, Any]:
    """dev (team=dev) with dev-1, dev-2; prod (env=prod, two approvals) with prod-1, prod-2; users scoped to
    dev, and an all-clusters admin; mappings, commits, rollouts, legs and audit rows in both groups."""
    dev = ClusterGroupFactory(name="dev", selector={"matchLabels": {"team": "dev"}})
    prod = ClusterGroupFactory(
        name="prod", selector={"matchLabels": {"env": "prod"}}, approval_required=True, approvals_required=2
    )
    c = {
        "dev-1": ClusterFactory(name="dev-1", labels={"team": "dev", "env": "dev"}),
        "dev-2": ClusterFactory(name="dev-2", labels={"team": "dev", "env": "dev"}),
        "prod-1": ClusterFactory(name="prod-1", labels={"env": "prod", "team": "ops"}),
        "prod-2": ClusterFactory(name="prod-2", labels={"env": "prod", "region": "us"}),
    }
    users = {
        "root": make_user("root", role="admin"),
        "dev-ca": make_user("dev-ca", role="cluster-admin", scope=dev),
        "dev-admin": make_user("dev-admin", role="admin", scope=dev),
        # Sees everything (viewer on all clusters) but manages dev only: can name prod objects in a write.
        "dev-ca-seeing": make_user("dev-ca-seeing", role="cluster-admin", scope=dev),
    }
    RoleBinding.objects.create(user=users["dev-ca-seeing"], role="viewer", scope=None)
    objects: dict[str, dict[str, Any]] = {}
    for env, group in (("dev", dev), ("prod", prod)):
        repo = RepositoryFactory(name=f"repo-{env}")
        mapping = PathMappingFactory(name=f"m-{env}", repository=repo, cluster_group=group)
        commit = CommitFactory(repository=repo, sequence=2)
        older = CommitFactory(repository=repo, sequence=1)
        rollout = Rollout.objects.create(
            mapping=mapping,
            commit=commit,
            state="awaiting_approval",
            approval_required=True,
            approvals_required=2,
        )
        cluster = c[f"{env}-1"]
        objects[env] = {
            "group": group,
            "cluster": cluster,
            "repository": repo,
            "mapping": mapping,
            "commit": commit,
            "older": older,
            "rollout": rollout,
            "sync": ClusterSync.objects.create(rollout=rollout, cluster=cluster),
            "synced": SyncedState.objects.create(mapping=mapping, cluster=cluster, commit=older),
            "event": record("test.event", group, message=f"in {env}", cluster=cluster),
        }
    someone = UserFactory(username="someone")
    objects["dev"]["binding"] = RoleBinding.objects.create(user=someone, role="viewer", scope=dev)
    objects["prod"]["binding"] = RoleBinding.objects.create(user=someone, role="viewer", scope=prod)
    clients = {name: token_client(user) for name, user in users.items()}
    return {"c": c, "users": users, "api": clients, **objects}


def state() -> dict[str, Any]:
    """Everything a refused change must leave as it was."""
    return {
        "members": set(Through.objects.values_list("clustergroup_id", "cluster_id")),
        "include": set(ClusterGroup.include.through.objects.values_list("clustergroup_id", "cluster_id")),
        "exclude": set(ClusterGroup.exclude.through.objects.values_list("clustergroup_id", "cluster_id")),
        "groups": list(ClusterGroup.objects.order_by("pk").values_list("pk", "name", "selector")),
        "clusters": list(Cluster.objects.order_by("pk").values_list("pk", "name", "labels")),
        "mappings": list(PathMapping.objects.order_by("pk").values_list("pk", "cluster_group_id")),
        "bindings": list(RoleBinding.objects.order_by("pk").values_list("pk", "user_id", "role", "scope_id")),
        "audit": AuditEvent.objects.count(),
    }


def members(group: ClusterGroup) -> set[str]:
    return set(Cluster.objects.filter(groups=group).values_list("name", flat=True))


def refused(response: Any, *codes: int) -> None:
    assert response.status_code in (codes or (403,)), (response.status_code, response.content)


# ------------------------------------------------------------------------- group selector, by operator

SELECTORS = {
    "matchLabels": {"matchLabels": {"env": "prod"}},
    "Exists": {"matchExpressions": [{"key": "env", "operator": "Exists"}]},
    "In": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev", "prod"]}]},
    "NotIn": {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["staging"]}]},
    "DoesNotExist": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
}


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["dev-ca", "dev-admin"])
@pytest.mark.parametrize("selector", sorted(SELECTORS))
def test_a_dev_scoped_user_cannot_widen_the_dev_selector_over_prod(
    world: dict[str, Any], who: str, selector: str
) -> None:
    before = state()
    response = world["api"][who].patch(
        f"/api/groups/{world['dev']['group'].pk}/", {"selector": SELECTORS[selector]}, format="json"
    )
    refused(response)
    detail = response.json()["detail"]
    assert "outside your scope" in detail and "dev" in detail
    # The clusters they cannot see are counted, never named.
    assert "prod-1" not in detail and "you may not see" in detail
    assert state() == before
    # Still out of sight and out of reach afterwards.
    client = world["api"][who]
    names = {row["name"] for row in client.get("/api/clusters/?limit=100").json()["results"]}
    assert names == {"dev-1", "dev-2"}
    prod_1 = world["c"]["prod-1"].pk
    assert client.get(f"/api/clusters/{prod_1}/").status_code == 404
    assert client.post(f"/api/clusters/{prod_1}/test-connection/").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("selector", sorted(SELECTORS))
def test_the_all_clusters_admin_may_widen_the_selector(world: dict[str, Any], selector: str) -> None:
    response = world["api"]["root"].patch(
        f"/api/groups/{world['dev']['group'].pk}/", {"selector": SELECTORS[selector]}, format="json"
    )
    assert response.status_code == 200, response.content
    assert {"prod-1", "prod-2"} <= members(world["dev"]["group"])


@pytest.mark.django_db
def test_the_refusal_names_clusters_the_user_may_see(world: dict[str, Any]) -> None:
    before = state()
    response = world["api"]["dev-ca-seeing"].patch(
        f"/api/groups/{world['dev']['group'].pk}/", {"selector": SELECTORS["matchLabels"]}, format="json"
    )
    refused(response)
    assert "prod-1" in response.json()["detail"] and "prod-2" in response.json()["detail"]
    assert state() == before


@pytest.mark.django_db
def test_narrowing_the_own_group_within_scope_is_allowed(world: dict[str, Any]) -> None:
    response = world["api"]["dev-ca"].patch(
        f"/api/groups/{world['dev']['group'].pk}/",
        {"selector": {"matchLabels": {"team": "dev"}, "matchExpressions": []}, "description": "ok"},
        format="json",
    )
    assert response.status_code == 200, response.content
    response = world["api"]["dev-ca"].patch(
        f"/api/groups/{world['dev']['group'].pk}/", {"exclude": [world["c"]["dev-2"].pk]}, format="json"
    )
    assert response.status_code == 200, response.content
    assert members(world["dev"]["group"]) == {"dev-1"}


# ------------------------------------------------------------------------------- include and exclude


@pytest.mark.django_db
def test_including_a_prod_cluster_in_dev_is_refused(world: dict[str, Any]) -> None:
    before = state()
    body = {"include": [world["c"]["prod-1"].pk]}
    url = f"/api/groups/{world['dev']['group'].pk}/"
    # A user who cannot see prod-1 cannot even name it (400 on the field, as for any unknown id) ...
    invisible = world["api"]["dev-ca"].patch(url, body, format="json")
    refused(invisible, 400)
    assert "include" in invisible.json()
    # ... and one who can see it is refused the membership change.
    seeing = world["api"]["dev-ca-seeing"].patch(url, body, format="json")
    refused(seeing)
    assert "prod-1" in seeing.json()["detail"]
    assert state() == before
    assert world["api"]["root"].patch(url, body, format="json").status_code == 200
    assert "prod-1" in members(world["dev"]["group"])


@pytest.mark.django_db
def test_dropping_an_exclude_that_keeps_prod_out_of_dev_is_refused(world: dict[str, Any]) -> None:
    c, url = world["c"], f"/api/groups/{world['dev']['group'].pk}/"
    setup = world["api"]["root"].patch(
        url, {"selector": SELECTORS["Exists"], "exclude": [c["prod-1"].pk, c["prod-2"].pk]}, format="json"
    )
    assert setup.status_code == 200, setup.content
    assert members(world["dev"]["group"]) == {"dev-1", "dev-2"}
    before = state()
    for body in ({"exclude": []}, {"exclude": [c["prod-1"].pk]}):
        refused(world["api"]["dev-ca-seeing"].patch(url, body, format="json"))
    refused(world["api"]["dev-ca"].patch(url, {"exclude": []}, format="json"))
    assert state() == before
    # Excluding one more dev cluster only takes it out of dev: allowed.
    more = {"exclude": [c["prod-1"].pk, c["prod-2"].pk, c["dev-1"].pk]}
    assert world["api"]["dev-ca-seeing"].patch(url, more, format="json").status_code == 200
    assert members(world["dev"]["group"]) == {"dev-2"}


# ------------------------------------------------------------------------------------------ new group


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["dev-ca", "dev-admin", "dev-ca-seeing"])
def test_a_dev_scoped_user_cannot_create_a_group_over_prod(world: dict[str, Any], who: str) -> None:
    before = state()
    for selector in (SELECTORS["matchLabels"], SELECTORS["Exists"]):
        response = world["api"][who].post(
            "/api/groups/", {"name": "sneaky", "selector": selector}, format="json"
        )
        refused(response)
    assert state() == before
    assert not ClusterGroup.objects.filter(name="sneaky").exists()
    created = world["api"]["root"].post(
        "/api/groups/", {"name": "sneaky", "selector": SELECTORS["matchLabels"]}, format="json"
    )
    assert created.status_code == 201, created.content
    assert members(ClusterGroup.objects.get(name="sneaky")) == {"prod-1", "prod-2"}


# ------------------------------------------------------------------------------ labels on a cluster


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["dev-ca", "dev-admin"])
def test_relabelling_a_dev_cluster_into_prod_is_refused(world: dict[str, Any], who: str) -> None:
    """dev-1 keeps team=dev (so stays in dev) and gains env=prod (so would join prod)."""
    before = state()
    dev_1 = world["c"]["dev-1"]
    response = world["api"][who].patch(
        f"/api/clusters/{dev_1.pk}/", {"labels": {"team": "dev", "env": "prod"}}, format="json"
    )
    refused(response)
    assert "dev-1" in response.json()["detail"] and "a group you may not see" in response.json()["detail"]
    seeing = world["api"]["dev-ca-seeing"].patch(
        f"/api/clusters/{dev_1.pk}/", {"labels": {"team": "dev", "env": "prod"}}, format="json"
    )
    refused(seeing)
    assert "would gain members (prod: dev-1)" in seeing.json()["detail"]
    assert state() == before
    ok = world["api"]["root"].patch(
        f"/api/clusters/{dev_1.pk}/", {"labels": {"team": "dev", "env": "prod"}}, format="json"
    )
    assert ok.status_code == 200
    assert dev_1.name in members(world["prod"]["group"]) and dev_1.name in members(world["dev"]["group"])


@pytest.mark.django_db
def test_relabelling_a_shared_cluster_out_of_prod_is_refused(world: dict[str, Any]) -> None:
    prod_1 = world["c"]["prod-1"]
    shared = world["api"]["root"].patch(
        f"/api/clusters/{prod_1.pk}/", {"labels": {"env": "prod", "team": "dev"}}, format="json"
    )
    assert shared.status_code == 200
    before = state()
    # prod-1 is now in dev as well, so dev-ca may change it, but not take it out of prod.
    response = world["api"]["dev-ca"].patch(
        f"/api/clusters/{prod_1.pk}/", {"labels": {"team": "dev"}}, format="json"
    )
    refused(response)
    assert "lose" in response.json()["detail"]
    assert state() == before
    described = world["api"]["dev-ca"].patch(
        f"/api/clusters/{prod_1.pk}/", {"description": "fine"}, format="json"
    )
    assert described.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["dev-ca", "dev-admin"])
def test_a_cluster_created_by_a_scoped_user_cannot_land_in_prod(world: dict[str, Any], who: str) -> None:
    body = {"name": "new-c", "api_url": "https://n:6443", "token": "t0ken-value"}
    before = state()
    for labels in ({"team": "dev", "env": "prod"}, {"env": "prod"}):
        refused(world["api"][who].post("/api/clusters/", {**body, "labels": labels}, format="json"))
    assert state() == before
    assert not Cluster.objects.filter(name="new-c").exists()
    ok = world["api"][who].post("/api/clusters/", {**body, "labels": {"team": "dev"}}, format="json")
    assert ok.status_code == 201, ok.content
    assert set(Cluster.objects.get(name="new-c").groups.values_list("name", flat=True)) == {"dev"}
    root = world["api"]["root"].post(
        "/api/clusters/", {**body, "name": "new-d", "labels": {"team": "dev", "env": "prod"}}, format="json"
    )
    assert root.status_code == 201


# ----------------------------------------------------------------------------- UI and Django admin


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


GROUP_FORM = {
    "name": "dev",
    "description": "",
    "approvals_required": "1",
    "sync_mode": "automatic",
    "batch_size": "",
    "batch_percent": "",
    "max_parallel": "10",
    "batch_pause_seconds": "0",
    "failure_threshold": "0",
    "health_timeout_seconds": "300",
    "prune": "on",
}


@pytest.mark.django_db
def test_the_ui_group_editor_refuses_a_selector_over_prod(world: dict[str, Any]) -> None:
    url = f"/groups/{world['dev']['group'].pk}/edit/"
    before = state()
    for text in ("env=prod", "env", "env in (dev,prod)", "env!=staging"):
        page = browser(world["users"]["dev-ca"]).post(url, {**GROUP_FORM, "selector_text": text})
        assert page.status_code == 200
        assert "outside your scope" in page.content.decode()
    assert state() == before
    saved = browser(world["users"]["root"]).post(url, {**GROUP_FORM, "selector_text": "env=prod"})
    assert saved.status_code == 302
    assert members(world["dev"]["group"]) == {"prod-1", "prod-2"}


@pytest.mark.django_db
def test_the_ui_register_form_refuses_a_cluster_that_lands_in_prod(world: dict[str, Any]) -> None:
    form = {
        "name": "ui-c",
        "description": "",
        "auth_method": "token",
        "api_url": "https://ui:6443",
        "token": "t0ken-value",
        "kubeconfig_context": "",
        "ca_data": "",
        "labels_text": "team=dev,env=prod",
    }
    before = state()
    page = browser(world["users"]["dev-ca"]).post("/clusters/register/", form)
    assert page.status_code == 200 and "outside your scope" in page.content.decode()
    assert state() == before
    ok = browser(world["users"]["dev-ca"]).post("/clusters/register/", {**form, "labels_text": "team=dev"})
    assert ok.status_code == 302


def admin_group_form(group: ClusterGroup, selector: dict[str, Any]) -> dict[str, Any]:
    return {
        **GROUP_FORM,
        "name": group.name,
        "selector": json.dumps(selector),
        "values": "{}",
        "canary_selector": "{}",
        "sync_windows": "[]",
        "include": [],
        "exclude": [],
    }


@pytest.mark.django_db
def test_the_django_admin_refuses_a_scoped_staff_user(world: dict[str, Any]) -> None:
    staff = world["users"]["dev-ca"]
    staff.is_staff = True
    staff.save()
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_clustergroup", "change_clustergroup"])
    )
    url = f"/admin/clusters/clustergroup/{world['dev']['group'].pk}/change/"
    before = state()
    response = browser(staff).post(url, admin_group_form(world["dev"]["group"], SELECTORS["matchLabels"]))
    assert response.status_code == 403
    assert state() == before
    root = world["users"]["root"]
    root.is_staff = root.is_superuser = True
    root.save()
    saved = browser(root).post(url, admin_group_form(world["dev"]["group"], SELECTORS["matchLabels"]))
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert members(world["dev"]["group"]) == {"prod-1", "prod-2"}


# ------------------------------------------------------------------- related objects and rollouts


@pytest.mark.django_db
def test_a_mapping_cannot_be_pointed_at_prod_by_a_dev_cluster_admin(world: dict[str, Any]) -> None:
    url = f"/api/mappings/{world['dev']['mapping'].pk}/"
    body = {"cluster_group": world["prod"]["group"].pk}
    before = state()
    refused(world["api"]["dev-ca"].patch(url, body, format="json"), 400)
    refused(world["api"]["dev-ca-seeing"].patch(url, body, format="json"), 403)
    create = {
        "name": "m-new",
        "path": "apps/new",
        "repository": world["dev"]["repository"].pk,
        "cluster_group": world["prod"]["group"].pk,
    }
    refused(world["api"]["dev-ca-seeing"].post("/api/mappings/", create, format="json"), 403)
    assert state() == before


@pytest.mark.django_db
def test_rollout_actions_on_prod_are_out_of_reach(world: dict[str, Any]) -> None:
    client = world["api"]["dev-admin"]
    rollout = world["prod"]["rollout"]
    url = f"/api/rollouts/{rollout.pk}"
    for action in ("approve", "pause", "resume", "cancel", "sync"):
        assert client.post(f"{url}/{action}/").status_code == 404, action
    assert client.post(f"{url}/reject/", {"reason": "x"}, format="json").status_code == 404
    back = client.post(f"{url}/rollback/", {"commit": world["prod"]["older"].pk}, format="json")
    assert back.status_code == 404
    now = client.post("/api/rollouts/sync-now/", {"cluster": world["c"]["prod-1"].pk}, format="json")
    refused(now, 400, 403, 404)
    now = client.post("/api/rollouts/sync-now/", {"group": world["prod"]["group"].pk}, format="json")
    refused(now, 400, 403, 404)
    rollout.refresh_from_db()
    assert rollout.state == "awaiting_approval"
    assert not Approval.objects.filter(rollout=rollout).exists()
    assert Rollout.objects.filter(mapping=world["prod"]["mapping"]).count() == 1


@pytest.mark.django_db
def test_list_filters_on_prod_objects_return_nothing_from_prod(world: dict[str, Any]) -> None:
    prod, c = world["prod"], world["c"]
    queries = {
        "/api/clusters/": [f"group={prod['group'].pk}", "group=prod", "label=env=prod"],
        "/api/groups/": ["cluster=prod-1", "name=prod"],
        "/api/mappings/": [f"cluster_group={prod['group'].pk}", f"repository={prod['repository'].pk}"],
        "/api/repositories/": ["name=repo-prod"],
        "/api/commits/": [f"repository={prod['repository'].pk}", f"sha={prod['commit'].sha[:8]}"],
        "/api/rollouts/": [
            f"group={prod['group'].pk}",
            f"mapping={prod['mapping'].pk}",
            f"commit={prod['commit'].pk}",
            f"repository={prod['repository'].pk}",
        ],
        "/api/cluster-syncs/": [f"cluster={c['prod-1'].pk}", f"rollout={prod['rollout'].pk}"],
        "/api/synced-states/": [
            f"cluster={c['prod-1'].pk}",
            f"mapping={prod['mapping'].pk}",
            f"group={prod['group'].pk}",
        ],
        "/api/audit/events/": ["group=prod", "cluster=prod-1"],
        "/api/access/bindings/": [f"scope={prod['group'].pk}"],
    }
    prod_ids = {
        "/api/clusters/": {c["prod-1"].pk, c["prod-2"].pk},
        "/api/groups/": {prod["group"].pk},
        "/api/mappings/": {prod["mapping"].pk},
        "/api/repositories/": {prod["repository"].pk},
        "/api/commits/": {prod["commit"].pk, prod["older"].pk},
        "/api/rollouts/": {prod["rollout"].pk},
        "/api/cluster-syncs/": {prod["sync"].pk},
        "/api/synced-states/": {prod["synced"].pk},
        "/api/audit/events/": {prod["event"].pk},
        "/api/access/bindings/": {prod["binding"].pk},
    }
    for who in ("dev-ca", "dev-admin"):
        client = world["api"][who]
        for url, params in queries.items():
            for param in params:
                response = client.get(f"{url}?{param}&limit=500")
                assert response.status_code in (200, 400), (who, url, param, response.status_code)
                if response.status_code == 200:
                    ids = {row["id"] for row in response.json()["results"]}
                    assert not ids & prod_ids[url], (who, url, param)
    # The same filters do find the prod objects for the all-clusters admin (the test can fail).
    root = world["api"]["root"]
    found = root.get(f"/api/rollouts/?group={prod['group'].pk}").json()["results"]
    assert {row["id"] for row in found} == {prod["rollout"].pk}


# ------------------------------------------------------------------------------- role bindings, /access/


@pytest.mark.django_db
def test_a_scoped_admin_cannot_probe_bindings_of_other_groups(world: dict[str, Any]) -> None:
    client = world["api"]["dev-admin"]
    before = state()
    for where in ("prod", "dev"):
        existing = world[where]["binding"]
        duplicate = {"user": existing.user_id, "role": existing.role, "scope": existing.scope_id}
        response = client.post("/api/access/bindings/", duplicate, format="json")
        assert response.status_code == 403, (where, response.content)
        assert "already" not in response.content.decode()
    fresh = {"user": world["users"]["dev-ca"].pk, "role": "deployer", "scope": world["prod"]["group"].pk}
    assert client.post("/api/access/bindings/", fresh, format="json").status_code == 403
    assert client.get(f"/api/access/bindings/{world['prod']['binding'].pk}/").status_code == 404
    assert state() == before
    # The uniqueness rule itself still answers an all-clusters admin.
    existing = world["prod"]["binding"]
    duplicate = {"user": existing.user_id, "role": existing.role, "scope": existing.scope_id}
    assert world["api"]["root"].post("/api/access/bindings/", duplicate, format="json").status_code == 409


@pytest.mark.django_db
def test_binding_filters_do_not_tell_existing_ids_from_missing_ones(world: dict[str, Any]) -> None:
    client = world["api"]["dev-admin"]
    for param, existing in (
        ("scope", world["prod"]["group"].pk),
        ("user", world["users"]["root"].pk),
        ("user", world["prod"]["binding"].user_id),
    ):
        found = client.get(f"/api/access/bindings/?{param}={existing}")
        missing = client.get(f"/api/access/bindings/?{param}=987654")
        assert (found.status_code, found.json()) == (missing.status_code, missing.json()), param
        assert found.status_code == 200 and found.json()["results"] == []
    everything = world["api"]["root"].get(f"/api/access/bindings/?scope={world['prod']['group'].pk}")
    assert [row["id"] for row in everything.json()["results"]] == [world["prod"]["binding"].pk]


@pytest.mark.django_db
def test_the_access_page_lists_users_only_for_all_clusters_admins(world: dict[str, Any]) -> None:
    scoped = browser(world["users"]["dev-admin"]).get("/access/")
    assert scoped.status_code == 200
    html = scoped.content.decode()
    assert "someone" not in html and "dev-ca-seeing" not in html and "root" not in html
    full = browser(world["users"]["root"]).get("/access/").content.decode()
    assert "someone" in full and "dev-ca-seeing" in full


# ------------------------------------------------------------------------ the strictest group decides


@pytest.mark.django_db(transaction=True)
def test_a_cluster_in_prod_and_dev_holds_the_dev_rollout_for_prods_two_approvals(
    git_repo: Any,  # noqa: F811 - the fixture imported above
    make_fleet: Any,  # noqa: F811
    tasks: Any,  # noqa: F811
    make_user: Any,
    token_client: Any,
) -> None:
    fleet = make_fleet({"shared": {"team": "dev", "env": "prod"}, "plain": {"team": "dev", "env": "dev"}})
    dev = ClusterGroup.objects.create(name=f"{fleet.prefix}-dev", selector={"matchLabels": {"team": "dev"}})
    prod = ClusterGroup.objects.create(
        name=f"{fleet.prefix}-prod",
        selector={"matchLabels": {"env": "prod"}},
        approval_required=True,
        approvals_required=2,
    )
    assert dev.sync_mode == "automatic" and not dev.approval_required
    repository = make_repository(git_repo, name=f"{fleet.prefix}-repo")
    mapping = make_mapping(repository, "web", "apps/web", dev)
    dev_only = make_user("dev-approver", role="approver", scope=dev)
    approvers = []
    for name in ("ann", "ben"):
        user = make_user(name, role="approver", scope=dev)
        RoleBinding.objects.create(user=user, role="approver", scope=prod)
        approvers.append(user)

    from fleet.sources.models import Commit
    from fleet.sources.services import fetch_repository

    git_repo.commit({"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"v": "1"})}, "c1")
    assert fetch_repository(repository).ok
    commit = Commit.objects.get(repository=repository, sha=git_repo.git("rev-parse", "HEAD"))
    rollout = Rollout.objects.get(mapping=mapping, commit=commit)
    tasks.drain()
    rollout.refresh_from_db()
    assert rollout.state == "awaiting_approval", rollout.reason
    assert rollout.approvals_required == 2 and prod.name in rollout.reason
    assert fleet.sandbox("plain").get_object("v1", "ConfigMap", "web", "apps") is None  # held, all of it

    url = f"/api/rollouts/{rollout.pk}/approve/"
    refused_dev = token_client(dev_only).post(url)
    assert refused_dev.status_code == 403 and prod.name in refused_dev.json()["detail"]
    assert token_client(approvers[0]).post(url).status_code == 200
    tasks.drain()
    rollout.refresh_from_db()
    assert rollout.state == "awaiting_approval"  # one of two
    assert token_client(approvers[1]).post(url).status_code == 200
    tasks.drain()
    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    for short in ("shared", "plain"):
        assert fleet.sandbox(short).get_object("v1", "ConfigMap", "web", "apps") is not None


# ------------------------------------------------------------- test-connection on a vanishing cluster


class _Vanishing(BaseHTTPRequestHandler):
    """An API server that deletes its own Cluster row when contacted, then answers 503."""

    cluster_id = 0

    def do_GET(self) -> None:
        try:
            Cluster.objects.filter(pk=type(self).cluster_id).delete()
        finally:
            connection.close()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"kind":"Status","code":503,"message":"gone"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def vanishing_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Vanishing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.django_db(transaction=True)
def test_test_connection_on_a_cluster_deleted_meanwhile_answers_404(
    vanishing_server: ThreadingHTTPServer, make_user: Any, token_client: Any
) -> None:
    group = ClusterGroupFactory(name="dev", selector={"matchLabels": {"team": "dev"}})
    host, port = vanishing_server.server_address[:2]
    cluster = ClusterFactory(name="gone", api_url=f"http://{host}:{port}", labels={"team": "dev"})
    _Vanishing.cluster_id = cluster.pk
    user = make_user("tester", role="deployer", scope=group)
    response = token_client(user).post(f"/api/clusters/{cluster.pk}/test-connection/")
    assert response.status_code == 404, response.content
    assert response.json() == {"detail": "Not found."}
    assert not Cluster.objects.filter(pk=cluster.pk).exists()
    assert not AuditEvent.objects.filter(action="cluster.test").exists()


@pytest.mark.django_db
def test_the_service_says_a_deleted_cluster_does_not_exist() -> None:
    cluster = ClusterFactory(name="deleted", api_url="http://127.0.0.1:9", labels={})
    stale = Cluster.objects.get(pk=cluster.pk)
    Cluster.objects.filter(pk=cluster.pk).delete()
    with pytest.raises(Cluster.DoesNotExist):
        cluster_services.test_connection(stale, connect_timeout=0.5)


# ------------------------------------------------------------------ the check after saving, and the rule


@pytest.mark.django_db
def test_the_check_after_saving_rolls_back_what_the_check_before_did_not_see(world: dict[str, Any]) -> None:
    """A save that writes more than was announced (a concurrent change, a signal, a bug) is caught on the
    rows actually written, inside the transaction, and rolled back with its audit row."""
    from clusters import membership_guard
    from fleet.audit.services import record_change

    dev = world["dev"]["group"]
    user = world["users"]["dev-ca"]
    before = state()

    def save() -> ClusterGroup:
        dev.selector = SELECTORS["Exists"]  # not the selector that was announced
        dev.save()
        record_change("clustergroup.update", dev, None)
        return dev

    with pytest.raises(membership_guard.MembershipRefused) as refusal:
        membership_guard.save_group(
            user, dev, save, name="dev", selector=dev.selector, include=[], exclude=[]
        )
    assert "would join" in str(refusal.value.detail)
    assert state() == before
    dev.refresh_from_db()
    assert dev.selector == {"matchLabels": {"team": "dev"}}


def test_the_membership_rule_without_a_database() -> None:
    from clusters.membership_rules import Kind, Refusal, describe, refusals

    before = {(1, 10), (2, 20)}
    scope = {"everywhere": False, "groups_in_scope": {1}, "clusters_in_scope": {10}}
    assert refusals(before, before | {(1, 10)}, **scope) == []
    assert refusals(before, {(1, 10)}, **scope) == [Refusal(Kind.GROUP_LOSES, 2, 20)]
    assert refusals(before, before | {(1, 20)}, **scope) == [Refusal(Kind.CLUSTER_JOINS, 1, 20)]
    assert refusals(before, before | {(2, 10)}, **scope) == [Refusal(Kind.GROUP_GAINS, 2, 10)]
    assert refusals(before, before | {(2, 30)}, **{**scope, "everywhere": True}) == []
    text = describe(
        [Refusal(Kind.CLUSTER_JOINS, 1, 20), Refusal(Kind.CLUSTER_JOINS, 1, 21)], {1: "dev"}, {20: "p1"}
    )
    assert "dev: p1, 1 cluster(s) you may not see" in text
