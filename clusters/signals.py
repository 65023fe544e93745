from typing import Any

from django.db.models.signals import m2m_changed, post_save

from clusters import membership
from clusters.models import Cluster, ClusterGroup


def _cluster_saved(sender: Any, instance: Cluster, raw: bool = False, **_: Any) -> None:
    if not raw:
        membership.refresh_clusters([instance])


def _group_saved(sender: Any, instance: ClusterGroup, raw: bool = False, **_: Any) -> None:
    if not raw:
        membership.refresh_group(instance)


def _static_members_changed(sender: Any, instance: Any, action: str, reverse: bool, **_: Any) -> None:
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if reverse:
        membership.refresh_clusters([instance])
    else:
        membership.refresh_group(instance)


def connect() -> None:
    post_save.connect(_cluster_saved, sender=Cluster, dispatch_uid="cluster_membership")
    post_save.connect(_group_saved, sender=ClusterGroup, dispatch_uid="group_membership")
    m2m_changed.connect(
        _static_members_changed, sender=ClusterGroup.include.through, dispatch_uid="group_include"
    )
    m2m_changed.connect(
        _static_members_changed, sender=ClusterGroup.exclude.through, dispatch_uid="group_exclude"
    )
