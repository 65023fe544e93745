"""The manifests a mapping gives some clusters at a commit: the one path every caller takes.

``mapping_manifests(mapping, clusters, commit=...)`` answers per cluster with the stored render
(``RenderedManifest``) when there is one, else renders now (nothing stored) with the same requests as the
fetch: ``build_requests`` layers the values mapping -> group -> cluster, and the git cache has the
repository's credentials and URL guard (``repository_cache``).  The rollouts (``fleet.rollouts.ports``)
and the check before merge (``policies.services.checking``) call it.

Failures carry a kind: ``CommitNotFound`` (the commit is not in the repository, even after a fetch),
``RenderFailed`` (a cluster's render failed, with file and line when known), ``ManifestsUnavailable`` (any
other git failure: unreachable, credentials, export).

A restricted group's tenant allow-list (clusters/allowlist.py) is checked here again on whatever is about
to be used, stored or rendered now: a render stored before the allow-list was tightened (a rollback, a
re-sync, a cluster that joined later) fails like a render outside it, with the object's file and line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from clusters import allowlist, tenancy
from clusters.models import Cluster
from fleet.sources.choices import ManifestStatus
from fleet.sources.git import GitCommitNotFoundError, GitError, RepositoryCache
from fleet.sources.models import Commit, PathMapping, RenderedManifest
from fleet.sources.render import RenderError, SourceTree
from fleet.sources.services.fetch import repository_cache
from fleet.sources.services.rendering import (
    RenderSession,
    build_requests,
    expand_paths,
    line_of,
    read_files_error,
    render_requests,
    source_error,
)


class ManifestsUnavailable(Exception):
    """The manifests cannot be given; ``kind`` says why, ``message`` (never a secret) how."""

    kind: ClassVar[str] = "unavailable"

    def __init__(self, message: str, *, file: str = "", line: int | None = None, cluster: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.cluster = cluster


class CommitNotFound(ManifestsUnavailable):
    """The commit is not in the repository (not in the cache, nor after fetching)."""

    kind = "commit_not_found"


class RenderFailed(ManifestsUnavailable):
    """A cluster's render failed (stored as failed, or failing now)."""

    kind = "render_failed"


@dataclass(frozen=True)
class ClusterManifests:
    """One cluster's rendered resources: RenderedManifest.resources rows ({apiVersion, kind, name,
    namespace, source, document, object})."""

    cluster: Cluster
    resources: list[dict[str, Any]]
    namespace: str = ""
    stored: bool = False

    @property
    def objects(self) -> list[dict[str, Any]]:
        """The Kubernetes objects themselves."""
        return [r.get("object") or r.get("body") for r in self.resources]  # type: ignore[misc]


def ensure_commit(cache: RepositoryCache, sha: str) -> str:
    """The full sha of ``sha`` in the local cache, fetching first when the cache cannot give it (not
    fetched yet, or the commit is newer than the last fetch).  GitCommitNotFoundError if still missing."""
    try:
        return cache.commit_info(sha).sha
    except GitError:
        cache.fetch()
        return cache.commit_info(sha).sha


def _stored(mapping: PathMapping, commit: Commit | str, cluster_ids: Sequence[int]) -> dict[int, Any]:
    rows = RenderedManifest.objects.filter(mapping=mapping, cluster_id__in=list(cluster_ids))
    if isinstance(commit, Commit):
        rows = rows.filter(commit=commit)
    else:
        rows = rows.filter(commit__repository_id=mapping.repository_id, commit__sha=commit)
    return {row.cluster_id: row for row in rows}


def _from_row(cluster: Cluster, row: Any) -> ClusterManifests:
    if row.status != ManifestStatus.OK:
        where = f" ({row.error_file}:{row.error_line})" if row.error_file else ""
        raise RenderFailed(f"{row.error_message}{where}", file=row.error_file or "", line=row.error_line,
                           cluster=cluster.name)
    resources = [] if row.skipped else list(row.resources or [])
    return ClusterManifests(cluster, resources, row.namespace or "", stored=True)


