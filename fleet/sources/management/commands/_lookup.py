"""Finding a repository or mapping by name or id for the sources commands."""

from __future__ import annotations

from django.core.management.base import CommandError

from fleet.sources.models import PathMapping, Repository


def get_repository(ref: str) -> Repository:
    repo = Repository.objects.filter(name=ref).first()
    if repo is None and ref.isdigit():
        repo = Repository.objects.filter(pk=int(ref)).first()
    if repo is None:
        raise CommandError(f"no repository named {ref!r}")
    return repo


def get_mapping(repo: Repository, ref: str) -> PathMapping:
    qs = PathMapping.objects.filter(repository=repo).select_related("cluster_group", "repository")
    mapping = qs.filter(name=ref).first()
    if mapping is None and ref.isdigit():
        mapping = qs.filter(pk=int(ref)).first()
    if mapping is None:
        names = ", ".join(qs.values_list("name", flat=True)[:20]) or "none"
        raise CommandError(f"repository {repo.name} has no mapping {ref!r} (mappings: {names})")
    return mapping
