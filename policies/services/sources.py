"""Policies from a path of a Git repository, versioned by commit: ``sync_policy_source(source, sha)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.utils import timezone

from fleet.audit.services import record
from fleet.sources.git import GitError, RepositoryCache
from fleet.sources.models import Repository
from fleet.sources.services.fetch import repository_cache
from fleet.sources.services.manifests import ensure_commit
from policies.engine import RegoEngine
from policies.models import PolicySource
from policies.services.definitions import EngineUnavailableForSave, PolicyInvalid
from policies.services.importing import ImportError_, ImportResult, import_files, read_directory


@dataclass
class SyncOutcome:
    source: PolicySource
    commit_sha: str
    ok: bool
    result: ImportResult | None = None
    error: str = ""


def sync_policy_source(
    source: PolicySource,
    commit_sha: str,
    *,
    engine: RegoEngine | None = None,
    user: Any = None,
    cache: RepositoryCache | None = None,
) -> SyncOutcome:
    """Import the policies under ``source.path`` at ``commit_sha`` (new versions record the sha).

    Never raises for bad policies or git problems: the error is stored on the source, audited and returned;
    the policies already stored stay as they were."""
    path = source.path.strip("/")
    try:
        # A fetch passes its own cache: its lock is re-entrant only within one cache object.
        cache = cache or repository_cache(source.repository)
        commit_sha = ensure_commit(cache, commit_sha)
        with cache.export(commit_sha, paths=[path] if path else []) as root:
            files = read_directory(Path(root) / path if path else Path(root))
        result = import_files(
            files,
            name=source.name,
            user=user,
            group=source.bind_group,
            enforcement=source.bind_enforcement or None,
            commit_sha=commit_sha,
            source=source,
            engine=engine,
        )
    except (GitError, PolicyInvalid, ImportError_, EngineUnavailableForSave) as exc:
        message = getattr(exc, "message", None) or str(exc)
        PolicySource.objects.filter(pk=source.pk).update(last_error=message[:5000])
        source.last_error = message
        record(
            "policysource.sync_failed",
            source,
            repository=source.repository,
            after={"commit": commit_sha, "error": message[:2000]},
            message=f"{source} at {commit_sha[:10]}: {message}"[:1000],
        )
        return SyncOutcome(source, commit_sha, False, None, message)
    now = timezone.now()
    PolicySource.objects.filter(pk=source.pk).update(
        last_synced_sha=commit_sha, last_synced=now, last_error=""
    )
    source.last_synced_sha, source.last_synced, source.last_error = commit_sha, now, ""
    changed = [r for r in result.saved if r.new_version]
    record(
        "policysource.sync",
        source,
        repository=source.repository,
        after={"commit": commit_sha, **result.as_dict()},
        message=f"{source} at {commit_sha[:10]}: {len(changed)} new version(s), {len(result.saved)} policies",
    )
    return SyncOutcome(source, commit_sha, True, result)


def sync_sources_for_head(
    repository: Repository, *, engine: RegoEngine | None = None, cache: RepositoryCache | None = None
) -> list[SyncOutcome]:
    """The hook after a fetch: sync the enabled sources of ``repository`` whose last synced commit is not its
    head (call it before rendering/evaluating that head, so its policies apply to its own manifests)."""
    if not repository.head_sha:
        return []
    sources = PolicySource.objects.filter(repository=repository, enabled=True).exclude(
        last_synced_sha=repository.head_sha
    )
    return [
        sync_policy_source(source, repository.head_sha, engine=engine, cache=cache)
        for source in sources.select_related("repository", "bind_group")
    ]
