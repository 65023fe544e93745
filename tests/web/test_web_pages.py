"""The UI pages: restricted like the API, constant queries, forms that refuse what a role may not do."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from clusters.models import Cluster
from fleet.audit.models import AuditEvent
from fleet.audit.services import record
from tests.factories import ClusterFactory, ClusterGroupFactory

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def fleet() -> dict[str, Any]:
    staging = ClusterGroupFactory(name="staging", selector={"matchLabels": {"env": "staging"}})
    prod = ClusterGroupFactory(name="prod", selector={"matchLabels": {"env": "prod"}})
    ClusterFactory(name="stg-1", labels={"env": "staging", "region": "eu"})
    ClusterFactory(name="prd-1", labels={"env": "prod", "region": "us"})
    record("test.event", staging, message="staging happened")
    record("test.event", prod, message="prod happened")
    return {"staging": staging, "prod": prod}


PAGES = ["/", "/clusters/", "/groups/", "/audit/"]


@pytest.mark.parametrize("url", PAGES)
def test_a_scoped_viewer_sees_only_their_group(url: str, fleet: dict[str, Any], make_user: Any) -> None:
    viewer = make_user("vic", role="viewer", scope=fleet["staging"])
    html = client_for(viewer).get(url).content.decode()
    assert "prd-1" not in html and "prod happened" not in html
    if url in ("/clusters/",):
        assert "stg-1" in html
    if url == "/audit/":
        assert "staging happened" in html


def test_cluster_filters_by_label_selector_group_and_status(fleet: dict[str, Any], admin_user: Any) -> None:
    client = client_for(admin_user)
    html = client.get("/clusters/", {"label": "region in (us)"}).content.decode()
    assert "prd-1" in html and "stg-1" not in html
    html = client.get("/clusters/", {"group": fleet["staging"].pk}).content.decode()
    assert "stg-1" in html and "prd-1" not in html
    html = client.get("/clusters/", {"label": "region in us"}).content.decode()
    assert "parentheses" in html


def test_register_a_cluster_through_the_form(admin_user: Any, fleet: dict[str, Any]) -> None:
    client = client_for(admin_user)
    response = client.post(
        "/clusters/register/",
        {
            "name": "new-one",
            "auth_method": "token",
            "api_url": "https://new:6443",
            "token": "form-s3cret-token",
            "labels_text": "env=staging,region=eu",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    cluster = Cluster.objects.get(name="new-one")
    assert cluster.token == "form-s3cret-token"
    assert cluster.labels == {"env": "staging", "region": "eu"}
    assert list(cluster.groups.values_list("name", flat=True)) == ["staging"]
    event = AuditEvent.objects.get(action="cluster.create", target_id=str(cluster.pk))
    assert event.change_context == "web" and "form-s3cret-token" not in str(event.after)
    detail = client.get(f"/clusters/{cluster.pk}/").content.decode()
    assert "form-s3cret-token" not in detail


def test_viewers_cannot_register_or_edit(make_user: Any, fleet: dict[str, Any]) -> None:
    client = client_for(make_user("vera", role="viewer"))
    assert client.get("/clusters/register/").status_code == 403
    assert client.post("/clusters/register/", {"name": "x"}).status_code == 403
    assert client.post(f"/groups/{fleet['staging'].pk}/edit/", {"name": "hacked"}).status_code == 403
    assert "Register a cluster" not in client.get("/clusters/").content.decode()
    assert client.get("/access/").status_code == 403


def test_scoped_cluster_admin_cannot_register_outside_their_group(
    make_user: Any, fleet: dict[str, Any]
) -> None:
    client = client_for(make_user("cara", role="cluster-admin", scope=fleet["staging"]))
    response = client.post(
        "/clusters/register/",
        {
            "name": "sneaky",
            "auth_method": "token",
            "api_url": "https://s:6443",
            "token": "t",
            "labels_text": "env=prod",
        },
    )
    assert response.status_code == 200
    assert "outside the groups you manage" in response.content.decode()
    assert not Cluster.objects.filter(name="sneaky").exists()


def test_group_edit_changes_selector_and_membership(admin_user: Any, fleet: dict[str, Any]) -> None:
    client = client_for(admin_user)
    group = fleet["staging"]
    form = {
        "name": "staging",
        "selector_text": "region in (eu,us)",
        "labels_text": "tier=gold,team=web",
        "approvals_required": 1,
        "sync_mode": "automatic",
        "max_parallel": 10,
        "batch_pause_seconds": 0,
        "failure_threshold": 0,
        "health_timeout_seconds": 300,
        "prune": "on",
    }
    assert client.post(f"/groups/{group.pk}/edit/", form).status_code == 302
    group.refresh_from_db()
    assert sorted(group.members.values_list("name", flat=True)) == ["prd-1", "stg-1"]
    assert group.labels == {"tier": "gold", "team": "web"}
    assert AuditEvent.objects.filter(action="clustergroup.update", target_id=str(group.pk)).exists()
    assert 'id="group-labels"' in client.get(f"/groups/{group.pk}/").content.decode()
    assert "tier=gold" in client.get(f"/groups/{group.pk}/edit/").content.decode()
    form["labels_text"] = "tier in (gold)"
    assert "Labels are key=value pairs" in client.post(f"/groups/{group.pk}/edit/", form).content.decode()


def test_selector_preview_counts_visible_clusters(make_user: Any, fleet: dict[str, Any]) -> None:
    client = client_for(make_user("pat", role="viewer", scope=fleet["staging"]))
    body = client.get("/groups/preview/", {"selector": "region"}).json()
    assert body["clusters"] == ["stg-1"]
    assert client.get("/groups/preview/", {"selector": "region in eu"}).status_code == 400


@pytest.mark.parametrize("url", PAGES)
@pytest.mark.parametrize("clusters", [10, 500])
def test_pages_run_constant_queries(
    url: str, clusters: int, make_user: Any, django_assert_max_num_queries: Any
) -> None:
    group = ClusterGroupFactory(
        name="all", selector={"matchExpressions": [{"key": "env", "operator": "Exists"}]}
    )
    Cluster.objects.bulk_create(
        [
            Cluster(name=f"c-{i}", api_url="https://x:6443", token="t", labels={"env": "dev"})
            for i in range(clusters)
        ]
    )
    from clusters.membership import refresh_group

    refresh_group(group)
    for i in range(20):
        record("test.event", group, message=f"event {i}")
    client = client_for(make_user("ana", role="viewer", scope=group))
    with django_assert_max_num_queries(14):
        assert client.get(url).status_code == 200


def test_cluster_page_shows_what_is_synced_there_and_drift(admin_user: Any, fleet: dict[str, Any]) -> None:
    from fleet.rollouts.models import SyncedState
    from tests.factories import CommitFactory, PathMappingFactory

    cluster = Cluster.objects.get(name="stg-1")
    mapping = PathMappingFactory(name="web-staging", cluster_group=fleet["staging"])
    SyncedState.objects.create(
        mapping=mapping,
        cluster=cluster,
        commit=CommitFactory(repository=mapping.repository, message="bump web"),
        health="Healthy",
        drift_status="drifted",
        drift=[{"ref": {"kind": "ConfigMap", "name": "web"}, "state": "changed"}],
        inventory=[{"kind": "ConfigMap", "name": "web"}],
    )
    html = client_for(admin_user).get(f"/clusters/{cluster.pk}/").content.decode()
    assert (
        "web-staging" in html
        and "bump web" in html
        and "Drifted" in html
        and "ConfigMap web: changed" in html
    )


def test_test_connection_button_checks_a_real_sandbox(make_user: Any, fleet: dict[str, Any]) -> None:
    from clusters.sandbox import SandboxServer

    with SandboxServer() as server:
        box = server.add_cluster("web-test", token="conn-token-secret")
        cluster = Cluster.objects.create(
            name="conn-1", api_url=box.url, token="conn-token-secret", labels={"env": "staging"}
        )
        deployer = client_for(make_user("dep", role="deployer", scope=fleet["staging"]))
        page = deployer.get(f"/clusters/{cluster.pk}/").content.decode()
        assert 'id="test-connection"' in page
        response = deployer.post(f"/clusters/{cluster.pk}/test/", follow=True)
        assert "is reachable" in response.content.decode()
        cluster.refresh_from_db()
        assert cluster.status == "reachable"
    viewer = client_for(make_user("vie", role="viewer", scope=fleet["staging"]))
    assert 'id="test-connection"' not in viewer.get(f"/clusters/{cluster.pk}/").content.decode()
    assert viewer.post(f"/clusters/{cluster.pk}/test/").status_code == 403


def test_access_page_lists_bindings_users_and_groups_for_admins(admin_user: Any, make_user: Any) -> None:
    from django.contrib.auth.models import Group

    from fleet.access.models import RoleBinding

    team = Group.objects.create(name="platform-team")
    RoleBinding.objects.create(group=team, role="deployer")
    html = client_for(admin_user).get("/access/").content.decode()
    assert "group:platform-team" in html and "platform-team" in html and "root" in html
    assert client_for(make_user("dee", role="deployer")).get("/access/").status_code == 403
