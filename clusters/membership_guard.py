"""The one check on changes that can alter which clusters a group holds, for API, UI and admin alike.

A scoped user (a binding on some groups, not on all clusters) must not use a selector, a group's include or
exclude list, a cluster's labels or a new group to take a cluster from outside their scope into a group, or
to add or remove members of a group outside their scope (the rule: clusters/membership_rules.py).

`save_group` and `save_cluster` are the one create/update service of groups and clusters (API, UI, admin
and commands). They check twice: before saving, on the membership the change would produce (computed with
clusters/membership.py, nothing written), and inside the transaction after saving, on the membership rows
that were actually written, with the group or cluster row locked. The save itself goes through the one
audited save (fleet/access/writes.py: the saved object must be within the user's scope, and the audit event
is recorded). A refusal at any point raises `MembershipRefused` or `OutOfScope` (403) and the transaction,
audit rows included, is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import transaction
from rest_framework.exceptions import PermissionDenied

from clusters import membership
from clusters.membership_rules import Pair, added, describe, refusals
from clusters.models import Cluster, ClusterGroup
from fleet.access.restrict import Scope, groups_where, restrict
from fleet.access.writes import save_in_scope
from fleet.audit.redact import snapshot

Through = ClusterGroup.members.through
NEW = 0  # the id of a group or cluster not saved yet (database ids start at 1)


class MembershipRefused(PermissionDenied, DjangoPermissionDenied):
    """403 in the API (DRF) and in Django views and the admin (Django's PermissionDenied)."""


def _rows(*, group_id: int | None = None, cluster_id: int | None = None) -> set[Pair]:
    if not group_id and not cluster_id:
        return set()
    rows = Through.objects.all()
    if group_id:
        rows = rows.filter(clustergroup_id=group_id)
    if cluster_id:
        rows = rows.filter(cluster_id=cluster_id)
    return set(rows.values_list("clustergroup_id", "cluster_id"))


def _clusters_in_scope(
    scope: Scope,
    candidates: Collection[int],
    before: Iterable[Pair],
    *,
    subject_group: int | None = None,
    subject_cluster: int | None = None,
) -> set[int]:
    """Of ``candidates``, the clusters that belonged to a group of the scope before the change. The
    subject's own rows may already be rewritten in this transaction, so they are taken from ``before``."""
    if not candidates:
        return set()
    found = {c for g, c in before if g in scope.groups and c in candidates}
    rows = Through.objects.filter(clustergroup_id__in=scope.groups, cluster_id__in=candidates)
    if subject_group:
        rows = rows.exclude(clustergroup_id=subject_group)
    if subject_cluster:
        rows = rows.exclude(cluster_id=subject_cluster)
    return found | set(rows.values_list("cluster_id", flat=True))


def check_change(
    user: Any,
    model: type[Cluster] | type[ClusterGroup],
    action: str,
    before: set[Pair],
    after: set[Pair],
    *,
    subject_group: int | None = None,
    subject_cluster: int | None = None,
    new_cluster: bool = False,
    new_names: Mapping[int, str] | None = None,
) -> None:
    """Refuse (MembershipRefused) the change from ``before`` to ``after`` made with ``<model>.<action>``
    when the user's scope for it does not cover it. ``new_cluster``: the subject cluster is being created
    by the user (so it counts as in scope; every group it joins must be)."""
    scope = groups_where(user, model, action)
    if scope.everywhere or before == after:
        return
    joining = {c for _, c in added(before, after)}
    in_scope = _clusters_in_scope(
        scope, joining, before, subject_group=subject_group, subject_cluster=subject_cluster
    )
    if new_cluster and subject_cluster is not None:
        in_scope.add(subject_cluster)
    found = refusals(
        before, after, everywhere=False, groups_in_scope=scope.groups, clusters_in_scope=in_scope
    )
    if not found:
        return
    group_ids = {r.group_id for r in found}
    cluster_ids = {r.cluster_id for r in found}
    group_names: dict[int, str] = dict(
        restrict(ClusterGroup.objects.filter(pk__in=group_ids), user, "view").values_list("pk", "name")
    )
    # Clusters are named only if the user could see them before this change (inside the transaction, after
    # saving, the new rows would make them look visible).
    seen = groups_where(user, Cluster, "view")
    if not seen.everywhere:
        cluster_ids = _clusters_in_scope(
            seen, cluster_ids, before, subject_group=subject_group, subject_cluster=subject_cluster
        )
    cluster_names: dict[int, str] = dict(Cluster.objects.filter(pk__in=cluster_ids).values_list("pk", "name"))
    for pk, name in (new_names or {}).items():  # the object being saved is named as the user typed it
        (group_names if subject_group == pk else cluster_names)[pk] = name
    raise MembershipRefused(describe(found, group_names, cluster_names))


def _ids(items: Iterable[Any] | None) -> set[int]:
    return {item if isinstance(item, int) else item.pk for item in items or ()}


def save_group(
    user: Any,
    group: ClusterGroup | None,
    save: Callable[[], ClusterGroup],
    *,
    name: str,
    selector: Mapping[str, Any] | None,
    include: Iterable[Any] | None = None,
    exclude: Iterable[Any] | None = None,
) -> ClusterGroup:
    """Create (``group`` None) or change a cluster group through ``save()``, which saves the group and its
    include and exclude lists and returns it. ``selector``, ``include`` and ``exclude`` are the values the
    group will have (pass the current ones for fields the change leaves alone). The audit event's "before"
    is read under the lock."""
    action = "add" if group is None or group.pk is None else "change"
    gid = group.pk if group is not None and group.pk else NEW
    snap: dict[str, Any] | None = None
    before = _rows(group_id=gid)
    predicted = {(gid, c) for c in membership.planned_members(selector, _ids(include), _ids(exclude))}
    check_change(user, ClusterGroup, action, before, predicted, subject_group=gid, new_names={gid: name})
    with transaction.atomic():
        if gid:
            locked = ClusterGroup.objects.select_for_update().filter(pk=gid).first()
            before = _rows(group_id=gid)  # again, under the lock
            if locked is not None:
                snap = snapshot(locked)
        saved = save_in_scope(user, save, before=snap, creating=action == "add")
        after = _rows(group_id=saved.pk)
        check_change(
            user, ClusterGroup, action, before, after, subject_group=saved.pk, new_names={saved.pk: name}
        )
    return saved


def save_cluster(
    user: Any,
    cluster: Cluster | None,
    save: Callable[[], Cluster],
    *,
    name: str,
    labels: Mapping[str, str],
) -> Cluster:
    """Create (``cluster`` None) or change a cluster through ``save()``, which returns it; ``labels`` are
    the labels it will have. The audit event's "before" is read under the lock."""
    action = "add" if cluster is None or cluster.pk is None else "change"
    cid = cluster.pk if cluster is not None and cluster.pk else NEW
    snap: dict[str, Any] | None = None
    before = _rows(cluster_id=cid)
    predicted = {(g, cid) for g in membership.planned_groups(cid or None, labels)}
    check_change(
        user,
        Cluster,
        action,
        before,
        predicted,
        subject_cluster=cid,
        new_cluster=action == "add",
        new_names={cid: name},
    )
    with transaction.atomic():
        if cid:
            locked = Cluster.objects.select_for_update().filter(pk=cid).first()
            before = _rows(cluster_id=cid)
            if locked is not None:
                snap = snapshot(locked)
        saved = save_in_scope(user, save, before=snap, creating=action == "add")
        after = _rows(cluster_id=saved.pk)
        check_change(
            user,
            Cluster,
            action,
            before,
            after,
            subject_cluster=saved.pk,
            new_cluster=action == "add",
            new_names={saved.pk: name},
        )
    return saved
