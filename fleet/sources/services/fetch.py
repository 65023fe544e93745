"""Fetching a repository: new commits in order, force pushes, errors; then rendering what they affect.

``fetch_repository`` holds the repository's git lock (an inter-process ``flock``) for the whole fetch,
record and render, so two workers never work on one repository at once; the second one finds nothing new.
The unique (repository, sha) constraint on Commit is the database-level backstop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from fleet.audit.services import record
from fleet.core import urlguard
from fleet.sources.choices import FetchTrigger, RepoAuth
from fleet.sources.git import (
    BranchUpdate,
    GitCredentials,
    GitError,
    RepositoryCache,
    scrub,
)
from fleet.sources.models import Commit, MappingRender, Repository
from fleet.sources.services.rendering import MappingRenderOutcome, RenderSession, render_pending
from fleet.sources.services.signing import check_signature

logger = logging.getLogger(__name__)

DEFAULT_USERNAME = "x-access-token"
# A fetch the poller queued is considered lost (worker died before running it) after this long.
POLL_QUEUE_GRACE = timedelta(minutes=10)


class CredentialsError(GitError):
    """The repository's stored credentials are incomplete (e.g. token authentication without a token)."""

    code = "bad_credentials"


@dataclass(frozen=True)
class NewCommit:
    sha: str
    summary: str
    author: str
    forced: bool
    sequence: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha": self.sha, "summary": self.summary, "author": self.author, "forced": self.forced,
                "sequence": self.sequence}


@dataclass(frozen=True)
class FetchOutcome:
    """What one fetch did.  ``ok`` False means ``error`` (code, message; never a secret) says why."""

    repository_id: int
    repository: str
    ok: bool
    trigger: str
    old_head: str | None = None
    new_head: str | None = None
    commits: tuple[NewCommit, ...] = ()
    force_push: bool = False
    rewritten: tuple[str, ...] = ()
    truncated: bool = False
    renders: tuple[MappingRenderOutcome, ...] = ()
    error: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.commits) or self.old_head != self.new_head

    def to_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "ok": self.ok,
            "trigger": self.trigger,
            "old_head": self.old_head,
            "new_head": self.new_head,
            "commits": [c.to_dict() for c in self.commits],
            "force_push": self.force_push,
            "rewritten": list(self.rewritten),
            "truncated": self.truncated,
            "renders": [r.to_dict() for r in self.renders],
            "error": self.error,
        }


# --------------------------------------------------------------------------- what a fetch hands on


