"""Authorization of policy writes: a role scoped to one group must not change what applies to every cluster.

Attack class: broken object-level authorization / privilege escalation across tenants. A user allowed to
write policies somewhere (a policy-admin or admin of one cluster group) rewrites a policy that binds every
cluster, by creating a policy with an existing policy's name (which versions that policy) or by editing it,
through the UI where the API refuses. Peers had the same class of bug: Argo CD advisories (2022-2024) where
project-scoped RBAC was not applied on some write paths, so a user of one project could act on applications
of another; Rancher/Fleet advisories where a user limited to one workspace or cluster could change
resources shared by all; Kyverno advisories where a namespaced policy could affect resources beyond its
namespace. Here every write goes through one service that
checks scope against the policy actually changed; the API answers 403, the UI 403 with a form error.
Bindings and waivers are checked in scope the same way (API and UI).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from fleet.audit.models import AuditEvent
from policies.models import Policy, PolicyBinding, Waiver
from policies.services.definitions import (
    PolicyDefinition,
    PolicyWriteDenied,
    author_policy,
    save_policy,
)
from tests.factories import ClusterGroupFactory

pytestmark = pytest.mark.django_db

DENY_ALL = """package main

deny[msg] {
    input.kind != ""
    msg := "demo policy"
}
"""

NO_OP = """package main

