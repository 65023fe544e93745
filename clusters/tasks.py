"""Thin Celery tasks around clusters.services.

Beat: schedule ``clusters.check_all_clusters`` (e.g. every 60 s) to keep every Cluster's status,
version and last_seen fresh.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from clusters import services
from clusters.models import Cluster


@shared_task(name="clusters.check_cluster", acks_late=True, ignore_result=True)
def check_cluster(cluster_id: int) -> dict[str, Any] | None:
    """Probe one cluster and record the outcome on its row."""
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        return None
    outcome = services.check_cluster(cluster)
    return {"cluster": outcome.name, "status": outcome.status, "version": outcome.version}


@shared_task(name="clusters.check_all_clusters", acks_late=True, ignore_result=True)
def check_all_clusters(workers: int = 8) -> dict[str, int]:
    """Probe every cluster (concurrently) and record the outcomes; returns counts by status."""
    counts: dict[str, int] = {}
    for outcome in services.check_clusters(workers=workers):
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return counts
