"""Actions on a repository that people ask for: fetch now, test the connection, rotate the webhook secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import git as gitpython
from django.db import transaction

from fleet.audit.services import record
from fleet.core import dispatch
from fleet.sources.choices import FetchTrigger
from fleet.sources.git import DEFAULT_TIMEOUT, GitBranchNotFoundError, GitError, redact_url
from fleet.sources.models import Repository, new_webhook_secret
from fleet.sources.services.fetch import FetchOutcome, fetch_repository, repository_cache, safe_error


def enqueue_fetch(repo: Repository, trigger: str) -> None:
    """Queue a fetch task once the current transaction commits (a worker never sees a rolled-back row)."""
    from fleet.sources.tasks import fetch_repository_task  # the tasks module imports these services

    dispatch.send(fetch_repository_task, repo.pk, str(trigger))


def request_fetch(repo: Repository, *, wait: bool = False, trigger: str = FetchTrigger.API
                  ) -> FetchOutcome | None:
    """Fetch now (``wait``) or queue a fetch; audited as ``repository.fetch``."""
    record("repository.fetch", repo, message=f"fetch requested ({'inline' if wait else 'queued'})")
    if wait:
        return fetch_repository(repo, trigger=trigger)
    enqueue_fetch(repo, trigger)
    return None


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    branch: str
    branch_found: bool
    head_sha: str | None
    branches: tuple[str, ...]
    error: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "branch": self.branch, "branch_found": self.branch_found,
                "head_sha": self.head_sha, "branches": list(self.branches), "error": self.error}


def check_connection(repo: Repository, *, timeout: float = 30.0) -> ConnectionCheck:
    """``git ls-remote --heads`` with the repository's credentials: can we reach and read it, and does the
    branch exist?  Changes nothing (not even the local cache)."""
    try:
        cache = repository_cache(repo)
        cache.timeout = min(timeout, DEFAULT_TIMEOUT)
        runner = gitpython.Git()
        # RepositoryCache keeps the credential plumbing (askpass script, ssh key file, scrubbing) in one
        # place; ls-remote needs no cache, so it uses that plumbing directly.
        with cache._auth_env() as env:
            try:
                out = runner.execute(["git", "ls-remote", "--heads", "--", cache.url],
                                     env=env, kill_after_timeout=cache.timeout)
            except gitpython.GitCommandError as exc:
                raise cache._error(exc, context="ls-remote") from None
        heads: dict[str, str] = {}
        for line in str(out).splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                heads[ref.removeprefix("refs/heads/")] = sha
        found = repo.branch in heads
        error = None
        if not found:
            error = safe_error(repo, GitBranchNotFoundError(
                f"branch {repo.branch!r} does not exist in {redact_url(repo.url)}"
                + (f" (branches: {', '.join(sorted(heads)[:10])})" if heads else " (no branches)")))
        result = ConnectionCheck(ok=found, branch=repo.branch, branch_found=found,
                                 head_sha=heads.get(repo.branch), branches=tuple(sorted(heads)[:100]),
                                 error=error)
    except (GitError, ValueError) as exc:
        result = ConnectionCheck(ok=False, branch=repo.branch, branch_found=False, head_sha=None,
                                 branches=(), error=safe_error(repo, exc))
    record("repository.test_connection", repo,
           after={"ok": result.ok, "error": result.error},
           message="connection OK" if result.ok
           else f"connection failed: {(result.error or {}).get('message')}")
    return result


def rotate_webhook_secret(repo: Repository) -> str:
    """Give the repository a new random webhook secret and return it (the only time it is shown)."""
    with transaction.atomic():
        secret = new_webhook_secret()
        repo.webhook_secret = secret
        repo.save(update_fields=["webhook_secret", "updated"])
        record("repository.rotate_webhook_secret", repo,
               message="webhook secret rotated; update it in the Git host's webhook settings")
    return secret
