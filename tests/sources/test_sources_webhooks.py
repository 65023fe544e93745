"""Webhook signatures and push payloads of GitHub, GitLab and Gitea."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from fleet.sources.webhooks import (
    MAX_WEBHOOK_BODY_BYTES,
    WebhookStatus,
    detect_provider,
    handle_webhook,
    normalize_repo_url,
    verify_gitea,
    verify_github,
    verify_gitlab,
)

SECRET = "s3cret-webhook-value-0123456789"
BEFORE = "1" * 40
AFTER = "a" * 40


def github_push(**over: Any) -> bytes:
    payload = {
        "ref": "refs/heads/main", "before": BEFORE, "after": AFTER, "created": False, "deleted": False,
        "forced": True,
        "repository": {"clone_url": "https://github.com/Org/App.git", "ssh_url": "git@github.com:Org/App.git",
                       "html_url": "https://github.com/Org/App"},
        "pusher": {"name": "ada"}, "commits": [{"id": AFTER}],
    }
    payload.update(over)
    return json.dumps(payload).encode()


def gitlab_push(**over: Any) -> bytes:
    payload = {
        "object_kind": "push", "ref": "refs/heads/release/1.2", "before": BEFORE, "after": AFTER,
        "checkout_sha": AFTER, "user_username": "bob", "total_commits_count": 2,
        "project": {"git_http_url": "https://gitlab.example.com/grp/app.git",
                    "git_ssh_url": "git@gitlab.example.com:grp/app.git",
                    "web_url": "https://gitlab.example.com/grp/app"},
    }
    payload.update(over)
    return json.dumps(payload).encode()


def gitea_push() -> bytes:
    return json.dumps({
        "ref": "refs/tags/v1.0", "before": "0" * 40, "after": AFTER,
        "repository": {"clone_url": "https://gitea.example.com/org/app.git",
                       "ssh_url": "ssh://git@gitea.example.com:2222/org/app.git",
                       "html_url": "https://gitea.example.com/org/app"},
        "pusher": {"login": "cat"}, "commits": [],
    }).encode()


def sig(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---- GitHub


def test_github_valid_push_is_verified_and_parsed() -> None:
    body = github_push()
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sig(body),
               "X-GitHub-Delivery": "d-1"}
    result = handle_webhook(headers, body, SECRET)
    assert result.status is WebhookStatus.OK and result.ok
    ev = result.event
    assert ev is not None
    assert ev.provider == "github" and ev.branch == "main" and ev.tag is None
    assert (ev.before, ev.after) == (BEFORE, AFTER)
    assert ev.forced is True and ev.commit_count == 1 and ev.pusher == "ada"
    assert "https://github.com/Org/App.git" in ev.clone_urls
    assert result.delivery_id == "d-1"


def test_github_forged_unsigned_and_malformed_signatures() -> None:
    body = github_push()
    forged = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sig(body, "other-secret")}
    assert handle_webhook(forged, body, SECRET).status is WebhookStatus.FORGED
    tampered = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sig(body)}
    assert handle_webhook(tampered, body + b" ", SECRET).status is WebhookStatus.FORGED
    assert handle_webhook({"X-GitHub-Event": "push"}, body, SECRET).status is WebhookStatus.UNSIGNED
    sha1 = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha1=" + "0" * 40}
    assert handle_webhook(sha1, body, SECRET).status is WebhookStatus.MALFORMED
    # no secret configured: never trusted
    result = handle_webhook(tampered, body, None)
    assert result.status is WebhookStatus.UNSIGNED and "no webhook secret" in result.detail
    assert SECRET not in handle_webhook(forged, body, SECRET).detail


def test_github_ping_and_other_events() -> None:
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 7}).encode()
    headers = {"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=" + sig(body)}
    result = handle_webhook(headers, body, SECRET)
    assert result.status is WebhookStatus.PING and result.extra["hook_id"] == 7
    headers = {"X-GitHub-Event": "issues", "X-Hub-Signature-256": "sha256=" + sig(body)}
    assert handle_webhook(headers, body, SECRET).status is WebhookStatus.IGNORED


def test_github_branch_deletion_and_malformed_payloads() -> None:
    body = github_push(after="0" * 40, deleted=True)
    result = handle_webhook({"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sig(body)},
                            body, SECRET)
    assert result.event is not None and result.event.deleted and result.event.after is None
    bad = b"{not json"
    result = handle_webhook({"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sig(bad)},
                            bad, SECRET)
    assert result.status is WebhookStatus.MALFORMED
    no_ref = json.dumps({"repository": {"clone_url": "x"}}).encode()
    result = handle_webhook({"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sig(no_ref)},
                            no_ref, SECRET)
    assert result.status is WebhookStatus.MALFORMED and "ref" in result.detail


def test_body_size_limit_and_unknown_provider() -> None:
    big = b" " * (MAX_WEBHOOK_BODY_BYTES + 1)
    assert handle_webhook({"X-GitHub-Event": "push"}, big, SECRET).status is WebhookStatus.TOO_LARGE
    assert handle_webhook({}, b"{}", SECRET).status is WebhookStatus.UNKNOWN_PROVIDER


# ---- GitLab


def test_gitlab_token_valid_forged_unsigned() -> None:
    body = gitlab_push()
    ok = handle_webhook({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}, body, SECRET)
    assert ok.status is WebhookStatus.OK
    assert ok.event is not None and ok.event.branch == "release/1.2" and ok.event.pusher == "bob"
    assert ok.event.commit_count == 2 and ok.event.forced is None
    assert "git@gitlab.example.com:grp/app.git" in ok.event.clone_urls
    forged = handle_webhook({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET + "x"}, body, SECRET)
    assert forged.status is WebhookStatus.FORGED
    unsigned = handle_webhook({"X-Gitlab-Event": "Push Hook"}, body, SECRET)
    assert unsigned.status is WebhookStatus.UNSIGNED
    mr = handle_webhook({"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": SECRET}, b"{}", SECRET)
    assert mr.status is WebhookStatus.IGNORED


def test_gitlab_tag_push() -> None:
    body = gitlab_push(object_kind="tag_push", ref="refs/tags/v2", before="0" * 40)
    result = handle_webhook({"X-Gitlab-Event": "Tag Push Hook", "X-Gitlab-Token": SECRET}, body, SECRET)
    assert result.event is not None and result.event.tag == "v2" and result.event.created


# ---- Gitea


def test_gitea_signature_valid_forged_unsigned() -> None:
    body = gitea_push()
    headers = {"X-Gitea-Event": "push", "X-GitHub-Event": "push", "X-Gitea-Signature": sig(body)}
    assert detect_provider(headers) == "gitea"
    result = handle_webhook(headers, body, SECRET)
    assert result.status is WebhookStatus.OK
    assert result.event is not None and result.event.provider == "gitea"
    assert result.event.tag == "v1.0" and result.event.branch is None and result.event.created
    assert result.event.pusher == "cat"
    forged = dict(headers, **{"X-Gitea-Signature": sig(body, "nope")})
    assert handle_webhook(forged, body, SECRET).status is WebhookStatus.FORGED
    unsigned = {"X-Gitea-Event": "push"}
    assert handle_webhook(unsigned, body, SECRET).status is WebhookStatus.UNSIGNED
    assert handle_webhook({"X-Gitea-Event": "push", "X-Gitea-Signature": "zz"}, body,
                          SECRET).status is WebhookStatus.MALFORMED


def test_pure_verifiers_accept_django_meta_style_headers() -> None:
    body = b'{"a": 1}'
    meta = {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + sig(body)}
    assert verify_github(meta, body, SECRET) is WebhookStatus.OK
    assert verify_gitea({"HTTP_X_GITEA_SIGNATURE": sig(body)}, body, SECRET) is WebhookStatus.OK
    assert verify_gitlab({"x-gitlab-token": SECRET}, body, SECRET) is WebhookStatus.OK


@pytest.mark.parametrize(("a", "b"), [
    ("git@github.com:Org/App.git", "https://github.com/Org/App"),
    ("https://GitHub.com/Org/App.git/", "ssh://git@github.com/Org/App.git"),
    ("ssh://git@gitea.example.com:2222/org/app.git", "https://gitea.example.com/org/app.git"),
])
def test_repository_urls_compare_across_protocols(a: str, b: str) -> None:
    assert normalize_repo_url(a) == normalize_repo_url(b)


def test_different_repositories_do_not_compare_equal() -> None:
    assert normalize_repo_url("https://github.com/org/app") != normalize_repo_url("https://github.com/org/app2")
