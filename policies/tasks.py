"""Thin Celery tasks over the policy services."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from fleet.sources.models import Commit, PathMapping
from policies.models import PolicySource


@shared_task(name="policies.evaluate_mapping", acks_late=True)
def evaluate_mapping_task(commit_id: int, mapping_id: int) -> dict[str, Any]:
    """Evaluate one mapping at one commit (idempotent: the stored Evaluations are replaced)."""
    from policies.services.evaluation import evaluate_mapping

    commit = Commit.objects.get(pk=commit_id)
    mapping = PathMapping.objects.select_related("repository", "cluster_group").get(pk=mapping_id)
    result = evaluate_mapping(commit, mapping)
    return {"counts": result.counts, "blocked": [c.name for c in result.blocked]}


@shared_task(name="policies.sync_policy_source", acks_late=True)
def sync_policy_source_task(source_id: int, commit_sha: str) -> dict[str, Any]:
    from policies.services.sources import sync_policy_source

    source = PolicySource.objects.select_related("repository", "bind_group").get(pk=source_id)
    outcome = sync_policy_source(source, commit_sha)
    return {"ok": outcome.ok, "error": outcome.error}
