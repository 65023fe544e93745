"""POST /api/hooks/git/<id>/: verified by the repository's secret for GitHub, GitLab and Gitea."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from fleet.audit.models import AuditEvent
from fleet.celery import app as celery_app
from fleet.sources.models import Commit
from fleet.sources.webhooks import sign_gitea, sign_github
from tests.audit.audit_support import task_callbacks
from tests.sources.origin import configmap

SECRET = "hook-secret-0123456789abcdefXYZ"


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Run queued tasks in this process (the task code itself, as a worker would run it)."""
    old = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


def push_payload(provider: str, url: str, before: str, after: str, branch: str = "main") -> bytes:
    if provider == "gitlab":
        payload: dict[str, Any] = {"object_kind": "push", "ref": f"refs/heads/{branch}", "before": before,
                                   "after": after, "user_username": "ada",
                                   "project": {"git_http_url": url}, "total_commits_count": 1}
    else:
        payload = {"ref": f"refs/heads/{branch}", "before": before, "after": after,
                   "repository": {"clone_url": url}, "pusher": {"name": "ada"}, "commits": [{}]}
    return json.dumps(payload).encode()


def signed_headers(provider: str, body: bytes, secret: str = SECRET) -> dict[str, str]:
    if provider == "github":
        return {"HTTP_X_GITHUB_EVENT": "push", "HTTP_X_HUB_SIGNATURE_256": sign_github(body, secret)}
    if provider == "gitea":
        return {"HTTP_X_GITEA_EVENT": "push", "HTTP_X_GITEA_SIGNATURE": sign_gitea(body, secret)}
    return {"HTTP_X_GITLAB_EVENT": "Push Hook", "HTTP_X_GITLAB_TOKEN": secret}


def post(body: bytes, repo_id: int, **headers: str) -> Any:
    return APIClient().post(f"/api/hooks/git/{repo_id}/", data=body, content_type="application/json",
                            **headers)


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
def test_a_valid_push_queues_a_fetch_that_records_the_commits(
    provider: str, origin: Any, make_repository: Any, django_capture_on_commit_callbacks: Any,
    eager_tasks: None,
) -> None:
    first = origin.commit("initial", {"apps/web/cm.yaml": configmap("web")})
    repo = make_repository(origin, webhook_secret=SECRET)
    from fleet.sources.services import fetch_repository

    fetch_repository(repo)
    new = [origin.commit("one", {"a.txt": "1"}), origin.commit("two", {"b.txt": "2"})]
    body = push_payload(provider, origin.url, first, new[-1])

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(body, repo.pk, **signed_headers(provider, body))
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued" and response.json()["provider"] == provider
    callbacks = task_callbacks(callbacks)
    assert len(callbacks) == 1
    assert not Commit.objects.filter(sha__in=new).exists()  # nothing happens before the commit
    callbacks[0]()  # the enqueue, run eagerly: the real task calls the fetch service
    recorded = Commit.objects.filter(repository=repo).order_by("sequence").values_list("sha", flat=True)
    assert list(recorded) == [first, *new]
    event = AuditEvent.objects.get(action="webhook.received")
    assert event.change_context == "webhook" and event.after["provider"] == provider


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
def test_a_forged_delivery_is_refused_and_audited_without_the_secret(
    provider: str, origin: Any, make_repository: Any, django_capture_on_commit_callbacks: Any
) -> None:
    origin.commit("initial")
    repo = make_repository(origin, webhook_secret=SECRET)
    body = push_payload(provider, origin.url, "1" * 40, "2" * 40)
    headers = signed_headers(provider, body, secret="not-the-secret-at-all-000000")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(body, repo.pk, **headers)
    assert response.status_code == 403
    assert task_callbacks(callbacks) == []
    event = AuditEvent.objects.get(action="webhook.rejected")
    assert event.after["provider"] == provider and event.after["reason"] == "forged"
    dumped = json.dumps({"after": event.after, "message": event.message, "before": event.before})
    assert SECRET not in dumped and "not-the-secret" not in dumped
    signature = next(v for k, v in headers.items() if "SIGNATURE" in k or "TOKEN" in k)
    assert signature not in dumped and SECRET not in response.content.decode()


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
def test_an_unsigned_delivery_is_refused(provider: str, origin: Any, make_repository: Any) -> None:
    origin.commit("initial")
    repo = make_repository(origin, webhook_secret=SECRET)
    body = push_payload(provider, origin.url, "1" * 40, "2" * 40)
    event_header = {"github": "HTTP_X_GITHUB_EVENT", "gitlab": "HTTP_X_GITLAB_EVENT",
                    "gitea": "HTTP_X_GITEA_EVENT"}[provider]
    response = post(body, repo.pk, **{event_header: "push"})
    assert response.status_code == 401
    assert AuditEvent.objects.get(action="webhook.rejected").after["reason"] == "unsigned"


def test_an_oversized_body_is_refused_with_413(origin: Any, make_repository: Any, settings: Any) -> None:
    settings.FLEETGATE_WEBHOOK_MAX_BYTES = 1000
    origin.commit("initial")
    repo = make_repository(origin, webhook_secret=SECRET)
    body = json.dumps({"ref": "refs/heads/main", "padding": "x" * 2000}).encode()
    response = post(body, repo.pk, **signed_headers("github", body))
    assert response.status_code == 413
    assert AuditEvent.objects.get(action="webhook.rejected").after["reason"] == "too_large"


def test_an_unknown_repository_is_404(db: Any) -> None:
    body = b"{}"
    assert post(body, 999999, **signed_headers("github", body)).status_code == 404


def test_ping_other_branches_tags_and_other_events(origin: Any, make_repository: Any,
                                                   django_capture_on_commit_callbacks: Any) -> None:
    origin.commit("initial")
    repo = make_repository(origin, webhook_secret=SECRET)
    ping = json.dumps({"zen": "Keep it simple.", "hook_id": 1}).encode()
    response = post(ping, repo.pk, HTTP_X_GITHUB_EVENT="ping",
                    HTTP_X_HUB_SIGNATURE_256=sign_github(ping, SECRET))
    assert response.status_code == 200 and response.json()["status"] == "ping"

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        other = push_payload("github", origin.url, "1" * 40, "2" * 40, branch="feature")
        response = post(other, repo.pk, **signed_headers("github", other))
        assert response.status_code == 202 and response.json()["status"] == "ignored"
        assert "feature" in response.json()["detail"]
        issue = json.dumps({"action": "opened"}).encode()
        response = post(issue, repo.pk, HTTP_X_GITHUB_EVENT="issues",
                        HTTP_X_HUB_SIGNATURE_256=sign_github(issue, SECRET))
        assert response.status_code == 202 and response.json()["status"] == "ignored"
    assert task_callbacks(callbacks) == []


def test_a_malformed_body_with_a_valid_signature_is_400(origin: Any, make_repository: Any) -> None:
    origin.commit("initial")
    repo = make_repository(origin, webhook_secret=SECRET)
    body = b"not json"
    response = post(body, repo.pk, **signed_headers("github", body))
    assert response.status_code == 400


def test_the_endpoint_ignores_session_and_token_authentication(
    origin: Any, make_repository: Any, admin_client: APIClient
) -> None:
    """A logged-in user or token does not replace the signature."""
    origin.commit("initial")
    repo = make_repository(origin, webhook_secret=SECRET)
    body = push_payload("github", origin.url, "1" * 40, "2" * 40)
    response = admin_client.post(f"/api/hooks/git/{repo.pk}/", data=body, content_type="application/json",
                                 HTTP_X_GITHUB_EVENT="push")
    assert response.status_code == 401
