"""Keeping ClusterGroup.members in step with labels, selectors and static lists.

Membership is stored (not computed per request) so that access scopes and list pages are plain joins.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from django.db import transaction

from clusters.models import Cluster, ClusterGroup
from clusters.selectors import matches

Through = ClusterGroup.members.through


def planned_members(
    selector: Mapping[str, Any] | None, include: Collection[int], exclude: Collection[int]
) -> set[int]:
    """The clusters a group with this selector and these static lists would hold (nothing is written)."""
    return {
        pk
        for pk, labels in Cluster.objects.values_list("pk", "labels")
        if pk not in exclude and (pk in include or matches(selector, labels or {}))
    }


def planned_groups(cluster_id: int | None, labels: Mapping[str, str]) -> set[int]:
    """The groups a cluster (``None``: not saved yet) with these labels would belong to (nothing is
    written)."""
    out = set()
    for group in ClusterGroup.objects.prefetch_related("include", "exclude"):
        if cluster_id is not None and cluster_id in {c.pk for c in group.exclude.all()}:
            continue
        if (cluster_id is not None and cluster_id in {c.pk for c in group.include.all()}) or matches(
            group.selector, labels or {}
        ):
            out.add(group.pk)
    return out


def refresh_group(group: ClusterGroup) -> set[int]:
    include = set(group.include.values_list("pk", flat=True))
    exclude = set(group.exclude.values_list("pk", flat=True))
    wanted = planned_members(group.selector, include, exclude)
    with transaction.atomic():
        current = set(Through.objects.filter(clustergroup=group).values_list("cluster_id", flat=True))
        Through.objects.filter(clustergroup=group, cluster_id__in=current - wanted).delete()
        Through.objects.bulk_create([Through(clustergroup=group, cluster_id=pk) for pk in wanted - current])
    return wanted


def refresh_clusters(clusters: Iterable[Cluster]) -> None:
    clusters = list(clusters)
    if not clusters:
        return
    groups = list(ClusterGroup.objects.prefetch_related("include", "exclude"))
    with transaction.atomic():
        ids = [c.pk for c in clusters]
        current = set(Through.objects.filter(cluster_id__in=ids).values_list("clustergroup_id", "cluster_id"))
        wanted = set()
        for group in groups:
            include = {c.pk for c in group.include.all()}
            exclude = {c.pk for c in group.exclude.all()}
            for cluster in clusters:
                if group.matches(cluster, include, exclude):
                    wanted.add((group.pk, cluster.pk))
        stale: dict[int, list[int]] = {}
        for group_id, cluster_id in current - wanted:
            stale.setdefault(group_id, []).append(cluster_id)
        for group_id, cluster_ids in stale.items():  # one delete per group, not per row
            Through.objects.filter(clustergroup_id=group_id, cluster_id__in=cluster_ids).delete()
        Through.objects.bulk_create([Through(clustergroup_id=g, cluster_id=c) for g, c in wanted - current])
