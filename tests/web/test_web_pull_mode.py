"""Pull-mode clusters in the UI (issue 18): registered without credentials, the mode and the agent's state
at a glance, a bootstrap token shown once (and never again), the agent revoked with confirmation; RBAC and
scope as for the cluster's other change actions. Real services (clusters.agent_tokens), no mocks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from clusters import agent_tokens
from clusters.models import AgentCredential, Cluster
from fleet.audit.models import AuditEvent
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
    ClusterFactory(name="stg-push", labels={"env": "staging"})
    edge = Cluster.objects.create(name="stg-edge", connection_mode="pull", labels={"env": "staging"})
    far = Cluster.objects.create(name="prd-edge", connection_mode="pull", labels={"env": "prod"})
    return {"staging": staging, "prod": prod, "edge": edge, "far": far}


def every_page(client: Client, cluster: Cluster) -> str:
    """What a person can open afterwards: the cluster's page, the list, the dashboard, the audit log."""
    urls = [f"/clusters/{cluster.pk}/", "/clusters/", "/clusters/?mode=pull", "/", "/audit/"]
    return "".join(client.get(url).content.decode() for url in urls)


def test_register_a_pull_cluster_without_credentials(admin_user: Any, fleet: dict[str, Any]) -> None:
    client = client_for(admin_user)
    form = client.get("/clusters/register/").content.decode()
    assert 'name="connection_mode"' in form and 'value="pull"' in form
    response = client.post(
        "/clusters/register/", {"name": "edge-new", "connection_mode": "pull", "labels_text": "env=staging"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    cluster = Cluster.objects.get(name="edge-new")
    assert cluster.connection_mode == "pull" and cluster.api_url == "" and cluster.token == ""
    assert list(cluster.groups.values_list("name", flat=True)) == ["staging"]
    assert AuditEvent.objects.filter(action="cluster.create", target_id=str(cluster.pk)).exists()
    page = client.get(f"/clusters/{cluster.pk}/").content.decode()
    assert 'id="connection-mode"' in page and ">pull</span>" in page
    assert "agent never registered" in page and "API server" not in page


def test_a_pull_cluster_refuses_an_api_url_and_credentials(admin_user: Any, fleet: dict[str, Any]) -> None:
    client = client_for(admin_user)
    response = client.post(
        "/clusters/register/",
        {
            "name": "edge-bad",
            "connection_mode": "pull",
            "api_url": "https://edge:6443",
            "token": "pull-s3cret",
            "ca_data": "-----BEGIN CERTIFICATE-----",
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("A pull-mode cluster stores no credentials") == 3
    assert "pull-s3cret" not in html
    assert not Cluster.objects.filter(name="edge-bad").exists()


def test_a_push_cluster_still_needs_its_api_url(admin_user: Any, fleet: dict[str, Any]) -> None:
    client = client_for(admin_user)
    response = client.post("/clusters/register/", {"name": "push-bad", "connection_mode": "push"})
    assert response.status_code == 200
    assert not Cluster.objects.filter(name="push-bad").exists()
    response = client.post(
        "/clusters/register/",
        {"name": "push-ok", "connection_mode": "push", "api_url": "https://p:6443", "token": "t-1"},
    )
    assert response.status_code == 302
    cluster = Cluster.objects.get(name="push-ok")
    assert cluster.connection_mode == "push" and cluster.auth_method == "token" and cluster.token == "t-1"


def test_list_and_detail_show_the_mode_and_the_agent_state(admin_user: Any, fleet: dict[str, Any]) -> None:
    client = client_for(admin_user)
    edge, far = fleet["edge"], fleet["far"]
    plain, _ = agent_tokens.issue_bootstrap(edge)
    agent_plain, agent_cred = agent_tokens.exchange(plain, "agent-0.3.1", "v1.30.2")
    listing = client.get("/clusters/").content.decode()
    assert "mode-push" in listing and listing.count("badge mode-pull") == 2
    assert "agent connected" in listing and "agent never registered" in listing
    assert "agent-0.3.1" in listing
    assert "stg-push" not in client.get("/clusters/?mode=pull").content.decode()

    detail = client.get(f"/clusters/{edge.pk}/").content.decode()
    assert "agent connected" in detail and "agent-0.3.1" in detail and "v1.30.2" in detail
    assert agent_cred.prefix in detail and plain[:12] in detail  # both credentials, by prefix
    assert agent_plain not in detail and plain not in detail
    assert agent_cred.digest not in detail
    assert 'id="issue-bootstrap"' in detail and 'id="revoke-agent"' in detail

    # Silent for longer than three report intervals: stale.
    Cluster.objects.filter(pk=edge.pk).update(agent_seen=timezone.now() - timedelta(hours=1))
    assert "agent silent" in client.get(f"/clusters/{edge.pk}/").content.decode()
    assert "agent silent" in client.get("/clusters/").content.decode()
    # A push cluster's page has no agent section.
    push = Cluster.objects.get(name="stg-push")
    assert 'id="agent"' not in client.get(f"/clusters/{push.pk}/").content.decode()
    assert "agent never registered" in client.get(f"/clusters/{far.pk}/").content.decode()


def test_a_bootstrap_token_is_shown_once_and_never_again(make_user: Any, fleet: dict[str, Any]) -> None:
    edge = fleet["edge"]
    client = client_for(make_user("cara", role="cluster-admin", scope=fleet["staging"]))
    response = client.post(f"/clusters/{edge.pk}/agent/bootstrap/")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    cred = AgentCredential.objects.get(cluster=edge)
    assert cred.kind == "bootstrap" and cred.created_by.username == "cara"
    token = html.split('<pre class="secret" id="bootstrap-token">', 1)[1].split("</pre>", 1)[0]
    assert token.startswith("fga_b_") and len(token) == 6 + 43
    assert agent_tokens.digest_of(token) == cred.digest and cred.digest not in html
    assert f"python manage.py agent_manifest {edge.name} --server http://testserver" in html
    assert "kubectl apply -f fleetgate-agent.yaml" in html
    # the Secret and key the agent's manifest reads the bootstrap token from
    from clusters.management.commands.agent_manifest import BOOTSTRAP_SECRET, NAMESPACE

    secret = f"create secret generic {BOOTSTRAP_SECRET} --from-literal=token='{token}'"
    assert f"kubectl -n {NAMESPACE} {secret}" in html
    assert cred.expires_at.strftime("%Y-%m-%d %H:%M:%S") in html
    assert AuditEvent.objects.filter(action="agent.bootstrap_issued", target_id=str(edge.pk)).exists()

    later = every_page(client, edge)
    assert token not in later and cred.digest not in later
    assert token[:12] in later  # the prefix only, in the credentials table

    # A second token replaces the first (unused) one: the first can no longer register an agent.
    second = client.post(f"/clusters/{edge.pk}/agent/bootstrap/").content.decode()
    assert token not in second
    with pytest.raises(agent_tokens.AgentTokenRefused):
        agent_tokens.exchange(token, "x", "")
    assert "revoked" in client.get(f"/clusters/{edge.pk}/").content.decode()


def test_no_digest_or_token_in_any_page(admin_user: Any, fleet: dict[str, Any]) -> None:
    edge = fleet["edge"]
    client = client_for(admin_user)
    plain, boot = agent_tokens.issue_bootstrap(edge, admin_user)
    agent_plain, agent_cred = agent_tokens.exchange(plain, "agent-1", "v1.31.0")
    rotated_plain, rotated = agent_tokens.rotate(agent_cred)
    pages = every_page(client, edge)
    for secret in (plain, agent_plain, rotated_plain, boot.digest, agent_cred.digest, rotated.digest):
        assert secret not in pages
    for cred in (boot, agent_cred, rotated):
        assert cred.prefix in pages


def test_revoke_needs_confirmation_then_refuses_the_agent(admin_user: Any, fleet: dict[str, Any]) -> None:
    edge = fleet["edge"]
    client = client_for(admin_user)
    plain, _ = agent_tokens.issue_bootstrap(edge)
    agent_plain, _ = agent_tokens.exchange(plain, "agent-1", "")
    response = client.post(f"/clusters/{edge.pk}/agent/revoke/", follow=True)
    assert "Nothing revoked" in response.content.decode()
    assert agent_tokens.authenticate(agent_plain) is not None
    response = client.post(f"/clusters/{edge.pk}/agent/revoke/", {"confirm": "yes"}, follow=True)
    html = response.content.decode()
    assert "1 credential of stg-edge&#x27;s agent revoked" in html
    assert agent_tokens.authenticate(agent_plain) is None
    assert "no live credential" in html
    assert AuditEvent.objects.filter(action="agent.revoked", target_id=str(edge.pk)).exists()


def test_a_viewer_or_deployer_cannot_issue_or_revoke(make_user: Any, fleet: dict[str, Any]) -> None:
    edge = fleet["edge"]
    plain, _ = agent_tokens.issue_bootstrap(edge)
    agent_plain, _ = agent_tokens.exchange(plain, "agent-1", "")
    for role in ("viewer", "deployer", "approver"):
        client = client_for(make_user(f"u-{role}", role=role, scope=fleet["staging"]))
        page = client.get(f"/clusters/{edge.pk}/").content.decode()
        assert "agent connected" in page  # they see the state
        assert 'id="issue-bootstrap"' not in page and 'id="revoke-agent"' not in page
        assert client.post(f"/clusters/{edge.pk}/agent/bootstrap/").status_code == 403
        assert client.post(f"/clusters/{edge.pk}/agent/revoke/", {"confirm": "yes"}).status_code == 403
    assert AgentCredential.objects.filter(cluster=edge, kind="bootstrap").count() == 1
    assert agent_tokens.authenticate(agent_plain) is not None


def test_a_user_of_another_group_cannot_see_the_cluster(make_user: Any, fleet: dict[str, Any]) -> None:
    edge = fleet["edge"]
    plain, _ = agent_tokens.issue_bootstrap(edge)
    agent_plain, _ = agent_tokens.exchange(plain, "agent-1", "")
    client = client_for(make_user("pia", role="cluster-admin", scope=fleet["prod"]))
    assert client.get(f"/clusters/{edge.pk}/").status_code == 404
    assert client.post(f"/clusters/{edge.pk}/agent/bootstrap/").status_code == 404
    assert client.post(f"/clusters/{edge.pk}/agent/revoke/", {"confirm": "yes"}).status_code == 404
    assert "stg-edge" not in client.get("/clusters/").content.decode()
    assert AgentCredential.objects.filter(cluster=edge, kind="bootstrap").count() == 1
    assert agent_tokens.authenticate(agent_plain) is not None
    # ...and may act on its own group's pull cluster.
    assert client.post(f"/clusters/{fleet['far'].pk}/agent/bootstrap/").status_code == 200


def test_a_push_cluster_has_no_agent_token(admin_user: Any, fleet: dict[str, Any]) -> None:
    push = Cluster.objects.get(name="stg-push")
    response = client_for(admin_user).post(f"/clusters/{push.pk}/agent/bootstrap/", follow=True)
    assert "only for pull mode" in response.content.decode()
    assert not AgentCredential.objects.filter(cluster=push).exists()


def test_actions_need_csrf_and_post(admin_user: Any, fleet: dict[str, Any]) -> None:
    edge = fleet["edge"]
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(f"/clusters/{edge.pk}/agent/bootstrap/").status_code == 403
    assert client.post(f"/clusters/{edge.pk}/agent/revoke/", {"confirm": "yes"}).status_code == 403
    assert client.get(f"/clusters/{edge.pk}/agent/bootstrap/").status_code == 405
    assert not AgentCredential.objects.filter(cluster=edge).exists()


@pytest.mark.parametrize("clusters", [10, 300])
def test_the_list_of_pull_clusters_runs_constant_queries(
    clusters: int, make_user: Any, django_assert_max_num_queries: Any
) -> None:
    group = ClusterGroupFactory(name="all", selector={"matchLabels": {"env": "dev"}})
    Cluster.objects.bulk_create(
        [
            Cluster(name=f"e-{i}", connection_mode="pull", labels={"env": "dev"}, agent_seen=timezone.now())
            for i in range(clusters)
        ]
    )
    from clusters.membership import refresh_group

    refresh_group(group)
    client = client_for(make_user("ana", role="viewer", scope=group))
    with django_assert_max_num_queries(14):
        html = client.get("/clusters/").content.decode()
    assert "no live credential" in html


def test_edit_a_push_cluster_keeps_its_mode_and_its_stored_token(
    admin_user: Any, fleet: dict[str, Any]
) -> None:
    cluster = Cluster.objects.create(
        name="stg-2", api_url="https://stg-2:6443", token="stored-s3cret", labels={"env": "staging"}
    )
    client = client_for(admin_user)
    form = client.get(f"/clusters/{cluster.pk}/edit/").content.decode()
    assert "stored-s3cret" not in form and 'value="env=staging"' in form and "disabled" in form
    base = {"name": "stg-2", "api_url": "https://stg-2:6443", "auth_method": "token"}
    base["labels_text"] = "env=prod"
    response = client.post(f"/clusters/{cluster.pk}/edit/", {**base, "description": "moved"})
    assert response.status_code == 302, response.content.decode()[:2000]
    cluster.refresh_from_db()
    assert cluster.token == "stored-s3cret" and cluster.description == "moved"
    assert list(cluster.groups.values_list("name", flat=True)) == ["prod"]
    event = AuditEvent.objects.filter(action="cluster.update", target_id=str(cluster.pk)).latest("sequence")
    assert event.change_context == "web" and "stored-s3cret" not in str(event.after)
    client.post(f"/clusters/{cluster.pk}/edit/", {**base, "token": "new-s3cret"})
    cluster.refresh_from_db()
    assert cluster.token == "new-s3cret"
    # The mode was set at registration: a posted other mode is refused, nothing changes.
    refused = {**base, "connection_mode": "pull", "api_url": ""}
    response = client.post(f"/clusters/{cluster.pk}/edit/", refused)
    assert response.status_code == 200 and "set at registration" in response.content.decode()
    cluster.refresh_from_db()
    assert cluster.connection_mode == "push" and cluster.api_url == "https://stg-2:6443"


def test_edit_a_pull_cluster_asks_and_stores_no_credentials(admin_user: Any, fleet: dict[str, Any]) -> None:
    edge = fleet["edge"]
    client = client_for(admin_user)
    form = client.get(f"/clusters/{edge.pk}/edit/").content.decode()
    assert 'name="api_url"' not in form and 'name="token"' not in form and 'name="ca_data"' not in form
    response = client.post(
        f"/clusters/{edge.pk}/edit/",
        {"name": "stg-edge", "labels_text": "env=staging,site=edge", "api_url": "https://x:6", "token": "x"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    edge.refresh_from_db()
    assert edge.labels == {"env": "staging", "site": "edge"}
    assert edge.connection_mode == "pull" and edge.api_url == "" and edge.token == ""


def test_only_those_who_may_change_the_cluster_edit_it(make_user: Any, fleet: dict[str, Any]) -> None:
    edge = fleet["edge"]
    viewer = client_for(make_user("vi", role="viewer", scope=fleet["staging"]))
    assert 'id="edit-cluster"' not in viewer.get(f"/clusters/{edge.pk}/").content.decode()
    assert viewer.get(f"/clusters/{edge.pk}/edit/").status_code == 403
    assert viewer.post(f"/clusters/{edge.pk}/edit/", {"name": "x"}).status_code == 403
    other = client_for(make_user("ot", role="cluster-admin", scope=fleet["prod"]))
    assert other.get(f"/clusters/{edge.pk}/edit/").status_code == 404
    scoped = client_for(make_user("sc", role="cluster-admin", scope=fleet["staging"]))
    assert 'id="edit-cluster"' in scoped.get(f"/clusters/{edge.pk}/").content.decode()
    response = scoped.post(f"/clusters/{edge.pk}/edit/", {"name": "stg-edge", "labels_text": "env=prod"})
    assert response.status_code == 200 and "outside the groups you manage" in response.content.decode()
    edge.refresh_from_db()
    assert edge.labels == {"env": "staging"}
