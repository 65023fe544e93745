"""Every core resource through the REST API: list, filter, get, create, update, delete, validation errors,
token authentication, credentials never in responses, and audit rows for every write."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from rest_framework.test import APIClient

from clusters.models import Cluster
from fleet.audit.models import AuditEvent
from tests.factories import (
    ClusterFactory,
    ClusterGroupFactory,
    CommitFactory,
    PathMappingFactory,
    RepositoryFactory,
)

pytestmark = pytest.mark.django_db


@dataclass
class Resource:
    url: str
    factory: Any
    create: Any  # callable returning the POST body
    update: dict[str, Any]
    filter_query: str  # a query that keeps the created object and drops the other
    invalid: Any  # callable returning (body, field with an error)
    secrets: tuple[str, ...] = ()
    writable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _cluster_body() -> dict[str, Any]:
    return {
        "name": "prod-eu-1",
        "api_url": "https://prod-eu-1.example.com:6443",
        "auth_method": "token",
        "token": "s3cr3t-cluster-token-value",
        "labels": {"env": "prod", "region": "eu"},
    }


def _group_body() -> dict[str, Any]:
    return {
        "name": "prod",
        "selector": {
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "region", "operator": "In", "values": ["eu"]}],
        },
        "approval_required": True,
        "approvals_required": 2,
        "sync_windows": [
            {"kind": "allow", "schedule": "0 22 * * *", "duration": "2h", "timezone": "Europe/Berlin"}
        ],
    }


def _repo_body() -> dict[str, Any]:
    return {
        "name": "platform",
        "url": "https://git.example.com/platform/deploy.git",
        "branch": "main",
        "auth_method": "token",
        "username": "fleetgate",
        "token": "s3cr3t-git-token-value",
        "webhook_secret": "s3cr3t-webhook-secret-value",
    }


def _mapping_body() -> dict[str, Any]:
    repo = RepositoryFactory(name="platform")
    group = ClusterGroupFactory(name="staging")
    return {
        "repository": repo.pk,
        "cluster_group": group.pk,
        "name": "web",
        "path": "apps/web",
        "renderer": "kustomize",
        "values": {"replicas": 2},
        "target_namespace": "web",
    }


def _invalid_cluster() -> tuple[dict[str, Any], str]:
    return {**_cluster_body(), "labels": {"bad key!": "x"}}, "labels"


def _invalid_group() -> tuple[dict[str, Any], str]:
    return {
        **_group_body(),
        "selector": {"matchExpressions": [{"key": "env", "operator": "Near"}]},
    }, "selector"


def _invalid_repo() -> tuple[dict[str, Any], str]:
    return {**_repo_body(), "url": "ftp://example.com/repo"}, "url"


def _invalid_mapping() -> tuple[dict[str, Any], str]:
    return {**_mapping_body(), "path": "../../etc"}, "path"


RESOURCES = {
    "clusters": Resource(
        url="/api/clusters/",
        factory=lambda: ClusterFactory(name="other", labels={"env": "dev"}),
        create=_cluster_body,
        update={"description": "EU production", "labels": {"env": "prod", "region": "eu", "tier": "gold"}},
        filter_query="label=env=prod",
        invalid=_invalid_cluster,
        secrets=("s3cr3t-cluster-token-value",),
    ),
    "groups": Resource(
        url="/api/groups/",
        factory=lambda: ClusterGroupFactory(name="other"),
        create=_group_body,
        update={"approvals_required": 3, "prune": False},
        filter_query="name=pro",
        invalid=_invalid_group,
    ),
    "repositories": Resource(
        url="/api/repositories/",
        factory=lambda: RepositoryFactory(name="other"),
        create=_repo_body,
        update={"branch": "release", "poll_interval": 120},
        filter_query="name=plat",
        invalid=_invalid_repo,
        secrets=("s3cr3t-git-token-value", "s3cr3t-webhook-secret-value"),
    ),
    "mappings": Resource(
        url="/api/mappings/",
        factory=lambda: PathMappingFactory(name="other"),
        create=_mapping_body,
        update={"path": "apps/web/overlays/prod", "enabled": False},
        filter_query="renderer=kustomize",
        invalid=_invalid_mapping,
    ),
}


@pytest.fixture(params=sorted(RESOURCES))
def resource(request: pytest.FixtureRequest) -> Resource:
    return RESOURCES[request.param]


def _no_secrets(response: Any, secrets: tuple[str, ...]) -> None:
    raw = response.content.decode()
    for secret in secrets:
        assert secret not in raw, f"secret leaked in {response.request['PATH_INFO']}"


def test_crud_lifecycle_is_audited_and_never_returns_credentials(
    admin_client: APIClient, resource: Resource
) -> None:
    resource.factory()
    body = resource.create()
    created = admin_client.post(resource.url, body, format="json")
    assert created.status_code == 201, created.content
    _no_secrets(created, resource.secrets)
    pk = created.json()["id"]

    listed = admin_client.get(f"{resource.url}?{resource.filter_query}")
    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [pk]
    _no_secrets(listed, resource.secrets)

    everything = admin_client.get(resource.url)
    assert everything.json()["count"] == 2

    detail = admin_client.get(f"{resource.url}{pk}/")
    assert detail.status_code == 200
    _no_secrets(detail, resource.secrets)

    updated = admin_client.patch(f"{resource.url}{pk}/", resource.update, format="json")
    assert updated.status_code == 200, updated.content
    for key, value in resource.update.items():
        assert updated.json()[key] == value
    _no_secrets(updated, resource.secrets)

    deleted = admin_client.delete(f"{resource.url}{pk}/")
    assert deleted.status_code == 204
    assert admin_client.get(f"{resource.url}{pk}/").status_code == 404

    actions = list(
        AuditEvent.objects.filter(target_id=str(pk)).order_by("sequence").values_list("action", flat=True)
    )
    assert [a.rsplit(".", 1)[1] for a in actions] == ["create", "update", "delete"]
    audit_rows = json.dumps(list(AuditEvent.objects.values()), default=str)
    for secret in resource.secrets:
        assert secret not in audit_rows


def test_validation_errors_name_the_field(admin_client: APIClient, resource: Resource) -> None:
    body, bad_field = resource.invalid()
    response = admin_client.post(resource.url, body, format="json")
    assert response.status_code == 400
    assert bad_field in response.json(), response.json()


def test_token_authentication_is_required(resource: Resource, admin_user: Any) -> None:
    anonymous = APIClient()
    assert anonymous.get(resource.url).status_code == 401
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Bearer fgt_not-a-real-token-at-all")
    assert forged.get(resource.url).status_code == 401


def test_expired_token_is_refused(admin_user: Any) -> None:
    from fleet.access.models import APIToken

    token, key = APIToken.issue(admin_user, days=1)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/clusters/").status_code == 200
    from datetime import timedelta

    from django.utils import timezone

    APIToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/clusters/").status_code == 401


def test_tokens_are_stored_hashed(admin_user: Any) -> None:
    from fleet.access.models import APIToken

    _, key = APIToken.issue(admin_user)
    stored = json.dumps(list(APIToken.objects.values()), default=str)
    assert key not in stored
    assert key[12:] not in stored


def test_cluster_credentials_are_encrypted_at_rest(admin_client: APIClient) -> None:
    from django.db import connection

    admin_client.post("/api/clusters/", _cluster_body(), format="json")
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM clusters_cluster WHERE name = %s", ["prod-eu-1"])
        (raw,) = cursor.fetchone()
    assert raw.startswith("fernet:")
    assert "s3cr3t-cluster-token-value" not in raw
    assert Cluster.objects.get(name="prod-eu-1").token == "s3cr3t-cluster-token-value"


def test_group_shows_resolved_members(admin_client: APIClient) -> None:
    eu = ClusterFactory(name="prod-eu", labels={"env": "prod", "region": "eu"})
    ClusterFactory(name="prod-us", labels={"env": "prod", "region": "us"})
    extra = ClusterFactory(name="special", labels={"env": "dev"})
    created = admin_client.post("/api/groups/", {**_group_body(), "include": [extra.pk]}, format="json")
    assert created.status_code == 201, created.content
    assert sorted(m["name"] for m in created.json()["members"]) == ["prod-eu", "special"]
    # A label change moves a cluster in or out of the group.
    admin_client.patch(f"/api/clusters/{eu.pk}/", {"labels": {"env": "dev"}}, format="json")
    group = admin_client.get(f"/api/groups/{created.json()['id']}/").json()
    assert sorted(m["name"] for m in group["members"]) == ["special"]
    # Exclusion wins over the selector.
    admin_client.patch(f"/api/groups/{group['id']}/", {"exclude": [extra.pk]}, format="json")
    assert admin_client.get(f"/api/groups/{group['id']}/").json()["members"] == []


def test_group_labels_are_validated_filtered_and_audited(admin_client: APIClient) -> None:
    created = admin_client.post("/api/groups/", {**_group_body(), "labels": {"tier": "gold"}}, format="json")
    assert created.status_code == 201, created.content
    gid = created.json()["id"]
    assert created.json()["labels"] == {"tier": "gold"}
    ClusterGroupFactory(name="silver", labels={"tier": "silver"})
    ClusterGroupFactory(name="bare")
    listed = admin_client.get("/api/groups/?label=tier=gold").json()["results"]
    assert [row["name"] for row in listed] == ["prod"]
    assert sorted(r["name"] for r in admin_client.get("/api/groups/?label=tier").json()["results"]) == [
        "prod", "silver"]
    assert admin_client.get("/api/groups/?label=tier in (").status_code == 400
    # validated as cluster labels are
    bad = admin_client.patch(f"/api/groups/{gid}/", {"labels": {"bad key!": "x"}}, format="json")
    assert bad.status_code == 400 and "labels" in bad.json()
    bad = admin_client.patch(f"/api/groups/{gid}/", {"labels": {"tier": ["gold"]}}, format="json")
    assert bad.status_code == 400 and "labels" in bad.json()
    # audited with before and after, as the group's other fields are
    changed = admin_client.patch(f"/api/groups/{gid}/", {"labels": {"tier": "platinum"}}, format="json")
    assert changed.status_code == 200, changed.content
    event = AuditEvent.objects.filter(action="clustergroup.update", target_id=str(gid)).latest("sequence")
    assert event.before["labels"] == {"tier": "gold"} and event.after["labels"] == {"tier": "platinum"}


def test_kubeconfig_registration_derives_server_and_refuses_exec(admin_client: APIClient) -> None:
    import base64

    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    ca_b64 = base64.b64encode(ca.encode()).decode()
    kubeconfig = f"""