deny[msg] {
    false
    msg := "never"
}
"""


@pytest.fixture
def world(make_user: Any, token_client: Any) -> dict[str, Any]:
    dev = ClusterGroupFactory(name="dev", selector={"matchLabels": {"env": "dev"}})
    prod = ClusterGroupFactory(name="prod", selector={"matchLabels": {"env": "prod"}})
    policy = save_policy(
        "demo-policies", PolicyDefinition(style="conftest", modules=(("demo.rego", DENY_ALL),))
    ).policy
    PolicyBinding.objects.create(policy=policy, cluster_group=None, enforcement="deny")
    users = {
        "dev-policy-admin": make_user("dev-pa", role="policy-admin", scope=dev),
        "dev-admin": make_user("dev-admin", role="admin", scope=dev),
        "policy-admin": make_user("all-pa", role="policy-admin"),
    }
    return {
        "dev": dev,
        "prod": prod,
        "policy": policy,
        "users": users,
        "api": {k: token_client(u) for k, u in users.items()},
    }


def _ui(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _form(name: str = "demo-policies", source: str = NO_OP) -> dict[str, str]:
    return {"name": name, "module_path": "demo.rego", "source": source}


def _unchanged(world: dict[str, Any]) -> None:
    policy = Policy.objects.get(pk=world["policy"].pk)
    assert policy.current is not None and policy.current.number == 1
    assert policy.versions.count() == 1
    assert policy.current.content["modules"][0]["source"] == DENY_ALL


@pytest.mark.parametrize("who", ["dev-policy-admin", "dev-admin"])
def test_ui_create_with_the_name_of_a_global_policy_is_refused(world: dict[str, Any], who: str) -> None:
    page = _ui(world["users"][who]).post("/policies/new/", _form())
    assert page.status_code == 403
    assert "beyond your scope" in page.content.decode()
    _unchanged(world)
    assert not AuditEvent.objects.filter(action="policy.version").exists()


@pytest.mark.parametrize("who", ["dev-policy-admin", "dev-admin"])
def test_ui_edit_of_a_global_policy_is_refused(world: dict[str, Any], who: str) -> None:
    pk = world["policy"].pk
    page = _ui(world["users"][who]).post(f"/policies/{pk}/edit/", _form())
    assert page.status_code == 403
    _unchanged(world)


@pytest.mark.parametrize("who", ["dev-policy-admin", "dev-admin"])
def test_ui_create_of_a_new_policy_needs_a_role_on_all_clusters(world: dict[str, Any], who: str) -> None:
    page = _ui(world["users"][who]).post("/policies/new/", _form(name="brand-new"))
    assert page.status_code == 403
    assert "Only a role on all clusters may add policies" in page.content.decode()
    assert not Policy.objects.filter(name="brand-new").exists()


@pytest.mark.parametrize("who", ["dev-policy-admin", "dev-admin"])
def test_api_refuses_the_same_rewrites(world: dict[str, Any], who: str) -> None:
    client = world["api"][who]
    pk = world["policy"].pk
    body = {"name": "demo-policies", "style": "conftest", "modules": [{"path": "demo.rego", "source": NO_OP}]}
    assert client.post("/api/policies/", body, format="json").status_code == 403
    patch = {"modules": [{"path": "demo.rego", "source": NO_OP}]}
    assert client.patch(f"/api/policies/{pk}/", patch, format="json").status_code == 403
    assert client.put(f"/api/policies/{pk}/", body, format="json").status_code == 403
    _unchanged(world)


def test_the_service_checks_the_policy_being_changed(world: dict[str, Any]) -> None:
    definition = PolicyDefinition(style="conftest", modules=(("demo.rego", NO_OP),))
    with pytest.raises(PolicyWriteDenied) as denied:
        author_policy(world["users"]["dev-policy-admin"], "demo-policies", definition)
    assert denied.value.action == "change" and denied.value.policy_name == "demo-policies"
    with pytest.raises(PolicyWriteDenied) as new:
        author_policy(world["users"]["dev-admin"], "other-name", definition)
    assert new.value.action == "add"
    _unchanged(world)


def test_an_all_clusters_policy_admin_versions_the_policy_in_ui_and_api(world: dict[str, Any]) -> None:
    user = world["users"]["policy-admin"]
    page = _ui(user).post("/policies/new/", _form())
    assert page.status_code == 302
    policy = Policy.objects.get(pk=world["policy"].pk)
    assert policy.current is not None and policy.current.number == 2
    assert policy.current.created_by_name == "all-pa"
    body = {"modules": [{"path": "demo.rego", "source": DENY_ALL}]}
    response = world["api"]["policy-admin"].patch(f"/api/policies/{policy.pk}/", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["version"] == 3


def _waiver(policy: Any, group: Any) -> dict[str, Any]:
    return {
        "policy": policy.pk,
        "name_pattern": "legacy-*",
        "cluster_group": group.pk if group is not None else "",
        "expires_at": (timezone.now() + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M"),
        "justification": "vendor image",
    }


def test_bindings_in_scope_only_through_the_api(world: dict[str, Any]) -> None:
    client = world["api"]["dev-policy-admin"]
    policy = world["policy"]
    ok = client.post(
        "/api/policy-bindings/",
        {"policy": policy.pk, "cluster_group": world["dev"].pk, "enforcement": "warn"},
        format="json",
    )
    assert ok.status_code == 201, ok.content
    everywhere = client.post(
        "/api/policy-bindings/", {"policy": policy.pk, "cluster_group": None}, format="json"
    )
    assert everywhere.status_code == 403
    other = client.post(
        "/api/policy-bindings/", {"policy": policy.pk, "cluster_group": world["prod"].pk}, format="json"
    )
    assert other.status_code in (400, 403)  # prod is not even visible to a dev-scoped role
    global_binding = PolicyBinding.objects.get(cluster_group=None)
    off = client.patch(f"/api/policy-bindings/{global_binding.pk}/", {"enabled": False}, format="json")
    assert off.status_code == 403
    assert client.delete(f"/api/policy-bindings/{global_binding.pk}/").status_code == 403
    global_binding.refresh_from_db()
    assert global_binding.enabled
    assert PolicyBinding.objects.count() == 2


def test_waivers_in_scope_only_through_api_and_ui(world: dict[str, Any]) -> None:
    user = world["users"]["dev-policy-admin"]
    policy = world["policy"]
    api = world["api"]["dev-policy-admin"]
    body = _waiver(policy, None)
    body["cluster_group"] = None
    assert api.post("/api/waivers/", body, format="json").status_code == 403
    ui = _ui(user)
    page = ui.post("/waivers/", _waiver(policy, None))
    assert page.status_code == 200 and "may not waive" in page.content.decode()
    other = ui.post("/waivers/", _waiver(policy, world["prod"]))
    assert other.status_code == 200  # prod is not a choice for this user: a form error
    assert not Waiver.objects.exists()
    mine = ui.post("/waivers/", _waiver(policy, world["dev"]))
    assert mine.status_code == 302
    assert Waiver.objects.get().cluster_group == world["dev"]
