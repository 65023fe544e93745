"""Abuse of the unauthenticated Git webhook endpoint: malformed payloads, oversized and chunked bodies,
replays, floods, and audit-log growth from forged deliveries.

Attack class: the webhook endpoint answers anyone on the network, before any user is known, so it is where a
denial of service or a forced action starts. Peer GitOps tools shipped this class repeatedly: Argo CD's
/api/webhook was OOM-killed by one large JSON push payload (CVE-2024-40634, GHSA-jmvp-698c-4x3w) and crashed
on a malformed Bitbucket Server push whose clone links were not an array (GHSA-f9gq-prrc-hrhc) and on a
malformed Azure DevOps push (CVE-2025-59538, GHSA-gpx4-37g2-c8pv); Argo Workflows' webhook interceptor read
the whole body before verifying its signature (GHSA-jcc8-g2q4-9fxq). Flux's notification-controller and
Rancher Fleet's webhook receivers verify HMACs that cover only the body, so a captured delivery can be sent
again; neither documents a replay window. Fleetgate's rules, all shown here over real parts (real HMAC
signatures computed in the test, real git repositories with a fetch that follows, real HTTP with chunks
against the live server and against gunicorn, the production server):

* correctly signed chunked deliveries are accepted; a body over the limit is 413 before its signature is
  computed;
* a malformed payload (not JSON, wrong types, missing ref/after, a huge ref, a JSON nesting bomb) is a 400
  with a message and changes nothing;
* a verified delivery whose id or exact body was received within the replay window is 409, and so is a
  GitHub push whose signed ``repository.pushed_at`` is older than the window;
* more deliveries than the rate per repository or per source address get 429 with Retry-After, before the
  body is read; X-Forwarded-For does not choose the address;
* rejections are audited once per repository, reason and window, with a count of the others, so a forged
  flood cannot grow the audit log.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from fleet.audit.models import AuditEvent
from fleet.celery import app as celery_app
from fleet.sources.models import Commit, Repository
from fleet.sources.services import fetch_repository
from fleet.sources.webhooks import sign_gitea, sign_github
from tests.sources.origin import Origin, configmap
from tests.workers import child_env

SECRET = "abuse-hook-secret-0123456789abcdef"
HEADER_OF = {"github": "X-GitHub-Delivery", "gitea": "X-Gitea-Delivery", "gitlab": "X-Gitlab-Event-UUID"}


# ---- fixtures: a real origin repository, an isolated cache, tasks run where they are queued


@pytest.fixture(autouse=True)
def isolated_cache(settings: Any, tmp_path: Path) -> Iterator[None]:
    """The same kind of cache as the default settings (files), but this test's own: throttle histories,
    delivery ids and rejection counters of other tests and other test runs never leak in."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                                   "LOCATION": str(tmp_path / "cache")}}
    settings.FLEETGATE_GIT_CACHE = tmp_path / "git-cache"
    yield
    cache.clear()


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Run a queued task where it is queued (the real task code, as a worker would run it)."""
    old = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    origin = Origin(tmp_path / "origin")
    origin.commit("initial", {"apps/web/cm.yaml": configmap("web")})
    return origin


@pytest.fixture
def repo(origin: Origin, db: Any) -> Repository:
    repository = Repository.objects.create(name="apps", url=origin.url, branch="main", webhook_secret=SECRET)
    fetch_repository(repository)
    repository.refresh_from_db()
    return repository


def push_body(provider: str, origin: Origin, after: str, *, ref: str = "refs/heads/main",
              **extra: Any) -> bytes:
    before = origin.git("rev-list", "--max-parents=0", "HEAD")
    if provider == "gitlab":
        payload: dict[str, Any] = {"object_kind": "push", "ref": ref, "before": before, "after": after,
                                   "user_username": "ada", "total_commits_count": 1,
                                   "project": {"git_http_url": origin.url}}
    else:
        payload = {"ref": ref, "before": before, "after": after, "repository": {"clone_url": origin.url},
                   "pusher": {"name": "ada"}, "commits": [{"id": after}]}
    payload.update(extra)
    return json.dumps(payload).encode()


def signed(provider: str, body: bytes, delivery: str = "", secret: str = SECRET) -> dict[str, str]:
    """Real provider headers with a real signature (HMAC-SHA256 of the body; GitLab: the token)."""
    if provider == "github":
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign_github(body, secret)}
    elif provider == "gitea":
        headers = {"X-Gitea-Event": "push", "X-Gitea-Signature": sign_gitea(body, secret)}
    else:
        headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret}
    if delivery:
        headers[HEADER_OF[provider]] = delivery
    return headers


def as_meta(headers: dict[str, str]) -> dict[str, str]:
    return {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


def post(repo_id: int, body: bytes, headers: dict[str, str], address: str = "127.0.0.1") -> Any:
    return APIClient().post(f"/api/hooks/git/{repo_id}/", data=body, content_type="application/json",
                            REMOTE_ADDR=address, **as_meta(headers))


def rejected(reason: str) -> list[AuditEvent]:
    return [e for e in AuditEvent.objects.filter(action="webhook.rejected").order_by("id")
            if e.after["reason"] == reason]


# ---- chunked deliveries over real HTTP


def chunks(body: bytes, size: int = 61) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


def post_chunked(base_url: str, path: str, body: bytes,
                 headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        try:  # an iterable body and no Content-Length: http.client sends Transfer-Encoding: chunked
            conn.request("POST", path, body=chunks(body), headers={"Content-Type": "application/json",
                                                                    **headers})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before the last chunk (a 413): read that answer
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
def test_a_correctly_signed_chunked_push_is_accepted_and_fetched(
    provider: str, live_server: Any, transactional_db: Any, origin: Origin, eager_tasks: None
) -> None:
    repository = Repository.objects.create(name="apps", url=origin.url, webhook_secret=SECRET)
    fetch_repository(repository)
    new = origin.commit("two", {"apps/web/cm.yaml": configmap("web", "value: two")})
    body = push_body(provider, origin, new)
    status, answer = post_chunked(live_server.url, f"/api/hooks/git/{repository.pk}/", body,
                                  signed(provider, body, delivery=f"chunked-{provider}"))
    assert (status, answer["status"]) == (202, "queued"), answer
    assert Commit.objects.filter(repository=repository, sha=new).exists()  # the fetch followed


def test_an_oversized_chunked_delivery_is_413_before_its_signature_is_checked(
    live_server: Any, transactional_db: Any, origin: Origin, settings: Any
) -> None:
    settings.FLEETGATE_WEBHOOK_MAX_BYTES = 4096
    repository = Repository.objects.create(name="apps", url=origin.url, webhook_secret=SECRET)
    body = push_body("github", origin, "a" * 40, padding="x" * 20_000)
    forged = signed("github", body, secret="not-the-secret-0000000000000000")
    status, answer = post_chunked(live_server.url, f"/api/hooks/git/{repository.pk}/", body, forged)
    assert status == 413 and "4096" in answer["detail"]  # not 403: the signature was never computed
    assert [e.after["reason"] for e in AuditEvent.objects.filter(action="webhook.rejected")] == ["too_large"]


def test_an_announced_oversized_delivery_is_413_even_with_a_forged_signature(
    repo: Repository, origin: Origin, settings: Any
) -> None:
    settings.FLEETGATE_WEBHOOK_MAX_BYTES = 4096
    body = push_body("github", origin, "a" * 40, padding="x" * 20_000)
    response = post(repo.pk, body, signed("github", body, secret="not-the-secret-0000000000000000"))
    assert response.status_code == 413 and "4096" in response.json()["detail"]


# ---- malformed payloads, correctly signed


def nesting_bomb(depth: int = 100_000) -> bytes:
    return b'{"ref": "refs/heads/main", "x": ' + b"[" * depth + b"]" * depth + b"}"


MALFORMED: dict[str, Callable[[str], bytes]] = {
    "not JSON": lambda after: b"ref=refs/heads/main&after=" + after.encode(),
    "not UTF-8": lambda after: b'{"ref": "refs/heads/\xff\xfe"}',
    "a JSON array": lambda after: json.dumps([{"ref": "refs/heads/main", "after": after}]).encode(),
    "ref is a number": lambda after: json.dumps({"ref": 7, "after": after, "before": after}).encode(),
    "no ref": lambda after: json.dumps({"after": after, "before": after,
                                        "repository": {"clone_url": "x"}}).encode(),
    "no after": lambda after: json.dumps({"ref": "refs/heads/main", "before": after,
                                          "repository": {"clone_url": "x"}}).encode(),
    "after is not a commit id": lambda after: json.dumps({"ref": "refs/heads/main", "before": after,
                                                          "after": ["x"], "repository": {"clone_url": "x"}}
                                                         ).encode(),
    "repository is a string": lambda after: json.dumps({"ref": "refs/heads/main", "before": after,
                                                        "after": after, "repository": "x"}).encode(),
    "a 1 MB ref": lambda after: json.dumps({"ref": "refs/heads/" + "m" * 1_000_000, "before": after,
                                            "after": after, "repository": {"clone_url": "x"}}).encode(),
    "a ref with a newline": lambda after: json.dumps({"ref": "refs/heads/main\nx", "before": after,
                                                      "after": after, "repository": {"clone_url": "x"}}
                                                     ).encode(),
    "a JSON nesting bomb": lambda after: nesting_bomb(),
    "a 10,000-digit number": lambda after: b'{"ref": "refs/heads/main", "after": ' + b"9" * 10_000 + b"}",
}


@pytest.mark.parametrize("provider", ["github", "gitea"])
@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_signed_payload_is_a_400_with_a_message_and_changes_nothing(
    provider: str, case: str, repo: Repository, origin: Origin, django_capture_on_commit_callbacks: Any
) -> None:
    new = origin.commit("two", {"b.txt": "2"})
    body = MALFORMED[case](new)
    head, commits = repo.head_sha, Commit.objects.count()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(repo.pk, body, signed(provider, body, delivery=f"bad-{provider}"))
    assert response.status_code == 400, response.content[:300]
    answer = response.json()
    assert answer["status"] == "rejected" and answer["detail"] and len(response.content) < 600
    assert callbacks == []  # no fetch queued
    repo.refresh_from_db()
    assert (repo.head_sha, Commit.objects.count()) == (head, commits)
    assert not AuditEvent.objects.filter(action="webhook.received").exists()
    assert [e.after["reason"] for e in AuditEvent.objects.filter(action="webhook.rejected")] == ["malformed"]


def test_a_malformed_gitlab_push_is_a_400(repo: Repository, origin: Origin) -> None:
    body = json.dumps({"object_kind": "push", "ref": "refs/heads/main", "before": "1" * 40,
                       "project": {"git_http_url": origin.url}}).encode()  # no "after"
    response = post(repo.pk, body, signed("gitlab", body))
    assert response.status_code == 400 and "'after'" in response.json()["detail"]


# ---- replays


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
def test_a_delivery_id_received_twice_is_refused_with_409(
    provider: str, repo: Repository, origin: Origin, django_capture_on_commit_callbacks: Any,
    eager_tasks: None,
) -> None:
    new = origin.commit("two", {"b.txt": "2"})
    body = push_body(provider, origin, new)
    with django_capture_on_commit_callbacks(execute=True) as first_callbacks:
        first = post(repo.pk, body, signed(provider, body, delivery="d-0001"))
    assert (first.status_code, first.json()["status"]) == (202, "queued")
    assert len(first_callbacks) == 1 and Commit.objects.filter(sha=new).exists()  # the fetch followed

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        again = post(repo.pk, body, signed(provider, body, delivery="d-0001"))
        # The same id with another body (another push) is refused too: ids are not reused by providers.
        other = push_body(provider, origin, new, ref="refs/heads/main", pusher={"name": "eve"},
                          user_username="eve")
        reused = post(repo.pk, other, signed(provider, other, delivery="d-0001"))
    assert (again.status_code, again.json()["status"]) == (409, "rejected")
    assert "d-0001" in again.json()["detail"] and "already received" in again.json()["detail"]
    assert reused.status_code == 409
    assert callbacks == []  # no second fetch
    assert [e.after["delivery"] for e in rejected("replayed")] == ["d-0001"]  # once per window


def test_the_same_signed_body_under_a_new_delivery_id_is_refused(repo: Repository, origin: Origin) -> None:
    """The HMAC covers the body, not the headers: a captured delivery replayed with a fresh id."""
    new = origin.commit("two", {"b.txt": "2"})
    body = push_body("github", origin, new)
    assert post(repo.pk, body, signed("github", body, delivery="id-1")).status_code == 202
    replay = post(repo.pk, body, signed("github", body, delivery="id-2-chosen-by-the-attacker"))
    assert replay.status_code == 409 and "exact body" in replay.json()["detail"]
    without_id = post(repo.pk, body, signed("github", body))
    assert without_id.status_code == 409


def test_a_forged_delivery_does_not_use_up_its_delivery_id(repo: Repository, origin: Origin) -> None:
    new = origin.commit("two", {"b.txt": "2"})
    body = push_body("github", origin, new)
    forged = post(repo.pk, body, signed("github", body, delivery="g-1", secret="wrong-secret-00000000000"))
    assert forged.status_code == 403
    assert post(repo.pk, body, signed("github", body, delivery="g-1")).status_code == 202


def test_a_github_push_older_than_the_replay_window_is_refused(repo: Repository, origin: Origin,
                                                               settings: Any) -> None:
    settings.FLEETGATE_WEBHOOK_REPLAY_WINDOW = 600
    new = origin.commit("two", {"b.txt": "2"})
    old = push_body("github", origin, new, repository={"clone_url": origin.url,
                                                       "pushed_at": int(time.time()) - 3600})
    response = post(repo.pk, old, signed("github", old, delivery="old-1"))
    assert response.status_code == 409
    assert "600 seconds" in response.json()["detail"]
    assert rejected("stale")
    fresh = push_body("github", origin, new, repository={"clone_url": origin.url,
                                                         "pushed_at": int(time.time())})
    assert post(repo.pk, fresh, signed("github", fresh, delivery="new-1")).status_code == 202


# ---- floods


def test_deliveries_over_the_rate_per_repository_get_429_with_retry_after(
    repo: Repository, origin: Origin, settings: Any
) -> None:
    settings.FLEETGATE_WEBHOOK_RATE_PER_REPOSITORY = "3/min"
    other = Repository.objects.create(name="other", url=origin.url, webhook_secret=SECRET)
    ping = json.dumps({"zen": "Keep it simple.", "hook_id": 1}).encode()
    answers = [post(repo.pk, ping + b" " * i, {"X-GitHub-Event": "ping",
                                               "X-Hub-Signature-256": sign_github(ping + b" " * i, SECRET)})
               for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    audit_rows = AuditEvent.objects.count()
    forged = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    throttled = post(repo.pk, b"x" * 1000, forged)
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) >= 1
    assert "throttled" in throttled.json()["detail"]
    assert AuditEvent.objects.count() == audit_rows  # refused before the body was read or audited
    # Another repository is served from the same address.
    assert post(other.pk, ping, {"X-GitHub-Event": "ping",
                                 "X-Hub-Signature-256": sign_github(ping, SECRET)}).status_code == 200


def test_deliveries_over_the_rate_per_address_get_429_whatever_the_forwarded_header(
    repo: Repository, origin: Origin, settings: Any
) -> None:
    settings.FLEETGATE_WEBHOOK_RATE_PER_ADDRESS = "3/min"
    other = Repository.objects.create(name="other", url=origin.url, webhook_secret=SECRET)
    body = b"{}"
    forged = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert [post(repo.pk, body, forged, address="198.51.100.7").status_code for _ in range(3)] == [403] * 3
    to_other = post(other.pk, body, forged, address="198.51.100.7")
    assert to_other.status_code == 429 and int(to_other["Retry-After"]) >= 1
    spoofed = APIClient().post(f"/api/hooks/git/{repo.pk}/", data=body, content_type="application/json",
                               REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="203.0.113.99",
                               **as_meta(forged))
    assert spoofed.status_code == 429
    assert post(repo.pk, body, forged, address="198.51.100.8").status_code == 403  # another address


def test_a_forged_flood_is_audited_once_per_window_with_a_count(
    repo: Repository, origin: Origin, settings: Any
) -> None:
    new = origin.commit("two", {"b.txt": "2"})
    body = push_body("github", origin, new)
    forged = signed("github", body, secret="attacker-guess-000000000000000")
    assert {post(repo.pk, body, forged).status_code for _ in range(25)} == {403}
    assert len(rejected("forged")) == 1
    assert rejected("forged")[0].after["suppressed"] == 0
    assert post(repo.pk, body, {"X-GitHub-Event": "push"}).status_code == 401  # another reason: its own row
    assert len(rejected("unsigned")) == 1

    settings.FLEETGATE_WEBHOOK_REJECTION_AUDIT_WINDOW = 1
    time.sleep(1.5)  # the audit window (now 1 s) is over: the next rejection is written with the count
    assert post(repo.pk, body, forged).status_code == 403
    rows = rejected("forged")
    assert len(rows) == 2
    assert rows[1].after["suppressed"] == 24 and "24 more rejected" in rows[1].message
    dumped = json.dumps([r.after for r in rows]) + " ".join(r.message for r in rows)
    assert SECRET not in dumped and forged["X-Hub-Signature-256"] not in dumped


# ---- the production server: gunicorn decodes the chunks itself (wsgi.input_terminated)


@pytest.fixture
def gunicorn(transactional_db: Any, tmp_path: Path) -> Iterator[str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "gunicorn.log").open("wb")
    # The test database and keys (settings.VAR_DIR), plain http like the live server.
    env = child_env(FLEETGATE_WEBHOOK_MAX_BYTES="4096", FLEETGATE_SSL_REDIRECT="0",
                    FLEETGATE_HSTS_SECONDS="0", FLEETGATE_SECURE_COOKIES="0")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "fleet.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", "2"],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "gunicorn.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def test_gunicorn_reads_a_chunked_delivery_and_refuses_an_oversized_one(gunicorn: str,
                                                                       origin: Origin) -> None:
    repository = Repository.objects.create(name="apps", url=origin.url, webhook_secret=SECRET)
    ping = json.dumps({"zen": "Chunks are fine.", "hook_id": 9}).encode()
    status, answer = post_chunked(gunicorn, f"/api/hooks/git/{repository.pk}/", ping,
                                  {"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign_github(ping, SECRET),
                                   "X-GitHub-Delivery": "gunicorn-ping"})
    assert (status, answer["status"]) == (200, "ping"), answer
    big = json.dumps({"zen": "x" * 10_000}).encode()
    status, answer = post_chunked(gunicorn, f"/api/hooks/git/{repository.pk}/", big,
                                  {"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign_github(big, SECRET)})
    assert status == 413 and "4096" in answer["detail"]
