"""Every API endpoint × every role × in and out of scope: allowed, 403 or 404, as designed.

The endpoints come from the URL configuration, so a new endpoint without an entry in DESIGN fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from fleet.access.choices import Role
from fleet.access.models import RoleBinding
from fleet.audit.services import record
from fleet.rollouts.models import ClusterSync, Rollout, SyncedState
from fleet.sources.models import ChartRepository
from tests.factories import (
    ClusterFactory,
    ClusterGroupFactory,
    CommitFactory,
    PathMappingFactory,
    RepositoryFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

ROLES = [r.value for r in Role]

# The design: which roles may write each resource, and how writes are scoped.
#   "scoped": a group-scoped binding allows writes to objects of that group;
#   "global": only a binding on all clusters allows writes; "none": read-only endpoint.
DESIGN: dict[str, dict[str, Any]] = {
    "cluster": {"write": {"cluster-admin", "admin"}, "scope": "scoped", "view": set(ROLES)},
    "clustergroup": {
        "write": {"cluster-admin", "admin"},
        "scope": "scoped",
        "create": "global",
        "view": set(ROLES),
    },
    "repository": {"write": {"cluster-admin", "admin"}, "scope": "global", "view": set(ROLES)},
    "pathmapping": {"write": {"cluster-admin", "admin"}, "scope": "scoped", "view": set(ROLES)},
    # chart repository credentials serve their cluster groups: seen and changed in them; one serving every
    # group (the create body names none) only with a role on all clusters
    # (tests/sources/test_chart_repository_scope.py)
    "chartrepository": {
        "write": {"cluster-admin", "admin"},
        "scope": "scoped",
        "create": "global",
        "view": set(ROLES),
    },
    "commit": {"write": set(), "scope": "none", "view": set(ROLES)},
    "auditevent": {"write": set(), "scope": "none", "view": set(ROLES)},
    # Rollouts change only through their actions (tests/rollouts/test_rollout_api.py covers those).
    "rollout": {"write": set(), "scope": "none", "view": set(ROLES)},
    "clustersync": {"write": set(), "scope": "none", "view": set(ROLES)},
    "syncedstate": {"write": set(), "scope": "none", "view": set(ROLES)},
    "rolebinding": {"write": {"admin"}, "scope": "global", "view": {"admin"}, "global_view_only": True},
}
# Endpoints that are about the signed-in user, not about fleet objects: every authenticated user gets 200.
# Notification subscriptions and their delivery log are personal too: each user sees only their own, and
# a subscription reaches only what its owner may see (tests/notifications/test_notifications_api.py).
PERSONAL = {"role", "me", "apitoken", "subscription", "delivery"}


def api_routes() -> list[tuple[str, str, Any]]:
    """(route name, pattern, view class) for every named route under /api/."""
    found = []

    def walk(patterns: list[Any], prefix: str, namespace: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                ns = f"{namespace}:{p.namespace}" if p.namespace else namespace
                walk(p.url_patterns, prefix + str(p.pattern), ns)
            elif isinstance(p, URLPattern) and p.name:
                cls = getattr(p.callback, "cls", None)
                found.append((f"{namespace}:{p.name}".strip(":"), prefix + str(p.pattern), cls))

    walk(get_resolver().url_patterns, "", "")
    return [r for r in found if r[1].startswith("api/")]


def test_every_api_route_is_in_the_design() -> None:
    missing = []
    for name, pattern, _cls in api_routes():
        if name.endswith(("api-root", "schema", "swagger-ui", "redoc")) or "format" in pattern:
            continue
        if name.startswith("agent-api:"):
            continue  # pull-mode agents' API: agent credentials only, no roles (tests/pull/test_agent_api.py)
        basename = name.split(":")[-1].rsplit("-", 1)[0]
        if basename not in DESIGN and basename not in PERSONAL and basename not in EXTRA_ROUTES:
            missing.append(name)
    assert not missing, f"routes without an access design: {missing}"


# Custom actions and their expected outcome per role for a scoped/global binding.
# Sources: repository-test(-connection) needs repository.fetch, repository-rotate-webhook(-secret) needs
# repository.change (global scope, like every repository write); git(-webhook) is verified by the
# repository's webhook secret, not by a role. tests/sources/ checks each of them.
EXTRA_ROUTES = {
    "auditevent-verify",
    "cluster-test",  # cluster-test-connection: tests/connector (deployer and cluster-admin in scope)
    # cluster-agent(-bootstrap, -revoke): seen with the cluster, issued and revoked with cluster.change
    # (tests/pull/test_agent_credentials.py)
    "cluster-agent",
    # clustergroup-allow-list: seen with the group, written only by the admin role on all clusters
    # (tests/rollouts/test_tenant_allow_lists.py)
    "clustergroup-allow",
    "rollout-sync",  # rollout-sync-now: tests/rollouts/test_rollout_api.py
    "repository-test",
    "repository-rotate-webhook",
    "git",
    # Policies: global documents seen by every role anywhere, bindings/waivers of a group plus the global
    # ones, evaluations/violations by evaluation.view, policy sources under policy.*, and the import/check
    # actions. tests/policies/test_policy_access.py holds their own role x scope matrix.
    "policy",
    "policybinding",
    "waiver",
    "evaluation",
    "violation",
    "policysource",
    # policy-reports/{cluster}: clusters the user may view, results from the evaluations the user may view
    # (tests/policies/test_policy_reports.py)
    "policyreport",
    # policy-previews: seen like bindings (the group's and the global ones), started with policypreview.add
    # in the proposal's scope, reports narrowed to the evaluations the user may view
    # (tests/policies/test_policy_preview.py)
    "policypreview",
    # import/gitops: creates repositories, groups and mappings through their own scope checks
    # (repository.add on all clusters, pathmapping.add in the group): tests/sources/test_import_gitops_api.py
    "gitops",
}


@pytest.fixture
def world() -> dict[str, Any]:
    staging = ClusterGroupFactory(name="staging", selector={"matchLabels": {"env": "staging"}})
    prod = ClusterGroupFactory(name="prod", selector={"matchLabels": {"env": "prod"}})
    objects: dict[str, dict[str, Any]] = {"in": {}, "out": {}}
    for key, group, env in (("in", staging, "staging"), ("out", prod, "prod")):
        repo = RepositoryFactory(name=f"repo-{env}")
        objects[key] = {
            "clustergroup": group,
            "cluster": ClusterFactory(name=f"c-{env}", labels={"env": env}),
            "repository": repo,
            "pathmapping": PathMappingFactory(name=f"m-{env}", repository=repo, cluster_group=group),
            "chartrepository": ChartRepository.objects.create(
                name=f"charts-{env}", url=f"https://charts-{env}.example.com", username="u", password="pw"
            ),
            "commit": CommitFactory(repository=repo),
            "auditevent": record("test.event", group, message=f"in {env}"),
        }
        objects[key]["chartrepository"].cluster_groups.set([group])
        mapping, cluster = objects[key]["pathmapping"], objects[key]["cluster"]
        objects[key]["rollout"] = Rollout.objects.create(mapping=mapping, commit=objects[key]["commit"])
        rollout = objects[key]["rollout"]
        objects[key]["clustersync"] = ClusterSync.objects.create(rollout=rollout, cluster=cluster)
        objects[key]["syncedstate"] = SyncedState.objects.create(mapping=mapping, cluster=cluster)
    other = UserFactory(username="someone")
    objects["in"]["rolebinding"] = RoleBinding.objects.create(user=other, role="viewer", scope=staging)
    objects["out"]["rolebinding"] = RoleBinding.objects.create(user=other, role="viewer", scope=prod)
    return {"staging": staging, "prod": prod, **objects}


URLS = {
    "cluster": "/api/clusters/",
    "clustergroup": "/api/groups/",
    "repository": "/api/repositories/",
    "pathmapping": "/api/mappings/",
    "chartrepository": "/api/chart-repositories/",
    "commit": "/api/commits/",
    "auditevent": "/api/audit/events/",
    "rollout": "/api/rollouts/",
    "clustersync": "/api/cluster-syncs/",
    "syncedstate": "/api/synced-states/",
    "rolebinding": "/api/access/bindings/",
}
PATCHES = {
    "cluster": {"description": "changed"},
    "clustergroup": {"description": "changed"},
    "repository": {"branch": "changed"},
    "pathmapping": {"enabled": False},
    "chartrepository": {"description": "changed"},
    "commit": {"message": "x"},
    "auditevent": {"message": "x"},
    "rollout": {"state": "synced"},
    "clustersync": {"state": "synced"},
    "syncedstate": {"health": "Healthy"},
    "rolebinding": {"role": "deployer"},
}


def expected(resource: str, role: str, scoped: bool, where: str, method: str) -> int:
    design = DESIGN[resource]
    if design["scope"] == "none" and method != "GET":
        return 405
    visible = role in design["view"] and (
        not scoped or (where == "in" and not design.get("global_view_only"))
    )
    if not visible:
        return 404
    if method == "GET":
        return 200
    allowed = role in design["write"] and (design["scope"] == "scoped" or not scoped)
    if not allowed:
        return 403
    return 200 if method == "PATCH" else 204


@pytest.mark.parametrize("resource", sorted(DESIGN))
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("scoped", [False, True], ids=["global", "scoped"])
def test_matrix(world: dict[str, Any], resource: str, role: str, scoped: bool, token_client: Any) -> None:
    user = UserFactory(username=f"{role}-{'s' if scoped else 'g'}")
    RoleBinding.objects.create(user=user, role=role, scope=world["staging"] if scoped else None)
    client: APIClient = token_client(user)
    url = URLS[resource]

    listed = client.get(url + "?limit=1000")
    assert listed.status_code == 200
    ids = {row["id"] for row in listed.json()["results"]}
    for where in ("in", "out"):
        obj = world[where][resource]
        should_see = expected(resource, role, scoped, where, "GET") == 200
        assert (obj.pk in ids) == should_see, f"{role} {'scoped' if scoped else 'global'} list {where}"

    for where in ("in", "out"):
        obj = world[where][resource]
        detail = f"{url}{obj.pk}/"
        assert client.get(detail).status_code == expected(resource, role, scoped, where, "GET")
        patch = client.patch(detail, PATCHES[resource], format="json")
        assert patch.status_code == expected(resource, role, scoped, where, "PATCH"), patch.content
    # Delete last (the in-scope object first, so the out-of-scope check is not disturbed by cascades).
    for where in ("out", "in"):
        obj = world[where][resource]
        if resource == "clustergroup":
            obj.mappings.all().delete()
        response = client.delete(f"{url}{obj.pk}/")
        assert response.status_code == expected(resource, role, scoped, where, "DELETE"), response.content


CREATE_BODIES = {
    "cluster": lambda w: {
        "name": "new-c",
        "api_url": "https://n:6443",
        "token": "t0ken-value",
        "labels": {"env": "staging"},
    },
    "clustergroup": lambda w: {"name": "new-g", "selector": {"matchLabels": {"env": "staging"}}},
    "repository": lambda w: {"name": "new-r", "url": "https://git.example.com/x.git"},
    "pathmapping": lambda w: {
        "name": "new-m",
        "path": "apps/x",
        "repository": w["in"]["repository"].pk,
        "cluster_group": w["staging"].pk,
    },
    "chartrepository": lambda w: {"name": "new-cr", "url": "oci://registry.example.com/charts"},
    "rolebinding": lambda w: {
        "user": w["in"]["rolebinding"].user_id,
        "role": "approver",
        "scope": w["staging"].pk,
    },
}


@pytest.mark.parametrize("resource", sorted(CREATE_BODIES))
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("scoped", [False, True], ids=["global", "scoped"])
def test_create_matrix(
    world: dict[str, Any], resource: str, role: str, scoped: bool, token_client: Any
) -> None:
    user = UserFactory(username=f"{role}-{'s' if scoped else 'g'}")
    RoleBinding.objects.create(user=user, role=role, scope=world["staging"] if scoped else None)
    client: APIClient = token_client(user)
    design = DESIGN[resource]
    create_scope = design.get("create", design["scope"])
    allowed = role in design["write"] and (create_scope == "scoped" or not scoped)
    response = client.post(URLS[resource], CREATE_BODIES[resource](world), format="json")
    assert response.status_code == (201 if allowed else 403), response.content


def test_scoped_cluster_admin_cannot_move_a_cluster_out_of_scope(
    world: dict[str, Any], token_client: Any
) -> None:
    user = UserFactory(username="ca")
    RoleBinding.objects.create(user=user, role="cluster-admin", scope=world["staging"])
    client = token_client(user)
    cluster = world["in"]["cluster"]
    response = client.patch(f"/api/clusters/{cluster.pk}/", {"labels": {"env": "prod"}}, format="json")
    assert response.status_code == 403
    cluster.refresh_from_db()
    assert cluster.labels == {"env": "staging"}


def test_scoped_user_cannot_reference_an_invisible_group(world: dict[str, Any], token_client: Any) -> None:
    user = UserFactory(username="ca2")
    RoleBinding.objects.create(user=user, role="cluster-admin", scope=world["staging"])
    client = token_client(user)
    body = {**CREATE_BODIES["pathmapping"](world), "cluster_group": world["prod"].pk}
    response = client.post("/api/mappings/", body, format="json")
    assert response.status_code == 400
    assert "cluster_group" in response.json()


def test_personal_endpoints_answer_every_authenticated_user(world: dict[str, Any], token_client: Any) -> None:
    user = UserFactory(username="nobody")  # no binding at all
    client = token_client(user)
    assert client.get("/api/access/me/").status_code == 200
    assert client.get("/api/access/roles/").status_code == 200
    assert client.get("/api/access/tokens/").status_code == 200
    assert client.get("/api/clusters/").json()["count"] == 0
    assert APIClient().get("/api/access/me/").status_code == 401