apiVersion: v1
kind: Config
current-context: ctx-b
clusters:
- name: a
  cluster: {{server: "https://a.example.com", certificate-authority-data: "{ca_b64}"}}
users:
- name: u
  user: {{token: "kubeconfig-s3cr3t-token"}}
- name: e
  user: {{exec: {{command: "/bin/sh", args: ["-c", "id"]}}}}
contexts:
- name: ctx-b
  context: {{cluster: a, user: u}}
- name: ctx-exec
  context: {{cluster: a, user: e}}
"""
    body = {"name": "from-kubeconfig", "auth_method": "kubeconfig", "kubeconfig": kubeconfig}
    created = admin_client.post("/api/clusters/", body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["api_url"] == "https://a.example.com"
    assert created.json()["kubeconfig_context"] == "ctx-b"
    assert "kubeconfig-s3cr3t-token" not in created.content.decode()
    refused = admin_client.post(
        "/api/clusters/", {**body, "name": "exec", "kubeconfig_context": "ctx-exec"}, format="json"
    )
    assert refused.status_code == 400
    assert "kubeconfig" in refused.json()
    garbage = admin_client.post(
        "/api/clusters/", {**body, "name": "bad", "kubeconfig": "a: [b"}, format="json"
    )
    assert garbage.status_code == 400
    assert "line" in garbage.json()["kubeconfig"][0]


def test_commits_are_read_only_and_filterable(admin_client: APIClient) -> None:
    commit = CommitFactory(message="add web app", status="blocked")
    CommitFactory(repository=commit.repository, status="passed")
    response = admin_client.get("/api/commits/?status=blocked")
    assert [row["sha"] for row in response.json()["results"]] == [commit.sha]
    assert admin_client.post("/api/commits/", {"sha": "a" * 40}, format="json").status_code == 405


def test_deleting_a_group_in_use_is_a_conflict(admin_client: APIClient) -> None:
    mapping = PathMappingFactory()
    response = admin_client.delete(f"/api/groups/{mapping.cluster_group_id}/")
    assert response.status_code == 409
    assert mapping.name in response.json()["detail"] or "In use" in response.json()["detail"]


def test_oversized_request_is_refused(admin_client: APIClient, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = {**_cluster_body(), "description": "x" * 100, "labels": {f"k{i}": "v" * 60 for i in range(100)}}
    response = admin_client.post("/api/clusters/", body, format="json")
    assert response.status_code in (400, 413)
    assert not Cluster.objects.filter(name="prod-eu-1").exists()


@pytest.mark.parametrize("rows", [10, 200])
@pytest.mark.parametrize(
    ("url", "make"),
    [
        ("/api/clusters/", lambda n: [ClusterFactory() for _ in range(n)]),
        ("/api/groups/", lambda n: [ClusterGroupFactory() for _ in range(n)]),
        ("/api/repositories/", lambda n: [RepositoryFactory() for _ in range(n)]),
        ("/api/mappings/", lambda n: [PathMappingFactory() for _ in range(n)]),
        ("/api/commits/", lambda n: [CommitFactory() for _ in range(n)]),
    ],
)
def test_list_query_count_is_constant(
    url: str, make: Any, rows: int, make_user: Any, token_client: Any, django_assert_max_num_queries: Any
) -> None:
    make(rows)
    viewer = make_user("watcher", role="viewer")
    client = token_client(viewer)
    with django_assert_max_num_queries(8):
        response = client.get(f"{url}?limit=1000")
    assert response.status_code == 200
    assert response.json()["count"] >= rows
