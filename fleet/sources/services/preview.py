"""Rendering one mapping for one cluster at any commit, without storing anything (``manage.py render``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from clusters import tenancy
from clusters.models import Cluster
from fleet.sources.git import GitError
from fleet.sources.models import Commit, PathMapping, Repository
from fleet.sources.render import RenderError, SourceTree
from fleet.sources.services.fetch import repository_cache
from fleet.sources.services.rendering import (
    RenderSession,
    build_requests,
    check_allowed,
    expand_paths,
    render_requests,
    source_error,
)


class PreviewError(Exception):
    """The preview could not be made (unknown commit, cluster outside the group, git failure)."""


@dataclass(frozen=True)
class Preview:
    commit: str
    mapping: str
    cluster: str
    ok: bool
    renderer: str = ""
    namespace: str = ""
    objects: tuple[dict[str, Any], ...] = ()
    skipped: bool = False
    warnings: tuple[str, ...] = ()
    error: RenderError | None = None

    def to_yaml(self) -> str:
        """Multi-document YAML, each document preceded by ``# Source: <file>``."""
        parts: list[str] = []
        if self.namespace:
            parts.append(f"# Namespace for namespaced objects that name none: {self.namespace}\n")
        if self.skipped:
            parts.append(f"# doNotDeploy: nothing is deployed to {self.cluster}\n")
        for obj in self.objects:
            body = yaml.safe_dump(obj["object"], sort_keys=False, default_flow_style=False,
                                  allow_unicode=True)
            parts.append(f"---\n# Source: {obj['source']}\n{body}")
        return "".join(parts)


def resolve_commit(repo: Repository, ref: str) -> str:
    """A full sha from a sha or unique prefix known to the database, ``head``, or any sha in the cache."""
    ref = ref.strip()
    if ref.lower() in ("head", "@"):
        if not repo.head_sha:
            raise PreviewError(f"repository {repo.name} has not been fetched yet")
        return repo.head_sha
    matches = list(Commit.objects.filter(repository=repo, sha__startswith=ref.lower())
                   .values_list("sha", flat=True)[:2])
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise PreviewError(f"commit {ref!r} is ambiguous in {repo.name}")
    return ref


def preview_render(repo: Repository, commit_ref: str, mapping: PathMapping, cluster_name: str) -> Preview:
    """Render ``mapping`` at a commit for one cluster of its group, exactly as a fetch would store it."""
    cluster = mapping.cluster_group.members.filter(name=cluster_name).first()
    if cluster is None:
        if not Cluster.objects.filter(name=cluster_name).exists():
            raise PreviewError(f"no cluster named {cluster_name!r}")
        raise PreviewError(f"cluster {cluster_name!r} is not in group {mapping.cluster_group.name!r}, "
                           f"the target of mapping {mapping.name!r}")
    sha = resolve_commit(repo, commit_ref)
    cache = repository_cache(repo)
    try:
        with cache.lock():
            try:
                full = cache.commit_info(sha).sha
            except GitError:
                cache.fetch()
                full = cache.commit_info(sha).sha
            with cache.export(full) as root:
                tree = SourceTree(root)
                try:
                    paths = expand_paths(tree, mapping)
                except RenderError as exc:
                    return Preview(full, mapping.name, cluster.name, ok=False, error=exc)
                rules = tenancy.rules_for(mapping.cluster_group)  # the group's tenant allow-list
                refused = source_error(tree, rules, mapping, paths) if rules is not None else None
                if refused is not None:
                    return Preview(full, mapping.name, cluster.name, ok=False, error=refused)
                session = RenderSession()
                charts = session.charts_for(mapping.cluster_group_id)
                requests = build_requests(mapping, cluster, full, paths)
                result = render_requests(tree, requests, "", kubectl=session.kubectl, charts=charts)
                if rules is not None and result.ok:
                    result = check_allowed(tree, rules, mapping, result, requests=requests)
    except GitError as exc:
        raise PreviewError(exc.message) from None
    if result.error is not None:
        return Preview(full, mapping.name, cluster.name, ok=False, error=result.error)
    return Preview(full, mapping.name, cluster.name, ok=True, renderer=result.renderer,
                   namespace=result.namespace,
                   objects=tuple(result.resources), skipped=result.skipped, warnings=tuple(result.warnings))