def _render_now(mapping: PathMapping, sha: str, clusters: Sequence[Cluster]) -> dict[int, ClusterManifests]:
    cache = repository_cache(mapping.repository)
    session = RenderSession()
    out: dict[int, ClusterManifests] = {}
    try:
        sha = ensure_commit(cache, sha)
        with cache.export(sha) as root:
            tree = SourceTree(root)
            try:
                paths = expand_paths(tree, mapping)
            except RenderError as exc:
                raise RenderFailed(str(exc), file=exc.file or "", line=exc.line) from None
            for cluster in clusters:
                requests = build_requests(mapping, cluster, sha, paths)
                result = render_requests(tree, requests, "", kubectl=session.kubectl,
                                         charts=session.charts_for(mapping.cluster_group_id))
                if result.error is not None:
                    err = result.error
                    raise RenderFailed(f"{cluster.name}: {err}", file=err.file or "", line=err.line,
                                       cluster=cluster.name)
                out[cluster.pk] = ClusterManifests(cluster, result.resources, result.namespace)
    except GitCommitNotFoundError as exc:
        raise CommitNotFound(exc.message) from None
    except GitError as exc:
        raise ManifestsUnavailable(f"cannot export {sha[:10]}: {exc.message}") from None
    return out


def mapping_manifests(
    mapping: PathMapping, clusters: Sequence[Cluster], *, commit: Commit | str
) -> dict[int, ClusterManifests]:
    """The manifests of ``mapping`` at ``commit`` (a Commit, or a full sha of its repository) for each of
    ``clusters``, by cluster id in the order given: stored when rendered, else rendered now.

    Raises RenderFailed for the first cluster whose render failed, CommitNotFound, ManifestsUnavailable."""
    stored = _stored(mapping, commit, [c.pk for c in clusters])
    found: dict[int, ClusterManifests] = {}
    missing: list[Cluster] = []
    for cluster in clusters:
        row = stored.get(cluster.pk)
        if row is None:
            missing.append(cluster)
        else:
            found[cluster.pk] = _from_row(cluster, row)
    if missing:
        sha = commit.sha if isinstance(commit, Commit) else commit
        found.update(_render_now(mapping, sha, missing))
    rules = tenancy.rules_for(mapping.cluster_group)
    if rules is not None:
        _check_allowed(mapping, rules, commit.sha if isinstance(commit, Commit) else commit, found, clusters)
    return {c.pk: found[c.pk] for c in clusters}


def _check_allowed(mapping: PathMapping, rules: allowlist.Rules, sha: str,
                   found: Mapping[int, ClusterManifests], clusters: Sequence[Cluster]) -> None:
    """RenderFailed for a mapping source the group no longer allows, for the first cluster whose render
    reads a repository file outside its allowed paths (one export), or with an object outside its
    allow-list."""
    try:  # the source checks and every file each cluster's render reads (one export), as the render does
        with repository_cache(mapping.repository).export(sha) as root:
            tree = SourceTree(root)
            try:
                paths = expand_paths(tree, mapping)
            except RenderError as exc:
                raise RenderFailed(str(exc), file=exc.file or "", line=exc.line) from None
            error = source_error(tree, rules, mapping, paths)
            if error is not None:
                raise RenderFailed(str(error), file=error.file or "", line=error.line)
            for cluster in clusters:
                error = read_files_error(tree, rules, mapping, build_requests(mapping, cluster, sha, paths))
                if error is not None:
                    raise RenderFailed(f"{cluster.name}: {error}", file=error.file or "", line=error.line,
                                       cluster=cluster.name)
    except GitCommitNotFoundError as exc:
        raise CommitNotFound(exc.message) from None
    except GitError as exc:
        raise ManifestsUnavailable(f"cannot export {sha[:10]}: {exc.message}") from None
    for cluster in clusters:
        resources = found[cluster.pk].resources
        refused = allowlist.object_refusals(
            rules, resources, mapping.target_namespace or "default",
            cluster_scoped_kinds=allowlist.declared_cluster_kinds(resources))
        if refused:
            first = refused[0]
            raise RenderFailed(f"{cluster.name}: not allowed: {first.message}", file=first.source,
                               line=_line(mapping, sha, first.source, first.document), cluster=cluster.name)


def _line(mapping: PathMapping, sha: str, source: str, document: int | None) -> int | None:
    """The line of a refused object's document (one export, only when something is refused)."""
    try:
        with repository_cache(mapping.repository).export(sha) as root:
            return line_of(SourceTree(root), source, document)
    except GitError:
        return None


def objects_by_cluster(manifests: Mapping[int, ClusterManifests]) -> dict[int, list[dict[str, Any]]]:
    """{cluster id: [Kubernetes object, ...]}."""
    return {pk: m.objects for pk, m in manifests.items()}