def _nothing(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class FetchStages:
    """What a fetch hands on, in order; the pipeline (``fleet.rollouts.pipeline``) sets them once at start.

    ``commits_recorded(repo, cache)``: new commits were recorded (still under the git lock, before rendering;
    pass ``cache`` on: its lock is re-entrant only within one cache object).
    ``mapping_rendered(render)``: a MappingRender was stored (inside its transaction)."""

    commits_recorded: Callable[[Repository, RepositoryCache], None] = _nothing
    mapping_rendered: Callable[[MappingRender], None] = _nothing


_stages = FetchStages()


def set_fetch_stages(stages: FetchStages | None) -> None:
    """The stages every fetch hands on to (None: none, the sources app alone)."""
    global _stages
    _stages = stages or FetchStages()


# --------------------------------------------------------------------------- credentials and cache


def repository_credentials(repo: Repository) -> GitCredentials | None:
    """The git credentials of a repository (None for anonymous access)."""
    try:
        if repo.auth_method == RepoAuth.TOKEN:
            return GitCredentials(kind="token", token=repo.token or "",
                                  username=repo.username or DEFAULT_USERNAME)
        if repo.auth_method == RepoAuth.SSH:
            return GitCredentials(kind="ssh", ssh_private_key=repo.ssh_private_key or "",
                                  ssh_known_hosts=repo.ssh_known_hosts or "")
    except ValueError as exc:
        raise CredentialsError(f"repository {repo.name}: {exc}") from None
    return None


def repository_cache(repo: Repository, *, lock_timeout: float | None = None) -> RepositoryCache:
    """The local git cache of a repository under ``settings.FLEETGATE_GIT_CACHE``."""
    kwargs: dict[str, Any] = {}
    if lock_timeout is not None:
        kwargs["lock_timeout"] = lock_timeout
    return RepositoryCache(settings.FLEETGATE_GIT_CACHE, repo.pk, repo.url, repository_credentials(repo),
                           deny_networks=urlguard.deny_networks(), **kwargs)


def _secrets(repo: Repository) -> list[str]:
    return [s for s in (repo.token, repo.ssh_private_key, repo.webhook_secret) if s]


def safe_error(repo: Repository, exc: BaseException) -> dict[str, Any]:
    """A storable description of a failure: a code and a message scrubbed of every repository secret."""
    code = getattr(exc, "code", "error")
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return {"code": code, "message": scrub(str(message), _secrets(repo))[:1000]}


# --------------------------------------------------------------------------- fetch


def fetch_repository(
    repository: Repository | int,
    *,
    trigger: str = FetchTrigger.TASK,
    render: bool = True,
    lock_timeout: float | None = None,
    stages: FetchStages | None = None,
) -> FetchOutcome:
    """Fetch a repository's branch, record every new commit in order, and render what they affect,
    handing on to ``stages`` (default: those the pipeline set, see ``set_fetch_stages``).

    Idempotent: running it again (or concurrently) records nothing twice.  Errors are stored in
    ``Repository.last_error`` and audited as ``repository.fetch_failed``; they are returned, not raised.
    """
    stages = stages or _stages
    repo = repository if isinstance(repository, Repository) else Repository.objects.get(pk=repository)
    try:
        cache = repository_cache(repo, lock_timeout=lock_timeout)
        with cache.lock():
            repo.refresh_from_db()
            old_head = repo.head_sha or None
            update = cache.new_commits(repo.branch, old_head)
            commits = _record_update(repo, update)
            if commits:
                # e.g. a commit's own policies (policy sources in this repository) apply to its manifests.
                # Not from a head that fails signature verification: nothing of it is used.
                repo.refresh_from_db()
                head = Commit.objects.filter(repository=repo, sha=repo.head_sha).first()
                if head is None or check_signature(repo, cache, head):
                    stages.commits_recorded(repo, cache)
            session = RenderSession(on_rendered=stages.mapping_rendered)
            renders = render_pending(repo, cache, session=session) if render else []
    except (GitError, ValueError) as exc:
        return _record_failure(repo, exc, trigger)
    return FetchOutcome(
        repository_id=repo.pk,
        repository=repo.name,
        ok=True,
        trigger=trigger,
        old_head=update.old_head,
        new_head=update.new_head,
        commits=tuple(commits),
        force_push=update.force_push,
        rewritten=update.rewritten,
        truncated=update.truncated,
        renders=tuple(renders),
    )


def _record_update(repo: Repository, update: BranchUpdate) -> list[NewCommit]:
    for attempt in (1, 2):
        try:
            return _record_update_once(repo, update)
        except IntegrityError:
            # Someone inserted one of these commits between our read and our write: read again.
            if attempt == 2:
                raise
    return []  # pragma: no cover


def _record_update_once(repo: Repository, update: BranchUpdate) -> list[NewCommit]:
    now = timezone.now()
    with transaction.atomic():
        shas = [c.sha for c in update.commits]
        existing = set(Commit.objects.filter(repository=repo, sha__in=shas).values_list("sha", flat=True))
        sequence = Commit.objects.filter(repository=repo).aggregate(m=Max("sequence"))["m"] or 0
        rows: list[Commit] = []
        for info in update.commits:
            if info.sha in existing:
                continue
            sequence += 1
            rows.append(Commit(
                repository=repo,
                sha=info.sha,
                parent_sha=info.parents[0] if info.parents else "",
                author_name=info.author.name[:200],
                author_email=info.author.email[:254],
                message=info.message,
                committed_at=info.committed_at,
                forced=update.force_push,
                sequence=sequence,
            ))
        Commit.objects.bulk_create(rows)
        if update.force_push and rows:
            record(
                "repository.force_push",
                repo,
                before={"head_sha": update.old_head},
                after={"head_sha": update.new_head, "rewritten": list(update.rewritten),
                       "new_commits": [c.sha for c in rows]},
                message=(f"force-push to {repo.branch}: {len(update.rewritten)} commit(s) rewritten"
                         + ("" if update.old_head_known else " (old head unknown to the cache)")),
            )
        for row in rows:
            summary = row.message.split("\n", 1)[0][:120]
            record("commit.seen", row, repository=repo,
                   message=f"{row.sha[:10]} {summary}" + (" (forced)" if row.forced else ""))
        fields = {"last_fetched": now, "last_error": ""}
        if repo.head_sha != update.new_head:
            fields["head_sha"] = update.new_head
        Repository.objects.filter(pk=repo.pk).update(**fields)
        for key, value in fields.items():
            setattr(repo, key, value)
    return [
        NewCommit(sha=c.sha, summary=c.message.split("\n", 1)[0][:200], author=c.author_name,
                  forced=c.forced, sequence=c.sequence)
        for c in rows
    ]


def _record_failure(repo: Repository, exc: BaseException, trigger: str) -> FetchOutcome:
    error = safe_error(repo, exc)
    repeated = repo.last_error == error["message"]
    Repository.objects.filter(pk=repo.pk).update(last_error=error["message"], last_fetched=timezone.now())
    repo.last_error = error["message"]
    logger.warning("fetch of repository %s failed: %s", repo.name, error["message"])
    # A poller retrying the same broken repository every minute would flood the log: audit a repeated
    # error only when someone (webhook, API, command) asked for this fetch.
    if not (repeated and trigger == FetchTrigger.POLL):
        record("repository.fetch_failed", repo, after={**error, "trigger": str(trigger)},
               message=f"fetch failed ({error['code']}): {error['message']}"[:500])
    return FetchOutcome(repository_id=repo.pk, repository=repo.name, ok=False, trigger=trigger,
                        old_head=repo.head_sha or None, new_head=repo.head_sha or None, error=error)


# --------------------------------------------------------------------------- polling


def due_for_poll(now: datetime | None = None) -> list[int]:
    """Ids of enabled repositories whose poll interval has elapsed since their last fetch
    (``poll_interval`` 0 = never polled), and that the poller has not already queued."""
    now = now or timezone.now()
    due: list[int] = []
    rows = Repository.objects.filter(enabled=True, poll_interval__gt=0).values_list(
        "pk", "poll_interval", "last_fetched", "poll_queued_at")
    for pk, interval, last_fetched, queued in rows.order_by("pk"):
        if last_fetched is not None and last_fetched + timedelta(seconds=interval) > now:
            continue
        if queued is not None and (last_fetched is None or queued > last_fetched) and \
                queued > now - POLL_QUEUE_GRACE:
            continue  # queued and not yet run: don't pile up fetches of a slow repository
        due.append(pk)
    return due


def mark_queued(ids: Iterable[int], now: datetime | None = None) -> None:
    Repository.objects.filter(pk__in=list(ids)).update(poll_queued_at=now or timezone.now())
