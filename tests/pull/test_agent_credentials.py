"""Pull mode, issue 18: the cluster's connection mode, agent credentials (bootstrap, exchange, rotation,
revocation) and the admin API for them. Real models, real services, the real API with real tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from clusters import agent_tokens, services
from clusters.choices import ClusterStatus
from clusters.models import AgentCredential, Cluster
from fleet.audit.models import AuditEvent
from tests.factories import ClusterFactory

pytestmark = pytest.mark.django_db


def pull_cluster(name: str = "edge-1", **kw: Any) -> Cluster:
    cluster = Cluster(name=name, connection_mode="pull", labels={"env": "dev"}, **kw)
    cluster.full_clean()
    cluster.save()
    return cluster


def test_pull_cluster_needs_and_refuses_credentials() -> None:
    cluster = pull_cluster()
    assert cluster.api_url == "" and not cluster.token
    with pytest.raises(ValidationError) as err:
        Cluster(name="edge-2", connection_mode="pull", api_url="https://10.1.1.1:6443",
                token="t").full_clean()
    assert "stores no credentials" in str(err.value)
    # push is unchanged: the API server URL is required
    with pytest.raises(ValidationError) as err:
        Cluster(name="push-1", token="t").full_clean()
    assert "api_url" in err.value.message_dict


def test_bootstrap_exchange_single_use_and_audited() -> None:
    cluster = pull_cluster()
    plain, cred = agent_tokens.issue_bootstrap(cluster)
    assert plain.startswith("fga_b_") and len(plain) == 6 + 43
    assert cred.prefix == plain[:12] and plain not in cred.digest
    agent_plain, agent = agent_tokens.exchange(plain, "0.1.0", "v1.31.0")
    assert agent_plain.startswith("fga_a_") and agent.cluster_id == cluster.pk
    assert agent_tokens.authenticate(agent_plain).pk == agent.pk
    cluster.refresh_from_db()
    assert cluster.agent_version == "0.1.0" and cluster.kubernetes_version == "v1.31.0"
    with pytest.raises(agent_tokens.AgentTokenRefused, match="used already"):
        agent_tokens.exchange(plain, "0.1.0", "")
    # the bootstrap token is no agent credential, and no plain token reaches the audit log
    assert agent_tokens.authenticate(plain) is None
    actions = list(AuditEvent.objects.filter(cluster_name=cluster.name).values_list("action", flat=True))
    assert "agent.bootstrap_issued" in actions and "agent.registered" in actions
    for event in AuditEvent.objects.all():
        text = str(event.before) + str(event.after) + event.message
        assert plain not in text and agent_plain not in text and cred.digest not in text


def test_bootstrap_expires_and_new_one_revokes_unused() -> None:
    cluster = pull_cluster()
    first, _ = agent_tokens.issue_bootstrap(cluster)
    second, cred = agent_tokens.issue_bootstrap(cluster)
    with pytest.raises(agent_tokens.AgentTokenRefused, match="revoked"):
        agent_tokens.exchange(first, "v", "")
    AgentCredential.objects.filter(pk=cred.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(agent_tokens.AgentTokenRefused, match="expired"):
        agent_tokens.exchange(second, "v", "")
    with pytest.raises(agent_tokens.AgentTokenRefused):
        agent_tokens.exchange("fga_b_" + "x" * 43, "v", "")


def test_rotation_keeps_old_token_for_60_seconds_then_refuses_it() -> None:
    cluster = pull_cluster()
    boot, _ = agent_tokens.issue_bootstrap(cluster)
    old_plain, old = agent_tokens.exchange(boot, "v", "")
    new_plain, new = agent_tokens.rotate(old)
    assert agent_tokens.authenticate(new_plain).pk == new.pk
    old.refresh_from_db()
    assert agent_tokens.authenticate(old_plain) is not None  # in its grace period
    assert old.expires_at <= timezone.now() + timedelta(seconds=60)
    AgentCredential.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert agent_tokens.authenticate(old_plain) is None
    assert AuditEvent.objects.filter(action="agent.rotated", cluster_name=cluster.name).exists()


def test_revoke_refuses_every_credential() -> None:
    cluster = pull_cluster()
    boot, _ = agent_tokens.issue_bootstrap(cluster)
    plain, _ = agent_tokens.exchange(boot, "v", "")
    pending, _ = agent_tokens.issue_bootstrap(cluster)
    assert agent_tokens.revoke(cluster) == 2
    assert agent_tokens.authenticate(plain) is None
    with pytest.raises(agent_tokens.AgentTokenRefused):
        agent_tokens.exchange(pending, "v", "")
    assert AuditEvent.objects.filter(action="agent.revoked", cluster_name=cluster.name).exists()


def test_health_checks_never_probe_a_pull_cluster() -> None:
    cluster = pull_cluster()
    outcomes = services.check_clusters([cluster])
    assert [o.name for o in outcomes] == ["edge-1"]
    cluster.refresh_from_db()
    assert cluster.status == ClusterStatus.UNKNOWN and cluster.last_error == ""
    # a reachable pull cluster whose agent went silent becomes unreachable
    Cluster.objects.filter(pk=cluster.pk).update(
        status=ClusterStatus.REACHABLE, agent_seen=timezone.now() - timedelta(hours=1))
    cluster.refresh_from_db()
    outcome = services.check_cluster(cluster)
    assert outcome.status == ClusterStatus.UNREACHABLE and "agent has not called" in outcome.error
    outcome = services.test_connection(cluster)
    assert not outcome.reachable


# -- the admin API -----------------------------------------------------------------------------------------
def test_api_creates_pull_cluster_without_credentials(admin_client: Any) -> None:
    resp = admin_client.post("/api/clusters/", {"name": "edge-api", "connection_mode": "pull",
                                                 "labels": {"env": "dev"}}, format="json")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["connection_mode"] == "pull" and body["agent_version"] == "" and body["agent_seen"] is None
    refused = admin_client.post("/api/clusters/", {"name": "edge-api-2", "connection_mode": "pull",
                                                    "api_url": "https://10.2.2.2:6443", "token": "abc"},
                                format="json")
    assert refused.status_code == 400 and "stores no credentials" in refused.content.decode()
    # the mode is set at creation
    changed = admin_client.patch(f"/api/clusters/{body['id']}/", {"connection_mode": "push"}, format="json")
    assert changed.status_code == 400
    push = admin_client.post("/api/clusters/", {"name": "push-api", "api_url": "https://10.3.3.3:6443",
                                                 "token": "abc"}, format="json")
    assert push.status_code == 201 and push.json()["connection_mode"] == "push"


def test_api_bootstrap_status_revoke(admin_client: Any, make_user: Any, token_client: Any) -> None:
    cluster = pull_cluster()
    resp = admin_client.post(f"/api/clusters/{cluster.pk}/agent/bootstrap/")
    assert resp.status_code == 201, resp.content
    token = resp.json()["token"]
    assert token.startswith("fga_b_") and token in resp.json()["manifest_command"]
    agent_tokens.exchange(token, "0.2.0", "v1.30.1")
    status = admin_client.get(f"/api/clusters/{cluster.pk}/agent/").json()
    assert status["connected"] is True and status["agent_version"] == "0.2.0"
    assert {c["kind"] for c in status["credentials"]} == {"bootstrap", "agent"}
    assert token not in str(status) and "digest" not in str(status)
    revoked = admin_client.post(f"/api/clusters/{cluster.pk}/agent/revoke/")
    assert revoked.status_code == 200 and revoked.json()["revoked"] == 1
    assert admin_client.get(f"/api/clusters/{cluster.pk}/agent/").json()["connected"] is False
    # a push cluster has no agent
    push = ClusterFactory()
    assert admin_client.post(f"/api/clusters/{push.pk}/agent/bootstrap/").status_code == 409
    # RBAC: a viewer sees the status but issues and revokes nothing; unknown ids are 404
    viewer = token_client(make_user("viewer1", role="viewer"))
    assert viewer.get(f"/api/clusters/{cluster.pk}/agent/").status_code == 200
    assert viewer.post(f"/api/clusters/{cluster.pk}/agent/bootstrap/").status_code == 403
    assert viewer.post(f"/api/clusters/{cluster.pk}/agent/revoke/").status_code == 403
    assert admin_client.post("/api/clusters/999999/agent/bootstrap/").status_code == 404


def test_admin_action_revokes_the_agent(make_user: Any) -> None:
    from django.test import Client

    admin_user = make_user("root-admin", role="admin", superuser=True)
    cluster = pull_cluster("edge-admin")
    boot, _ = agent_tokens.issue_bootstrap(cluster)
    plain, _ = agent_tokens.exchange(boot, "v", "")
    client = Client()
    client.force_login(admin_user)
    resp = client.post("/admin/clusters/cluster/",
                       {"action": "revoke_agent", "_selected_action": [cluster.pk]})
    assert resp.status_code == 302 and "/login" not in resp["Location"]
    assert agent_tokens.authenticate(plain) is None
    event = AuditEvent.objects.get(action="agent.revoked", cluster_name="edge-admin")
    assert event.actor_name == admin_user.username
