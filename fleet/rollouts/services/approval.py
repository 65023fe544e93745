"""How many approvals a rollout needs, and from whom: the strictest group its clusters belong to.

A cluster may belong to several groups (selectors overlap, include lists). A rollout of a mapping reaches
its clusters through the mapping's group, but each cluster keeps the approval rule of every group it is in:
- the rollout needs approval when the mapping's group, or any group holding one of its clusters (legs not
  blocked, cancelled or superseded), requires approval;
- it needs the largest `approvals_required` among those groups;
- every approver must hold `rollout.approve` in scope for each of those groups (as well as for the
  rollout itself), so that approvers of `dev` cannot approve what reaches a `prod` cluster.
The whole rollout waits: its legs to clusters of laxer groups are not released before the approvals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Q

from clusters.models import ClusterGroup
from fleet.access.restrict import groups_where
from fleet.rollouts.choices import SyncState
from fleet.rollouts.models import ClusterSync, Rollout

NOT_TARGETED = (SyncState.BLOCKED, SyncState.CANCELLED, SyncState.SUPERSEDED)


@dataclass(frozen=True)
class ApprovalRule:
    required: bool
    count: int
    groups: tuple[tuple[int, str], ...]  # (id, name) of the groups that ask for approval, by name

    @property
    def group_names(self) -> list[str]:
        return [name for _, name in self.groups]


def target_cluster_ids(rollout: Rollout) -> set[int]:
    return set(
        ClusterSync.objects.filter(rollout=rollout)
        .exclude(state__in=NOT_TARGETED)
        .values_list("cluster_id", flat=True)
    )


def rule_for(rollout: Rollout) -> ApprovalRule:
    """The rule for the rollout's clusters as their groups are now."""
    mapping_group = rollout.mapping.cluster_group_id
    strict = ClusterGroup.objects.filter(approval_required=True).filter(
        Q(pk=mapping_group) | Q(members__in=target_cluster_ids(rollout))
    )
    rows = sorted(set(strict.values_list("pk", "name", "approvals_required")), key=lambda r: r[1])
    if not rows:
        return ApprovalRule(False, 0, ())
    return ApprovalRule(True, max(r[2] for r in rows), tuple((pk, name) for pk, name, _ in rows))


def groups_not_approvable_by(user: Any, rule: ApprovalRule) -> list[str]:
    """The names of the rule's groups in which ``user`` does not hold ``rollout.approve``."""
    scope = groups_where(user, Rollout, "approve")
    return [name for pk, name in rule.groups if not scope.covers(pk)]


def previously_approved(rollout: Rollout, rule: ApprovalRule) -> bool:
    """Whether an earlier rollout of the same mapping and commit was approved under a rule at least as
    strict (as many approvals) for every cluster this one reaches ("sync now" does not ask again)."""
    targets = target_cluster_ids(rollout)
    earlier = (
        Rollout.objects.filter(
            mapping=rollout.mapping_id,
            commit=rollout.commit_id,
            approved_at__isnull=False,
            approvals_required__gte=rule.count,
        )
        .exclude(pk=rollout.pk)
        .values_list("pk", flat=True)
    )
    reached: dict[int, set[int]] = {}
    for rollout_id, cluster_id in ClusterSync.objects.filter(rollout_id__in=earlier).values_list(
        "rollout_id", "cluster_id"
    ):  # one query for every earlier rollout's legs
        reached.setdefault(rollout_id, set()).add(cluster_id)
    return any(targets <= clusters for clusters in reached.values())


def describe(rule: ApprovalRule, mapping_group: ClusterGroup) -> str:
    reason = f"needs {rule.count} approval(s)"
    others = [name for pk, name in rule.groups if pk != mapping_group.pk]
    if others:
        reason += f" (its clusters are also in {', '.join(others)})"
    return reason
