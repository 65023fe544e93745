"""The sources API: fetch, test-connection, rotate-webhook-secret, commits with render status, rendered."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet.access.models import RoleBinding
from fleet.audit.models import AuditEvent
from fleet.sources.models import Repository
from fleet.sources.services import fetch_repository
from fleet.sources.webhooks import sign_github
from tests.factories import UserFactory
from tests.sources.origin import configmap

TOKEN = "ghp-super-secret-token-value-123"
REGIONAL = configmap("web", "region: ${cluster.labels.region}")


@pytest.fixture
def world(origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]) -> dict[str, Any]:
    origin.commit("initial", {"apps/web/cm.yaml": REGIONAL, "apps/api/cm.yaml": configmap("api")})
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    api = make_mapping(repo, "api", "apps/api", fleet["staging"])
    fetch_repository(repo)
    return {"repo": repo, "web": web, "api": api, "origin": origin, **fleet}


def user_with(role: str, scope: Any = None, name: str = "") -> Any:
    user = UserFactory(username=name or f"{role}-{scope.name if scope else 'all'}")
    RoleBinding.objects.create(user=user, role=role, scope=scope)
    return user


def test_fetch_queues_a_task_or_runs_inline(world: dict[str, Any], admin_client: Any,
                                            django_capture_on_commit_callbacks: Any) -> None:
    repo, origin = world["repo"], world["origin"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(f"/api/repositories/{repo.pk}/fetch/")
    assert response.status_code == 202 and response.json() == {"status": "queued", "repository": repo.name}
    assert len(callbacks) == 1

    new = origin.commit("web change", {"apps/web/cm.yaml": configmap("web", "region: x")})
    response = admin_client.post(f"/api/repositories/{repo.pk}/fetch/?wait=true")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ok"] and [c["sha"] for c in body["commits"]] == [new]
    assert [(r["mapping"], r["status"]) for r in body["renders"]] == [("web", "rendered")]
    assert AuditEvent.objects.filter(action="repository.fetch").count() == 2


@pytest.mark.parametrize(
    ("role", "scoped", "expected"),
    [("viewer", False, 403), ("deployer", False, 202), ("deployer", True, 403), ("cluster-admin", False, 202),
     ("approver", False, 403)],
)
def test_fetch_needs_the_fetch_permission(world: dict[str, Any], token_client: Any, role: str, scoped: bool,
                                          expected: int) -> None:
    user = user_with(role, world["prod"] if scoped else None)
    response = token_client(user).post(f"/api/repositories/{world['repo'].pk}/fetch/")
    assert response.status_code == expected


def test_test_connection_reports_branches_and_clear_errors(world: dict[str, Any], admin_client: Any,
                                                           tmp_path: Any) -> None:
    repo = world["repo"]
    response = admin_client.post(f"/api/repositories/{repo.pk}/test-connection/")
    assert response.status_code == 200
    assert response.json()["ok"] and response.json()["branches"] == ["main"]
    assert response.json()["head_sha"] == world["origin"].head()

    Repository.objects.filter(pk=repo.pk).update(branch="release")
    body = admin_client.post(f"/api/repositories/{repo.pk}/test-connection/").json()
    assert not body["ok"] and body["error"]["code"] == "branch_not_found"
    assert "main" in body["error"]["message"]

    gone = Repository.objects.create(name="gone", url=(tmp_path / "nope").as_uri(), auth_method="token",
                                     token=TOKEN)
    body = admin_client.post(f"/api/repositories/{gone.pk}/test-connection/").json()
    assert not body["ok"] and body["error"]["code"] == "unreachable"
    assert TOKEN not in json.dumps(body)
    assert AuditEvent.objects.filter(action="repository.test_connection").count() == 3


def test_rotate_webhook_secret_shows_it_once(world: dict[str, Any], token_client: Any) -> None:
    repo = world["repo"]
    old = repo.webhook_secret
    client = token_client(user_with("cluster-admin"))
    response = client.post(f"/api/repositories/{repo.pk}/rotate-webhook-secret/")
    assert response.status_code == 200
    secret = response.json()["webhook_secret"]
    assert secret != old and len(secret) >= 32
    repo.refresh_from_db()
    assert repo.webhook_secret == secret
    assert secret not in json.dumps(client.get(f"/api/repositories/{repo.pk}/").json())
    event = AuditEvent.objects.get(action="repository.rotate_webhook_secret")
    assert secret not in json.dumps([event.before, event.after, event.message])
    # the new secret verifies deliveries, the old one no longer does
    ping = b'{"zen": "x"}'
    for key, status in ((secret, 200), (old, 403)):
        r = client.post(f"/api/hooks/git/{repo.pk}/", data=ping, content_type="application/json",
                        HTTP_X_GITHUB_EVENT="ping", HTTP_X_HUB_SIGNATURE_256=sign_github(ping, key))
        assert r.status_code == status
    # a deployer may fetch but not rotate
    assert token_client(user_with("deployer")).post(
        f"/api/repositories/{repo.pk}/rotate-webhook-secret/").status_code == 403


def test_repository_secrets_never_appear(world: dict[str, Any], admin_client: Any) -> None:
    repo = world["repo"]
    repo.auth_method = "token"
    repo.token = TOKEN
    repo.save()
    for url in (f"/api/repositories/{repo.pk}/", "/api/repositories/", "/api/commits/",
                "/api/audit/events/?limit=500"):
        text = admin_client.get(url).content.decode()
        assert TOKEN not in text and repo.webhook_secret not in text, url
    detail = admin_client.get(f"/api/repositories/{repo.pk}/").json()
    assert detail["credentials_set"] == {"token": True, "ssh_private_key": False, "webhook_secret": True}
    outcome = admin_client.post(f"/api/repositories/{repo.pk}/fetch/?wait=true").content.decode()
    assert TOKEN not in outcome and repo.webhook_secret not in outcome


def test_commits_list_nests_per_mapping_status_with_constant_queries(
    world: dict[str, Any], admin_client: Any, django_assert_max_num_queries: Any
) -> None:
    repo, origin = world["repo"], world["origin"]
    for i in range(3):
        origin.commit(f"c{i}", {"apps/web/cm.yaml": configmap("web", f"region: r{i}"),
                                "apps/api/cm.yaml": configmap("api", f"value: v{i}")})
    fetch_repository(repo)
    with django_assert_max_num_queries(8):
        response = admin_client.get("/api/commits/")
    rows = response.json()["results"]
    assert len(rows) == 4
    assert [r["sequence"] for r in rows] == [4, 3, 2, 1]
    assert [(x["mapping_name"], x["status"]) for x in rows[0]["renders"]] == [("api", "rendered"),
                                                                              ("web", "rendered")]
    # the same number of queries with more commits
    for i in range(3):
        origin.commit(f"d{i}", {"apps/web/cm.yaml": configmap("web", f"region: s{i}")})
    fetch_repository(repo)
    with django_assert_max_num_queries(8):
        assert len(admin_client.get("/api/commits/").json()["results"]) == 7


def test_nested_renders_only_show_visible_mappings(world: dict[str, Any], token_client: Any) -> None:
    client = token_client(user_with("viewer", world["staging"]))
    rows = client.get("/api/commits/").json()["results"]
    assert [x["mapping_name"] for x in rows[0]["renders"]] == ["api"]


def test_rendered_returns_one_clusters_objects(world: dict[str, Any], admin_client: Any) -> None:
    repo, web = world["repo"], world["web"]
    commit = repo.commits.get()
    url = f"/api/commits/{commit.pk}/rendered/"
    for cluster, region in (("eu-1", "eu"), ("us-1", "us")):
        response = admin_client.get(url, {"mapping": web.pk, "cluster": cluster})
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["status"] == "ok" and body["cluster"] == cluster and body["object_count"] == 1
        (obj,) = body["objects"]
        assert obj["source"] == "apps/web/cm.yaml" and obj["object"]["data"] == {"region": region}
    assert admin_client.get(url, {"mapping": web.pk}).status_code == 400
    assert admin_client.get(url, {"cluster": "eu-1"}).status_code == 400
    assert admin_client.get(url, {"mapping": web.pk, "cluster": "st-1"}).status_code == 404  # not in group


def test_rendered_is_restricted_to_the_mappings_group(world: dict[str, Any], token_client: Any) -> None:
    commit = world["repo"].commits.get()
    url = f"/api/commits/{commit.pk}/rendered/"
    staging_viewer = token_client(user_with("viewer", world["staging"]))
    assert staging_viewer.get(url, {"mapping": world["web"].pk, "cluster": "eu-1"}).status_code == 404
    assert staging_viewer.get(url, {"mapping": world["api"].pk, "cluster": "st-1"}).status_code == 200
    prod_viewer = token_client(user_with("viewer", world["prod"]))
    assert prod_viewer.get(url, {"mapping": world["web"].pk, "cluster": "eu-1"}).status_code == 200


def test_rendered_shows_a_failed_mapping_with_its_error(world: dict[str, Any], admin_client: Any) -> None:
    repo, origin, web = world["repo"], world["origin"], world["web"]
    bad = origin.commit("break", {"apps/web/bad.yaml": "kind: ConfigMap\nmetadata:\n  name: x\n"})
    fetch_repository(repo)
    commit = repo.commits.get(sha=bad)
    url = f"/api/commits/{commit.pk}/rendered/"
    body = admin_client.get(url, {"mapping": web.pk, "cluster": "eu-1"}).json()
    assert body["status"] == "failed" and body["objects"] == []
    assert body["error"]["file"] == "apps/web/bad.yaml" and "apiVersion" in body["error"]["message"]
    # the api mapping was not affected by that commit
    response = admin_client.get(f"/api/commits/{commit.pk}/rendered/", {"mapping": world["api"].pk,
                                                                        "cluster": "st-1"})
    assert response.status_code == 404 and "not rendered at this commit" in response.json()["detail"]


def test_mapping_directory_options_through_the_api_change_the_render(world: dict[str, Any],
                                                                     admin_client: Any) -> None:
    repo, origin, web = world["repo"], world["origin"], world["web"]
    origin.commit("nested", {"apps/web/sub/extra.yaml": configmap("extra"),
                             "apps/web/skip.yaml": configmap("skip")})
    fetch_repository(repo)
    url = f"/api/mappings/{web.pk}/"
    assert admin_client.get(url).json()["directory_recurse"] is True  # Fleet's and Flux's default
    bad = admin_client.patch(url, {"directory_include": "{a.yaml,b/[.yaml}"}, format="json")
    assert bad.status_code == 400 and "directory_include" in bad.json()
    body = admin_client.patch(url, {"directory_recurse": False, "directory_exclude": "{skip,other}.yaml"},
                              format="json")
    assert body.status_code == 200, body.json()
    saved = body.json()
    assert (saved["directory_recurse"], saved["directory_exclude"]) == (False, "{skip,other}.yaml")
    assert AuditEvent.objects.filter(action="pathmapping.update", target_id=str(web.pk)).exists()
    fetch_repository(repo)  # the changed configuration re-renders the mapping at the head
    head = repo.commits.get(sha=origin.git("rev-parse", "HEAD"))
    rendered = admin_client.get(f"/api/commits/{head.pk}/rendered/", {"mapping": web.pk, "cluster": "eu-1"})
    assert [o["name"] for o in rendered.json()["objects"]] == ["web"]
    listed = admin_client.get("/api/mappings/", {"directory_recurse": "false"}).json()
    assert [m["name"] for m in listed["results"]] == ["web"]
