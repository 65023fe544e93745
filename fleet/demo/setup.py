"""Setting up the demo on the embedded defaults: three groups of sandbox clusters, the demo repository with
its story, mappings of its three apps to each group, and its policies path as a policy source.

Idempotent: running it again keeps everything and adds only what is missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from clusters.models import ClusterGroup
from clusters.tenancy import check_mapping_source
from fleet.audit.services import record
from fleet.core.context import acting
from fleet.demo import repository
from fleet.sources.models import PathMapping, Repository
from policies.models import PolicySource

REPOSITORY = "demo"
APPS = {"guestbook": "apps/guestbook", "podinfo": "apps/podinfo", "cache": "charts/cache"}
GROUPS: dict[str, dict[str, Any]] = {
    "dev": {"selector": {"matchLabels": {"env": "dev"}}, "description": "Automated sync"},
    "staging": {
        "selector": {"matchLabels": {"env": "staging"}},
        "description": "One cluster at a time",
        "batch_size": 1,
    },
    "prod": {
        "selector": {"matchLabels": {"env": "prod"}},
        "description": "Two approvals, then batches of one",
        "approval_required": True,
        "approvals_required": 2,
        "batch_size": 1,
    },
}
# The first two story steps: the second is blocked in prod; `manage.py demo commit` adds the fix.
INITIAL_STEPS = 2


@dataclass
class DemoState:
    repository: Repository
    created: bool
    new_commits: list[str]


def setup(repo_dir: Path, *, poll_interval: int = 5) -> DemoState:
    new = repository.create(repo_dir, steps=INITIAL_STEPS)
    with acting(), transaction.atomic():
        groups = {}
        for name, fields in GROUPS.items():
            groups[name], _ = ClusterGroup.objects.get_or_create(name=name, defaults=fields)
        repo, created = Repository.objects.get_or_create(
            name=REPOSITORY,
            defaults={
                "url": f"file://{repo_dir.resolve()}",
                "branch": "main",
                "poll_interval": poll_interval,
            },
        )
        for app, path in APPS.items():
            for group_name, group in groups.items():
                check_mapping_source(group, repo, path)  # a group restricted since: clusters/tenancy.py
                PathMapping.objects.get_or_create(
                    repository=repo,
                    name=f"{app}-{group_name}",
                    defaults={"path": path, "cluster_group": group, "target_namespace": app},
                )
        PolicySource.objects.get_or_create(
            repository=repo, path="policies", defaults={"name": "demo-policies", "bind_enforcement": "deny"}
        )
        if created:
            record("demo.setup", repo, message="demo groups, repository, mappings and policy source created")
    return DemoState(repo, created, new)


def next_commit(repo_dir: Path) -> str | None:
    """Push the next step of the story into the demo repository (the fix), or None when it is told."""
    shas = repository.create(repo_dir)
    return shas[0] if shas else None
