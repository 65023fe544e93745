"""Fetching: every commit between two fetches recorded in order, force pushes, errors, polling."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from fleet.audit.models import AuditEvent
from fleet.sources.choices import CommitStatus
from fleet.sources.models import Commit, MappingRender, Repository
from fleet.sources.services import due_for_poll, fetch_repository, mark_queued
from tests.sources.origin import configmap


def test_first_fetch_records_the_head_then_every_new_commit_in_order(
    origin: Any, make_repository: Any
) -> None:
    first = origin.commit("initial", {"README.md": "hello"})
    repo = make_repository(origin)

    outcome = fetch_repository(repo)
    assert outcome.ok and outcome.new_head == first
    assert [c.sha for c in outcome.commits] == [first]

    shas = [origin.commit(f"change {i}", {f"f{i}.txt": str(i)}) for i in range(4)]
    outcome = fetch_repository(repo)
    assert outcome.ok
    assert [c.sha for c in outcome.commits] == shas
    rows = list(Commit.objects.filter(repository=repo).order_by("sequence"))
    assert [r.sha for r in rows] == [first, *shas]
    assert [r.sequence for r in rows] == [1, 2, 3, 4, 5]
    assert [r.parent_sha for r in rows[1:]] == [first, *shas[:-1]]
    assert rows[2].message.strip() == "change 1" and rows[2].author_email == "ada@example.com"
    assert not any(r.forced for r in rows)

    repo.refresh_from_db()
    assert repo.head_sha == shas[-1] and repo.last_error == "" and repo.last_fetched is not None
    seen = AuditEvent.objects.filter(action="commit.seen", repository_name=repo.name).order_by("sequence")
    assert [e.target_id for e in seen] == [str(r.pk) for r in rows]
    assert seen.last().message == f"{shas[-1][:10]} change 3"


def test_fetch_is_idempotent(origin: Any, make_repository: Any) -> None:
    origin.commit("initial", {"a.txt": "a"})
    repo = make_repository(origin)
    fetch_repository(repo)
    origin.commit("second", {"b.txt": "b"})
    assert len(fetch_repository(repo).commits) == 1
    again = fetch_repository(repo)
    assert again.ok and again.commits == () and not again.changed
    assert Commit.objects.filter(repository=repo).count() == 2
    assert AuditEvent.objects.filter(action="commit.seen").count() == 2


def test_force_push_is_recorded_as_forced_and_audited(origin: Any, make_repository: Any) -> None:
    base = origin.commit("base", {"a.txt": "a"})
    repo = make_repository(origin)
    fetch_repository(repo)
    dropped = [origin.commit("will be dropped 1", {"b.txt": "b"}), origin.commit("will be dropped 2")]
    fetch_repository(repo)

    origin.git("reset", "-q", "--hard", base)
    rewritten = origin.commit("the rewrite", {"c.txt": "c"})
    outcome = fetch_repository(repo)

    assert outcome.force_push and [c.sha for c in outcome.commits] == [rewritten]
    assert set(outcome.rewritten) == set(dropped)
    row = Commit.objects.get(repository=repo, sha=rewritten)
    assert row.forced and row.sequence == 4
    assert not Commit.objects.get(sha=dropped[0]).forced
    event = AuditEvent.objects.get(action="repository.force_push")
    assert set(event.after["rewritten"]) == set(dropped)
    assert event.before == {"head_sha": dropped[-1]} and event.after["head_sha"] == rewritten
    assert event.repository_name == repo.name


def test_fetch_failure_is_stored_and_audited_without_the_token(
    origin: Any, make_repository: Any, git_http: Any
) -> None:
    origin.commit("initial")
    server = git_http("fleet", "right-token-123456")
    repo = Repository.objects.create(name="private", url=server.url("origin"), auth_method="token",
                                     username="fleet", token="wrong-token-abcdef0123")
    outcome = fetch_repository(repo)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error["code"] == "auth_failed"
    repo.refresh_from_db()
    assert "authentication" in repo.last_error and "wrong-token" not in repo.last_error
    event = AuditEvent.objects.get(action="repository.fetch_failed")
    assert "wrong-token" not in str(event.after) + event.message
    assert event.after["code"] == "auth_failed"
    # with the right token the same repository fetches and the error is cleared
    repo.token = "right-token-123456"
    repo.save()
    assert fetch_repository(repo).ok
    repo.refresh_from_db()
    assert repo.last_error == "" and repo.head_sha == origin.head()


def test_missing_branch_gives_a_clear_error(origin: Any, make_repository: Any) -> None:
    origin.commit("initial")
    repo = make_repository(origin, branch="release")
    outcome = fetch_repository(repo)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error["code"] == "branch_not_found"
    assert "release" in outcome.error["message"] and "main" in outcome.error["message"]


def test_repeated_poll_failures_are_audited_once(make_repository: Any, tmp_path: Any) -> None:
    repo = Repository.objects.create(name="gone", url=(tmp_path / "nowhere").as_uri())
    for _ in range(3):
        assert not fetch_repository(repo, trigger="poll").ok
    assert AuditEvent.objects.filter(action="repository.fetch_failed").count() == 1
    fetch_repository(repo, trigger="api")
    assert AuditEvent.objects.filter(action="repository.fetch_failed").count() == 2


def test_due_for_poll_respects_interval_disabled_and_queued(db: Any) -> None:
    now = timezone.now()
    never = Repository.objects.create(name="never", url="https://git.example.com/a.git")
    recent = Repository.objects.create(name="recent", url="https://git.example.com/b.git", poll_interval=60,
                                       last_fetched=now - timedelta(seconds=30))
    old = Repository.objects.create(name="old", url="https://git.example.com/c.git", poll_interval=60,
                                    last_fetched=now - timedelta(seconds=61))
    Repository.objects.create(name="webhook-only", url="https://git.example.com/d.git", poll_interval=0)
    Repository.objects.create(name="off", url="https://git.example.com/e.git", enabled=False)
    assert due_for_poll(now) == [never.pk, old.pk]
    mark_queued([never.pk, old.pk], now)
    assert due_for_poll(now + timedelta(seconds=5)) == []  # queued, not yet run: not queued again
    assert due_for_poll(now + timedelta(minutes=11)) == [never.pk, recent.pk, old.pk]  # the queue was lost


def test_commits_of_a_repository_without_mappings_are_skipped(origin: Any, make_repository: Any) -> None:
    origin.commit("initial", {"apps/web/cm.yaml": configmap("web")})
    repo = make_repository(origin)
    fetch_repository(repo)
    assert Commit.objects.get(repository=repo).status == CommitStatus.SKIPPED


@pytest.mark.django_db(transaction=True)
def test_concurrent_fetches_record_every_commit_once(origin: Any, make_repository: Any,
                                                     make_mapping: Any, fleet: dict[str, Any]) -> None:
    origin.commit("initial", {"apps/web/cm.yaml": configmap("web")})
    repo = make_repository(origin)
    make_mapping(repo, "web", "apps/web", fleet["prod"])
    fetch_repository(repo)
    shas = [origin.commit(f"c{i}", {"apps/web/cm.yaml": configmap("web", f"value: v{i}")}) for i in range(3)]
    outcomes: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcomes.append(fetch_repository(repo.pk))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(outcomes) == 3 and all(o.ok for o in outcomes)
    assert sorted(len(o.commits) for o in outcomes) == [0, 0, 3]  # one did the work, the others found none
    recorded = Commit.objects.filter(repository=repo).order_by("sequence").values_list("sha", flat=True)
    assert list(recorded)[1:] == shas
    assert MappingRender.objects.filter(commit__sha__in=shas).count() == 3
    assert AuditEvent.objects.filter(action="commit.seen").count() == 4
